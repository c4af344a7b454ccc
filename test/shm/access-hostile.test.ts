/**
 * Hostile shm handshakes from real client processes (test/shm/access-peer.ts): a hello naming a
 * decoy /dev/shm file, another process's fd, a segment that is not sealed, a size that is not
 * the segment's, garbage, a hello that never comes; and a client that tries to truncate its own
 * segment under the server (the SIGBUS attack). Each is refused (or fails) on its own: the
 * server counts it in stats and reports it to onRefused, touches nothing it did not create, and
 * keeps serving a well-behaved client throughout. Nothing is left in /dev/shm or in the socket
 * directory after any test.
 */

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { rpcConnect, serve, type HotpathError, type RefusalReason, type Serving } from "../../src/index.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnPeer } from "../helpers/peer.ts";

const PEER = new URL("./access-peer.ts", import.meta.url).pathname;
const uid = process.geteuid!();
let n = 0;
const prefix = `acc-${process.pid}-`;
const unique = () => `${prefix}${n++}`;
const ourSockets = () => readdirSync(socketDirOf(uid)).filter((f) => f.includes(prefix));
const ourShm = () => readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"));

let serving: Serving;
let name: string;
const refusals: Array<{ error: HotpathError; reason: RefusalReason }> = [];
const socketPath = () => `${socketDirOf(uid)}/shm-${name}.sock`;

/** Runs access-peer.ts with `args` and returns its JSON line. */
async function peer(args: string[]): Promise<any> {
  const p = await spawnPeer(PEER, args, {}, 20_000);
  await p.kill();
  return p.ready;
}

/** A well-behaved client calls the server: it keeps serving. */
async function stillServes(): Promise<void> {
  const c = await rpcConnect(serving.url);
  try {
    expect(await c.request(1, new Uint8Array([7, 7]))).toEqual(new Uint8Array([7, 7]));
  } finally {
    c.close();
  }
}

beforeAll(async () => {
  name = unique();
  serving = await serve(`shm://${name}`, { 1: (h) => h.data });
  serving.listener.onRefused((error, reason) => void refusals.push({ error, reason }));
});

afterAll(() => {
  serving.close();
  expect(ourSockets()).toEqual([]);
});

afterEach(() => {
  expect(ourShm()).toEqual([]);
  expect(ourSockets()).toEqual([`shm-${name}.sock`]);
});

/** The refusal the server sent (a JSON line) and the one it reported, both of `reason`. */
function expectRefused(got: any, reason: RefusalReason, text: string | RegExp): void {
  expect(got.error).toBeUndefined();
  expect(got.lines.length).toBe(1);
  expect(got.lines[0].refused).toBe(reason);
  expect(got.lines[0].error).toMatch(text);
  expect(got.closed).toBe(true);
  const last = refusals.at(-1)!;
  expect(last.reason).toBe(reason);
  expect(last.error.name).toBe(reason === "auth" ? "AuthError" : "ProtocolError");
  expect(last.error.message).toMatch(text);
}

describe("hostile shm hellos are refused; the server keeps serving", () => {
  test("a hello naming a decoy /dev/shm file (by name and by an fd of it): refused, the decoy untouched", async () => {
    const decoyName = `hotpath-${name}-decoy`;
    const decoy = `/dev/shm/${decoyName}`;
    const bytes = new Uint8Array(4096).fill(0xab);
    writeFileSync(decoy, bytes, { mode: 0o600 });
    try {
      const before = serving.listener.stats.refusedProtocol;
      // Old servers opened "segment" by name and unlinked it when its magic was bad.
      const got = await peer(["raw", socketPath(), JSON.stringify({ hello: "hotpath-shm", segment: `/${decoyName}`, bytes: 4096, pid: 1 }), `file:${decoy}`]);
      expectRefused(got, "protocol", /is not a memfd \(it lives on device \d+:\d+, memfds on \d+:\d+\): only a sealed memfd is mapped/);
      expect(serving.listener.stats.refusedProtocol).toBe(before + 1);
      expect(existsSync(decoy)).toBe(true);
      expect(new Uint8Array(readFileSync(decoy))).toEqual(bytes);
      await stillServes();
    } finally {
      rmSync(decoy, { force: true });
    }
  }, 30_000);

  test("a hello naming another process's segment fd (and that process's pid): refused, that client unharmed", async () => {
    const victim = await rpcConnect(serving.url);
    try {
      const victimFd = readdirSync("/proc/self/fd")
        .map(Number)
        .find((fd) => {
          try {
            return readlinkSync(`/proc/self/fd/${fd}`).startsWith("/memfd:hotpath-");
          } catch {
            return false;
          }
        });
      expect(victimFd).toBeDefined();
      // The server takes fd <fd> of the process the kernel reports (its pidfd): the hostile process's own fd table.
      const got = await peer(["raw", socketPath(), JSON.stringify({ hello: "hotpath-shm", pid: process.pid }), `fd:${victimFd}`]);
      expect(got.lines[0]?.refused).toBe("protocol");
      expect(got.lines[0].error).not.toContain(`pid ${process.pid}`);
      expect(refusals.at(-1)!.reason).toBe("protocol");
      expect(await victim.request(1, new Uint8Array([1]))).toEqual(new Uint8Array([1]));
      await stillServes();
    } finally {
      victim.close();
    }
  }, 30_000);

  test("an fd the client does not have open: refused", async () => {
    const got = await peer(["raw", socketPath(), JSON.stringify({ hello: "hotpath-shm" }), "fd:987"]);
    expectRefused(got, "protocol", /names fd 987, which client pid \d+ does not have open/);
    await stillServes();
  }, 30_000);

  test("a segment that is not sealed: refused (its creator could truncate it under the server)", async () => {
    const got = await peer(["raw", socketPath(), JSON.stringify({ hello: "hotpath-shm" }), "unsealed"]);
    expectRefused(got, "protocol", /is not sealed against resizing \(seals 0x0, F_SEAL_SHRINK and F_SEAL_GROW are required\)/);
    await stillServes();
  }, 30_000);

  test("a hello whose size is not the segment's: refused, both sizes named", async () => {
    for (const delta of [4096, -4096]) {
      const got = await peer(["raw", socketPath(), JSON.stringify({ hello: "hotpath-shm" }), `size:${delta}`]);
      expectRefused(got, "protocol", /has \d+ bytes, the hello says \d+/);
    }
    await stillServes();
  }, 30_000);

  test("garbage, another hello kind, a malformed fd: refused as protocol errors", async () => {
    for (const [hello, text] of [
      ['{"hello":"hotpath-inproc"}', /not a hotpath-shm hello/],
      ['{"hello":"hotpath-shm","fd":-1,"bytes":4096}', /malformed handshake: fd -1/],
      ['{"hello":"hotpath-shm","fd":"3","bytes":4096}', /malformed handshake: fd 3/],
    ] as const) {
      const got = await peer(["raw", socketPath(), hello, "none"]);
      expectRefused(got, "protocol", text);
    }
    await stillServes();
  }, 30_000);

  test("a well-formed segment from a raw client is admitted (the checks refuse only what is wrong)", async () => {
    const before = serving.listener.stats.accepted;
    const got = await peer(["raw", socketPath(), JSON.stringify({ hello: "hotpath-shm" }), "sealed"]);
    expect(got.lines[0]).toEqual({ ok: true, maxMessageBytes: expect.any(Number) });
    expect(serving.listener.stats.accepted).toBe(before + 1);
    await stillServes();
  }, 30_000);
});

describe("truncating the segment under the server", () => {
  test("a client's ftruncate of its own sealed segment fails with EPERM; the server keeps serving", async () => {
    const sessionsGone = async () => {
      for (let i = 0; i < 400 && serving.server.sessions.size > 0; i++) await Bun.sleep(5);
      expect(serving.server.sessions.size).toBe(0);
    };
    await sessionsGone(); // earlier tests' peers have gone
    const accepted = serving.listener.stats.accepted;
    const got = await peer(["truncate", serving.url]);
    expect(got).toEqual({ truncate: "EPERM" });
    expect(serving.listener.stats.accepted).toBe(accepted + 1);
    // The attacker exited without closing: its session goes, nobody else notices.
    await sessionsGone();
    await stillServes();
  }, 30_000);
});
