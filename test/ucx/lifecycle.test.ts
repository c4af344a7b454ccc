/**
 * ucx lifecycle (issue 8, defect 14):
 *   - a process that only serves ucx:// stays alive until it closes its listener, then exits
 *     by itself (no timer, socket or stdin of its own holds it);
 *   - an endpoint that connects but never sends HELLO is closed after the listener's
 *     handshake timeout (its side sees the endpoint fail), and the listener keeps serving;
 *   - setWaitPolicy on one connection leaves the others' policies alone;
 *   - connect / close rounds: the idle-wait helper Worker started for a connection ends after
 *     the last close (its thread, epoll fd and eventfd with it), so rounds leave nothing behind.
 */
import { describe, expect, test } from "bun:test";
import { connect, listen, rpcConnect, type Connection, type Listener } from "../../src/index.ts";
import { useEnv } from "../helpers/env.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import { UcxRuntime } from "../../src/ucx/runtime.ts";

const INDEX = new URL("../../src/index.ts", import.meta.url).pathname;

/** Serves echo over ucx and prints its URL; nothing else keeps it alive. `CLOSE_AFTER_MS` closes the listener then. */
const ONLY_SERVES = `
import { serve } from "${INDEX}";
const s = await serve("ucx://127.0.0.1:0", { 1: (h) => h.data });
console.log(s.url);
const after = Number(process.env.CLOSE_AFTER_MS ?? 0);
if (after > 0) setTimeout(() => s.close(), after);
`;

/**
 * Client rounds in a process of its own (threads and fds of this test runner vary with what
 * other files left): connect to argv[1], one call, close, settle; the figures after the first
 * round and after four more (waiting up to 3 s for them to come back), as one JSON line.
 */
/** Connect / close rounds after the first, measured one: a leak per round shows as at least this many. */
const LIFECYCLE_ROUNDS = 4;
const ROUNDS = `
import { readdirSync, readlinkSync } from "node:fs";
import { rpcConnect } from "${INDEX}";
const links = () => readdirSync("/proc/self/fd").map((f) => { try { return readlinkSync("/proc/self/fd/" + f); } catch { return ""; } });
const figures = () => {
  const l = links();
  const sockets = l.filter((x) => x.startsWith("socket:")).length;
  return { threads: readdirSync("/proc/self/task").length, fds: l.length - sockets, sockets, eventFds: l.filter((x) => x.includes("eventpoll") || x.includes("eventfd")).length };
};
const round = async () => { const c = await rpcConnect(process.argv[1]); await c.request(1, new Uint8Array([7])); c.close(); await Bun.sleep(150); };
await round();
const before = figures();
for (let i = 0; i < ${LIFECYCLE_ROUNDS}; i++) await round();
let after = figures();
for (let t = 0; t < 50 && (after.threads > before.threads || after.fds > before.fds || after.sockets > before.sockets); t++) { await Bun.sleep(100); after = figures(); }
console.log(JSON.stringify({ before, after }));
process.exit(0);
`;

async function firstLine(proc: { stdout: ReadableStream<Uint8Array> }, ms: number): Promise<string> {
  const read = proc.stdout.getReader().read();
  const r = await Promise.race([read, Bun.sleep(ms).then(() => null)]);
  if (r === null) throw new Error(`watchdog: no output within ${ms} ms`);
  return new TextDecoder().decode(r.value).trim();
}

describe("ucx lifecycle (UCX_TLS=tcp,self)", () => {
  useEnv({ UCX_TLS: "tcp,self" });

  test("a process that only serves ucx:// stays alive and serving while it listens", async () => {
    const proc = Bun.spawn(["bun", "-e", ONLY_SERVES], { stdin: "ignore", stdout: "pipe", env: { ...process.env } });
    try {
      const url = await firstLine(proc, 20000);
      await Bun.sleep(1000);
      expect(proc.exitCode).toBeNull();
      const c = await rpcConnect(url);
      try {
        expect(await c.request(1, new Uint8Array([1, 2]))).toEqual(new Uint8Array([1, 2]));
      } finally {
        c.close();
      }
      expect(proc.exitCode).toBeNull();
    } finally {
      proc.kill(9);
      await proc.exited;
    }
  }, 60_000);

  test("once it closes its listener, it exits by itself", async () => {
    const proc = Bun.spawn(["bun", "-e", ONLY_SERVES], { stdin: "ignore", stdout: "pipe", env: { ...process.env, CLOSE_AFTER_MS: "300" } });
    try {
      await firstLine(proc, 20000);
      const code = await Promise.race([proc.exited, Bun.sleep(20000).then(() => "watchdog: still running 20 s after closing")]);
      expect(code).toBe(0);
    } finally {
      proc.kill(9);
      await proc.exited;
    }
  }, 60_000);

  test("an endpoint that never sends HELLO is closed after the handshake timeout; the listener keeps serving", async () => {
    const listener = await listen("ucx://127.0.0.1:0", { ucx: { handshakeTimeoutMs: 300 } });
    const accepted: Connection[] = [];
    listener.onConnection((c) => accepted.push(c));
    const rt = UcxRuntime.acquire();
    try {
      const port = Number(new URL(listener.url).port);
      const baseline = rt.sinks.size;
      let failedWith: number | null = null;
      // A raw endpoint to the listener: connects, never says HELLO.
      const silent = rt.worker.connect({ host: "127.0.0.1", port }, false, (status) => {
        failedWith = status;
      });
      const deadline = Date.now() + 20000;
      while (failedWith === null) {
        if (Date.now() > deadline) throw new Error("watchdog: the silent endpoint was never closed");
        rt.progress();
        await Bun.sleep(10);
      }
      expect(failedWith).toBeLessThan(0);
      expect(accepted.length).toBe(0);
      silent.close();
      // The server side let go of it, and a real client still connects and talks.
      while (rt.sinks.size > baseline) {
        if (Date.now() > deadline) throw new Error("watchdog: the server kept the silent endpoint");
        await Bun.sleep(10);
      }
      const c = await connect(listener.url);
      const got: number[] = [];
      while (accepted.length === 0) await c.wait(10);
      accepted[0]!.setReceiver({ onMessage: (m) => (got.push(m.body.length), m.release()), onClose() {} });
      c.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
      expect(c.trySend(new Uint8Array([1]), new Uint8Array(5))).toBe(0);
      while (got.length === 0) {
        if (Date.now() > deadline) throw new Error("watchdog: no message on the real connection");
        await c.wait(10);
      }
      expect(got).toEqual([5]);
      c.close();
    } finally {
      rt.release();
      listener.close(true);
    }
  }, 60_000);

  test("setWaitPolicy on one connection leaves the other connections' policies alone", async () => {
    let listener: Listener | null = null;
    const conns: Connection[] = [];
    try {
      listener = await listen("ucx://127.0.0.1:0");
      const a = (await connect(listener.url)) as unknown as UcxConnection;
      conns.push(a);
      const b = (await connect(listener.url)) as unknown as UcxConnection;
      conns.push(b);
      const defaults = { ...b.waitPolicy };
      a.setWaitPolicy({ spinNs: 0, mode: "spin" } as never);
      expect(a.waitPolicy).toEqual({ mode: "spin", spinNs: 0 });
      expect(b.waitPolicy).toEqual(defaults);
      const c = (await connect(listener.url)) as unknown as UcxConnection;
      conns.push(c);
      expect(c.waitPolicy).toEqual(defaults);
      expect(defaults.spinNs).toBeGreaterThan(0);
    } finally {
      for (const c of conns) c.close();
      listener?.close(true);
    }
  });

  test("connect / close rounds leave no thread, epoll fd or eventfd behind (the helper Worker ends)", async () => {
    const server = Bun.spawn(["bun", "-e", ONLY_SERVES], { stdin: "ignore", stdout: "pipe", env: { ...process.env } });
    try {
      const url = await firstLine(server, 20000);
      const client = Bun.spawn(["bun", "-e", ROUNDS, url], { stdin: "ignore", stdout: "pipe", env: { ...process.env } });
      try {
        const { before, after } = JSON.parse(await firstLine(client, 30000));
        // Before the fix each round left its helper asleep: +1 thread, +1 epoll fd, +1 eventfd.
        // (Fewer fds after is fine: UCX closes some of the first round's sockets late.) UCX's tcp
        // sockets may still be closing when it looks (a loaded CI run saw 2 of them after 3 s):
        // they are counted apart, and only a socket left by every round fails.
        expect(after.threads).toBeLessThanOrEqual(before.threads);
        expect(after.eventFds).toBeLessThanOrEqual(before.eventFds);
        expect(after.fds).toBeLessThanOrEqual(before.fds);
        expect(after.sockets - before.sockets).toBeLessThan(LIFECYCLE_ROUNDS);
      } finally {
        client.kill(9);
        await client.exited;
      }
    } finally {
      server.kill(9);
      await server.exited;
    }
  }, 60_000);
});
