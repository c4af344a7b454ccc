/**
 * TCP echo benchmark, client here and server in a separate process, hotpath beside a raw Bun
 * socket ping-pong measured in the same run:
 *   - 32-byte round trip p50 / p99 (mitata samples of one round trip each)
 *   - calls/s with 1 and 64 in flight (mitata samples of a burst of calls; calls / mean time)
 *   - 1 MiB echo round trip p50
 * Run: bun bench/rpc.bench.ts [--quick]
 */

import { measure } from "mitata";
import { hotpathClient, rawTcpClient, type EchoClient } from "./clients.ts";
import { startPeer } from "./spawn.ts";

const quick = process.argv.includes("--quick");
const ECHO = new URL("./peers/echo-server.ts", import.meta.url).pathname;

interface Row {
  metric: string;
  unit: string;
  hotpath: number;
  reference: number;
  /** true when larger is better (throughput) */
  higherIsBetter: boolean;
}

async function measureClient(c: EchoClient) {
  const small = new Uint8Array(32).fill(7);
  const big = new Uint8Array(1 << 20).fill(9);
  const opts = quick ? { min_cpu_time: 50e6, max_samples: 2_000 } : { min_cpu_time: 1_000e6, max_samples: 1e6 };
  const rt = await measure(() => c.roundTrip(small), opts);
  const burstN = quick ? 2_000 : 20_000;
  const b1 = await measure(() => c.burst(quick ? 200 : 2_000, 1, small), { ...opts, max_samples: quick ? 5 : 50 });
  const b64 = await measure(() => c.burst(burstN, 64, small), { ...opts, max_samples: quick ? 5 : 50 });
  const mib = await measure(() => c.roundTrip(big), { ...opts, max_samples: quick ? 20 : 500 });
  return {
    p50Us: rt.p50 / 1e3,
    p99Us: rt.p99 / 1e3,
    cps1: (quick ? 200 : 2_000) / (b1.avg / 1e9),
    cps64: burstN / (b64.avg / 1e9),
    mibMs: mib.p50 / 1e6,
  };
}

export async function runTcpBench(): Promise<Row[]> {
  const hpPeer = await startPeer([ECHO, "hotpath", "tcp://127.0.0.1:0"]);
  const rawPeer = await startPeer([ECHO, "raw-tcp", "127.0.0.1"]);
  try {
    const hp = await hotpathClient(hpPeer.url);
    const raw = await rawTcpClient(rawPeer.url);
    // Interleave: reference, hotpath, so drift on a noisy machine hits both.
    const r = await measureClient(raw);
    const h = await measureClient(hp);
    hp.close();
    raw.close();
    return [
      { metric: "32 B round trip p50", unit: "µs", hotpath: h.p50Us, reference: r.p50Us, higherIsBetter: false },
      { metric: "32 B round trip p99", unit: "µs", hotpath: h.p99Us, reference: r.p99Us, higherIsBetter: false },
      { metric: "calls/s, 1 in flight", unit: "calls/s", hotpath: h.cps1, reference: r.cps1, higherIsBetter: true },
      { metric: "calls/s, 64 in flight", unit: "calls/s", hotpath: h.cps64, reference: r.cps64, higherIsBetter: true },
      { metric: "1 MiB echo p50", unit: "ms", hotpath: h.mibMs, reference: r.mibMs, higherIsBetter: false },
    ];
  } finally {
    await hpPeer.stop();
    await rawPeer.stop();
  }
}

function fmt(v: number, unit: string): string {
  if (unit === "calls/s") return v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${(v / 1e3).toFixed(0)}k`;
  return v.toFixed(unit === "ms" ? 3 : 2);
}

export function printRows(title: string, refName: string, rows: Row[]): void {
  console.log(`\n${title}`);
  const head = ["metric", "hotpath", refName, "ratio (hotpath / reference)"];
  const body = rows.map((r) => [
    `${r.metric} (${r.unit})`,
    fmt(r.hotpath, r.unit),
    fmt(r.reference, r.unit),
    `${(r.hotpath / r.reference).toFixed(2)}x ${r.higherIsBetter ? "(higher is better)" : "(lower is better)"}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(line(head));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const b of body) console.log(line(b));
}

if (import.meta.main) {
  const rows = await runTcpBench();
  printRows("tcp echo, client and server in separate processes", "raw Bun socket", rows);
}
