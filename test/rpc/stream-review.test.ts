/**
 * Streams review fixes (issue 16): a refused STREAM_START's answer is held once per slot and
 * the refusals a peer leaves unread are bounded; a stream reserves its receive window against
 * maxPendingBytes (ServerBusyError past it); a handler error too large for the transport still
 * reaches the client (cut) and settles the stream; a Server without streams queues its
 * UnknownMethodError answer like a reply; streams and requests wait for a slot in one line;
 * deadlines past setTimeout's limit hold; a server-side iterator's early return() only stops
 * reading; a handler that throws after end() is reported.
 */
import { afterEach, expect, test } from "bun:test";
import { CancelledError, ProtocolError, RemoteError, SEND_FULL, SEND_OK, Server, connect, defineService, implement, listen, msgpack, rpcConnect, serve, streamHandler, type Connection, type ServerStream } from "../../src/index.ts";
import { STREAM_INITIAL_CREDIT, creditBody } from "../../src/rpc/stream/credit.ts";
import { KIND_CANCEL, KIND_STREAM_START, WIRE_HEADER_BYTES, writeWireHeader } from "../../src/rpc/wire.ts";
import { MAX_WINDOW } from "../../src/rpc/slots.ts";
import { until } from "../helpers/peer.ts";

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

function frame(conn: Connection, kind: number, method: number, slot: number, gen: number, body: Uint8Array): number {
  const head = new Uint8Array(WIRE_HEADER_BYTES);
  writeWireHeader(head, kind, method, slot, gen, 0, body.length);
  return conn.trySend(head, body);
}

async function rawPeer(url: string): Promise<{ conn: Connection; closed: () => unknown }> {
  const conn = await connect(url);
  let closedWith: unknown = undefined;
  conn.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => (closedWith = e ?? "clean") });
  closers.push(() => conn.close());
  return { conn, closed: () => closedWith };
}

/** Makes setTimeout hand back (not run) every timer of at least setTimeout's limit; restore() puts it back. */
function captureLongTimers(): { captured: Array<() => void>; restore(): void } {
  const orig = globalThis.setTimeout;
  const captured: Array<() => void> = [];
  (globalThis as { setTimeout: unknown }).setTimeout = (fn: () => void, ms: number, ...rest: unknown[]) => {
    if (ms >= 2 ** 31 - 1) {
      captured.push(fn);
      return orig(() => {}, 1e9);
    }
    return orig(fn, ms, ...rest);
  };
  return { captured, restore: () => ((globalThis as { setTimeout: unknown }).setTimeout = orig) };
}

const waitAbort = (st: ServerStream) => new Promise<void>((r) => st.signal.addEventListener("abort", () => r()));

test("F5: a second START on a slot whose refusal waits for room aborts the session; a cancelled refusal frees the slot", async () => {
  const errors: unknown[] = [];
  const s = await serve("tcp://127.0.0.1:0", { 2: (h) => h.data }, { onError: (e) => errors.push(e) });
  closers.push(() => s.close());
  const bad = await rawPeer(s.url);
  expect(frame(bad.conn, KIND_STREAM_START, 9, 0, 1, creditBody(16, 1 << 20))).toBe(SEND_OK); // answered at once
  await until(() => [...s.server.sessions].length === 1 && ([...s.server.sessions][0] as unknown as { streams: unknown }).streams !== null, "the session's streams");
  const sess = [...s.server.sessions][0]!;
  const full = () => SEND_FULL;
  (sess.conn as { trySend: unknown }).trySend = full; // the peer stops reading: every answer waits
  if (sess.conn.trySendWords !== undefined) (sess.conn as { trySendWords: unknown }).trySendWords = full;
  frame(bad.conn, KIND_STREAM_START, 9, 1, 1, creditBody(16, 1 << 20)); // its answer waits
  frame(bad.conn, KIND_CANCEL, 9, 1, 1, new Uint8Array(0)); // the client gave up on it
  frame(bad.conn, KIND_STREAM_START, 9, 1, 2, creditBody(16, 1 << 20)); // so the slot may start again
  frame(bad.conn, KIND_STREAM_START, 9, 2, 1, creditBody(16, 1 << 20));
  await Bun.sleep(30);
  expect(bad.closed()).toBeUndefined();
  frame(bad.conn, KIND_STREAM_START, 9, 2, 2, creditBody(16, 1 << 20)); // slot 2's answer still waits
  await until(() => bad.closed() !== undefined, "the session's abort");
  await until(() => errors.length > 0, "the report");
  expect(errors[0]).toBeInstanceOf(ProtocolError);
  expect(String((errors[0] as Error).message)).toContain("waits to be read");
});

test("F5: refusals left unread past MAX_WINDOW (a START and a CANCEL on one slot, again and again) abort the session", async () => {
  const errors: unknown[] = [];
  const s = await serve("tcp://127.0.0.1:0", { 2: (h) => h.data }, { onError: (e) => errors.push(e) });
  closers.push(() => s.close());
  const bad = await rawPeer(s.url);
  frame(bad.conn, KIND_STREAM_START, 9, 0, 1, creditBody(16, 1 << 20));
  await until(() => [...s.server.sessions].length === 1 && ([...s.server.sessions][0] as unknown as { streams: unknown }).streams !== null, "the session's streams");
  const sess = [...s.server.sessions][0]!;
  const full = () => SEND_FULL;
  (sess.conn as { trySend: unknown }).trySend = full;
  if (sess.conn.trySendWords !== undefined) (sess.conn as { trySendWords: unknown }).trySendWords = full;
  (sess.conn as { wait: unknown }).wait = () => new Promise(() => {}); // no retry ever clears the queue
  const send = async (kind: number, gen: number, body: Uint8Array) => {
    while (frame(bad.conn, kind, 9, 0, gen, body) !== SEND_OK) {
      if (bad.closed() !== undefined) return;
      await Bun.sleep(1);
    }
  };
  for (let gen = 2; gen < MAX_WINDOW + 10 && bad.closed() === undefined; gen++) {
    await send(KIND_STREAM_START, gen, creditBody(16, 1 << 20));
    await send(KIND_CANCEL, gen, new Uint8Array(0));
  }
  await until(() => bad.closed() !== undefined, "the session's abort", 20000);
  await until(() => errors.length > 0, "the report");
  expect(errors[0]).toBeInstanceOf(ProtocolError);
  expect(String((errors[0] as Error).message)).toContain(`more than ${MAX_WINDOW} stream refusals`);
});

test("F1: each stream reserves its receive window against maxPendingBytes; a START past it gets ServerBusyError", async () => {
  const window = { messages: 16, bytes: 1 << 20 };
  const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => { for await (const m of st) await st.send(m); }) }, { maxPendingBytes: 6 << 20, streamWindow: window }); // one session's streams: a quarter, 1.5 windows
  closers.push(() => s.close());
  const c = await rpcConnect(s.url);
  closers.push(() => c.close());
  const a = c.stream(1);
  await a.send(new Uint8Array([1]));
  expect(Array.from((await a.read())!)).toEqual([1]);
  expect(s.server.pendingBytes).toBe(window.bytes);
  const b = c.stream(1);
  const err = await b.read().catch((e) => e);
  expect(err).toBeInstanceOf(RemoteError);
  expect((err as RemoteError).remoteName).toBe("ServerBusyError");
  expect(s.server.busyRefusals).toBe(1);
  a.end();
  await a.closed;
  await until(() => s.server.pendingBytes === 0, "the reservation back");
  const again = c.stream(1);
  await again.send(new Uint8Array([2]));
  again.end();
  expect(Array.from((await again.read())!)).toEqual([2]);
  await again.closed;
  await until(() => s.server.pendingBytes === 0, "the reservation back");
});

test("F8: a handler error larger than the transport's limit reaches the client cut; the server's stream settles", async () => {
  let big = 0;
  let held: ServerStream | null = null;
  const unhandled: unknown[] = [];
  const onRejection = (e: unknown) => unhandled.push(e);
  process.on("unhandledRejection", onRejection);
  try {
    const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => { held = st; await st.read(); throw new Error("x".repeat(big)); }) }, { onError: () => {} });
    closers.push(() => s.close());
    const c = await rpcConnect(s.url);
    closers.push(() => c.close());
    big = c.conn.caps.maxMessageBytes + 10;
    const st = c.stream(1, { timeoutMs: 20000 }); // a watchdog: the failure must come back before it
    await st.send(new Uint8Array(1));
    const e = await st.read().catch((x) => x);
    expect(e).toBeInstanceOf(RemoteError);
    expect((e as RemoteError).remoteName).toBe("Error");
    expect((e as Error).message).toContain("cut to fit the transport");
    expect(held!.signal.aborted).toBe(true);
    expect(await held!.closed.then(() => "ok", () => "rejected")).toBe("rejected");
    await until(() => [...s.server.sessions][0]?.inFlight === 0, "the stream's call count back");
    await Bun.sleep(10);
    expect(unhandled).toEqual([]);
  } finally {
    process.off("unhandledRejection", onRejection);
  }
});

test("F7: a Server without streams queues its UnknownMethodError answer to a START when the transport is full", async () => {
  const server = new Server({ onRequest: (h) => h.respond(h.data, null) });
  const l = await listen("tcp://127.0.0.1:0");
  server.attach(l);
  closers.push(() => server.close());
  const c = await rpcConnect(l.url);
  closers.push(() => c.close());
  await c.request(1, new Uint8Array(1));
  const sess = [...server.sessions][0]!;
  const name = sess.conn.trySendWords !== undefined ? "trySendWords" : "trySend";
  const conn = sess.conn as unknown as Record<string, (...a: unknown[]) => number>;
  const orig = conn[name]!.bind(conn);
  let once = true;
  conn[name] = (...a: unknown[]) => (once ? ((once = false), SEND_FULL) : orig(...a)); // one full moment
  const st = c.stream(5, { timeoutMs: 20000 }); // a watchdog
  const e = await st.read().catch((x) => x);
  expect(e).toBeInstanceOf(RemoteError);
  expect((e as RemoteError).remoteName).toBe("UnknownMethodError");
  expect(once).toBe(false);
});

test("F6: a stream waiting for a slot goes before the requests issued after it", async () => {
  const order: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const s = await serve("tcp://127.0.0.1:0", {
    1: streamHandler(async (st) => {
      order.push("stream");
      st.end();
    }),
    2: async (h) => {
      order.push(`req${h.data[0]}`);
      if (h.data[0] === 0) await gate;
      return h.data;
    },
  });
  closers.push(() => s.close());
  const c = await rpcConnect(s.url, { window: 1 });
  closers.push(() => c.close());
  const first = c.request(2, new Uint8Array([0])); // holds the only slot
  await until(() => order.length === 1, "the first request served");
  const st = c.stream(1); // waits for the slot: first in line
  st.end();
  const later = Array.from({ length: 5 }, (_, i) => c.request(2, new Uint8Array([i + 1])));
  release();
  await first;
  await Promise.all(later);
  await st.closed;
  expect(order).toEqual(["req0", "stream", "req1", "req2", "req3", "req4", "req5"]);
  expect(c.inFlight).toBe(0);
});

test("F6: a stream cancelled while it waits for a slot leaves the line", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const s = await serve("tcp://127.0.0.1:0", { 2: async (h) => { await gate; return h.data; } });
  closers.push(() => s.close());
  const c = await rpcConnect(s.url, { window: 1 });
  closers.push(() => c.close());
  const first = c.request(2, new Uint8Array([0]));
  const st = c.stream(1);
  const next = c.request(2, new Uint8Array([1]));
  st.cancel();
  expect(await st.closed.catch((e) => e)).toBeInstanceOf(CancelledError);
  release();
  expect(Array.from(await first)).toEqual([0]);
  expect(Array.from(await next)).toEqual([1]);
  expect(c.inFlight).toBe(0);
});

test("F2: a client stream's timeoutMs past setTimeout's limit re-arms instead of failing at ~24.8 days", async () => {
  const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => waitAbort(st)) });
  closers.push(() => s.close());
  const c = await rpcConnect(s.url);
  closers.push(() => c.close());
  const timers = captureLongTimers();
  let st;
  try {
    st = c.stream(1, { timeoutMs: 100 * 86_400_000 });
    expect(timers.captured.length).toBe(1);
    timers.captured[0]!(); // what the runtime does after 2^31-1 ms of a 100-day deadline
    expect(timers.captured.length).toBe(2); // armed again
  } finally {
    timers.restore();
  }
  expect(st.signal.aborted).toBe(false);
  await st.send(new Uint8Array(1));
  st.cancel();
  expect(await st.closed.catch((e) => e)).toBeInstanceOf(CancelledError);
});

test("F2: a server stream's deadline past setTimeout's limit re-arms instead of failing at ~24.8 days", async () => {
  let held: ServerStream | null = null;
  const s = await serve("tcp://127.0.0.1:0", { 1: streamHandler(async (st) => { held = st; await waitAbort(st); }) });
  closers.push(() => s.close());
  const c = await rpcConnect(s.url);
  closers.push(() => c.close());
  const timers = captureLongTimers();
  const st = c.stream(1, { metadata: { "hp-deadline-ms": String(100 * 86_400_000) } });
  try {
    await until(() => held !== null && timers.captured.length > 0, "the server stream's timer");
    timers.captured[0]!();
    expect(timers.captured.length).toBe(2);
  } finally {
    timers.restore();
  }
  expect(held!.signal.aborted).toBe(false);
  st.cancel();
  await until(() => held!.signal.aborted, "the cancel on the server");
  expect(held!.signal.reason).toBeInstanceOf(CancelledError);
});

test("F4: a typed client-streaming impl may return from inside its for await: the client gets its result", async () => {
  const Svc = defineService({ first: { id: 11, stream: "client", request: msgpack<number>(), response: msgpack<number>() } });
  const s = await serve("tcp://127.0.0.1:0", implement(Svc, { async first(values) { for await (const v of values) return v; return -1; } }));
  closers.push(() => s.close());
  const c = await rpcConnect(s.url, { service: Svc });
  closers.push(() => c.close());
  const call = c.svc.first();
  for (const v of [7, 8, 9]) await call.send(v);
  expect(await call.end()).toBe(7);
});

test("F4: a server stream's early return() stops reading only: the client's later sends complete (credit granted), the handler still answers", async () => {
  let sendsDone!: () => void;
  const allSent = new Promise<void>((r) => (sendsDone = r));
  let readAfter: unknown = "unset";
  const s = await serve("tcp://127.0.0.1:0", {
    1: streamHandler(async (st) => {
      let first: Uint8Array | null = null;
      for await (const m of st) {
        first = m;
        break;
      }
      readAfter = await st.read();
      await allSent;
      await st.send(first!);
      st.end({ "x-left": "early" });
    }),
  }, { streamWindow: STREAM_INITIAL_CREDIT });
  closers.push(() => s.close());
  const c = await rpcConnect(s.url);
  closers.push(() => c.close());
  const st = c.stream(1);
  const n = STREAM_INITIAL_CREDIT.messages * 3; // past the server's window: only granted credit lets them go
  for (let i = 0; i < n; i++) await st.send(new Uint8Array([i]));
  sendsDone();
  st.end();
  expect(Array.from((await st.read())!)).toEqual([0]);
  expect(await st.read()).toBeNull();
  await st.closed;
  expect(st.trailers?.get("x-left")).toBe("early");
  expect(readAfter).toBeNull();
});

test("F3: a handler that throws after end() is reported; one that rethrows its stream's own error is not", async () => {
  const errors: unknown[] = [];
  const s = await serve("tcp://127.0.0.1:0", {
    1: streamHandler(async (st) => {
      st.end();
      throw new Error("bug after end");
    }),
    2: streamHandler(async (st) => {
      for await (const _ of st); // rejects with the client's cancel
    }),
  }, { onError: (e) => errors.push(e) });
  closers.push(() => s.close());
  const c = await rpcConnect(s.url);
  closers.push(() => c.close());
  const st = c.stream(1);
  st.end();
  await st.closed;
  await until(() => errors.length > 0, "the report");
  expect(String((errors[0] as Error).message)).toBe("bug after end");
  const cancelled = c.stream(2);
  await cancelled.send(new Uint8Array(1));
  cancelled.cancel();
  await until(() => [...s.server.sessions][0]?.inFlight === 0, "the cancelled stream gone");
  await Bun.sleep(20);
  expect(errors.length).toBe(1);
});
