/**
 * UCX benchmarks beside `ucx_perftest -t ucp_am_lat` over exactly the same UCX_TLS, measured in
 * the same run: UCX_TLS=tcp,self (sockaddr wire-up) and UCX_TLS=shm,self (worker-address
 * wire-up: no tcp lane at all), hotpath's ucx transport in spin mode (client here, hot-path
 * server in its own process, both with that UCX_TLS), 32 B round trip p50/p99, calls/s at 64
 * in flight, 1 MiB echo, and a one-sided 32-byte RMA get.
 *
 * One statistic for both: the per-call round trip. hotpath times every call on its own with
 * Bun.nanoseconds() (no batching, no means of batches) and takes percentiles of those times;
 * ucx_perftest's "Final" 50th percentile is of its per-iteration ping-pong times, printed as
 * one-way latency (half the round trip), so the table shows it doubled. Every hotpath response
 * is checked byte for byte against its own request (the request carries its sequence number).
 * Process layout: two processes on one host, each spinning one thread, no core pinning.
 * Run: bun bench/ucx.bench.ts [--quick]   (needs ucx-utils for the reference row)
 */

import { Client, SEND_OK, connect } from "../src/index.ts";
import type { UcxConnection } from "../src/ucx/connection.ts";
import { ECHO_METHOD } from "./peers/methods.ts";
import { REGION_METHOD } from "./peers/segment-server.ts";
import { startPeer } from "./spawn.ts";
import { perftest } from "./perftest.ts";

const SEGMENT_SERVER = new URL("./peers/segment-server.ts", import.meta.url).pathname;

export interface UcxFigures {
  /** "tcp" or "shm": the UCX_TLS both hotpath and perftest ran with is `ucxTls`. */
  tls: string;
  ucxTls: string;
  /** How hotpath's connection was wired up (sockaddr through UCX's connection manager, or worker address). */
  wireup: string;
  perftestRttUs: number | null;
  p50Us: number;
  p99Us: number;
  /** p50 / perftest RTT (null without perftest). */
  ratio: number | null;
  cps64: number;
  mibMs: number;
  rmaGetUs: number;
  /** Responses whose bytes differed from their request (must be 0). */
  wrong: number;
}

/**
 * ucx_perftest am_lat round trip p50 (bench/perftest.ts: 2 × its per-iteration one-way median,
 * over the last 2048 iterations of the run), or null when it is not installed or a run failed.
 */
export async function perftestRtt(tls: string, quick: boolean): Promise<number | null> {
  const r = await perftest(tls, quick ? 20_000 : 200_000, 0);
  return r === null ? null : r.p50Us;
}

/** The q-quantile of sorted per-call times (ns). */
function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

export async function runUcxBench(quick: boolean, log: (s: string) => void = () => {}): Promise<UcxFigures[]> {
  const out: UcxFigures[] = [];
  const savedTls = process.env.UCX_TLS;
  for (const [label, tls] of [["tcp", "tcp,self"], ["shm", "shm,self"]] as const) {
    log(`ucx over ${label}: ucx_perftest reference (UCX_TLS=${tls})`);
    const perftestRttUs = await perftestRtt(tls, quick);
    log(`ucx over ${label}: hotpath (UCX_TLS=${tls})`);
    // Reaches this process's UCX context too (UcpContext.create applies process.env's UCX_*).
    process.env.UCX_TLS = tls;
    const server = await startPeer([SEGMENT_SERVER, "ucx://127.0.0.1:0", "spin"], { UCX_TLS: tls });
    try {
      const conn = (await connect(server.url, { wait: { mode: "spin", spinNs: 0 }, ucx: { rma: true } })) as unknown as UcxConnection;
      const c = new Client<number>(conn, { window: 256 });
      let done = 0;
      let wrong = 0;
      /** The request the next response must equal, byte for byte (user data -1: timed calls). */
      let expect: Uint8Array = new Uint8Array(0);
      /** The burst's requests, one per call slot (user data = its index): each response must equal its own. */
      const burstBodies: Uint8Array[] = [];
      for (let k = 0; k < 64; k++) {
        const b = new Uint8Array(32);
        for (let i = 0; i < b.length; i++) b[i] = (i * 31 + k * 7 + 1) & 0xff;
        b[0] = k;
        burstBodies.push(b);
      }
      c.onResponse = (ud, data, err) => {
        done++;
        const e = ud < 0 ? expect : burstBodies[ud]!;
        if (err !== null || data.length !== e.length) return void wrong++;
        if (e.length > 256) {
          if (!Buffer.from(data.buffer, data.byteOffset, data.length).equals(e)) wrong++;
        } else for (let i = 0; i < e.length; i++) if (data[i] !== e[i]) return void wrong++;
      };
      const stamp = (data: Uint8Array, seq: number) => {
        data[0] = seq;
        data[1] = seq >>> 8;
        data[2] = seq >>> 16;
      };
      const rt = (data: Uint8Array, seq: number) => {
        stamp(data, seq);
        expect = data;
        const target = done + 1;
        while (c.call(ECHO_METHOD, data, -1) !== SEND_OK) c.poll();
        while (done < target) c.poll();
      };
      const timed = (n: number, data: Uint8Array): Float64Array => {
        const t = new Float64Array(n);
        for (let i = 0; i < n; i++) {
          const t0 = Bun.nanoseconds();
          rt(data, i);
          t[i] = Bun.nanoseconds() - t0;
        }
        return t.sort();
      };
      const small = new Uint8Array(32).fill(0x5a);
      const big = Buffer.alloc(1 << 20, 0x5a);
      const n = quick ? 20_000 : 200_000;
      timed(quick ? 2000 : 20_000, small); // warm-up
      const lat = timed(n, small);
      // Calls/s with 64 in flight: complete bursts, every response checked byte for byte
      // against its own request (64 distinct bodies, one per call slot).
      const nBurst = quick ? 20_000 : 200_000;
      const t0 = Bun.nanoseconds();
      let sent = 0;
      const start = done;
      while (done - start < nBurst) {
        while (sent < nBurst && sent - (done - start) < 64 && c.call(ECHO_METHOD, burstBodies[sent & 63]!, sent & 63) === SEND_OK) sent++;
        c.poll();
      }
      const cps64 = nBurst / ((Bun.nanoseconds() - t0) / 1e9);
      const mib = timed(quick ? 30 : 300, big);
      // One-sided read of 32 bytes from a region the server registered, timed per get.
      const desc: Uint8Array[] = [];
      c.onResponse = (_u, data) => {
        desc.push(data.slice());
        done++;
      };
      c.call(REGION_METHOD, new Uint8Array(0), 0);
      while (desc.length === 0) c.poll();
      const remote = conn.attachRegion(desc[0]!);
      const gets = new Float64Array(quick ? 1000 : 10_000);
      for (let i = -200; i < gets.length; i++) {
        let got = false;
        const g0 = Bun.nanoseconds();
        remote.get(0, 32).then((b) => {
          got = true;
          if (b[0] !== 7 || b[31] !== 7) wrong++;
        });
        while (!got) {
          conn.poll();
          await null;
        }
        if (i >= 0) gets[i] = Bun.nanoseconds() - g0;
      }
      gets.sort();
      const p50Us = quantile(lat, 0.5) / 1e3;
      out.push({
        tls: label,
        ucxTls: tls,
        wireup: server.url.includes("wireup=address") ? "worker address" : "sockaddr",
        perftestRttUs,
        p50Us,
        p99Us: quantile(lat, 0.99) / 1e3,
        ratio: perftestRttUs === null ? null : p50Us / perftestRttUs,
        cps64,
        mibMs: quantile(mib, 0.5) / 1e6,
        rmaGetUs: quantile(gets, 0.5) / 1e3,
        wrong,
      });
      c.close();
    } finally {
      await server.stop();
      if (savedTls === undefined) delete process.env.UCX_TLS;
      else process.env.UCX_TLS = savedTls;
    }
  }
  return out;
}

export function formatUcxTable(rows: UcxFigures[]): string {
  const fc = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${(v / 1e3).toFixed(0)}k`);
  const lines = [["UCX_TLS (wire-up)", "perftest am_lat RTT p50 (ref, µs)", "hotpath p50 (µs)", "p50/ref", "p99 (µs)", "calls/s, 64 in flight", "1 MiB echo p50 (ms)", "RMA get 32 B p50 (µs)", "wrong bytes"]];
  for (const r of rows) {
    lines.push([
      `${r.ucxTls} (${r.wireup})`,
      r.perftestRttUs === null ? "not installed" : r.perftestRttUs.toFixed(2),
      r.p50Us.toFixed(2),
      r.ratio === null ? "-" : `${r.ratio.toFixed(2)}x`,
      r.p99Us.toFixed(2),
      fc(r.cps64),
      r.mibMs.toFixed(3),
      r.rmaGetUs.toFixed(2),
      String(r.wrong),
    ]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  return lines.map((l) => l.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join("\n");
}

if (import.meta.main) {
  const quick = process.argv.includes("--quick");
  const rows = await runUcxBench(quick, (s) => console.error(`… ${s}`));
  console.log(formatUcxTable(rows));
  if (process.argv.includes("--json")) console.log(JSON.stringify(rows));
  process.exit(rows.some((r) => r.wrong > 0) ? 1 : 0);
}
