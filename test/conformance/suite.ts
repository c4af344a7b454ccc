/**
 * The conformance suite: written once against the Transport contract (src/transport/
 * transport.ts, items 1–9) and the RPC semantics, instantiated per transport by a fixture.
 *
 * Transport-level tests run a listener and a connection in this process; RPC tests talk to
 * the test service (methods.ts) served by a separate process (peer-server.ts).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  CancelledError,
  Client,
  ConnectError,
  HotpathError,
  ProtocolError,
  RemoteError,
  SEND_CLOSED,
  SEND_FULL,
  SEND_OK,
  Server,
  TimeoutError,
  TransportClosedError,
  UsageError,
  connect,
  defineService,
  listen,
  msgpack,
  rpcConnect,
  struct,
  wire,
  type Connection,
  type Listener,
  type RxMessage,
} from "../../src/index.ts";
import type { ConnectOptions, ListenOptions } from "../../src/contract/transport.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import * as m from "./methods.ts";
import { runRobustness } from "./robust.ts";

export interface Fixture {
  /** The URL scheme. */
  name: string;
  /** How the describe block is titled (default: the scheme). */
  label?: string;
  /** A URL to listen on; each call gives one no other test uses. */
  listenUrl(): string;
  /** Environment for peer processes (e.g. UCX_TLS). */
  env?: Record<string, string>;
  /** A URL nothing listens on. */
  refusedUrl(): Promise<string>;
  /** A URL whose connect never completes, and how to tear it down. */
  blackhole(): Promise<{ url: string; close(): void }>;
  /** Starts the test service on `url` somewhere else: another process (default) or a Worker. */
  spawnServer?(url: string): Promise<Peer>;
  /** shm / inproc: the wait policy of in-process pairs and clients (the suite runs once per mode). */
  wait?: ConnectOptions["wait"];
  /** Transport options of the in-process pairs' listen and connect (rdma: a credit window as deep as the views the tests hold). */
  pairOptions?: ConnectOptions & ListenOptions;
  /** Transport options of the RPC clients of the test service (rdma: a send queue as deep as the sends made without polling). */
  clientOptions?: ConnectOptions;
}

const PEER_SERVER = new URL("./peer-server.ts", import.meta.url).pathname;

/** A connected pair inside this process: `a` dialled, `b` accepted. */
async function pair(fx: Fixture, opts: { maxMessageBytes?: number; listenMax?: number } = {}) {
  const listener = await listen(fx.listenUrl(), { ...fx.pairOptions, maxMessageBytes: opts.listenMax, wait: fx.wait });
  const accepted = new Promise<Connection>((resolve) => listener.onConnection(resolve));
  const a = await connect(listener.url, { ...fx.pairOptions, maxMessageBytes: opts.maxMessageBytes, wait: fx.wait });
  const b = await accepted;
  return { listener, a, b };
}

/** Collects messages (copied) and the close error of a connection. */
function collect(conn: Connection, keep = false) {
  const got: Array<{ head: Uint8Array; body: Uint8Array; msg: RxMessage }> = [];
  let closed: HotpathError | null | undefined;
  conn.setReceiver({
    onMessage(msg) {
      got.push({ head: msg.head.slice(), body: msg.body.slice(), msg });
      if (!keep) msg.release();
    },
    onClose(e) {
      closed = e;
    },
  });
  return {
    got,
    get closed() {
      return closed;
    },
  };
}

async function until(cond: () => boolean, what: string, timeoutMs = 10000, conn?: Connection): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    conn?.poll();
    await Bun.sleep(1);
  }
}

const te = new TextEncoder();
const head = (s: string) => te.encode(s);

export function runConformance(fx: Fixture): void {
  describe(`conformance: ${fx.label ?? fx.name}`, () => {
    let peer: Peer;
    const open: Array<{ close(): void }> = [];

    const startServer = (url: string) => (fx.spawnServer ? fx.spawnServer(url) : spawnPeer(PEER_SERVER, [url], fx.env));
    beforeAll(async () => {
      // Settings this process's own transport reads from the environment (e.g. UCX_TLS).
      if (fx.env) Object.assign(process.env, fx.env);
      peer = await startServer(fx.listenUrl());
    });
    afterAll(async () => {
      for (const o of open.splice(0)) o.close();
      await peer?.kill();
    });

    async function client(window = 64): Promise<Client<any>> {
      const c = await rpcConnect(peer.ready.url, { ...fx.clientOptions, window, wait: fx.wait });
      open.push(c);
      return c;
    }

    // ---------------------------------------------------------------- contract items

    describe("1: connect/listen fail with typed errors, never hang", () => {
      test("nothing listening: ConnectError naming the URL", async () => {
        const url = await fx.refusedUrl();
        const e = await connect(url, { connectTimeoutMs: 3000 }).catch((x) => x);
        expect(e).toBeInstanceOf(ConnectError);
        expect(e.message).toContain(new URL(url).host);
      });
      test("a peer that never answers: ConnectError after connectTimeoutMs", async () => {
        const hole = await fx.blackhole();
        try {
          const e = await connect(hole.url, { connectTimeoutMs: 200 }).catch((x) => x);
          expect(e).toBeInstanceOf(ConnectError);
          expect(e.message).toContain("200 ms");
        } finally {
          hole.close();
        }
      });
      test("a malformed URL is a UsageError", async () => {
        await expect(connect("not a url")).rejects.toBeInstanceOf(UsageError);
        await expect(listen(`${fx.name}://`)).rejects.toBeInstanceOf(HotpathError);
      });
      test("listen reports a URL that clients can connect to", async () => {
        const { listener, a, b } = await pair(fx);
        expect(listener.url.startsWith(`${fx.name}://`)).toBe(true);
        expect(a.closed).toBe(false);
        expect(b.closed).toBe(false);
        a.close();
        listener.close(true);
      });
    });

    describe("2: whole, in order, exactly once", () => {
      test("2000 messages of varied sizes arrive whole and in order, both ways", async () => {
        const { listener, a, b } = await pair(fx);
        const atB = collect(b);
        const atA = collect(a);
        const sizes = [0, 1, 7, 32, 100, 1000, 4096, 65536, 200_000];
        let sent = 0;
        for (let i = 0; i < 2000; i++) {
          const body = new Uint8Array(sizes[i % sizes.length]!).fill(i & 0xff);
          const h = m.u32(i);
          while (a.trySend(h, body) === SEND_FULL) await a.wait(10);
          while (b.trySend(h, body) === SEND_FULL) await b.wait(10);
          sent++;
        }
        await until(() => atB.got.length === sent && atA.got.length === sent, "all messages", 20000, a);
        for (const side of [atA, atB]) {
          side.got.forEach((g, i) => {
            expect(m.readU32(g.head)).toBe(i);
            expect(g.body.length).toBe(sizes[i % sizes.length]!);
            if (g.body.length > 0) {
              expect(g.body[0]).toBe(i & 0xff);
              expect(g.body[g.body.length - 1]).toBe(i & 0xff);
            }
          });
        }
        a.close();
        listener.close(true);
      });
    });

    describe("3: a writable buffer in transport memory, sent without another copy", () => {
      test("allocBuffer + trySendBuffer delivers the bytes written into the buffer", async () => {
        const { listener, a, b } = await pair(fx);
        const atB = collect(b);
        const buf = a.allocBuffer(100_000)!;
        expect(buf).toBeInstanceOf(Uint8Array);
        expect(buf.length).toBeGreaterThanOrEqual(100_000);
        for (let i = 0; i < 100_000; i++) buf[i] = (i * 7) & 0xff;
        // lenBytes sends a prefix of the buffer allocBuffer() handed out.
        expect(a.trySendBuffer(head("buf"), buf, 60_000)).toBe(SEND_OK);
        await until(() => atB.got.length === 1, "buffer message", 10000, a);
        expect(new TextDecoder().decode(atB.got[0]!.head)).toBe("buf");
        expect(atB.got[0]!.body.length).toBe(60_000);
        expect(m.checksum(atB.got[0]!.body)).toBe(m.checksum(buf.subarray(0, 60_000)));
        a.close();
        listener.close(true);
      });
    });

    describe("4: received views stay valid until released; release is idempotent", () => {
      test("held views keep their bytes while later messages arrive", async () => {
        const { listener, a, b } = await pair(fx);
        const atB = collect(b, true);
        for (let i = 0; i < 200; i++) {
          while (a.trySend(m.u32(i), new Uint8Array(512).fill(i & 0xff)) === SEND_FULL) await a.wait(10);
        }
        await until(() => atB.got.length === 200, "200 messages", 10000, a);
        // The live views (not the copies) still hold each message's own bytes.
        atB.got.forEach((g, i) => {
          expect(m.readU32(g.msg.head)).toBe(i);
          expect(g.msg.body.every((x) => x === (i & 0xff))).toBe(true);
        });
        for (const g of atB.got) {
          g.msg.release();
          g.msg.release();
        }
        a.close();
        listener.close(true);
      });
      test("held views keep their bytes while descriptors and slots are reused around them", async () => {
        const { listener, a, b } = await pair(fx);
        collect(a);
        // Far more messages than a ring or slab holds, while up to 64 views stay held and are
        // released in a seeded random order (the oldest once it falls 128 behind).
        const N = 1500;
        const held: Array<{ i: number; msg: RxMessage }> = [];
        let seed = 4242;
        const rand = (k: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % k;
        let checked = 0;
        let wrong = 0;
        const check = (h: { i: number; msg: RxMessage }) => {
          if (m.readU32(h.msg.head) !== h.i || h.msg.body.length !== 8 + (h.i % 700) || !h.msg.body.every((x) => x === (h.i & 0xff))) wrong++;
          checked++;
          h.msg.release();
          h.msg.release();
        };
        b.setReceiver({
          onMessage(msg) {
            held.push({ i: m.readU32(msg.head), msg });
            if (held.length > 64) check(held.splice(held[0]!.i < held[held.length - 1]!.i - 128 ? 0 : rand(held.length), 1)[0]!);
          },
          onClose() {},
        });
        for (let i = 0; i < N; i++) {
          while (a.trySend(m.u32(i), new Uint8Array(8 + (i % 700)).fill(i & 0xff)) === SEND_FULL) await a.wait(10);
        }
        await until(() => checked + held.length === N, `${N} messages`, 20000, a);
        for (const h of held.splice(0)) check(h);
        expect(checked).toBe(N);
        expect(wrong).toBe(0);
        a.close();
        listener.close(true);
      });
    });

    describe("5: sending never throws for transport conditions: Ok, Full or Closed", () => {
      test("a burst reports Full, everything sent Ok arrives, and a closed connection says Closed", async () => {
        const { listener, a, b } = await pair(fx);
        const atB = collect(b);
        const body = new Uint8Array(1 << 20);
        let ok = 0;
        let full = 0;
        for (let i = 0; i < 200 && full === 0; i++) {
          const s = a.trySend(m.u32(ok), body);
          if (s === SEND_OK) ok++;
          else if (s === SEND_FULL) full++;
        }
        expect(full).toBe(1);
        await until(() => atB.got.length === ok, "burst delivered", 20000, a);
        a.close();
        expect(a.trySend(head("x"), body)).toBe(SEND_CLOSED);
        expect(a.allocBuffer(10)).toBeNull();
        listener.close(true);
      });
    });

    describe("6: capabilities are declared", () => {
      test("caps are present, consistent and enforced", async () => {
        const { listener, a, b } = await pair(fx, { maxMessageBytes: 1 << 20 });
        for (const c of [a, b]) {
          expect(typeof c.caps.zeroCopy).toBe("boolean");
          expect(typeof c.caps.rma).toBe("boolean");
          expect(typeof c.caps.sameHostOnly).toBe("boolean");
          expect(c.caps.maxInlineBytes).toBeLessThanOrEqual(c.caps.maxMessageBytes);
          expect(c.caps.maxHeadBytes).toBeGreaterThanOrEqual(wire.WIRE_HEADER_BYTES);
        }
        expect(a.caps.maxMessageBytes).toBe(1 << 20);
        expect(() => a.trySend(head("big"), new Uint8Array((1 << 20) + 1))).toThrow(UsageError);
        a.close();
        listener.close(true);
      });
      test("limits are exchanged: a send above the peer's maxMessageBytes is refused locally, naming both limits", async () => {
        const { listener, a, b } = await pair(fx, { listenMax: 1000, maxMessageBytes: 1 << 20 });
        const atB = collect(b);
        collect(a);
        expect(a.caps.peerMaxMessageBytes).toBe(1000);
        expect(b.caps.peerMaxMessageBytes).toBe(1 << 20);
        const e = (() => {
          try {
            return a.trySend(head("big"), new Uint8Array(1001));
          } catch (x) {
            return x as Error;
          }
        })();
        expect(e).toBeInstanceOf(UsageError);
        expect((e as Error).message).toContain("1000");
        expect((e as Error).message).toContain(String(1 << 20));
        expect(a.trySend(head("ok"), new Uint8Array(1000))).toBe(SEND_OK);
        await until(() => atB.got.length === 1, "the message within the limit", 10000, a);
        expect(a.closed).toBe(false);
        a.close();
        listener.close(true);
      });
      test("a receiver without onOversized aborts on an oversized message from a peer that ignores the limit", async () => {
        const { listener, a, b } = await pair(fx, { listenMax: 1000 });
        const atB = collect(b);
        const atA = collect(a);
        // A peer that ignores the limit it was told (transports that cannot send past it skip this).
        Object.defineProperty(a, "caps", { value: { ...a.caps, peerMaxMessageBytes: a.caps.maxMessageBytes } });
        expect(a.trySend(head("ok"), new Uint8Array(1000))).toBe(SEND_OK);
        let sent: number;
        try {
          sent = a.trySend(head("big"), new Uint8Array(1001));
        } catch {
          a.close();
          listener.close(true);
          return;
        }
        expect(sent).toBe(SEND_OK);
        await until(() => atB.closed !== undefined, "receiver abort", 10000, a);
        expect(atB.got.length).toBe(1);
        expect(atB.closed).toBeInstanceOf(ProtocolError);
        await until(() => atA.closed !== undefined, "sender sees close", 10000, a);
        expect(atA.closed).toBeInstanceOf(TransportClosedError);
        listener.close(true);
      });
    });

    describe("7: closing either side fails pending operations with TransportClosedError", () => {
      test("the accepting side closes: the dialling side's receiver and sends see it", async () => {
        const { listener, a, b } = await pair(fx);
        const atA = collect(a);
        collect(b);
        b.close();
        await until(() => atA.closed !== undefined, "close seen", 5000, a);
        expect(atA.closed).toBeInstanceOf(TransportClosedError);
        expect(a.closed).toBe(true);
        expect(a.trySend(head("x"))).toBe(SEND_CLOSED);
        expect(await a.wait(1000)).toBe(false);
        listener.close(true);
      });
      test("client closes with requests pending: they reject with TransportClosedError", async () => {
        const c = await rpcConnect(peer.ready.url);
        const pending = [1, 2, 3].map(() => c.request(m.M_DELAY_ECHO, m.u32(5000)).catch((e) => e));
        await Bun.sleep(20);
        c.close();
        for (const e of await Promise.all(pending)) expect(e).toBeInstanceOf(TransportClosedError);
        expect(await c.request(m.M_ECHO, new Uint8Array(1)).catch((e) => e)).toBeInstanceOf(TransportClosedError);
      });
      test("server closes the session with calls pending: requests reject, hot-path calls complete with the error", async () => {
        const c = await client();
        const errors: Array<HotpathError | null> = [];
        c.onResponse = (_ud, _data, err) => errors.push(err);
        expect(c.call(m.M_DELAY_ECHO, m.u32(5000), 1)).toBe(SEND_OK);
        expect(c.call(m.M_DELAY_ECHO, m.u32(5000), 2)).toBe(SEND_OK);
        const pending = c.request(m.M_DELAY_ECHO, m.u32(5000)).catch((e) => e);
        const closing = c.request(m.M_CLOSE_SESSION).catch((e) => e);
        expect(await pending).toBeInstanceOf(TransportClosedError);
        expect(await closing).toBeInstanceOf(TransportClosedError);
        expect(c.poll()).toBe(2);
        expect(errors.every((e) => e instanceof TransportClosedError)).toBe(true);
        expect(c.inFlight).toBe(0);
      });
      test("the server's process (or Worker) dies: pending requests reject with TransportClosedError", async () => {
        const own = await startServer(fx.listenUrl());
        try {
          const c = await rpcConnect(own.ready.url);
          const pending = Array.from({ length: 16 }, () => c.request(m.M_DELAY_ECHO, m.u32(10000)).catch((e) => e));
          await Bun.sleep(50);
          await own.kill(9);
          for (const e of await Promise.all(pending)) expect(e).toBeInstanceOf(TransportClosedError);
          c.close();
        } finally {
          await own.kill();
        }
      });
    });

    describe("8: a malformed frame aborts that connection with ProtocolError; others keep working", () => {
      test("a request whose header lengths disagree: that session aborts, the server keeps serving", async () => {
        const good = await client();
        const bad = await connect(peer.ready.url);
        const atBad = collect(bad);
        const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
        wire.writeWireHeader(h, wire.KIND_REQUEST, m.M_ECHO, 0, 1, 0, 999);
        expect(bad.trySend(h, new Uint8Array(10))).toBe(SEND_OK);
        await until(() => atBad.closed !== undefined, "server aborts the bad session", 5000, bad);
        expect(atBad.closed).toBeInstanceOf(TransportClosedError);
        expect(await good.request(m.M_ECHO, head("still here"))).toEqual(head("still here"));
      });
      test("a hostile server: a response for a call never issued rejects pending calls with ProtocolError", async () => {
        const listener = await listen(fx.listenUrl());
        listener.onConnection((conn) => {
          conn.setReceiver({
            onMessage(msg) {
              msg.release();
              const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
              wire.writeWireHeader(h, wire.KIND_RESPONSE, m.M_ECHO, 7, 12345, 0, 0);
              conn.trySend(h);
            },
            onClose() {},
          });
        });
        try {
          const c = await rpcConnect(listener.url);
          const e = await c.request(m.M_ECHO, head("hi"), { timeoutMs: 5000 }).catch((x) => x);
          expect(e).toBeInstanceOf(ProtocolError);
          expect(e.message).toContain("never issued");
          expect(c.closed).toBe(true);
        } finally {
          listener.close(true);
        }
      });
      test("a hostile server: a header claiming more data than the body aborts the client", async () => {
        const listener = await listen(fx.listenUrl());
        listener.onConnection((conn) => {
          conn.setReceiver({
            onMessage(msg) {
              const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
              wire.writeWireHeader(h, wire.KIND_RESPONSE, m.M_ECHO, wire.wireCallSlot(msg.headBuf, msg.headOffset), wire.wireCallGen(msg.headBuf, msg.headOffset), 0, 100);
              msg.release();
              conn.trySend(h, new Uint8Array(3));
            },
            onClose() {},
          });
        });
        try {
          const c = await rpcConnect(listener.url);
          const e = await c.request(m.M_ECHO, head("hi"), { timeoutMs: 5000 }).catch((x) => x);
          expect(e).toBeInstanceOf(ProtocolError);
          expect(e.message).toContain("100 data bytes");
        } finally {
          listener.close(true);
        }
      });
    });

    describe("9: waiting parks instead of burning a core", () => {
      test("an idle wait() uses little CPU and times out with false", async () => {
        const { listener, a, b } = await pair(fx);
        collect(a);
        collect(b);
        a.setWaitPolicy({ spinNs: 50_000 });
        const before = process.cpuUsage();
        const t0 = performance.now();
        const ready = await a.wait(300);
        const wallMs = performance.now() - t0;
        const cpu = process.cpuUsage(before);
        const cpuMs = (cpu.user + cpu.system) / 1000;
        expect(ready).toBe(false);
        expect(wallMs).toBeGreaterThanOrEqual(250);
        // A spinning wait would use ~300 ms of CPU; a parked one a small fraction of that.
        expect(cpuMs).toBeLessThan(wallMs / 2);
        a.close();
        listener.close(true);
      });
      test("a parked wait() wakes when a message arrives", async () => {
        const { listener, a, b } = await pair(fx);
        const atA = collect(a);
        collect(b);
        const waiting = a.wait(5000);
        setTimeout(() => b.trySend(head("ring")), 20);
        expect(await waiting).toBe(true);
        await until(() => atA.got.length === 1, "message after wake", 5000, a);
        a.close();
        listener.close(true);
      });
    });

    // ---------------------------------------------------------------- RPC semantics

    describe("rpc", () => {
      test("10k calls with 64 in flight, each answered with its own bytes", async () => {
        const c = await client(64);
        const N = 10_000;
        let done = 0;
        let wrong = 0;
        c.onResponse = (i: number, data, err) => {
          if (err !== null || data.length !== 8 || m.readU32(data) !== i || m.readU32(data, 4) !== (i ^ 0x5a5a5a5a) >>> 0) wrong++;
          done++;
        };
        const req = new Uint8Array(8);
        let next = 0;
        while (done < N) {
          while (next < N) {
            new DataView(req.buffer).setUint32(0, next, true);
            new DataView(req.buffer).setUint32(4, (next ^ 0x5a5a5a5a) >>> 0, true);
            if (c.call(m.M_ECHO, req, next) !== SEND_OK) break;
            next++;
          }
          expect(c.inFlight).toBeLessThanOrEqual(64);
          if (c.poll() === 0) await c.wait(1000);
        }
        expect(wrong).toBe(0);
        expect(c.inFlight).toBe(0);
      });

      test("out-of-order replies reach their own calls", async () => {
        const c = await client();
        const n = 16;
        const replies = await Promise.all(
          Array.from({ length: n }, (_, i) => c.request(m.M_REVERSE, new Uint8Array([n, i]))),
        );
        replies.forEach((r, i) => expect([...r]).toEqual([n, i]));
      });

      test("a late response after a timeout never completes a different call", async () => {
        const c = await client(1);
        const slow = m.u32(300);
        const e = await c.request(m.M_DELAY_ECHO, slow, { timeoutMs: 50 }).catch((x) => x);
        expect(e).toBeInstanceOf(TimeoutError);
        // The only slot is reused at once; the first call's response arrives while this one waits.
        const second = new Uint8Array(8);
        second.set(m.u32(600));
        second.set([9, 9, 9, 9], 4);
        const r = await c.request(m.M_DELAY_ECHO, second, { timeoutMs: 5000 });
        expect([...r]).toEqual([...second]);
        expect(c.lateResponses).toBe(1);
      });

      test("cancellation: abort rejects with CancelledError and the handler's signal fires", async () => {
        const c = await client();
        const before = m.readU32(await c.request(m.M_CANCEL_COUNT));
        const ctl = new AbortController();
        const p = c.request(m.M_WAIT_CANCEL, new Uint8Array(0), { signal: ctl.signal });
        await Bun.sleep(30);
        ctl.abort(new Error("user gave up"));
        const e = await p.catch((x) => x);
        expect(e).toBeInstanceOf(CancelledError);
        let after = before;
        for (let i = 0; i < 200 && after === before; i++) {
          after = m.readU32(await c.request(m.M_CANCEL_COUNT));
          if (after === before) await Bun.sleep(5);
        }
        expect(after).toBe(before + 1);
        const pre = new AbortController();
        pre.abort();
        await expect(c.request(m.M_ECHO, new Uint8Array(1), { signal: pre.signal })).rejects.toBeInstanceOf(CancelledError);
      });

      test("a handler that throws reaches the caller as RemoteError; the server keeps serving", async () => {
        const c = await client();
        const e = await c.request(m.M_THROW, head("bad input 42")).catch((x) => x);
        expect(e).toBeInstanceOf(RemoteError);
        expect(e.remoteName).toBe("TypeError");
        expect(e.message).toContain("bad input 42");
        expect(await c.request(m.M_ECHO, head("ok"))).toEqual(head("ok"));
      });

      test("an unknown method gets an error response", async () => {
        const c = await client();
        const e = await c.request(m.M_UNKNOWN, head("?")).catch((x) => x);
        expect(e).toBeInstanceOf(RemoteError);
        expect(e.code).toBe("E_UNKNOWN_METHOD");
        expect(e.message).toContain("999");
        expect(await c.request(m.M_ECHO, head("ok"))).toEqual(head("ok"));
      });

      test("the application header travels apart from the data", async () => {
        const c = await client();
        const app = struct({ offset: "u64", len: "u64", flags: "u32", reserved: "u32" });
        const hdr = app.encode({ offset: 1n << 40n, len: 4096n, flags: 3, reserved: 0 });
        const r = await c.request(m.M_APP_HEADER, new Uint8Array(100), { appHeader: hdr });
        expect(app.decode(r)).toEqual({ offset: 1n << 40n, len: 4096n, flags: 3, reserved: 0 });
      });

      test("one-way messages arrive and get no response", async () => {
        const c = await client();
        const base = await c.request(m.M_RECORD_COUNT);
        for (let i = 0; i < 100; i++) expect(c.send(m.M_RECORD, new Uint8Array(10))).toBe(SEND_OK);
        const r = await c.request(m.M_RECORD_COUNT);
        expect(m.readU32(r) - m.readU32(base)).toBe(100);
        expect(m.readU32(r, 4) - m.readU32(base, 4)).toBe(1000);
        expect(c.inFlight).toBe(0);
      });

      test("1 MiB and 16 MiB requests arrive intact", async () => {
        const c = await client();
        for (const size of [1 << 20, 16 << 20]) {
          const data = new Uint8Array(size);
          for (let i = 0; i < size; i += 4093) data[i] = i & 0xff;
          const r = await c.request(m.M_DIGEST, data);
          expect(m.readU32(r)).toBe(size);
          expect(m.readU32(r, 4)).toBe(m.checksum(data));
          const echo = await c.request(m.M_ECHO, data);
          expect(echo.length).toBe(size);
          expect(m.checksum(echo)).toBe(m.checksum(data));
        }
      });

      test("request() waits for a free slot when the window is full", async () => {
        const c = await client(2);
        const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => c.request(m.M_ECHO, new Uint8Array([i]))));
        rs.forEach((r, i) => expect([...r]).toEqual([i]));
      });

      test("call() reports Full when the window is used up", async () => {
        const c = await client(4);
        let completions = 0;
        c.onResponse = () => completions++;
        for (let i = 0; i < 4; i++) expect(c.call(m.M_DELAY_ECHO, m.u32(20), i)).toBe(SEND_OK);
        expect(c.call(m.M_ECHO, new Uint8Array(1), 99)).toBe(SEND_FULL);
        while (completions < 4) if (c.poll() === 0) await c.wait(1000);
        expect(c.call(m.M_ECHO, new Uint8Array(1), 5)).toBe(SEND_OK);
      });

      test("typed service: struct and msgpack codecs end to end", async () => {
        const Svc = defineService({
          echo: { id: m.M_ECHO, request: msgpack<{ key: string; n: number[] }>(), response: msgpack<{ key: string; n: number[] }>() },
          header: { id: m.M_DIGEST, request: struct({ a: "u8", b: "u64", c: "f64" }), response: struct({ len: "u32", sum: "u32" }) },
        });
        const c = await rpcConnect(peer.ready.url, { service: Svc });
        open.push(c);
        expect(await c.svc.echo({ key: "k", n: [1, 2, 3] })).toEqual({ key: "k", n: [1, 2, 3] });
        const d = await c.svc.header({ a: 1, b: 2n, c: 0.5 });
        expect(d.len).toBe(17);
      });
    });

    describe("rpc hot-path server (in process)", () => {
      test("poll/recv/reply with zero-copy views; a second reply is a UsageError", async () => {
        const listener: Listener = await listen(fx.listenUrl());
        const server = new Server();
        server.attach(listener);
        const c = await rpcConnect(listener.url);
        try {
          const p = c.request(m.M_ECHO, head("abc"), { appHeader: head("hdr") });
          let h = null;
          while ((h = server.recv()) === null) {
            server.poll();
            await server.wait(100);
          }
          expect(h.method).toBe(m.M_ECHO);
          expect(new TextDecoder().decode(h.data)).toBe("abc");
          expect(new TextDecoder().decode(h.appHeader)).toBe("hdr");
          const upper = h.data.map((x) => x - 32);
          expect(h.reply(upper)).toBe(SEND_OK);
          expect(() => h!.reply(upper)).toThrow(UsageError);
          expect(() => h!.data).toThrow(UsageError);
          expect(await p).toEqual(head("ABC"));
        } finally {
          c.close();
          server.close();
        }
      });
      test("callBuffer / replyBuffer: transport buffers sent without a copy, bytes intact", async () => {
        const listener: Listener = await listen(fx.listenUrl());
        const server = new Server();
        server.attach(listener);
        const c = await rpcConnect(listener.url);
        try {
          const got: Uint8Array[] = [];
          c.onResponse = (_u, data, err) => {
            expect(err).toBeNull();
            got.push(data.slice());
          };
          const buf = c.allocBuffer(5000)!;
          for (let i = 0; i < 5000; i++) buf[i] = i & 0xff;
          expect(c.callBuffer(m.M_ECHO, buf, 1)).toBe(SEND_OK);
          let h = null;
          while ((h = server.recv()) === null) {
            server.poll();
            await server.wait(100);
          }
          expect(m.checksum(h.data)).toBe(m.checksum(Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff)));
          const out = h.allocReply(3000)!;
          out.fill(0xab);
          expect(h.replyBuffer(out)).toBe(SEND_OK);
          expect(() => h!.replyBuffer(out)).toThrow(UsageError);
          while (got.length === 0) if (c.poll() === 0) await c.wait(100);
          expect(got[0]!.length).toBe(3000);
          expect(got[0]!.every((x) => x === 0xab)).toBe(true);
        } finally {
          c.close();
          server.close();
        }
      });
    });

    runRobustness({ name: fx.name, listenUrl: fx.listenUrl, peer: () => peer });
  });
}
