/**
 * The bench's "rdma" part: hotpath over rdma:// measured by the main table's own method
 * (bench/measure.ts's measureRow through drivers.ts's hotpathDriver: per-call round trips of
 * 32 B, each call timed alone, calls/s in complete bursts at 1 and 64 in flight, every reply
 * checked byte for byte, CPU of both sides; then 1 MiB calls timed one by one by
 * measure.ts's timedCalls, same latency loop and byte check, for their p50 and p99), beside perftest's ib_send_lat (32 B) and
 * ib_write_bw (1 MiB) on the same port.
 *
 * Where it runs:
 * - a device exists (ibv_get_device_list lists one with an ACTIVE port): on it, loopback through
 *   the HCA (rdma_cm on the port's IPv4 GID, else socket mode with ?device=&port=); both sides
 *   spin, as the ucx rows do;
 * - no device, and the run was asked for the fixture (`bun bench/run.ts --rdma-fixture`): on the
 *   software RC provider (test/rdma/softrc, built on that flag only; the bench imports nothing
 *   of test/ otherwise), event-loop bodies (the fixture's engine threads need the two cores
 *   more than a spinning client), every figure labelled SOFTWARE_LABEL: functional, never
 *   hardware performance; perftest cannot open it and is "not run";
 * - otherwise: skipped, with the reason (`rdma: skipped: <reason>`).
 * The client runs in a child process of its own (`bun bench/rdma.bench.ts --client ...`) with
 * the provider's environment: a process that loads the fixture must not also hold the system
 * libibverbs (UCX's rows load it into the bench process), and the figures are the same either way.
 *
 *   const part = await measureRdma({ quick: true, durationS: 0.03, fixture: true, log: console.log });
 *
 * Thread: the bench's main thread; the server and client processes are stopped by pid.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ibPerftest, type PerftestResult } from "../src/cli/ib-perftest.ts";
import { listDevices } from "../src/cli/rdma-selftest.ts";
import { rdmaUnavailableReason } from "../src/ffi/ibverbs.ts";
import { processProbe } from "./cpu.ts";
import { hotpathDriver } from "./drivers.ts";
import { measureRow, timedCalls, type RowFigures } from "./measure.ts";
import type { PartReport } from "./report.ts";
import { startPeer } from "./spawn.ts";

export const SOFTWARE_LABEL = "software provider (functional, not hardware)";
const SEGMENT = new URL("./peers/segment-server.ts", import.meta.url).pathname;
const SELF = new URL(import.meta.url).pathname;
const SIZES = [32, 1 << 20];
const INFLIGHT = [1, 64];
/** 1 MiB calls timed one by one for its p99 (measureRow's payload sweep gives a p50 only); --quick: fewer. */
const BIG_CALLS = 400;
const BIG_CALLS_QUICK = 60;
/** The client child's whole run gets this long: a full run measures for a few seconds. */
const CLIENT_TIMEOUT_MS = 300_000;

/** Thrown when the part cannot run here (run.ts lists it as skipped with this reason). */
export class RdmaSkip extends Error {
  override name = "RdmaSkip";
}

export interface RdmaPartOptions {
  quick: boolean;
  durationS: number;
  /** --rdma-fixture: run on the software provider when no device exists. */
  fixture: boolean;
  log: (s: string) => void;
}

interface Where {
  label: string;
  url: string;
  mode: "spin" | "async";
  env: Record<string, string>;
  perftest: { device: string; port: number; gidIndex: number; ethernet: boolean } | null;
  cleanup(): void;
}

/** A device with an ACTIVE port here, or the fixture when asked; RdmaSkip otherwise. */
async function where(o: RdmaPartOptions): Promise<Where> {
  // The system library, in this process: it is what a real device needs (and UCX may have loaded it already).
  const why = rdmaUnavailableReason();
  if (why === null) {
    const dev = listDevices().find((d) => d.ports.some((p) => p.active));
    if (dev === undefined) throw new RdmaSkip("no ACTIVE port on any RDMA device");
    const port = dev.ports.find((p) => p.active)!;
    const url = port.ipv4 !== null ? `rdma://${port.ipv4}:0` : `rdma://127.0.0.1:0?mode=socket&device=${dev.name}&port=${port.port}&gid=${port.gidIndex}`;
    // HOTPATH_IBVERBS may name the fixture for this whole run: its device is no hardware either.
    if (dev.fixture) return { label: SOFTWARE_LABEL, url, mode: "async", env: {}, perftest: null, cleanup() {} };
    return {
      label: `${dev.name} port ${port.port}, loopback through the HCA`,
      url,
      mode: "spin",
      env: {},
      perftest: { device: dev.name, port: port.port, gidIndex: port.gidIndex, ethernet: port.linkLayer === "Ethernet" },
      cleanup() {},
    };
  }
  if (!o.fixture) throw new RdmaSkip(`${why} (no RDMA device; bun bench/run.ts --rdma-fixture runs a functional row on the software test provider)`);
  const { buildSoftRc } = await import("../test/rdma/softrc/build.ts");
  const rc = await buildSoftRc();
  const dir = mkdtempSync(join(tmpdir(), "hotpath-bench-softrc-"));
  return {
    label: SOFTWARE_LABEL,
    url: "rdma://127.0.0.1:0",
    mode: "async",
    env: { HOTPATH_IBVERBS: rc.ibverbs, HOTPATH_RDMACM: rc.rdmacm, SOFTRC_DIR: dir },
    perftest: null,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

const fmtUs = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(2)} µs`);
const fmtRate = (v: number | undefined) => (v === undefined ? "-" : v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(0));

/** The part: figures of hotpath over rdma:// and the perftest references, as a PartReport. */
export async function measureRdma(o: RdmaPartOptions): Promise<PartReport> {
  const w = await where(o);
  try {
    o.log(`server: bench/peers/segment-server.ts ${w.url} ${w.mode} (${w.label})`);
    const peer = await startPeer([SEGMENT, w.url, w.mode], w.env);
    let fig: RdmaFigures;
    try {
      o.log(`client: bench/rdma.bench.ts --client ${peer.url} (${w.mode} body)`);
      fig = await runClient(peer.url, peer.proc.pid, w, o.durationS, o.quick);
    } finally {
      await peer.stop();
    }
    const refs: Array<[string, PerftestResult | null]> = [];
    if (w.perftest !== null) {
      o.log("ib_send_lat 32 B and ib_write_bw 1 MiB (perftest, same port)");
      refs.push(["ib_send_lat 32 B", await ibPerftest("ib_send_lat", { ...w.perftest, bytes: 32, iters: o.quick ? 1000 : 10000 })]);
      refs.push(["ib_write_bw 1 MiB", await ibPerftest("ib_write_bw", { ...w.perftest, bytes: 1 << 20, iters: o.quick ? 200 : 2000 })]);
    }
    return report(w, peer.url, fig, refs);
  } finally {
    w.cleanup();
  }
}

function report(w: Where, url: string, fig: RdmaFigures, refs: Array<[string, PerftestResult | null]>): PartReport {
  const soft = w.perftest === null;
  const tag = soft ? ` [${SOFTWARE_LABEL}]` : "";
  const lines = [
    `  row                                  body   p50 32 B    p99 32 B    p50 1 MiB   p99 1 MiB   calls/s @1  calls/s @64  CPU µs/call @64 cli|srv`,
    `  ${`hotpath rdma (${url.includes("mode=socket") ? "socket mode" : "rdma_cm"})`.padEnd(36)} ${w.mode.padEnd(5)}  ${fmtUs(fig.p50Us).padEnd(10)}  ${fmtUs(fig.p99Us).padEnd(10)}  ${fmtUs(fig.big.p50Us).padEnd(10)}  ${fmtUs(fig.big.p99Us).padEnd(10)}  ${fmtRate(fig.inflight[1]).padEnd(10)}  ${fmtRate(fig.inflight[64]).padEnd(11)}  ${fig.cpu.at64 ? `${fig.cpu.at64.clientUs.toFixed(2)} | ${fig.cpu.at64.serverUs.toFixed(2)}` : "-"}${tag}`,
  ];
  const rows: Record<string, unknown>[] = [{ id: "rdma", label: soft ? `hotpath rdma (${SOFTWARE_LABEL})` : "hotpath rdma", provider: w.label, url, mode: w.mode, ...fig }];
  if (soft) lines.push("  ib_send_lat / ib_write_bw: not run: perftest opens devices through the system libibverbs, and the software provider is no device it can open");
  for (const [name, r] of refs) {
    if (r === null || "notRun" in r) {
      lines.push(`  ${name}: not run: ${r === null ? "-" : r.notRun}`);
      continue;
    }
    if ("rttP50Us" in r) {
      lines.push(`  ${name} (perftest, round trip = one-way doubled): p50 ${fmtUs(r.rttP50Us)}, p99 ${fmtUs(r.rttP99Us)}; hotpath p50 / ib_send_lat p50 = ${(fig.p50Us / r.rttP50Us).toFixed(2)}x`);
      rows.push({ id: "ib_send_lat", ...r });
    } else {
      // An echo of 1 MiB moves it both ways: at perftest's bandwidth that takes 2 MiB / BW.
      const floorUs = (2 * (1 << 20)) / (r.bwMBps * 1e6) * 1e6;
      const hp = fig.big.p50Us;
      lines.push(`  ${name} (perftest): ${r.bwMBps.toFixed(1)} MB/s (2 MiB at that rate: ${fmtUs(floorUs)}); hotpath 1 MiB p50 / that = ${(hp / floorUs).toFixed(2)}x`);
      rows.push({ id: "ib_write_bw", ...r });
    }
  }
  lines.push(`  layout: client: its own process (bench/rdma.bench.ts --client, ${w.mode} body); server: own process (peers/segment-server.ts ${w.mode}); ${w.label}`);
  return { title: `hotpath rdma: ${w.label}`, lines, targets: [], rows };
}

/** Runs the client child against `url`; its RowFigures. */
async function runClient(url: string, serverPid: number, w: Where, durationS: number, quick: boolean): Promise<RdmaFigures> {
  const p = Bun.spawn(["bun", SELF, "--client", url, String(serverPid), w.mode, String(durationS), quick ? "quick" : "full"], { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...w.env } });
  const timer = setTimeout(() => p.kill(9), CLIENT_TIMEOUT_MS);
  try {
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (code !== 0) {
      const lines = err.trim().split("\n");
      const why = lines.find((l) => /^\w*(error|Error)\b.*: /.test(l.trim())) ?? lines.slice(-3).join("; ");
      throw new Error(`the rdma client exited ${code ?? p.signalCode}: ${why.trim()}`);
    }
    return JSON.parse(out.trim().split("\n").pop()!) as RdmaFigures;
  } finally {
    clearTimeout(timer);
    if (p.exitCode === null && p.signalCode === null) p.kill(9);
  }
}

/** The figures of one rdma run: the main table's, and 1 MiB p50 / p99 from calls timed one by one. */
export type RdmaFigures = RowFigures & { big: { p50Us: number; p99Us: number; samples: number } };

/** The client child: measureRow over hotpathDriver, then the 1 MiB calls; one JSON line of RdmaFigures. */
async function clientMain(argv: string[]): Promise<void> {
  const [url, pid, mode, duration, quick] = argv;
  const spin = mode === "spin";
  const d = await hotpathDriver(url!, spin ? { wait: { mode: "spin", spinNs: 0 } } : {});
  try {
    const fig = await measureRow(d, { durationS: Number(duration), sizes: SIZES, inflight: INFLIGHT, mode: spin ? "spin" : "async", cpu: processProbe(Number(pid)) });
    const big = await timedCalls(d, 1 << 20, quick === "quick" ? BIG_CALLS_QUICK : BIG_CALLS, spin ? "spin" : "async");
    console.log(JSON.stringify({ ...fig, big } satisfies RdmaFigures));
  } finally {
    await d.close();
  }
}

if (import.meta.main && process.argv[2] === "--client") {
  await clientMain(process.argv.slice(3));
  process.exit(0);
}
