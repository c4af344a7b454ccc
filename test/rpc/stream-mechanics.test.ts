/**
 * Stream mechanics in one process (issue 16): the credit rules (stream/credit.ts) on their own;
 * a hostile client (raw frames) that sends past its credit or a second START on a live stream
 * has its session aborted with ProtocolError while the server serves others; the hot path
 * (trySend until the credit is used, allocBuffer + trySendBuffer without a copy); a transport
 * that is often full (every stream's messages still go, in order, calls between them too); client
 * interceptors' `stream` members in order (the first outermost, metadata changed, the stream
 * wrapped, a refusal thrown) and server interceptors around stream handlers; a message larger
 * than the peer accepts is refused at its sender, and one a transport skipped as oversized
 * fails its stream (MessageTooLargeError) on either side; a registered error class thrown by a
 * handler comes back as itself; a drain waits for open streams;
 * streams count in client and server metrics.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Client, MessageTooLargeError, Metadata, ProtocolError, RemoteError, registerError, unregisterError, SEND_FULL, SEND_OK, UsageError, connect, rpcConnect, serve, type Connection, type HotpathError } from "../../src/index.ts";
import { sendLimit } from "../../src/contract/transport.ts";
import { Credit, STREAM_INITIAL_CREDIT, creditBody } from "../../src/rpc/stream/credit.ts";
import { streamHandler } from "../../src/rpc/stream/server-stream.ts";
import type { ServerStream } from "../../src/rpc/stream/types.ts";
import { KIND_STREAM_MSG, KIND_STREAM_START, WIRE_HEADER_BYTES, writeWireHeader } from "../../src/rpc/wire.ts";
import { until } from "../helpers/peer.ts";

let n = 0;
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

describe("credit accounting", () => {
  test("a sender sends while messages and bytes credit are > 0; bytes may go negative by one message", () => {
    const c = new Credit({ messages: 3, bytes: 100 }, STREAM_INITIAL_CREDIT, { messages: 16, bytes: 1000 });
    expect(c.canSend()).toBe(true);
    c.spent(60);
    expect(c.canSend()).toBe(true);
    c.spent(60); // 100 - 120 = -20: this message went, the next waits
    expect(c.sendBytes).toBe(-20);
    expect(c.canSend()).toBe(false);
    c.granted(0, 20);
    expect(c.canSend()).toBe(false); // bytes at 0 is no credit
    c.granted(0, 1);
    expect(c.canSend()).toBe(true);
    c.spent(1);
    expect(c.sendMessages).toBe(0);
    expect(c.canSend()).toBe(false);
  });

  test("the receiver counts the peer's credit: past it is a ProtocolError; grants go back at half a window consumed", () => {
    const window = { messages: 8, bytes: 1000 };
    const c = new Credit(STREAM_INITIAL_CREDIT, window, window);
    for (let i = 0; i < 8; i++) c.received(10);
    expect(() => c.received(10)).toThrow(ProtocolError);
    expect(c.consumed(10)).toBe(false);
    expect(c.consumed(10)).toBe(false);
    expect(c.consumed(10)).toBe(false);
    expect(c.consumed(10)).toBe(true); // 4 of 8 messages: half a window
    expect([c.grantMessages, c.grantBytes]).toEqual([4, 40]);
    for (let i = 0; i < 4; i++) c.received(10);
    expect(() => c.received(10)).toThrow(ProtocolError);
    // Bytes: one message past the bytes left still arrives legally, then nothing until a grant.
    const b = new Credit(STREAM_INITIAL_CREDIT, window, window);
    b.received(999);
    b.received(5000);
    expect(() => b.received(1)).toThrow(ProtocolError);
    expect(b.consumed(999)).toBe(true);
    expect([b.grantMessages, b.grantBytes]).toEqual([1, 999]);
    expect(() => b.received(1)).toThrow(ProtocolError); // still -4000 + 999 < 0
    expect(b.consumed(5000)).toBe(true);
    b.received(1);
  });

  test("a receive window past the initial credit is granted at once", () => {
    const c = new Credit(STREAM_INITIAL_CREDIT, STREAM_INITIAL_CREDIT, { messages: 64, bytes: 1 << 20 });
    expect(c.openWindow()).toBe(true);
    expect([c.grantMessages, c.grantBytes]).toEqual([48, (1 << 20) - (256 << 10)]);
  });
});

/** A raw connection to `url` that records its close error. */
async function raw(url: string): Promise<{ conn: Connection; closed: () => HotpathError | null | undefined }> {
  const conn = await connect(url);
  let closed: HotpathError | null | undefined;
  conn.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => (closed = e) });
  return { conn, closed: () => closed };
}

function frame(conn: Connection, kind: number, method: number, slot: number, gen: number, body: Uint8Array): number {
  const head = new Uint8Array(WIRE_HEADER_BYTES);
  writeWireHeader(head, kind, method, slot, gen, 0, body.length);
  return conn.trySend(head, body);
}

describe("hostile stream peers", () => {
  test("messages past the credit abort that session with ProtocolError; other clients go on", async () => {
    const errors: unknown[] = [];
    const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => void (await new Promise((r) => st.signal.addEventListener("abort", r)))), 2: (h) => h.data }, {
      streamWindow: STREAM_INITIAL_CREDIT, // no CREDIT beyond the protocol's initial credit
      onError: (e) => errors.push(e),
    });
    closers.push(() => s.close());
    const bad = await raw(s.url);
    closers.push(() => bad.conn.close());
    expect(frame(bad.conn, KIND_STREAM_START, 1, 0, 1, creditBody(16, 1 << 20))).toBe(SEND_OK);
    for (let i = 0; i < STREAM_INITIAL_CREDIT.messages; i++) expect(frame(bad.conn, KIND_STREAM_MSG, 1, 0, 1, new Uint8Array(10))).toBe(SEND_OK);
    await Bun.sleep(20);
    expect(bad.closed()).toBeUndefined(); // within its credit
    await until(() => [...s.server.sessions][0]?.inFlight === 1, "the stream started");
    const session = [...s.server.sessions][0]!; // kept: a closed session leaves server.sessions
    frame(bad.conn, KIND_STREAM_MSG, 1, 0, 1, new Uint8Array(10));
    await until(() => bad.closed() !== undefined, "the session's abort");
    await until(() => errors.length > 0, "the report");
    expect(errors[0]).toBeInstanceOf(ProtocolError);
    expect(String((errors[0] as Error).message)).toContain("past its credit");
    const good = await rpcConnect(s.url);
    closers.push(() => good.close());
    expect(Array.from(await good.request(2, new Uint8Array([4])))).toEqual([4]);
    await until(() => session.inFlight === 0, "the aborted session's stream gone");
  });

  test("a second START on a live stream aborts the session", async () => {
    const errors: unknown[] = [];
    const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => void (await new Promise((r) => st.signal.addEventListener("abort", r)))) }, { onError: (e) => errors.push(e) });
    closers.push(() => s.close());
    const bad = await raw(s.url);
    closers.push(() => bad.conn.close());
    frame(bad.conn, KIND_STREAM_START, 1, 3, 1, creditBody(16, 1 << 20));
    frame(bad.conn, KIND_STREAM_START, 1, 3, 2, creditBody(16, 1 << 20));
    await until(() => bad.closed() !== undefined, "the session's abort");
    await until(() => errors.length > 0, "the report");
    expect(errors[0]).toBeInstanceOf(ProtocolError);
  });
});

describe("hot path and limits", () => {
  test("trySend() sends until the server's window is used, then SEND_FULL; trySendBuffer() sends a transport buffer", async () => {
    const got: Uint8Array[] = [];
    let server: ServerStream | null = null;
    const s = await serve(`shm://stream-mech-${process.pid}-${n++}`, {
      1: streamHandler(async (st) => {
        server = st;
        await new Promise((r) => st.signal.addEventListener("abort", r));
      }),
      2: streamHandler(async (st) => {
        for await (const m of st) got.push(m);
      }),
    }, { streamWindow: STREAM_INITIAL_CREDIT });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    const hold = c.stream(1);
    await until(() => server !== null || hold.trySend(new Uint8Array(1)) !== SEND_FULL, "the stream open");
    // Whatever went before the START was answered counts against the 16 messages of initial credit.
    let ok = 16 - hold.sendCredit.messages;
    while (hold.trySend(new Uint8Array(8)) === SEND_OK) ok++;
    expect(ok).toBe(16);
    expect(hold.trySend(new Uint8Array(8))).toBe(SEND_FULL);
    expect(hold.sendCredit.messages).toBe(0);
    hold.cancel();

    const up = c.stream(2);
    await up.send(new Uint8Array([1])); // the START is out
    const buf = up.allocBuffer(4096);
    expect(buf).not.toBeNull();
    for (let i = 0; i < 4096; i++) buf![i] = i & 255;
    expect(up.trySendBuffer(buf!, 3000)).toBe(SEND_OK);
    up.end();
    await until(() => got.length === 2, "both messages");
    expect(got[1]!.length).toBe(3000);
    for (let i = 0; i < 3000; i++) if (got[1]![i] !== (i & 255)) throw new Error(`byte ${i}`);
    expect(up.trySend(new Uint8Array(1))).toBe(2); // SEND_CLOSED after end()
    expect(() => up.end()).not.toThrow();
  });

  test("a transport that is often full: every stream's messages still go, in order, and calls between them too", async () => {
    const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => { for await (const m of st) await st.send(m); }), 2: (h) => h.data });
    const real = await connect(s.url);
    let sends = 0;
    let fulls = 0;
    // Every third send on this client's connection finds the transport full.
    const flaky = new Proxy(real, {
      get(t, k) {
        if (k === "trySend") return (h: Uint8Array, b: Uint8Array) => (++sends % 3 === 0 ? (fulls++, SEND_FULL) : t.trySend(h, b));
        if (k === "trySendWords") return undefined;
        const v = (t as unknown as Record<string | symbol, unknown>)[k];
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
    const c = new Client<unknown>(flaky as Connection);
    closers.push(() => s.close(), () => c.close());
    const COUNT = 1500;
    const run = async (k: number) => {
      const st = c.stream(1);
      const reader = (async () => {
        let i = 0;
        for await (const m of st) {
          if (m.length !== 1 + (i % 300) || m[0] !== ((i + k) & 255)) throw new Error(`stream ${k}: message ${i} out of order or wrong`);
          i++;
        }
        return i;
      })();
      for (let i = 0; i < COUNT; i++) {
        const m = new Uint8Array(1 + (i % 300)).fill((i + k) & 255);
        if (i % 7 === 0) await st.send(m);
        else void st.send(m).catch(() => {});
      }
      st.end();
      return reader;
    };
    const calls = Array.from({ length: 50 }, (_, i) => c.request(2, new Uint8Array([i])));
    expect(await Promise.all([run(0), run(1), run(2)])).toEqual([COUNT, COUNT, COUNT]);
    expect((await Promise.all(calls)).map((r) => r[0])).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(fulls).toBeGreaterThan(100);
    await until(() => c.inFlight === 0, "every slot back");
  });

  test("a message larger than the peer accepts is refused at the sender (UsageError); the stream fails, the connection goes on", async () => {
    let sendError: unknown = null;
    const s = await serve("tcp://127.0.0.1:0", {
      1: streamHandler(async (st) => {
        await st.send(new Uint8Array(100));
        sendError = await st.send(new Uint8Array(64 << 10)).catch((e) => e);
        throw sendError;
      }),
      2: (h) => h.data,
    }, { onError: () => {} });
    const c = await rpcConnect(s.url, { maxMessageBytes: 16 << 10 });
    closers.push(() => s.close(), () => c.close());
    const st = c.stream(1);
    expect((await st.read())!.length).toBe(100);
    const e = await st.read().catch((x) => x);
    expect(sendError).toBeInstanceOf(UsageError);
    expect(e.remoteName).toBe("UsageError");
    expect(Array.from(await c.request(2, new Uint8Array([5])))).toEqual([5]);
    await until(() => c.inFlight === 0, "the slot back");
    // The client's own send past the server's limit: UsageError, nothing sent.
    const up = c.stream(1);
    expect(await up.send(new Uint8Array(sendLimit(c.conn.caps) + 1)).catch((x) => x)).toBeInstanceOf(UsageError);
    up.cancel();
  });

  test("a stream message the transport skipped as oversized fails that stream on either side, the connection goes on", async () => {
    // Conforming transports refuse such a send at the sender; a peer that does not conform is
    // what the transports' onOversized reports: here its report is made by hand.
    let reason: unknown = null;
    let server: ServerStream | null = null;
    const s = await serve("tcp://127.0.0.1:0", {
      1: streamHandler(async (st) => {
        server = st;
        await st.send(new Uint8Array(1));
        await new Promise((r) => st.signal.addEventListener("abort", r));
        reason = st.signal.reason;
      }),
      2: (h) => h.data,
    });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    const head = new Uint8Array(WIRE_HEADER_BYTES);
    // Client side: a message for the stream's call id, too large.
    const a = c.stream(1);
    await a.read();
    const slot = (a as unknown as { slot: number }).slot;
    writeWireHeader(head, KIND_STREAM_MSG, 1, slot, (c as unknown as { gen: Uint32Array }).gen[slot]!, 0, 1 << 30);
    (c as unknown as { onOversized(h: Uint8Array, n: number): void }).onOversized(head, 1 << 30);
    expect(await a.read().catch((e) => e)).toBeInstanceOf(MessageTooLargeError);
    await until(() => reason !== null, "the server's abort");
    expect((reason as Error).name).toBe("CancelledError");
    // Server side: the same for a client message.
    reason = null;
    server = null;
    const b = c.stream(1);
    await b.read();
    const sb = server! as unknown as { slot: number; gen: number };
    writeWireHeader(head, KIND_STREAM_MSG, 1, sb.slot, sb.gen, 0, 1 << 30);
    [...s.server.sessions][0]!.onOversized(head, 1 << 30);
    const e = await b.read().catch((x) => x);
    expect(e.remoteName).toBe("MessageTooLargeError");
    expect((reason as unknown as Error).name).toBe("MessageTooLargeError");
    expect(Array.from(await c.request(2, new Uint8Array([5])))).toEqual([5]);
    await until(() => c.inFlight === 0, "the slots back");
  });

  test("bad options are UsageErrors from client.stream(); bad end() metadata throws before anything is sent", async () => {
    const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => { for await (const m of st) await st.send(m); }) });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    expect(() => c.stream(-1)).toThrow(UsageError);
    expect(() => c.stream(1, { window: { messages: 0, bytes: 10 } })).toThrow(UsageError);
    expect(() => c.stream(1, { timeoutMs: -5 })).toThrow(UsageError);
    expect(() => c.stream(1, { metadata: { "Bad Key": "x" } })).toThrow(UsageError);
    const st = c.stream(1);
    expect(() => st.end({ "BAD KEY": "x" })).toThrow(UsageError);
    await st.send(new Uint8Array([3]));
    expect(Array.from((await st.read())!)).toEqual([3]);
    st.end();
    expect(await st.read()).toBeNull();
    expect(await st.send(new Uint8Array(1)).catch((e) => e)).toBeInstanceOf(UsageError);
  });
});

describe("errors", () => {
  test("a registered error class thrown by a stream handler comes back as itself", async () => {
    class QuotaError extends Error {
      constructor(message: string) {
        super(message);
        this.name = "QuotaError";
      }
    }
    registerError(QuotaError);
    try {
      const s = await serve("tcp://127.0.0.1:0", {
        1: streamHandler(async (st) => {
          await st.send(new Uint8Array([1]));
          throw new QuotaError("over quota: 3 streams");
        }),
      }, { onError: () => {} });
      const c = await rpcConnect(s.url);
      closers.push(() => s.close(), () => c.close());
      const st = c.stream(1);
      expect(Array.from((await st.read())!)).toEqual([1]); // what came before the error reads first
      const e = await st.read().catch((x) => x);
      expect(e).toBeInstanceOf(QuotaError);
      expect(e).toBeInstanceOf(RemoteError);
      expect(e.message).toBe("over quota: 3 streams");
      expect(await st.closed.catch((x) => x)).toBe(e);
    } finally {
      unregisterError(QuotaError);
    }
  });
});

describe("drain", () => {
  test("a drain waits for an open stream, which goes on until it ends; then the client leaves and the drain resolves", async () => {
    const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => { for await (const m of st) await st.send(m); }), 2: (h) => h.data });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    expect(Array.from(await c.request(2, new Uint8Array([1])))).toEqual([1]); // the client announces it understands GOAWAY
    const st = c.stream(1);
    await st.send(new Uint8Array([1]));
    await st.read();
    let drained: unknown = null;
    s.drain(30_000).then((r) => (drained = r));
    await until(() => c.draining, "GOAWAY");
    for (let i = 0; i < 100; i++) {
      await st.send(new Uint8Array([i]));
      expect(Array.from((await st.read())!)).toEqual([i]);
    }
    expect(drained).toBeNull();
    st.end();
    expect(await st.read()).toBeNull();
    await until(() => drained !== null, "the drain's end");
    expect(drained).toEqual({ sessions: 1, callsFinished: 1, callsCut: 0 });
    expect(c.closed).toBe(true);
  });
});

describe("interceptors", () => {
  test("client `stream` interceptors run in order, the first outermost, may change metadata, wrap the stream, or refuse", async () => {
    let seenMd: Metadata | null = null;
    const s = await serve("tcp://127.0.0.1:0", {
      1: streamHandler(async (st) => {
        seenMd = st.metadata;
        for await (const m of st) await st.send(m);
      }),
    });
    const order: string[] = [];
    let reads = 0;
    const c = await rpcConnect(s.url, {
      interceptors: [
        {
          stream(call, next) {
            order.push("outer");
            if (call.method === 99) throw new UsageError("refused by the outer interceptor");
            const inner = next(call);
            order.push("outer-after");
            const read = inner.read.bind(inner);
            inner.read = () => (reads++, read()); // wrapped: every read is counted
            return inner;
          },
        },
        { unary: (call, next) => next(call) }, // no stream member: skipped
        {
          stream(call, next) {
            order.push("inner");
            return next({ ...call, metadata: Metadata.from({ ...Object.fromEntries(call.metadata), auth: "token-1" }) });
          },
        },
      ],
    });
    closers.push(() => s.close(), () => c.close());
    const st = c.stream(1, { metadata: { trace: "t" } });
    await st.send(new Uint8Array([7]));
    expect(Array.from((await st.read())!)).toEqual([7]);
    st.end();
    expect(await st.read()).toBeNull();
    expect(order).toEqual(["outer", "inner", "outer-after"]);
    expect(reads).toBe(2);
    expect(seenMd!.get("auth")).toBe("token-1");
    expect(seenMd!.get("trace")).toBe("t");
    expect(() => c.stream(99)).toThrow(UsageError);
  });

  test("server `stream` interceptors wrap stream handlers in order and may map their errors", async () => {
    const order: string[] = [];
    const s = await serve("tcp://127.0.0.1:0", {
      1: streamHandler(async (st) => {
        order.push("handler");
        await st.send(new Uint8Array([1]));
        throw new Error("inner failure");
      }),
    }, {
      onError: () => {},
      interceptors: [
        {
          async stream(st, next) {
            order.push("a");
            try {
              await next(st);
            } catch (e) {
              throw new RangeError(`mapped: ${(e as Error).message}`);
            }
          },
        },
        {
          stream(st, next) {
            order.push(`b:${st.method}`);
            return next(st);
          },
        },
      ],
    });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    const st = c.stream(1);
    expect(Array.from((await st.read())!)).toEqual([1]);
    const e = await st.read().catch((x) => x);
    expect(e.remoteName).toBe("RangeError");
    expect(e.remoteMessage).toBe("mapped: inner failure");
    expect(order).toEqual(["a", "b:1", "handler"]);
  });
});

describe("metrics", () => {
  test("a stream counts as one call on both sides with all its messages' bytes", async () => {
    const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => { for await (const m of st) await st.send(m); }) }, { metrics: true });
    const c = await rpcConnect(s.url, { metrics: true });
    closers.push(() => s.close(), () => c.close());
    const st = c.stream(1);
    for (let i = 0; i < 10; i++) await st.send(new Uint8Array(100));
    st.end();
    for await (const _ of st) {
      // drain
    }
    await until(() => s.server.metrics().methods.length > 0, "the server's record");
    const sm = s.server.metrics().methods.find((m) => m.methodId === 1)!;
    expect([sm.calls, sm.bytesIn, sm.bytesOut, sm.errors.length]).toEqual([1, 1000, 1000, 0]);
    const cm = c.metrics().methods.find((m) => m.methodId === 1)!;
    expect([cm.calls, cm.bytesIn, cm.bytesOut, cm.errors.length]).toEqual([1, 1000, 1000, 0]);
    const bad = c.stream(1);
    bad.cancel();
    expect(c.metrics().methods.find((m) => m.methodId === 1)!.errors).toEqual([{ code: "CancelledError", count: 1 }]);
  });
});
