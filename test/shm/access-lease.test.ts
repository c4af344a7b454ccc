/**
 * A client that holds a file lease on its own segment (fcntl F_SETLEASE, with F_SETSIG set to
 * an ignored signal so the break does not kill it) must not freeze the server: an open(2) of the
 * leased file by anyone else blocks in the kernel until the holder lets go or lease-break-time
 * (45 s by default) passes, and the server's thread with it. The server takes the client's fd
 * with pidfd_getfd instead (no open at all, so the lease is not even broken); its /proc fallback
 * (kernels without pidfd_getfd) opens O_NONBLOCK and refuses at once with EWOULDBLOCK.
 *
 * The server runs in a child process, so a frozen server cannot freeze this test's watchdogs.
 */

import { afterAll, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { rpcConnect } from "../../src/index.ts";
import { closeFd, getLease, memfdCreate, setLease } from "../../src/ffi/libc.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnPeer } from "../helpers/peer.ts";
import { childServer } from "./access-child.ts";

const PEER = new URL("./access-peer.ts", import.meta.url).pathname;
const uid = process.geteuid!();
const prefix = `lease-${process.pid}-`;
/** SIGURG is ignored by default: the lease break cannot hurt this process. */
const SIGURG = 23;

afterAll(() => {
  expect(readdirSync(socketDirOf(uid)).filter((f) => f.includes(prefix))).toEqual([]);
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
});

test("a client holding a lease on its segment: the server keeps answering another client, and serves the leased one without stalling", async () => {
  const name = `${prefix}0`;
  const server = await childServer(`shm://${name}`);
  const other = await rpcConnect(server.url);
  let leased: Awaited<ReturnType<typeof spawnPeer>> | null = null;
  try {
    expect(await other.request(1, new Uint8Array([1]), { timeoutMs: 5000 })).toEqual(new Uint8Array([1]));
    leased = await spawnPeer(PEER, ["lease", `${socketDirOf(uid)}/shm-${name}.sock`], {}, 20_000);
    expect(leased.ready).toEqual({ sent: true, lease: "read" });
    // The other client calls on while the server handles the leased client's hello; a server
    // frozen in open(2) would answer none of these for lease-break-time (45 s).
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) {
      expect(await other.request(1, new Uint8Array([i]), { timeoutMs: 3000 })).toEqual(new Uint8Array([i]));
      await Bun.sleep(50);
    }
    const fresh = await rpcConnect(server.url, { connectTimeoutMs: 3000 });
    expect(await fresh.request(1, new Uint8Array([42]), { timeoutMs: 3000 })).toEqual(new Uint8Array([42]));
    fresh.close();
    console.log(`shm lease: 10 calls and a fresh connect answered in ${(performance.now() - t0).toFixed(0)} ms while a client held a lease on its segment`);
    // The leased client itself got its answer (its own watchdog gives up after 8 s), and nothing
    // opened its file: the lease is still there, unbroken.
    const result = JSON.parse(await leased.nextLine(15_000));
    expect(result.closed).toBe(true);
    expect(result.lines[0]).toEqual({ ok: true, maxMessageBytes: expect.any(Number) });
    expect(result.lease).toBe("read");
  } finally {
    other.close();
    await leased?.kill();
    await server.stop();
  }
}, 60_000);

test("the /proc fallback (no pidfd_getfd) refuses a leased segment at once with EWOULDBLOCK instead of waiting for the lease", async () => {
  const fd = memfdCreate("hotpath-lease-fallback", 1 << 16, true);
  try {
    setLease(fd, "read", SIGURG);
    expect(getLease(fd)).toBe("read");
    // Another process opens it through /proc/<this pid>/fd/<fd>, as the fallback does.
    const p = await spawnPeer(PEER, ["reopen", String(process.pid), String(fd)], {}, 20_000);
    await p.kill();
    expect(p.ready.ok).toBeUndefined();
    expect(p.ready.error.name).toBe("ProtocolError");
    expect(p.ready.error.message).toMatch(/holds a lease on it \(open\(2\): EWOULDBLOCK\)/);
    console.log(`shm lease: the /proc fallback refused the leased segment after ${p.ready.ms.toFixed(1)} ms`);
  } finally {
    setLease(fd, "none", 0);
    closeFd(fd);
  }
}, 30_000);
