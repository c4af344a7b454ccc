/**
 * inproc admits only threads of its own process (SO_PEERCRED pid): another process connecting
 * to an inproc rendezvous socket is refused with an AuthError line and counted; an inproc client
 * refuses a listener of another process that sits on the name, without sending it anything.
 * Socket files of inproc listeners that are gone (their process was killed) are removed by the
 * next inproc listen. Nothing of these tests is left in the socket directory.
 */

import { afterEach, expect, test } from "bun:test";
import { existsSync, lstatSync, readdirSync, renameSync, rmSync } from "node:fs";
import { AuthError, connect, listen, UsageError, type HotpathError, type RefusalReason } from "../../src/index.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnPeer } from "../helpers/peer.ts";

const PEER = new URL("../shm/access-peer.ts", import.meta.url).pathname;
const dir = socketDirOf(process.geteuid!());
const prefix = `inacc-${process.pid}-`;
let n = 0;
const unique = () => `${prefix}${n++}`;

afterEach(() => {
  expect(readdirSync(dir).filter((f) => f.includes(prefix))).toEqual([]);
});

/** A process that listens on `path` (a raw Unix socket), prints "up", and prints "data" for every chunk it receives. */
function rawHolder(path: string) {
  const p = Bun.spawn(
    ["bun", "-e", `Bun.listen({ unix: ${JSON.stringify(path)}, socket: { data() { console.log("data") } } }); console.log("up"); setInterval(() => {}, 1e6);`],
    { stdout: "pipe" },
  );
  const reader = p.stdout.getReader();
  let seen = "";
  const read = async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      seen += new TextDecoder().decode(value);
    }
  };
  const reading = read();
  return {
    proc: p,
    async up() {
      for (let i = 0; i < 400 && !seen.includes("up"); i++) await Bun.sleep(5);
      expect(seen).toContain("up");
    },
    async stop(): Promise<string> {
      p.kill(9);
      await p.exited;
      await reading;
      return seen;
    },
  };
}

test("another process connecting to an inproc socket is refused (AuthError line, counted, reported)", async () => {
  const name = unique();
  const l = await listen(`inproc://${name}`);
  const refusals: Array<[HotpathError, RefusalReason]> = [];
  l.onRefused((e, r) => void refusals.push([e, r]));
  try {
    const path = `${dir}/inproc-${process.pid}-${name}.sock`;
    const peer = await spawnPeer(PEER, ["raw", path, JSON.stringify({ hello: "hotpath-inproc", id: "x" }), "none"]);
    await peer.kill();
    const got = peer.ready;
    expect(got.lines.length).toBe(1);
    expect(got.lines[0].refused).toBe("auth");
    expect(got.lines[0].error).toContain(`the client is process ${peer.proc.pid}`);
    expect(got.lines[0].error).toContain("inproc admits only threads of its own process");
    expect(got.closed).toBe(true);
    expect(l.stats.refusedAuth).toBe(1);
    expect(l.stats.accepted).toBe(0);
    expect(refusals[0]![0]).toBeInstanceOf(AuthError);
    expect(refusals[0]![1]).toBe("auth");
    // Threads of this process are still admitted.
    const c = await connect(l.url);
    expect(c.peerCredentials).toEqual({ pid: process.pid, uid: process.geteuid!(), gid: process.getegid!() });
    c.close();
  } finally {
    l.close(true);
  }
}, 30_000);

test("an inproc client refuses a listener of another process on its name, and sends it nothing", async () => {
  const name = unique();
  const path = `${dir}/inproc-${process.pid}-${name}.sock`;
  const holder = rawHolder(path);
  try {
    await holder.up();
    const e = await connect(`inproc://${name}`).catch((x) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect(e.message).toContain(`the listener is process ${holder.proc.pid}, not this process (${process.pid})`);
    await Bun.sleep(50);
    expect(await holder.stop()).not.toContain("data");
  } finally {
    await holder.stop();
    rmSync(path, { force: true });
  }
}, 30_000);

test("socket files of inproc listeners whose process was killed are removed by the next inproc listen", async () => {
  const bound = `${dir}/bound-${unique()}.sock`;
  const holder = rawHolder(bound);
  // The name an inproc listener of the holder's process would have had (it is dead once killed).
  const path = `${dir}/inproc-${holder.proc.pid}-${unique()}.sock`;
  try {
    await holder.up();
    await holder.stop();
    renameSync(bound, path); // the socket file, its listener gone
    expect(lstatSync(path).isSocket()).toBe(true);
    const l = await listen(`inproc://${unique()}`);
    l.close(true);
    expect(existsSync(path)).toBe(false);
  } finally {
    rmSync(bound, { force: true });
    rmSync(path, { force: true });
  }
}, 30_000);

test("inproc expectUid other than this process's uid is a UsageError", async () => {
  const e = await connect(`inproc://${unique()}`, { expectUid: process.geteuid!() + 1 }).catch((x) => x);
  expect(e).toBeInstanceOf(UsageError);
  expect(e.message).toContain("inproc peers are threads of one process");
});
