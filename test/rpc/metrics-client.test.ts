/**
 * Client metrics (ClientOptions.metrics, client.metrics()) over real tcp and shm connections to
 * an in-process serve(): a known sequence of calls, hot-path call() and request() alike
 * (successes, RemoteErrors by name, an unknown method, timeouts, a connection the server
 * closes), gives exactly those counts per method, errors by code, bytes out and in (every
 * request body the transport took and every body it delivered for the method, counted by a
 * wrapper around the real connection: wire bodies, so a request's metadata counts), and a
 * histogram of one latency per call, each no larger than the interval this test measured
 * around that call. Calls that never went out (after the close) count nothing.
 * The Prometheus text of the snapshot parses strictly (metrics-exposition.ts) and says the
 * same. No timing is asserted: only counts and consistency.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Client, RemoteError, SEND_CLOSED, SEND_OK, TimeoutError, TransportClosedError, UsageError, connect, registerError, serve } from "../../src/index.ts";
import type { Connection, Receiver, RxMessage, SendStatus } from "../../src/index.ts";
import { KIND_MASK, KIND_REQUEST, wireKind, wireMethod, WIRE_WORD_METHOD } from "../../src/rpc/wire.ts";
import { PROMETHEUS_BOUNDS_NS, toPrometheus, type MethodSnapshot } from "../../src/rpc/metrics.ts";
import { bucketsOf, parseExposition, sampleValue } from "./metrics-exposition.ts";
import { until } from "../helpers/peer.ts";

const ECHO = 1;
const BAD_INPUT = 2; // throws a registered application error
const TYPE_ERROR = 3; // throws a TypeError
const UNNAMED = 4; // throws an error whose name is not on the allow-list: it comes back as "Error"
const HELD = 5; // answers only when the test lets it (timeouts, the close)
const UNKNOWN = 77; // no handler

class BadInputError extends Error {
  override name = "BadInputError";
}
registerError(BadInputError);

/** Latency slack for float rounding of ms to ns (the meter and this test both read performance.now()). */
const ROUNDING_NS = 1;

interface Expected {
  calls: number;
  errors: Map<string, number>;
  bytesOut: number;
  /** Calls whose request carried metadata (a deadline: sendDeadline sends every one, the default 30 s too). */
  withMetadata: number;
  /** Each call's interval as this test measured it around the call, ns. */
  outerNs: number[];
}

/** The calls this test made, per method: what the snapshot must say. */
class Model {
  readonly methods = new Map<number, Expected>();
  add(method: number, code: string | null, bytesOut: number, t0Ms: number, t1Ms: number, withMetadata = false): void {
    let e = this.methods.get(method);
    if (e === undefined) this.methods.set(method, (e = { calls: 0, errors: new Map(), bytesOut: 0, withMetadata: 0, outerNs: [] }));
    e.calls++;
    if (withMetadata) e.withMetadata++;
    e.bytesOut += bytesOut;
    e.outerNs.push((t1Ms - t0Ms) * 1e6);
    if (code !== null) e.errors.set(code, (e.errors.get(code) ?? 0) + 1);
  }
}

/**
 * The real connection, with the body bytes of every message it delivered summed per method id
 * (bytesIn), and of every request it sent (bytesOut: the wire body, request metadata included).
 */
function countingBytes(conn: Connection): { conn: Connection; bytesIn: Map<number, number>; bytesOut: Map<number, number> } {
  const bytesIn = new Map<number, number>();
  const bytesOut = new Map<number, number>();
  const add = (to: Map<number, number>, method: number, n: number) => to.set(method, (to.get(method) ?? 0) + n);
  const received = (m: RxMessage) => {
    const method = m.headWords !== undefined ? m.headWords[(m.headOffset >> 2) + WIRE_WORD_METHOD]! >>> 0 : wireMethod(m.headBuf, m.headOffset);
    add(bytesIn, method, m.bodyLength);
  };
  const sent = (status: SendStatus, kind: number, method: number, n: number): SendStatus => {
    if (status === SEND_OK && (kind & KIND_MASK) === KIND_REQUEST) add(bytesOut, method >>> 0, n);
    return status;
  };
  const proxy = new Proxy(conn, {
    get(target, key) {
      switch (key) {
        case "setReceiver":
          return (r: Receiver) => target.setReceiver({ ...r, onMessage: (m) => (received(m), r.onMessage(m)) });
        case "trySend":
          return (head: Uint8Array, body?: Uint8Array | null) => sent(target.trySend(head, body), wireKind(head), wireMethod(head), body?.length ?? 0);
        case "trySendBuffer":
          return (head: Uint8Array, buffer: Uint8Array, lenBytes?: number) => sent(target.trySendBuffer(head, buffer, lenBytes), wireKind(head), wireMethod(head), lenBytes ?? buffer.length);
        case "trySendWords":
          if (target.trySendWords === undefined) return undefined;
          return (h0: number, h1: number, h2: number, h3: number, h4: number, h5: number, body: Uint8Array) => sent(target.trySendWords!(h0, h1, h2, h3, h4, h5, body), h0 & 0xff, h1, body.length);
      }
      const v = Reflect.get(target, key, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { conn: proxy, bytesIn, bytesOut };
}

const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);

const open: Array<{ close(): void }> = [];
afterAll(() => {
  for (const o of open.splice(0)) o.close();
});

/** Checks one method's snapshot against the model: counts, bytes, histogram consistency. */
function checkMethod(snap: MethodSnapshot | undefined, e: Expected, wire: { bytesIn: number; bytesOut: number }, what: string): void {
  expect(snap, what).toBeDefined();
  const s = snap!;
  expect({ what, calls: s.calls, errors: s.errors, bytesOut: s.bytesOut, bytesIn: s.bytesIn }).toEqual({
    what,
    calls: e.calls,
    errors: [...e.errors].map(([code, count]) => ({ code, count })).sort((a, b) => (a.code < b.code ? -1 : 1)),
    bytesOut: wire.bytesOut,
    bytesIn: wire.bytesIn,
  });
  // The wire's request bodies are the data sent plus any metadata (a timeout travels as hp-deadline-ms).
  if (e.withMetadata === 0) expect(wire.bytesOut, what).toBe(e.bytesOut);
  else expect(wire.bytesOut, what).toBeGreaterThan(e.bytesOut);
  const h = s.latency;
  const maxOuter = Math.max(...e.outerNs);
  const sumOuter = e.outerNs.reduce((a, b) => a + b, 0);
  expect(h.count, what).toBe(e.calls);
  expect(h.clamped, what).toBe(0);
  expect(h.buckets.reduce((n, b) => n + b.count, 0), what).toBe(e.calls);
  expect(h.minNs, what).toBeGreaterThanOrEqual(0);
  expect(h.maxNs, what).toBeLessThanOrEqual(maxOuter + ROUNDING_NS);
  expect(h.sumNs, what).toBeLessThanOrEqual(sumOuter + e.calls * ROUNDING_NS);
  expect(h.minNs <= h.maxNs && h.sumNs >= h.minNs * h.count && h.sumNs <= h.maxNs * h.count + ROUNDING_NS, what).toBe(true);
  // Percentiles (each within max(1 ns, x / 64) of a recorded value): p0 <= p50 <= p90 <= p99 <= p100.
  const slack = (x: number) => Math.max(1, x / 64);
  const ps = [h.p50Ns, h.p90Ns, h.p99Ns, h.p999Ns];
  for (let i = 1; i < ps.length; i++) expect(ps[i]!, what).toBeGreaterThanOrEqual(ps[i - 1]!);
  expect(h.minNs, what).toBeLessThanOrEqual(h.p50Ns + slack(h.p50Ns));
  expect(h.p999Ns, what).toBeLessThanOrEqual(h.maxNs + slack(h.maxNs));
  // Every non-empty bucket lies between the smallest and the largest value.
  expect(h.buckets[0]!.upperNs, what).toBeGreaterThanOrEqual(h.minNs);
  expect(h.buckets.at(-1)!.upperNs - h.maxNs, what).toBeGreaterThanOrEqual(0);
}

/**
 * The Prometheus text of the snapshot, parsed strictly, says the same per method; each
 * cumulative bucket holds at least the calls whose measured interval fits under its bound
 * (every recorded latency is no larger than its call's interval).
 */
function checkPrometheus(text: string, transport: string, model: Model, bytesIn: Map<number, number>, bytesOut: Map<number, number>): void {
  const { types, samples } = parseExposition(text);
  expect(types.get("hotpath_rpc_latency_seconds")).toBe("histogram");
  for (const [method, e] of model.methods) {
    const l = { role: "client", transport, method: String(method) };
    expect(sampleValue(samples, "hotpath_rpc_calls_total", l)).toBe(e.calls);
    expect(sampleValue(samples, "hotpath_rpc_bytes_out_total", l)).toBe(bytesOut.get(method) ?? 0);
    expect(sampleValue(samples, "hotpath_rpc_bytes_in_total", l)).toBe(bytesIn.get(method) ?? 0);
    for (const [code, n] of e.errors) expect(sampleValue(samples, "hotpath_rpc_errors_total", { ...l, code })).toBe(n);
    expect(samples.filter((s) => s.name === "hotpath_rpc_errors_total" && s.labels.method === String(method)).length).toBe(e.errors.size);
    expect(sampleValue(samples, "hotpath_rpc_latency_seconds_count", l)).toBe(e.calls);
    const buckets = bucketsOf(samples, "hotpath_rpc_latency_seconds", l);
    expect(buckets.length).toBe(PROMETHEUS_BOUNDS_NS.length + 1);
    expect(buckets.at(-1)).toEqual({ le: Infinity, count: e.calls });
    for (const b of buckets) {
      const fit = e.outerNs.filter((ns) => ns + ROUNDING_NS < b.le * 1e9).length;
      expect(b.count).toBeGreaterThanOrEqual(fit);
    }
  }
  // Nothing but the methods called.
  const methods = new Set(samples.filter((s) => s.name === "hotpath_rpc_calls_total").map((s) => s.labels.method));
  expect([...methods].sort()).toEqual([...model.methods.keys()].map(String).sort());
}

describe.each(["tcp", "shm"] as const)("client metrics over %s", (transport) => {
  test("a known sequence of calls: counts, errors by code, bytes, latency histogram, Prometheus text", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let heldCalls = 0;
    const url = transport === "tcp" ? "tcp://127.0.0.1:0" : `shm://metrics-client-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    const s = await serve(url, {
      [ECHO]: (h) => h.data,
      [BAD_INPUT]: () => {
        throw new BadInputError("the input is bad");
      },
      [TYPE_ERROR]: () => {
        throw new TypeError("not a type");
      },
      [UNNAMED]: () => {
        const e = new Error("odd");
        e.name = "OddError";
        throw e;
      },
      [HELD]: async (h) => {
        heldCalls++;
        await held;
        return h.data;
      },
    }, { onError: () => {} });
    open.push(s);
    const { conn, bytesIn, bytesOut } = countingBytes(await connect(s.url, { fallback: [] }));
    const client = new Client<number>(conn, { metrics: true, sendDeadline: true }); // a timeoutMs travels as metadata, counted in the bodies
    open.push(client);
    expect(conn.transport).toBe(transport);
    const model = new Model();

    // 1. Hot path: call() / poll() / onResponse.
    const started = new Map<number, { method: number; t0: number; out: number }>();
    let nextUd = 0;
    client.onResponse = (ud, _data, err) => {
      const t1 = performance.now();
      const c = started.get(ud)!;
      started.delete(ud);
      model.add(c.method, err === null ? null : (err instanceof RemoteError ? err.remoteName : err.name), c.out, c.t0, t1);
    };
    const hot = (method: number, data: Uint8Array) => {
      const ud = nextUd++;
      started.set(ud, { method, t0: performance.now(), out: data.length });
      expect(client.call(method, data, ud)).toBe(SEND_OK);
    };
    const drain = async () => {
      const end = Date.now() + 10_000;
      while (started.size > 0) {
        if (Date.now() > end) throw new Error(`hot-path calls still outstanding: ${started.size}`);
        client.poll();
        if (started.size > 0) await client.wait(5);
      }
    };
    for (const [i, n] of [0, 1, 32, 33, 500, 4096].entries()) hot(ECHO, bytes(n, i));
    await drain();
    hot(BAD_INPUT, bytes(7, 1));
    hot(BAD_INPUT, bytes(9, 2));
    hot(TYPE_ERROR, bytes(3, 3));
    hot(UNKNOWN, bytes(11, 4));
    await drain();

    // 2. request(): successes and failures, each measured around its own await.
    const req = async (method: number, data: Uint8Array, timeoutMs?: number): Promise<unknown> => {
      const t0 = performance.now();
      let err: unknown = null;
      try {
        const out = await client.request(method, data, timeoutMs === undefined ? undefined : { timeoutMs });
        expect([...out]).toEqual([...data]);
      } catch (e) {
        err = e;
      }
      const t1 = performance.now();
      model.add(method, err === null ? null : err instanceof RemoteError ? err.remoteName : (err as Error).name, data.length, t0, t1, timeoutMs !== 0); // every deadline travels (the default one too)
      return err;
    };
    for (const n of [0, 5, 1000]) expect(await req(ECHO, bytes(n, n))).toBeNull();
    const bad = await req(BAD_INPUT, bytes(4, 9));
    expect(bad).toBeInstanceOf(BadInputError);
    expect((bad as BadInputError & RemoteError).remoteName).toBe("BadInputError");
    expect(((await req(TYPE_ERROR, bytes(2, 1))) as RemoteError).remoteName).toBe("TypeError");
    expect(((await req(UNNAMED, bytes(2, 2))) as RemoteError).remoteName).toBe("Error"); // not on the allow-list
    expect(((await req(UNKNOWN, bytes(6, 3))) as RemoteError).remoteName).toBe("UnknownMethodError");
    // Timeouts: the server holds these; the client gives up.
    const timeouts = await Promise.all([req(HELD, bytes(10, 1), 20), req(HELD, bytes(20, 2), 30)]);
    for (const e of timeouts) expect(e).toBeInstanceOf(TimeoutError);
    await until(() => heldCalls === 2, "both held requests at the server");

    // 3. The server closes the connection under a held hot-path call and a held request.
    hot(HELD, bytes(40, 5));
    const closing = req(HELD, bytes(50, 6), 60_000);
    await until(() => heldCalls === 4, "the last two held requests at the server");
    s.close();
    expect(await closing).toBeInstanceOf(TransportClosedError);
    await drain();
    // Calls after the close never go out and count nothing.
    expect(client.call(ECHO, bytes(1, 1), 999)).toBe(SEND_CLOSED);
    await expect(client.request(ECHO, bytes(1, 1))).rejects.toBeInstanceOf(TransportClosedError);
    release();

    // The model has what this test did: check it against itself first.
    expect(model.methods.get(ECHO)!.calls).toBe(9);
    expect([...model.methods.get(BAD_INPUT)!.errors]).toEqual([["BadInputError", 3]]);
    expect([...model.methods.get(HELD)!.errors]).toEqual([["TimeoutError", 2], ["TransportClosedError", 2]]);
    expect([...model.methods.get(UNNAMED)!.errors]).toEqual([["Error", 1]]);
    expect([...model.methods.get(UNKNOWN)!.errors]).toEqual([["UnknownMethodError", 2]]);

    const snap = client.metrics();
    expect(snap.methods.map((m) => [m.transport, m.method, m.methodId])).toEqual(
      [...model.methods.keys()].sort((a, b) => (String(a) < String(b) ? -1 : 1)).map((id) => [transport, String(id), id]),
    );
    for (const [method, e] of model.methods) {
      const wire = { bytesIn: bytesIn.get(method) ?? 0, bytesOut: bytesOut.get(method) ?? 0 };
      checkMethod(snap.methods.find((m) => m.methodId === method), e, wire, `${transport} method ${method}`);
    }
    // The held calls never got a response: nothing came in for them.
    expect(bytesIn.get(HELD) ?? 0).toBe(0);
    checkPrometheus(toPrometheus(snap, { role: "client" }), transport, model, bytesIn, bytesOut);
    // A snapshot is plain data: it survives JSON.
    expect(JSON.parse(JSON.stringify(snap)).methods.length).toBe(snap.methods.length);
  }, 60_000);
});

test("client.metrics() without ClientOptions.metrics is a UsageError; a shared registry gathers two clients", async () => {
  const s = await serve("tcp://127.0.0.1:0", { [ECHO]: (h) => h.data });
  open.push(s);
  const plain = new Client(await connect(s.url, { fallback: [] }));
  open.push(plain);
  expect(() => plain.metrics()).toThrow(UsageError);
  const { RpcMetrics } = await import("../../src/rpc/metrics.ts");
  const shared = new RpcMetrics();
  const a = new Client(await connect(s.url, { fallback: [] }), { metrics: shared });
  const b = new Client(await connect(s.url, { fallback: [] }), { metrics: shared });
  open.push(a, b);
  await a.request(ECHO, bytes(3, 0));
  await b.request(ECHO, bytes(4, 0));
  await b.request(ECHO, bytes(5, 0));
  const m = shared.snapshot().methods;
  expect(m.map((x) => [x.transport, x.method, x.calls, x.bytesOut, x.bytesIn])).toEqual([["tcp", "1", 3, 12, 12]]);
  expect(a.metrics()).toEqual(b.metrics());
  const conn = await connect(s.url, { fallback: [] });
  open.push(conn);
  expect(() => new Client(conn, { metrics: "yes" as unknown as boolean })).toThrow(UsageError);
});

test("the strict exposition parser accepts the format and rejects what it forbids", () => {
  const ok = '# HELP a_total A counter.\n# TYPE a_total counter\na_total{x="1",y="q\\"\\n\\\\"} 1\n# TYPE h histogram\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\nh_sum 0.75\nh_count 2\n';
  const { samples, helps } = parseExposition(ok);
  expect(samples.length).toBe(5);
  expect(samples[0]!.labels).toEqual({ x: "1", y: 'q"\n\\' });
  expect(helps.get("a_total")).toBe("A counter.");
  for (const bad of [
    "a 1\n# TYPE a counter\n", // sample before its TYPE
    "# TYPE a counter\na 1", // no final newline
    '# TYPE a counter\na{x="1",} 1\n', // trailing comma
    '# TYPE a counter\na{x="1"y="2"} 1\n', // no comma
    '# TYPE a counter\na{x="1",x="2"} 1\n', // label twice
    "# TYPE a counter\na one\n", // not a number
    '# TYPE a counter\na{x="\\q"} 1\n', // bad escape
    "# TYPE a counter\na 1\na 2\n", // duplicate series
    "# TYPE a counter\n# TYPE a gauge\n", // second TYPE
    "# TYPE a thing\n", // unknown type
    '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', // not cumulative
    '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', // no +Inf
    '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n', // +Inf != _count
    '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', // no _sum
    '# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', // le decreasing
  ]) {
    expect(() => parseExposition(bad), JSON.stringify(bad)).toThrow();
  }
});
