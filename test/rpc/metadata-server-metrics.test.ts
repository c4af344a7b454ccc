/**
 * Server metrics as request handles record them (issue 16, item 4): with ServerOptions.metrics
 * on, every consumed handle counts one call of its (transport, method): errors by the error
 * response's name ("CancelledError" for a call its client cancelled, "Dropped" for one dropped
 * unanswered), bytes in = the request's body (metadata prefix included), bytes out = the reply's
 * body (metadata prefix included), one latency per call. A known sequence of calls over tcp and
 * shm through serve(), and through the hot-path Server (reply, replyError, replyBuffer, drop),
 * gives exactly those counts; one-way messages are no calls and record nothing (as on the
 * client); metrics off: server.metrics() is a UsageError.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { RemoteError, Server, UsageError, listen, rpcConnect, serve, type RequestHandle } from "../../src/index.ts";
import { encodeErrorBody } from "../../src/rpc/wire.ts";
import { Metadata, encodedLength } from "../../src/rpc/metadata.ts";
import type { MethodSnapshot } from "../../src/rpc/metrics.ts";

const te = new TextEncoder();
let n = 0;
const urlFor = (kind: "tcp" | "shm" | "inproc"): string => (kind === "tcp" ? "tcp://127.0.0.1:0" : `${kind}://server-metrics-${process.pid}-${n++}`);
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

/** The snapshot's methods as plain comparable rows. */
const rows = (methods: MethodSnapshot[]) =>
  Object.fromEntries(methods.map((m) => [m.method, { transport: m.transport, calls: m.calls, errors: m.errors, bytesIn: m.bytesIn, bytesOut: m.bytesOut, latencies: m.latency.count }]));
const errorBytes = (e: RemoteError) => encodeErrorBody(e.remoteName, e.remoteMessage).length;
/** Body bytes of `data` sent with metadata `md`: the u16 length, the metadata, the data. */
const withMd = (md: Record<string, string>, dataBytes: number) => 2 + encodedLength(Metadata.from(md)) + dataBytes;

describe.each(["tcp", "shm"] as const)("server metrics over %s: a known sequence of calls", (kind) => {
  test("serve(): successes, errors by name, unknown methods, metadata both ways, a cancelled call; one-way messages record nothing", async () => {
    let released = () => {};
    let oneWays = 0;
    const s = await serve(urlFor(kind), {
      1: (h: RequestHandle) => h.data.slice(),
      2: () => { throw new RangeError("out of range"); },
      3: (h: RequestHandle) => (h.setResponseMetadata({ served: "by-3" }), te.encode("three")),
      4: async (h: RequestHandle) => {
        await new Promise<void>((resolve) => h.signal.addEventListener("abort", () => resolve(), { once: true }));
        released();
        return te.encode("too late");
      },
      5: () => (oneWays++, undefined),
    }, { metrics: true, onError: () => {} });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    for (let i = 0; i < 3; i++) await c.request(1, new Uint8Array(10));
    await c.request(1, new Uint8Array(4), { metadata: { token: "abc" } });
    const errs: RemoteError[] = [];
    for (let i = 0; i < 2; i++) errs.push(await c.request(2, new Uint8Array(7)).catch((e) => e));
    const unknown: RemoteError = await c.request(9, new Uint8Array(1)).catch((e) => e);
    await c.request(3, new Uint8Array(0));
    const gone = new Promise<void>((resolve) => (released = resolve));
    // Cancelled by the client (an abort, no deadline: only the cancel ends it on the server).
    await c.request(4, new Uint8Array(5), { timeoutMs: 0, signal: AbortSignal.timeout(30) }).catch(() => {});
    await gone;
    for (let i = 0; i < 2; i++) c.send(5, new Uint8Array(6));
    for (let i = 0; i < 1000 && oneWays < 2; i++) await Bun.sleep(5);
    for (let i = 0; i < 1000 && (s.server.metrics().methods.find((m) => m.method === "4")?.calls ?? 0) === 0; i++) await Bun.sleep(5);
    expect(errs.map((e) => e.remoteName)).toEqual(["RangeError", "RangeError"]);
    expect(unknown.remoteName).toBe("UnknownMethodError");
    expect(rows(s.server.metrics().methods)).toEqual({
      "1": { transport: kind, calls: 4, errors: [], bytesIn: 30 + withMd({ token: "abc" }, 4), bytesOut: 34, latencies: 4 },
      "2": { transport: kind, calls: 2, errors: [{ code: "RangeError", count: 2 }], bytesIn: 14, bytesOut: errorBytes(errs[0]!) + errorBytes(errs[1]!), latencies: 2 },
      "3": { transport: kind, calls: 1, errors: [], bytesIn: 0, bytesOut: withMd({ served: "by-3" }, 5), latencies: 1 },
      "4": { transport: kind, calls: 1, errors: [{ code: "CancelledError", count: 1 }], bytesIn: 5, bytesOut: 0, latencies: 1 },
      "9": { transport: kind, calls: 1, errors: [{ code: "UnknownMethodError", count: 1 }], bytesIn: 1, bytesOut: errorBytes(unknown), latencies: 1 },
    });
  });
});

describe("server metrics on the hot path", () => {
  test("reply, replyBuffer, replyError and drop each count once, by outcome", async () => {
    const listener = await listen(urlFor("shm"));
    const server = new Server({
      metrics: true,
      onRequest: (h) => {
        switch (h.method) {
          case 1:
            return void h.reply(h.data);
          case 2: {
            const b = h.allocReply(8)!;
            b.fill(7);
            return void h.replyBuffer(b, 8);
          }
          case 3:
            return void h.replyError("TypeError", "bad input");
          default:
            h.drop();
        }
      },
    });
    server.attach(listener);
    const c = await rpcConnect(listener.url);
    closers.push(() => server.close(), () => c.close());
    await c.request(1, new Uint8Array(3));
    await c.request(1, new Uint8Array(3));
    await c.request(2, new Uint8Array(2));
    const e: RemoteError = await c.request(3, new Uint8Array(1)).catch((x) => x);
    await c.request(4, new Uint8Array(9), { timeoutMs: 0, signal: AbortSignal.timeout(30) }).catch(() => {});
    expect(rows(server.metrics().methods)).toEqual({
      "1": { transport: "shm", calls: 2, errors: [], bytesIn: 6, bytesOut: 6, latencies: 2 },
      "2": { transport: "shm", calls: 1, errors: [], bytesIn: 2, bytesOut: 8, latencies: 1 },
      "3": { transport: "shm", calls: 1, errors: [{ code: "TypeError", count: 1 }], bytesIn: 1, bytesOut: errorBytes(e), latencies: 1 },
      "4": { transport: "shm", calls: 1, errors: [{ code: "Dropped", count: 1 }], bytesIn: 9, bytesOut: 0, latencies: 1 },
    });
  });

  test("metrics off: server.metrics() is a UsageError and handles record nothing", async () => {
    const s = await serve(urlFor("inproc"), { 1: () => undefined });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    await c.request(1);
    expect(() => s.server.metrics()).toThrow(UsageError);
  });
});
