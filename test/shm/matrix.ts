/**
 * The segment transports' wait-mode matrix: the transport-level contract items (2, 4, 5, 7, 8, 9)
 * and the defects that only show in some modes, run once per wait mode (spin, blocking, async,
 * adaptive) for shm and inproc. This side runs in the mode under test and is driven as a user
 * would drive it: a loop of poll() and `await wait()`, which in spin and blocking modes never
 * returns to the event loop (so nothing here may rely on a timer or a socket event firing).
 * Watchdogs are deadlines checked inside those loops.
 *
 * The remote peer (segment-peer.ts) runs in another process (shm) or a Worker (inproc) in the
 * default mode; the RPC service is the conformance one (peer-server.ts / peer-worker.ts).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  connect,
  listen,
  ProtocolError,
  rpcConnect,
  SEND_CLOSED,
  SEND_FULL,
  SEND_OK,
  TransportClosedError,
  type Connection,
  type HotpathError,
  type RxMessage,
} from "../../src/index.ts";
import type { WaitMode } from "../../src/segment/connection.ts";
import type { Peer } from "../helpers/peer.ts";
import * as m from "../conformance/methods.ts";

/** Every test gets a generous watchdog: the loops inside have their own deadlines, this one catches a hang. */
const it = (name: string, fn: () => Promise<void>) => test(name, fn, 30_000);

export const WAIT_MODES: readonly WaitMode[] = ["spin", "blocking", "async", "adaptive"];

export interface MatrixFixture {
  name: "shm" | "inproc";
  /** A listen URL no other test uses. */
  url(): string;
  /** Starts segment-peer.ts with `args` in another process (shm) or a Worker (inproc). */
  spawnPeer(args: string[]): Promise<Peer>;
  /** Starts the conformance RPC service on `url` in another process or a Worker. */
  spawnRpcServer(url: string): Promise<Peer>;
}

const te = new TextEncoder();
const td = new TextDecoder();
const text = (s: string) => te.encode(s);

/** Polls every connection and waits on the first, as a user loop does, until `done()`; fails past the deadline. */
export async function drive(conns: Connection[], done: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    let n = 0;
    for (const c of conns) if (!c.closed) n += c.poll();
    const open = conns.find((c) => !c.closed);
    if (n === 0 && open) await open.wait(conns.length > 1 ? 1 : 5);
    else if (!open) await Promise.resolve();
  }
}

/** Sends, waiting (user-style) while Full; the peers in `also` are polled too. */
async function sendAll(conn: Connection, head: Uint8Array, body: Uint8Array | null, also: Connection[] = []): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const s = conn.trySend(head, body);
    if (s === SEND_OK) return;
    if (s === SEND_CLOSED) throw new Error(`${conn.transport}: closed while sending`);
    if (Date.now() > deadline) throw new Error("timed out sending (Full for 15 s)");
    for (const c of also) c.poll();
    await conn.wait(also.length > 0 ? 1 : 20);
  }
}

function record(conn: Connection, keep = false) {
  const got: Array<{ head: Uint8Array; body: Uint8Array }> = [];
  const closes: Array<HotpathError | null> = [];
  conn.setReceiver({
    onMessage(msg) {
      got.push({ head: msg.head.slice(), body: msg.body.slice() });
      if (!keep) msg.release();
    },
    onClose: (e) => void closes.push(e),
  });
  return { got, closes };
}

/** A timer every `everyMs`; stop() returns the longest time between two of its runs (or since the last). */
function watchTimerGaps(everyMs: number): { stop(): number } {
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(worst, performance.now() - last);
    },
  };
}

export function runWaitModeMatrix(fx: MatrixFixture): void {
  let echo: Peer;
  let rpcUrl: string;
  let rpc: Peer;
  beforeAll(async () => {
    echo = await fx.spawnPeer(["listen", fx.url()]);
    rpc = await fx.spawnRpcServer(fx.url());
    rpcUrl = rpc.ready.url;
  });
  afterAll(async () => {
    await echo?.kill();
    await rpc?.kill();
  });

  for (const mode of WAIT_MODES) {
    const wait = { mode };
    const dial = (segment?: object) => connect(echo.ready.url, { wait, segment });
    const inProcessPair = async (listenMax?: number) => {
      const l = await listen(fx.url(), { wait, maxMessageBytes: listenMax });
      const accepted = new Promise<Connection>((r) => l.onConnection(r));
      const a = await connect(l.url, { wait });
      return { l, a, b: await accepted };
    };

    describe(`${fx.name}, wait mode ${mode}`, () => {
      it("2: 2000 messages of varied sizes to a peer and back: whole, in order, exactly once", async () => {
        const conn = await dial();
        const r = record(conn);
        const sizes = [0, 1, 7, 32, 100, 1000, 4096, 65536, 200_000];
        for (let i = 0; i < 2000; i++) {
          await sendAll(conn, m.u32(i), new Uint8Array(sizes[i % sizes.length]!).fill(i & 0xff));
          conn.poll();
        }
        await drive([conn], () => r.got.length >= 2000, "2000 echoes");
        expect(r.got.length).toBe(2000);
        r.got.forEach((g, i) => {
          expect(m.readU32(g.head)).toBe(i);
          expect(g.body.length).toBe(sizes[i % sizes.length]!);
          if (g.body.length > 0) expect(g.body[0] === (i & 0xff) && g.body[g.body.length - 1] === (i & 0xff)).toBe(true);
        });
        conn.close();
      });

      it("4: held views keep their bytes while descriptors and slots are reused around them", async () => {
        const conn = await dial();
        const N = 1500; // > 256 descriptors and > 256 small slots: both are reused many times
        const held: Array<{ i: number; msg: RxMessage }> = [];
        let seed = 12345;
        const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
        let checked = 0;
        let wrong = 0;
        const check = (h: { i: number; msg: RxMessage }) => {
          const ok = m.readU32(h.msg.head) === h.i && h.msg.body.length === 8 + (h.i % 700) && h.msg.body.every((x) => x === (h.i & 0xff));
          if (!ok) wrong++;
          checked++;
          h.msg.release();
        };
        conn.setReceiver({
          onMessage(msg) {
            held.push({ i: m.readU32(msg.head), msg });
            // Keep up to 64 views; release a random one, or the oldest once it is far behind.
            if (held.length > 64) check(held.splice(held[0]!.i < held[held.length - 1]!.i - 128 ? 0 : rand(held.length), 1)[0]!);
          },
          onClose() {},
        });
        for (let i = 0; i < N; i++) {
          await sendAll(conn, m.u32(i), new Uint8Array(8 + (i % 700)).fill(i & 0xff));
          conn.poll();
        }
        await drive([conn], () => checked + held.length >= N, "every echo");
        for (const h of held.splice(0)) check(h);
        expect(checked).toBe(N);
        expect(wrong).toBe(0);
        conn.close();
      });

      it("5: a burst reports Full, everything sent Ok arrives, and a closed connection says Closed", async () => {
        const { l, a, b } = await inProcessPair();
        const rb = record(b);
        record(a);
        const body = new Uint8Array(1 << 20);
        let ok = 0;
        let full = 0;
        for (let i = 0; i < 200 && full === 0; i++) {
          const s = a.trySend(m.u32(ok), body);
          if (s === SEND_OK) ok++;
          else if (s === SEND_FULL) full++;
        }
        expect(full).toBe(1);
        await drive([b, a], () => rb.got.length === ok, "the burst");
        a.close();
        expect(a.trySend(text("x"), body)).toBe(SEND_CLOSED);
        expect(a.allocBuffer(10)).toBeNull();
        expect(await a.wait(10)).toBe(false);
        l.close(true);
      });

      it("7: the peer closes: this side sees it without the event loop, once", async () => {
        const conn = await dial();
        const r = record(conn);
        await sendAll(conn, text("close"), null);
        await drive([conn], () => conn.closed, "the peer's close");
        expect(r.closes.length).toBe(1);
        expect(r.closes[0]).toBeInstanceOf(TransportClosedError);
        expect(conn.trySend(text("x"))).toBe(SEND_CLOSED);
        expect(await conn.wait(100)).toBe(false);
      });

      it("7: either side of an in-process pair closes: the other sees TransportClosedError, both directions", async () => {
        for (const closer of ["a", "b"] as const) {
          const { l, a, b } = await inProcessPair();
          const ra = record(a);
          const rb = record(b);
          const [c, other, ro] = closer === "a" ? [a, b, rb] : [b, a, ra];
          await sendAll(c, text("last"), null);
          c.close();
          await drive([other], () => other.closed, `the ${closer} side's close`);
          // What was sent before the close still arrives, then the close, once.
          expect(ro.got.map((g) => td.decode(g.head))).toEqual(["last"]);
          expect(ro.closes.length).toBe(1);
          expect(ro.closes[0]).toBeInstanceOf(TransportClosedError);
          expect(other.trySend(text("x"))).toBe(SEND_CLOSED);
          l.close(true);
        }
      });

      it("7: the server's process (or Worker) dies with 256 calls pending: all fail with TransportClosedError", async () => {
        const own = await fx.spawnRpcServer(fx.url());
        try {
          const c = await rpcConnect(own.ready.url, { window: 256, wait, timeoutMs: 0 });
          const pending = Array.from({ length: 256 }, () => c.request(m.M_DELAY_ECHO, m.u32(60_000)).catch((e) => e));
          expect(c.inFlight).toBe(256);
          // Let the server take them in, then kill it and drive the client without yielding.
          const until = Date.now() + 50;
          while (Date.now() < until) if (c.poll() === 0) await c.wait(5);
          void own.kill(9);
          const deadline = Date.now() + 15_000;
          while (!c.closed) {
            if (Date.now() > deadline) throw new Error("the client never noticed the dead server");
            if (c.poll() === 0) await c.wait(5);
          }
          const errors = await Promise.all(pending);
          expect(errors.filter((e) => e instanceof TransportClosedError).length).toBe(256);
          expect(c.conn.closed).toBe(true);
          expect(c.conn.closeError).toBeInstanceOf(TransportClosedError);
        } finally {
          await own.kill(9);
        }
      });

      it("7: a client's process (or Worker) dies: the accepting side in this mode sees it", async () => {
        const l = await listen(fx.url(), { wait });
        let conn: Connection | undefined;
        let r: ReturnType<typeof record> | undefined;
        l.onConnection((c) => {
          conn = c;
          r = record(c);
        });
        const client = await fx.spawnPeer(["connect", l.url, "10"]);
        try {
          for (let i = 0; i < 5000 && conn === undefined; i++) await Bun.sleep(1); // accept needs the event loop
          await drive([conn!], () => r!.got.length === 10, "the client's messages");
          void client.kill(9);
          await drive([conn!], () => conn!.closed, "the client's death");
          expect(r!.closes.length).toBe(1);
          expect(r!.closes[0]).toBeInstanceOf(TransportClosedError);
        } finally {
          await client.kill(9);
          l.close(true);
        }
      });

      it("8: a skippable oversized message is reported to onOversized; the connection goes on", async () => {
        const { l, a, b } = await inProcessPair(1000);
        record(a);
        // A peer that ignores the limit it was told.
        Object.defineProperty(a, "caps", { value: { ...a.caps, peerMaxMessageBytes: a.caps.maxMessageBytes } });
        const got: string[] = [];
        const oversized: Array<[string, number]> = [];
        b.setReceiver({
          onMessage(msg) {
            got.push(td.decode(msg.head));
            msg.release();
          },
          onOversized: (h, len) => void oversized.push([td.decode(h), len]),
          onClose() {},
        });
        for (const [h, len] of [["one", 10], ["big", 5000], ["two", 1000]] as const) await sendAll(a, text(h), new Uint8Array(len), [b]);
        await drive([b, a], () => got.length === 2, "the messages around the oversized one");
        expect(got).toEqual(["one", "two"]);
        expect(oversized).toEqual([["big", 5000]]);
        expect(b.closed).toBe(false);
        // Its slot and descriptor came back: the ring keeps flowing.
        for (let i = 0; i < 600; i++) await sendAll(a, text("more"), new Uint8Array(500), [b]);
        await drive([b, a], () => got.length === 602, "600 more");
        l.close(true);
      });

      it("8: a receiver that throws closes the connection with the error; nothing escapes poll()", async () => {
        const { l, a, b } = await inProcessPair();
        const ra = record(a);
        const closes: Array<HotpathError | null> = [];
        b.setReceiver({
          onMessage() {
            throw new RangeError("receiver bug 17");
          },
          onClose: (e) => void closes.push(e),
        });
        await sendAll(a, text("boom"), new Uint8Array(3000));
        await drive([b, a], () => b.closed && a.closed, "both sides closed");
        expect(closes.length).toBe(1);
        expect(closes[0]).toBeInstanceOf(ProtocolError);
        expect(closes[0]!.message).toContain("receiver bug 17");
        expect(ra.closes[0]).toBeInstanceOf(TransportClosedError);
        l.close(true);
      });

      it("9: an idle wait() times out with false, parking instead of spinning (spin mode: by design it spins)", async () => {
        const { l, a, b } = await inProcessPair();
        record(a);
        record(b);
        const before = process.cpuUsage();
        const t0 = performance.now();
        const ready = await a.wait(300);
        const wallMs = performance.now() - t0;
        const cpu = process.cpuUsage(before);
        expect(ready).toBe(false);
        expect(wallMs).toBeGreaterThanOrEqual(250);
        if (mode !== "spin") expect((cpu.user + cpu.system) / 1000).toBeLessThan(wallMs / 2);
        l.close(true);
      });

      it("9: a waiting side wakes when the peer sends", async () => {
        const conn = await dial();
        const r = record(conn);
        await sendAll(conn, text("later:30"), null);
        let woke = false;
        const deadline = Date.now() + 10_000;
        while (!woke && Date.now() < deadline) woke = (await conn.wait(5000)) && (conn.poll() > 0 || r.got.length > 0);
        expect(woke).toBe(true);
        expect(r.got.map((g) => td.decode(g.head))).toEqual(["rung"]);
        conn.close();
      });

      it("a sender that meets Full is woken when the receiver frees room (no lost wakeup)", async () => {
        // A small ring and slab each way, and a peer that only consumes: every send soon meets Full.
        const conn = await dial({ ringSlots: 8, sizeClasses: [{ slotBytes: 4096, slotCount: 4 }] });
        const r = record(conn);
        await sendAll(conn, text("sink"), null);
        const N = 3000;
        let timedOut = 0;
        for (let i = 0; i < N && timedOut < 3; ) {
          if (conn.trySend(m.u32(i), new Uint8Array(1000)) === SEND_OK) i++;
          else if (!(await conn.wait(1000))) timedOut++;
        }
        expect(timedOut).toBe(0);
        await sendAll(conn, text("count"), null);
        await drive([conn], () => r.got.length > 0, "the count");
        expect(m.readU32(r.got[0]!.body)).toBe(N);
        conn.close();
      });

      if (mode === "async" || mode === "adaptive") {
        it("the event loop keeps running while an in-process pair echoes back and forth (timers are never starved)", async () => {
          const { l, a, b } = await inProcessPair();
          const h = new Uint8Array(8);
          const t0 = performance.now();
          let trips = 0;
          let running = true;
          // Each side answers from its delivery callback: the chain never waits for anything.
          b.setReceiver({ onMessage: (msg) => void (msg.release(), running && b.trySend(h)), onClose() {} });
          a.setReceiver({
            onMessage(msg) {
              msg.release();
              trips++;
              if (performance.now() - t0 > 1000) running = false;
              if (running) a.trySend(h);
            },
            onClose() {},
          });
          const gaps = watchTimerGaps(20);
          for (let i = 0; i < 16; i++) a.trySend(h);
          while (running) await Bun.sleep(5);
          const worstGapMs = gaps.stop();
          console.log(`${fx.name} ${mode}: ${trips} in-process round trips in 1 s, worst gap of a 20 ms timer ${worstGapMs.toFixed(1)} ms`);
          expect(trips).toBeGreaterThan(0);
          // A guard against starvation (the whole second), not a performance bound.
          expect(worstGapMs).toBeLessThan(500);
          l.close(true);
        });

        it("the event loop keeps running while 64 calls stay in flight (timers are never starved)", async () => {
          const c = await rpcConnect(rpcUrl, { window: 64, wait });
          const gaps = watchTimerGaps(20);
          const end = performance.now() + 1000;
          let calls = 0;
          const data = new Uint8Array(64);
          await Promise.all(
            Array.from({ length: 64 }, async () => {
              while (performance.now() < end) {
                await c.request(m.M_ECHO, data);
                calls++;
              }
            }),
          );
          const worstGapMs = gaps.stop();
          c.close();
          console.log(`${fx.name} ${mode}: ${calls} calls in 1 s at 64 in flight, worst gap of a 20 ms timer ${worstGapMs.toFixed(1)} ms`);
          expect(calls).toBeGreaterThan(0);
          // A guard against starvation (seconds), not a performance bound.
          expect(worstGapMs).toBeLessThan(500);
        });
      }
    });
  }
}
