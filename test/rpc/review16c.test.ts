/**
 * Round-2 review fixes (issue 16): a START with a malformed deadline reserves nothing; a unary
 * error response too large for the transport (message or name) is cut and still reaches the
 * client; streams may reserve at most half of maxPendingBytes (one session a quarter), so one
 * client holding idle streams cannot make the server refuse everyone; requests and streams
 * that settle while waiting for a slot leave the client's line; a request with an already-aborted
 * signal is counted in the metrics like the other requests that fail unsent.
 */
import { afterEach, expect, test } from "bun:test";
import { CancelledError, RemoteError, TransportClosedError, connect, rpcConnect, sendLimit, serve, streamHandler, type ServerStream } from "../../src/index.ts";
import { creditBody } from "../../src/rpc/stream/credit.ts";
import { MAX_ERROR_NAME_CHARS } from "../../src/rpc/handle.ts";
import { KIND_FLAG_METADATA, KIND_STREAM_START, WIRE_HEADER_BYTES, withMetadata, writeWireHeader } from "../../src/rpc/wire.ts";
import { until } from "../helpers/peer.ts";

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});
let seq = 0;
const url = (kind: string) => (kind === "tcp" ? "tcp://127.0.0.1:0" : `${kind}://r16c-${process.pid}-${seq++}`);
const idle = streamHandler(async (st: ServerStream) => {
  await new Promise((r) => st.signal.addEventListener("abort", r));
});

test("a STREAM_START with a malformed hp-deadline-ms aborts the session and leaves nothing reserved", async () => {
  const s = await serve(url("inproc"), { 1: idle }, { onError: () => {} });
  closers.push(() => s.close());
  for (let i = 0; i < 3; i++) {
    const conn = await connect(s.url);
    let closed: unknown = undefined;
    conn.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => (closed = e ?? "clean") });
    // Encoded by hand (metadata.ts's encoding: one text entry): Metadata.from() refuses such a value.
    const enc = new TextEncoder();
    const md = new Uint8Array([1, 1, 14, 3, 0, ...enc.encode("hp-deadline-ms"), ...enc.encode("abc")]);
    const body = withMetadata(md, creditBody(16, 1 << 20));
    const head = new Uint8Array(WIRE_HEADER_BYTES);
    writeWireHeader(head, KIND_STREAM_START | KIND_FLAG_METADATA, 1, 0, 1, 0, body.length);
    conn.trySend(head, body);
    await until(() => closed !== undefined, "the session aborted");
    conn.close();
  }
  expect(s.server.pendingBytes).toBe(0);
  expect(s.server.streamBytes).toBe(0);
});

for (const kind of ["tcp", "shm"]) {
  test(`${kind}: a unary handler error larger than the transport's limit reaches the client, cut`, async () => {
    let limit = 0;
    const s = await serve(url(kind), {
      1: (h) => {
        limit = sendLimit(h.session.conn.caps);
        throw new Error("x".repeat(limit + 10));
      },
      2: (h) => {
        const e = new Error("m");
        e.name = "N".repeat(sendLimit(h.session.conn.caps) + 10);
        throw e;
      },
      3: streamHandler(async (st) => {
        const e = new Error("m");
        e.name = "N".repeat(sendLimit((st as unknown as { session: { conn: { caps: Parameters<typeof sendLimit>[0] } } }).session.conn.caps) + 10);
        throw e;
      }),
    }, { onError: () => {} });
    closers.push(() => s.close());
    const c = await rpcConnect(s.url);
    closers.push(() => c.close());
    const e1 = await c.request(1, new Uint8Array(1), { timeoutMs: 20_000 }).catch((e) => e);
    expect(e1).toBeInstanceOf(RemoteError);
    expect(e1.message).toContain("cut to fit the transport");
    const e2 = await c.request(2, new Uint8Array(1), { timeoutMs: 20_000 }).catch((e) => e);
    expect(e2).toBeInstanceOf(RemoteError);
    expect((e2 as RemoteError).remoteName.length).toBeLessThanOrEqual(MAX_ERROR_NAME_CHARS);
    const st = c.stream(3, { timeoutMs: 20_000 });
    const e3 = await st.closed.catch((e) => e);
    expect(e3).toBeInstanceOf(RemoteError);
    expect(limit).toBeGreaterThan(0);
  }, 60_000);
}

test("streams reserve at most half of maxPendingBytes, one session a quarter: other clients still get served", async () => {
  const window = { messages: 16, bytes: 1 << 20 };
  let started = 0;
  const counted = streamHandler(async (st: ServerStream) => {
    started++;
    await new Promise((r) => st.signal.addEventListener("abort", r));
  });
  const s = await serve(url("tcp"), { 1: counted, 2: (h) => h.data }, { onError: () => {}, maxPendingBytes: 8 << 20, streamWindow: window });
  closers.push(() => s.close());
  const clients = await Promise.all([0, 1, 2].map(() => rpcConnect(s.url)));
  for (const c of clients) closers.push(() => c.close());
  const open = async (c: (typeof clients)[0]) => {
    const st = c.stream(1);
    st.closed.catch(() => {});
    closers.unshift(() => st.cancel()); // before the clients close
    const before = started;
    let refused: RemoteError | null = null;
    st.closed.catch((e) => (refused = e));
    await until(() => started > before || refused !== null, "the stream started or refused");
    return refused === null ? "open" : (refused as RemoteError).remoteName;
  };
  // One session: a quarter (2 MiB = 2 windows); the third START is refused.
  expect([await open(clients[0]!), await open(clients[0]!), await open(clients[0]!)]).toEqual(["open", "open", "ServerBusyError"]);
  expect(await open(clients[1]!)).toBe("open");
  expect(await open(clients[1]!)).toBe("open");
  // Streams in all: half (4 MiB); a third session's START is refused, its requests are not.
  expect(await open(clients[2]!)).toBe("ServerBusyError");
  expect(s.server.streamBytes).toBe(4 << 20);
  expect(await clients[2]!.request(2, new Uint8Array(8))).toEqual(new Uint8Array(8));
});

test("requests and streams that settle while waiting for a slot leave the client's line", async () => {
  const s = await serve(url("inproc"), { 1: idle, 2: (h) => h.data }, { onError: () => {} });
  closers.push(() => s.close());
  const c = await rpcConnect(s.url, { window: 2 });
  closers.push(() => c.close());
  const held = [c.stream(1), c.stream(1)];
  for (const h of held) h.closed.catch(() => {});
  closers.unshift(() => held.forEach((h) => h.cancel()));
  const data = new Uint8Array(1024);
  const ps: Promise<unknown>[] = [];
  for (let i = 0; i < 200; i++) ps.push(c.request(2, data, { timeoutMs: 1 }).catch((e) => e));
  for (let i = 0; i < 50; i++) {
    const st = c.stream(1);
    st.closed.catch(() => {});
    st.cancel();
  }
  const ac = new AbortController();
  const aborted = c.request(2, data, { signal: ac.signal, timeoutMs: 60_000 }).catch((e) => e);
  ac.abort();
  const errs = await Promise.all(ps);
  expect(errs.every((e) => e instanceof Error && e.name === "TimeoutError")).toBe(true);
  expect(await aborted).toBeInstanceOf(CancelledError);
  expect(c.waiting.length).toBe(0);
  // The line still works: a request waits, then goes when a slot frees.
  const later = c.request(2, new Uint8Array([7]), { timeoutMs: 60_000 });
  expect(c.waiting.length).toBe(1);
  held[0]!.cancel();
  expect(await later).toEqual(new Uint8Array([7]));
});

test("a request with an already-aborted signal is counted in the metrics", async () => {
  const s = await serve(url("tcp"), { 2: (h) => h.data });
  closers.push(() => s.close());
  const c = await rpcConnect(s.url, { metrics: true });
  closers.push(() => c.close());
  const calls = () => c.metrics().methods.filter((m) => String(m.method) === "2").reduce((n, m) => n + m.calls, 0);
  const ac = new AbortController();
  ac.abort();
  expect(await c.request(2, new Uint8Array(1), { signal: ac.signal }).catch((e) => e)).toBeInstanceOf(CancelledError);
  expect(calls()).toBe(1);
  // After the close nothing counts (as call()'s SEND_CLOSED; metrics-client.test.ts).
  c.close();
  expect(await c.request(2, new Uint8Array(1)).catch((e) => e)).toBeInstanceOf(TransportClosedError);
  expect(calls()).toBe(1);
});
