/**
 * The reserved metrics method (src/rpc/metrics-method.ts) and the Prometheus text over HTTP:
 * - a server with metrics on answers METRICS_METHOD with the strict-parsing text of its own
 *   metrics (role "server"), built by hand (new Server + dispatcher) and through serve() with
 *   withMetricsMethod(); the calls it served are in it; the text equals toPrometheus() of the
 *   server's snapshot for every series but the metrics method's own;
 * - without metrics: "UsageError" from the handler, "UnknownMethodError" where it is not served;
 *   withMetricsMethod() refuses a table that already uses the id;
 * - metricsHandler() inside a real Bun.serve on 127.0.0.1: an HTTP GET returns the client's and
 *   the server's metrics together with the Prometheus content type, and the text parses.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Client, RemoteError, Server, UsageError, connect, dispatcher, listen, rpcConnect, serve } from "../../src/index.ts";
import { METRICS_METHOD, metricsMethodHandler, requestMetricsText, withMetricsMethod } from "../../src/rpc/metrics-method.ts";
import { PROMETHEUS_CONTENT_TYPE, RpcMetrics, metricsHandler, toPrometheus, toPrometheusAll } from "../../src/rpc/metrics.ts";
import { DecodeError } from "../../src/rpc/codec.ts";
import { parseExposition, sampleValue, type Sample } from "./metrics-exposition.ts";

const ECHO = 1;
const FAILS = 2;

const open: Array<{ close(): void }> = [];
afterAll(() => {
  for (const o of open.splice(0)) o.close();
});

/** The samples that are not the metrics method's own (its call is recorded after its text was made). */
const others = (samples: Sample[]) => samples.filter((s) => s.labels.method !== String(METRICS_METHOD));

/** Makes the calls every test checks for: 3 echoes (5, 6, 7 bytes), 1 failure. */
async function someCalls(client: Client<any>): Promise<void> {
  for (const n of [5, 6, 7]) expect((await client.request(ECHO, new Uint8Array(n).fill(n))).length).toBe(n);
  await expect(client.request(FAILS, new Uint8Array(2))).rejects.toBeInstanceOf(RemoteError);
}

/** The served calls are in the text; the text is what toPrometheus() makes of the server's snapshot. */
function checkServerText(text: string, server: Server, transport: string): void {
  const { samples } = parseExposition(text);
  expect(samples.length).toBeGreaterThan(0);
  for (const s of samples) expect(s.labels.role).toBe("server");
  const echo = { role: "server", transport, method: String(ECHO) };
  const fails = { role: "server", transport, method: String(FAILS) };
  expect(sampleValue(samples, "hotpath_rpc_calls_total", echo)).toBe(3);
  expect(sampleValue(samples, "hotpath_rpc_bytes_in_total", echo)).toBe(18);
  expect(sampleValue(samples, "hotpath_rpc_bytes_out_total", echo)).toBe(18);
  expect(sampleValue(samples, "hotpath_rpc_latency_seconds_count", echo)).toBe(3);
  expect(sampleValue(samples, "hotpath_rpc_calls_total", fails)).toBe(1);
  expect(sampleValue(samples, "hotpath_rpc_errors_total", { ...fails, code: "RangeError" })).toBe(1);
  const now = parseExposition(toPrometheus(server.metrics(), { role: "server" })).samples;
  expect(others(samples)).toEqual(others(now));
}

const handlers = {
  [ECHO]: (h: { data: Uint8Array }) => h.data,
  [FAILS]: () => {
    throw new RangeError("out of range");
  },
};

describe.each(["tcp", "shm"] as const)("METRICS_METHOD over %s", (transport) => {
  const url = () => (transport === "tcp" ? "tcp://127.0.0.1:0" : `shm://metrics-method-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);

  test("a Server built by hand (metrics on, the handler in its dispatcher table) answers with its own text", async () => {
    const server = new Server({ metrics: true, onRequest: dispatcher({ ...handlers, [METRICS_METHOD]: metricsMethodHandler() }), onError: () => {} });
    open.push(server);
    const listener = await listen(url());
    server.attach(listener);
    const client = new Client(await connect(listener.url, { fallback: [] }));
    open.push(client);
    await someCalls(client);
    const text = await requestMetricsText(client, { timeoutMs: 5000 });
    checkServerText(text, server, transport);
    // Asked again: the first metrics call is now in the text too.
    const again = parseExposition(await requestMetricsText(client)).samples;
    expect(sampleValue(again, "hotpath_rpc_calls_total", { role: "server", transport, method: String(METRICS_METHOD) })).toBe(1);
  });

  test("serve(url, withMetricsMethod(handlers), { metrics: true }) answers it; the same table without metrics on answers UsageError", async () => {
    const s = await serve(url(), withMetricsMethod(handlers), { metrics: true, onError: () => {} });
    open.push(s);
    const client = await rpcConnect(s.url, { fallback: [] });
    open.push(client);
    await someCalls(client);
    checkServerText(await requestMetricsText(client), s.server, transport);

    const off = await serve(url(), withMetricsMethod(handlers), { onError: () => {} });
    open.push(off);
    const c2 = await rpcConnect(off.url, { fallback: [] });
    open.push(c2);
    const e = await requestMetricsText(c2).catch((x) => x);
    expect(e).toBeInstanceOf(RemoteError);
    expect([e.remoteName, e.remoteMessage]).toEqual(["UsageError", "this server records no metrics (start it with ServerOptions.metrics: serve(url, handlers, { metrics: true }))"]);
  });
});

test("a server that does not serve the method answers UnknownMethodError; a non-UTF-8 answer is a DecodeError", async () => {
  const s = await serve("tcp://127.0.0.1:0", { [ECHO]: (h) => h.data });
  open.push(s);
  const client = await rpcConnect(s.url, { fallback: [] });
  open.push(client);
  const e = await requestMetricsText(client).catch((x) => x);
  expect(e).toBeInstanceOf(RemoteError);
  expect(e.remoteName).toBe("UnknownMethodError");
  const odd = await serve("tcp://127.0.0.1:0", { [METRICS_METHOD]: () => new Uint8Array([0xff, 0xfe, 0x80]) });
  open.push(odd);
  const c2 = await rpcConnect(odd.url, { fallback: [] });
  open.push(c2);
  await expect(requestMetricsText(c2)).rejects.toBeInstanceOf(DecodeError);
});

test("metricsMethodHandler(server) reads that server's registry; withMetricsMethod() copies the table, keeps its own handler, refuses another at the id", async () => {
  const registry = new RpcMetrics();
  registry.record("shm", 9, "TimeoutError", 0, 16, 2500);
  const source = new Server({ metrics: registry });
  open.push(source);
  const s = await serve("tcp://127.0.0.1:0", { [METRICS_METHOD]: metricsMethodHandler(source) });
  open.push(s);
  const client = await rpcConnect(s.url, { fallback: [] });
  open.push(client);
  const { samples } = parseExposition(await requestMetricsText(client));
  expect(sampleValue(samples, "hotpath_rpc_errors_total", { role: "server", transport: "shm", method: "9", code: "TimeoutError" })).toBe(1);
  expect(sampleValue(samples, "hotpath_rpc_bytes_out_total", { role: "server", transport: "shm", method: "9" })).toBe(16);

  expect(METRICS_METHOD).toBe(new DataView(new TextEncoder().encode("METR").buffer).getUint32(0));
  const table = { [ECHO]: handlers[ECHO] };
  const withIt = withMetricsMethod(table);
  expect(Object.keys(withIt).map(Number).sort((a, b) => a - b)).toEqual([ECHO, METRICS_METHOD]);
  expect(Object.keys(table)).toEqual([String(ECHO)]);
  // Its own handler there is kept (a table made for serve() passes through it again); another is refused.
  expect(withMetricsMethod(withIt)[METRICS_METHOD]).toBe(withIt[METRICS_METHOD]!);
  const mine = metricsMethodHandler(source);
  expect(withMetricsMethod({ [METRICS_METHOD]: mine })[METRICS_METHOD]).toBe(mine);
  expect(() => withMetricsMethod({ [METRICS_METHOD]: () => new Uint8Array(0) })).toThrow(UsageError);
});

test("metricsHandler() in a real Bun.serve: GET /metrics on 127.0.0.1 returns the client's and the server's metrics, Prometheus content type, strict parse", async () => {
  const s = await serve("tcp://127.0.0.1:0", handlers, { metrics: true, onError: () => {} });
  open.push(s);
  const client = await rpcConnect(s.url, { fallback: [], metrics: true });
  open.push(client);
  await someCalls(client);
  // One page for the whole process: both sides, each family's HELP and TYPE once.
  const http = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: metricsHandler(() => toPrometheusAll([{ snapshot: client.metrics(), role: "client" }, { snapshot: s.server.metrics(), role: "server" }])),
  });
  try {
    const res = await fetch(`http://127.0.0.1:${http.port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe(PROMETHEUS_CONTENT_TYPE);
    const { types, samples } = parseExposition(await res.text());
    expect(types.size).toBe(5);
    const side = (role: string) => ({ role, transport: "tcp", method: String(ECHO) });
    expect(sampleValue(samples, "hotpath_rpc_calls_total", side("client"))).toBe(3);
    expect(sampleValue(samples, "hotpath_rpc_calls_total", side("server"))).toBe(3);
    expect(sampleValue(samples, "hotpath_rpc_bytes_out_total", side("client"))).toBe(18);
    expect(sampleValue(samples, "hotpath_rpc_bytes_in_total", side("server"))).toBe(18);
    expect(sampleValue(samples, "hotpath_rpc_errors_total", { role: "client", transport: "tcp", method: String(FAILS), code: "RangeError" })).toBe(1);
  } finally {
    http.stop(true);
  }
});
