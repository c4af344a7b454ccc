/**
 * Client-side response handling found in review (issue 16), over a real tcp connection:
 * - serve(url, handlers, { metrics: true }) answers METRICS_METHOD with its Prometheus text
 *   (what `hotpath metrics URL` asks for); without metrics it is an unknown method.
 * - onResponseMetadata runs once the call has settled: a callback that aborts the call's own
 *   signal (a hedged call sharing an AbortController) or closes the client neither loses the
 *   response nor frees the slot twice (inFlight stays 0, later calls complete).
 * - bytes in of a response with metadata count the whole body on the client, as the server
 *   counts its bytes out.
 */
import { afterAll, expect, test } from "bun:test";
import { METRICS_METHOD, RemoteError, UsageError, requestMetricsText, rpcConnect, serve } from "../../src/index.ts";

const te = new TextEncoder();
const closers: Array<() => void> = [];
afterAll(() => {
  for (const c of closers.splice(0).reverse()) c();
});

test("serve() with metrics on answers METRICS_METHOD with its text; without metrics the method is unknown", async () => {
  const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data }, { metrics: true });
  const c = await rpcConnect(s.url);
  closers.push(() => s.close(), () => c.close());
  for (let i = 0; i < 3; i++) await c.request(1, te.encode("abc"));
  const text = await requestMetricsText(c);
  expect(text).toContain('hotpath_rpc_calls_total{role="server",transport="tcp",method="1"} 3');
  expect(text).toContain('hotpath_rpc_bytes_in_total{role="server",transport="tcp",method="1"} 9');

  const plain = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
  const c2 = await rpcConnect(plain.url);
  closers.push(() => plain.close(), () => c2.close());
  const e = await c2.request(METRICS_METHOD, new Uint8Array(0)).catch((x) => x);
  expect(e).toBeInstanceOf(RemoteError);
  expect((e as RemoteError).remoteName).toBe("UnknownMethodError");
});

test("onResponseMetadata that aborts the call's own signal: the response is kept, the slot freed once", async () => {
  const s = await serve("tcp://127.0.0.1:0", {
    1: (h) => {
      h.setResponseMetadata({ "served-by": "a" });
      return h.data;
    },
    2: (h) => h.data,
  });
  const c = await rpcConnect(s.url, { window: 4 });
  closers.push(() => s.close(), () => c.close());
  for (const method of [1, 2]) {
    const ctl = new AbortController();
    const seen: string[] = [];
    const r = await c.request(method, te.encode("x"), {
      signal: ctl.signal,
      onResponseMetadata: (md) => {
        seen.push(md.get("served-by") ?? "none");
        ctl.abort();
      },
    });
    expect([...r]).toEqual([...te.encode("x")]);
    expect(seen).toEqual([method === 1 ? "a" : "none"]);
    expect(c.inFlight).toBe(0);
  }
  // Every slot still works: a full window of calls completes with its own bytes.
  const all = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => c.request(2, te.encode(`r${i}`), { timeoutMs: 5_000 })));
  expect(all.map((b) => new TextDecoder().decode(b))).toEqual(["r0", "r1", "r2", "r3", "r4", "r5"]);
  expect(c.inFlight).toBe(0);
});

test("onResponseMetadata that closes the client: the call still resolves with its response", async () => {
  const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
  const c = await rpcConnect(s.url);
  closers.push(() => s.close());
  const r = await c.request(1, te.encode("y"), { onResponseMetadata: () => c.close() });
  expect([...r]).toEqual([...te.encode("y")]);
  expect(c.closed).toBe(true);
});

test("client bytes in of a response with metadata count the whole body, as the server's bytes out do", async () => {
  const s = await serve(
    "tcp://127.0.0.1:0",
    {
      1: (h) => {
        h.setResponseMetadata({ k: "0123456789" });
        return h.data;
      },
    },
    { metrics: true },
  );
  const c = await rpcConnect(s.url, { metrics: true });
  closers.push(() => s.close(), () => c.close());
  await c.request(1, new Uint8Array(10));
  const client = c.metrics().methods.find((m) => m.methodId === 1)!;
  const server = s.server.metrics().methods.find((m) => m.methodId === 1)!;
  expect(client.bytesIn).toBe(server.bytesOut);
  expect(client.bytesIn).toBeGreaterThan(10);
  expect(client.bytesOut).toBe(server.bytesIn);
});

test("client metrics count requests that fail before they are sent: timed out waiting for a slot, failed at close", async () => {
  const s = await serve("tcp://127.0.0.1:0", {
    1: async (h) => {
      await Bun.sleep(300);
      return h.data;
    },
  });
  const c = await rpcConnect(s.url, { window: 1, metrics: true });
  closers.push(() => s.close());
  const a = c.request(1, te.encode("a"), { timeoutMs: 5_000 });
  const b = c.request(1, te.encode("b"), { timeoutMs: 50 }).catch((e) => e.name); // waits for the one slot, times out there
  expect(await b).toBe("TimeoutError");
  await a;
  const waiting = c.request(1, te.encode("c"), { timeoutMs: 5_000 }); // takes the slot
  const queued = c.request(1, te.encode("d"), { timeoutMs: 5_000 }).catch((e) => e.name); // waits for it
  c.close();
  expect(await waiting.catch((e) => e.name)).toBe("TransportClosedError");
  expect(await queued).toBe("TransportClosedError");
  const m = c.metrics().methods.find((x) => x.methodId === 1)!;
  expect(m.calls).toBe(4);
  expect(m.errors).toEqual([
    { code: "TimeoutError", count: 1 },
    { code: "TransportClosedError", count: 2 },
  ]);
  expect(m.latency.count).toBe(4);
});

test("rpcConnect() with a bad client option rejects with UsageError and leaves no connection open", async () => {
  const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
  closers.push(() => s.close());
  for (const bad of [{ window: 0 }, { interceptors: [{ unary: 1 }] as never }, { metrics: "yes" as never }]) {
    const e = await rpcConnect(s.url, bad).catch((x) => x);
    expect(e).toBeInstanceOf(UsageError);
  }
  // Every connection the server accepted for those attempts has closed (tcp: accepted before connect() resolved).
  for (let i = 0; i < 500 && s.server.sessions.size > 0; i++) await Bun.sleep(5);
  expect(s.server.sessions.size).toBe(0);
});
