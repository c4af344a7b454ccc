/**
 * TCP echo benchmark: the client runs here, each server in its own process, and every figure
 * is printed beside two raw Bun socket references measured in the same run:
 *   - "raw framed": a hand-rolled Bun socket RPC (u32-length-prefixed messages, the server
 *     answers each message with its own write(), the client coalesces a burst into one write);
 *   - "raw bytes": a server that writes back whatever bytes it reads, with no per-message work
 *     at all (the ceiling for Bun sockets; not an RPC).
 * Figures:
 *   - 32-byte round trip p50 / p99 (mitata samples of one round trip each)
 *   - calls/s with 1 and 64 in flight (mitata samples of a burst; calls / mean burst time)
 *   - 1 MiB echo round trip p50
 * Run: bun bench/rpc.bench.ts [--quick]
 */

import { measure } from "mitata";
import { hotpathClient, rawTcpClient, type EchoClient } from "./clients.ts";
import { startPeer } from "./spawn.ts";

const ECHO = new URL("./peers/echo-server.ts", import.meta.url).pathname;

export interface Figures {
  p50Us: number;
  p99Us: number;
  cps1: number;
  cps64: number;
  mibMs: number;
}

export async function measureEcho(c: EchoClient, quick: boolean): Promise<Figures> {
  const small = new Uint8Array(32).fill(7);
  const big = new Uint8Array(1 << 20).fill(9);
  const n1 = quick ? 500 : 5_000;
  const n64 = quick ? 20_000 : 100_000;
  // Warm-up: let the JIT settle on every path before samples count.
  await c.burst(n64, 64, small);
  await c.roundTrip(big);
  const opts = quick ? { min_cpu_time: 100e6, max_samples: 5_000 } : { min_cpu_time: 1_000e6, max_samples: 200_000 };
  const burstOpts = { min_cpu_time: quick ? 100e6 : 1_000e6, max_samples: quick ? 5 : 30, warmup_samples: 1 };
  const rt = await measure(() => c.roundTrip(small), opts);
  const b1 = await measure(() => c.burst(n1, 1, small), burstOpts);
  const b64 = await measure(() => c.burst(n64, 64, small), burstOpts);
  const mib = await measure(() => c.roundTrip(big), { ...opts, max_samples: quick ? 30 : 500 });
  return { p50Us: rt.p50 / 1e3, p99Us: rt.p99 / 1e3, cps1: n1 / (b1.avg / 1e9), cps64: n64 / (b64.avg / 1e9), mibMs: mib.p50 / 1e6 };
}

export interface TcpBenchResult {
  hotpath: Figures;
  rawFramed: Figures;
  rawBytes: Figures;
}

export async function runTcpBench(quick: boolean, log: (s: string) => void = () => {}): Promise<TcpBenchResult> {
  const peers = {
    hotpath: await startPeer([ECHO, "hotpath", "tcp://127.0.0.1:0"]),
    rawFramed: await startPeer([ECHO, "raw-framed", "127.0.0.1"]),
    rawBytes: await startPeer([ECHO, "raw-tcp", "127.0.0.1"]),
  };
  try {
    const out: Partial<TcpBenchResult> = {};
    for (const name of ["rawFramed", "hotpath", "rawBytes"] as const) {
      log(`tcp: measuring ${name}`);
      const c = name === "hotpath" ? await hotpathClient(peers[name].url) : await rawTcpClient(peers[name].url, name === "rawFramed");
      out[name] = await measureEcho(c, quick);
      c.close();
    }
    return out as TcpBenchResult;
  } finally {
    for (const p of Object.values(peers)) await p.stop();
  }
}

function fmt(v: number, unit: string): string {
  if (unit === "calls/s") return v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${(v / 1e3).toFixed(0)}k`;
  return v.toFixed(unit === "ms" ? 3 : 2);
}

export function formatTcpTable(r: TcpBenchResult): string {
  const metrics: Array<[string, keyof Figures, string, boolean]> = [
    ["32 B round trip p50", "p50Us", "µs", false],
    ["32 B round trip p99", "p99Us", "µs", false],
    ["calls/s, 1 in flight", "cps1", "calls/s", true],
    ["calls/s, 64 in flight", "cps64", "calls/s", true],
    ["1 MiB echo p50", "mibMs", "ms", false],
  ];
  const head = ["metric", "hotpath tcp", "raw framed", "hotpath/framed", "raw bytes", "hotpath/bytes"];
  const body = metrics.map(([label, k, unit, higher]) => [
    `${label} (${unit})`,
    fmt(r.hotpath[k], unit),
    fmt(r.rawFramed[k], unit),
    `${(r.hotpath[k] / r.rawFramed[k]).toFixed(2)}x`,
    fmt(r.rawBytes[k], unit),
    `${(r.hotpath[k] / r.rawBytes[k]).toFixed(2)}x`,
  ].concat(higher ? ["(higher is better)"] : ["(lower is better)"]));
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < widths.length ? c.padEnd(widths[i]!) : c)).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

if (import.meta.main) {
  const quick = process.argv.includes("--quick");
  const r = await runTcpBench(quick, (s) => console.error(s));
  console.log("\ntcp echo, client and server in separate processes (ratios: same run)");
  console.log(formatTcpTable(r));
}
