/**
 * A client whose "segment" is a file on a FUSE file system it serves itself cannot freeze the
 * server. The server takes the fd (pidfd_getfd: no open, no request to the daemon), sees from
 * statx (AT_STATX_DONT_SYNC: no request either) that it is not a memfd, and refuses it; but every
 * close(2) of a FUSE fd sends FLUSH to the daemon and waits for its answer, which a hostile
 * daemon never gives. So an fd not proven a memfd is closed on a helper thread, and a uid whose
 * closes do not return gets no more fds taken until they do (MAX_UNCLOSED_PER_UID; that uid's
 * honest clients too: a uid cannot be told apart from itself).
 *
 * The daemon is test/shm/access-fuse.c (compiled here; it mounts with mount(2), so the test needs
 * root and /dev/fuse and is skipped otherwise, saying so). The server is a child process, so a
 * frozen server cannot freeze this test's watchdogs.
 */

import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { rpcConnect } from "../../src/index.ts";
import { MAX_UNCLOSED_PER_UID } from "../../src/shm/setup.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnPeer } from "../helpers/peer.ts";
import { childServer } from "./access-child.ts";

const PEER = new URL("./access-peer.ts", import.meta.url).pathname;
const DAEMON_SRC = new URL("./access-fuse.c", import.meta.url).pathname;
const canMount = process.geteuid?.() === 0 && existsSync("/dev/fuse");
const uid = process.geteuid!();
const prefix = `fuse-${process.pid}-`;

afterAll(() => {
  expect(readdirSync(socketDirOf(uid)).filter((f) => f.includes(prefix))).toEqual([]);
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
});

/** Compiles and mounts the hostile file system; `flushes()` counts the FLUSH requests left unanswered. */
async function mountHostileFuse(dir: string) {
  const exe = join(dir, "access-fuse");
  const cc = Bun.spawnSync(["cc", "-O1", "-o", exe, DAEMON_SRC]);
  if (cc.exitCode !== 0) throw new Error(`cc access-fuse.c: ${cc.stderr.toString()}`);
  const mnt = join(dir, "mnt");
  Bun.spawnSync(["mkdir", mnt]);
  const proc = Bun.spawn([exe, mnt], { stdout: "pipe", stderr: "inherit" });
  const lines: string[] = [];
  (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stdout) lines.push(...decoder.decode(chunk).split("\n").filter((l) => l.length > 0));
  })();
  for (let i = 0; i < 1000 && !lines.includes("ready"); i++) {
    if (proc.exitCode !== null) throw new Error(`access-fuse exited with ${proc.exitCode}`);
    await Bun.sleep(10);
  }
  if (!lines.includes("ready")) throw new Error("access-fuse: not mounted within 10 s");
  return {
    file: join(mnt, "seg"),
    flushes: () => lines.filter((l) => l === "flush").length,
    async unmount() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      Bun.spawnSync(["umount", "-l", mnt]);
      proc.kill(9); // aborts the connection: every FLUSH still waiting fails and returns
      await proc.exited;
    },
  };
}

test.skipIf(!canMount)(
  canMount ? "a client's segment fd on its own FUSE file system that never answers FLUSH: refused, and the server keeps answering" : "FUSE segment: SKIPPED, needs root and /dev/fuse (mount(2) of a FUSE file system)",
  async () => {
    const dir = mkdtempSync("/tmp/hotpath-fuse-test-");
    const fuse = await mountHostileFuse(dir);
    const name = `${prefix}0`;
    const server = await childServer(`shm://${name}`);
    const other = await rpcConnect(server.url);
    const attackers: Array<Awaited<ReturnType<typeof spawnPeer>>> = [];
    try {
      const hello = JSON.stringify({ hello: "hotpath-shm" });
      const path = `${socketDirOf(uid)}/shm-${name}.sock`;
      for (let i = 0; i < MAX_UNCLOSED_PER_UID; i++) {
        const a = await spawnPeer(PEER, ["raw", path, hello, `file:${fuse.file}`], {}, 20_000);
        attackers.push(a);
        expect(a.ready.lines[0]?.refused).toBe("protocol");
        expect(a.ready.lines[0].error).toMatch(/is not a memfd \(it lives on device \d+:\d+, memfds on \d+:\d+\)/);
      }
      // Each refused fd was closed by the server, and each of those closes is stuck in the daemon
      // (so are the attackers' own, as they exit).
      expect(await server.until(() => fuse.flushes() >= MAX_UNCLOSED_PER_UID, 10_000)).toBe(true);
      for (let i = 0; i < 10; i++) {
        expect(await other.request(1, new Uint8Array([i]), { timeoutMs: 3000 })).toEqual(new Uint8Array([i]));
      }
      // This uid's closes do not return: the next hello is refused before its fd is taken.
      const more = await spawnPeer(PEER, ["raw", path, hello, `file:${fuse.file}`], {}, 20_000);
      attackers.push(more);
      expect(more.ready.lines[0]?.refused).toBe("protocol");
      expect(more.ready.lines[0].error).toContain(`uid ${uid} has ${MAX_UNCLOSED_PER_UID} fds whose close(2) has not returned`);
      // The established session never noticed; once the daemon is gone the closes return, and
      // the uid (this one, the attacker's too) connects again.
      expect(await other.request(1, new Uint8Array([8]), { timeoutMs: 3000 })).toEqual(new Uint8Array([8]));
      await fuse.unmount();
      let fresh: Awaited<ReturnType<typeof rpcConnect>> | null = null;
      for (let i = 0; i < 100 && fresh === null; i++) {
        fresh = await rpcConnect(server.url, { connectTimeoutMs: 3000 }).catch(() => null);
        if (fresh === null) await Bun.sleep(50);
      }
      expect(fresh).not.toBeNull();
      expect(await fresh!.request(1, new Uint8Array([7]), { timeoutMs: 3000 })).toEqual(new Uint8Array([7]));
      fresh!.close();
      console.log(`shm fuse: ${MAX_UNCLOSED_PER_UID} FUSE fds refused with their closes stuck in FLUSH; the server kept answering, and took hellos again once the daemon died`);
    } finally {
      other.close();
      await fuse.unmount();
      for (const a of attackers) await a.kill();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  },
  90_000,
);
