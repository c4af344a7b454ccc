/**
 * `hotpath metrics URL` run for real (`bun src/cli/hotpath.ts metrics ...`) against server
 * processes (test/cli/metrics-server.ts, started with Bun.spawn and killed by pid):
 * - a server with metrics on, over tcp and shm: exit 0, stdout the strict-parsing Prometheus
 *   text with the calls this test made to that server (counts, errors by code, bytes);
 * - a URL nobody listens on (a server that was killed; a shm name never used): exit 1, one line;
 * - a server without metrics: exit 1, one line saying so; one that never answers: exit 1 after
 *   --timeout-ms, one line;
 * - usage: no URL, two URLs, a bad --timeout-ms: exit 2 with the usage; --help: exit 0.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { rpcConnect, RemoteError } from "../../src/index.ts";
import { METRICS_USAGE } from "../../src/cli/metrics-command.ts";
import { METRICS_METHOD } from "../../src/rpc/metrics-method.ts";
import { parseExposition, sampleValue } from "../rpc/metrics-exposition.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const CLI = new URL("../../src/cli/hotpath.ts", import.meta.url).pathname;
const SERVER = new URL("./metrics-server.ts", import.meta.url).pathname;
/** Watchdog of one CLI run: a hang fails the test instead of holding it. */
const RUN_TIMEOUT_MS = 30_000;
setDefaultTimeout(120_000);

const peers: Peer[] = [];
afterAll(async () => {
  for (const p of peers.splice(0)) await p.kill();
});

async function startServer(url: string, metrics: "on" | "off" | "hang"): Promise<Peer> {
  const p = await spawnPeer(SERVER, [url, metrics]);
  peers.push(p);
  return p;
}

async function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const proc = Bun.spawn(["bun", CLI, "metrics", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: RUN_TIMEOUT_MS, killSignal: "SIGKILL" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code: proc.signalCode === null ? code : null, out, err };
}

const uniqueShm = (what: string) => `shm://metrics-cli-${what}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

describe.each(["tcp", "shm"] as const)("hotpath metrics over %s", (transport) => {
  test("a server with metrics on: exit 0 and its Prometheus text with the calls made", async () => {
    const server = await startServer(transport === "tcp" ? "tcp://127.0.0.1:0" : uniqueShm("on"), "on");
    const url: string = server.ready.url;
    const client = await rpcConnect(url, { fallback: [] });
    try {
      for (const n of [1, 2, 3, 4]) await client.request(1, new Uint8Array(n));
      await expect(client.request(2, new Uint8Array(8))).rejects.toBeInstanceOf(RemoteError);
    } finally {
      client.close();
    }
    const r = await cli([url]);
    expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: "" });
    const { types, samples } = parseExposition(r.out);
    expect([...types.keys()]).toEqual(["hotpath_rpc_calls_total", "hotpath_rpc_errors_total", "hotpath_rpc_bytes_in_total", "hotpath_rpc_bytes_out_total", "hotpath_rpc_latency_seconds"]);
    const echo = { role: "server", transport, method: "1" };
    const fails = { role: "server", transport, method: "2" };
    expect(sampleValue(samples, "hotpath_rpc_calls_total", echo)).toBe(4);
    expect(sampleValue(samples, "hotpath_rpc_bytes_in_total", echo)).toBe(10);
    expect(sampleValue(samples, "hotpath_rpc_bytes_out_total", echo)).toBe(10);
    expect(sampleValue(samples, "hotpath_rpc_latency_seconds_count", echo)).toBe(4);
    expect(sampleValue(samples, "hotpath_rpc_latency_seconds_bucket", { ...echo, le: "+Inf" })).toBe(4);
    expect(sampleValue(samples, "hotpath_rpc_calls_total", fails)).toBe(1);
    expect(sampleValue(samples, "hotpath_rpc_errors_total", { ...fails, code: "RangeError" })).toBe(1);
    expect(sampleValue(samples, "hotpath_rpc_bytes_in_total", fails)).toBe(8);
    // Only what was served: the two methods (this is the first metrics request).
    expect(new Set(samples.map((s) => s.labels.method))).toEqual(new Set(["1", "2"]));
    // A second run sees the first metrics request too.
    const again = await cli([url, "--timeout-ms", "10000"]);
    expect(again.code).toBe(0);
    expect(sampleValue(parseExposition(again.out).samples, "hotpath_rpc_calls_total", { role: "server", transport, method: String(METRICS_METHOD) })).toBe(1);

    // The server goes away: its URL is now unreachable.
    await server.kill();
    const gone = await cli([url, "--timeout-ms", "3000"]);
    expect(gone.code).toBe(1);
    expect(gone.out).toBe("");
    expect(gone.err).toMatch(new RegExp(`^hotpath metrics: cannot connect to ${url.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: [^\\n]+\\n$`));
  });

  test("a server without metrics: exit 1 and one line saying it has none", async () => {
    const server = await startServer(transport === "tcp" ? "tcp://127.0.0.1:0" : uniqueShm("off"), "off");
    const r = await cli([server.ready.url]);
    expect(r.code).toBe(1);
    expect(r.out).toBe("");
    expect(r.err).toBe(
      `hotpath metrics: the server at ${server.ready.url} has no metrics: it does not answer the metrics method (${METRICS_METHOD}); start it with serve(url, handlers, { metrics: true })\n`,
    );
  });
});

test("a server that never answers the metrics method: exit 1 after --timeout-ms, one line", async () => {
  const server = await startServer("tcp://127.0.0.1:0", "hang");
  const r = await cli([server.ready.url, "--timeout-ms", "200"]);
  expect({ code: r.code, out: r.out, err: r.err }).toEqual({ code: 1, out: "", err: `hotpath metrics: the server at ${server.ready.url} did not answer within 200 ms\n` });
});

test("a shm name nobody listens on: exit 1, one line", async () => {
  const url = uniqueShm("nobody");
  const r = await cli([url, "--timeout-ms=2000"]);
  expect(r.code).toBe(1);
  expect(r.out).toBe("");
  expect(r.err.split("\n")).toHaveLength(2);
  expect(r.err.startsWith(`hotpath metrics: cannot connect to ${url}: `)).toBe(true);
});

test("usage: no URL, two URLs, unknown flags and bad timeouts exit 2 with the usage; --help exits 0", async () => {
  for (const [args, why] of [
    [[], "the server's URL is required"],
    [["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], 'one URL only (got "tcp://127.0.0.1:1" and "tcp://127.0.0.1:2")'],
    [["tcp://127.0.0.1:1", "--verbose"], 'unknown flag "--verbose"'],
    [["tcp://127.0.0.1:1", "--timeout-ms", "0"], '--timeout-ms: "0" is not a whole number of ms >= 1'],
    [["tcp://127.0.0.1:1", "--timeout-ms=1.5"], '--timeout-ms: "1.5" is not a whole number of ms >= 1'],
    [["tcp://127.0.0.1:1", "--timeout-ms"], "--timeout-ms needs a value"],
  ] as const) {
    const r = await cli([...args]);
    expect({ args, code: r.code, out: r.out, err: r.err }).toEqual({ args, code: 2, out: "", err: `hotpath metrics: ${why}\n${METRICS_USAGE}\n` });
  }
  const help = await cli(["--help"]);
  expect({ code: help.code, out: help.out, err: help.err }).toEqual({ code: 0, out: `${METRICS_USAGE}\n`, err: "" });
});
