/**
 * `bun run bench` / `hotpath bench`: every transport and peer, measured by the same client body,
 * each row beside a named reference measured in the same run. Writes a JSON report and charts.
 *
 *   --quick               short samples (under a minute; the CI smoke run)
 *   --transports a,b      only these rows (ids: raw-tcp raw-shm inproc shm-spin shm-async tcp
 *                         ucx-tcp ucx-shm ucx-rc ucx-ud ucx-dc rdma raw-unix ipc worker http ws grpc)
 *   --sizes 32,1024,...   payload sweep in bytes (32 is always measured)
 *   --duration S          seconds of samples per measurement (default 0.5; --quick 0.03)
 *   --json PATH           report path (default bench/results/latest.json; charts beside it)
 *   --serve HOST:PORT     across nodes: run the tcp, ucx and raw tcp servers here (ports PORT,
 *                         PORT+1, PORT+2) until interrupted
 *   --connect HOST:PORT   across nodes: measure those servers from this node
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { measure } from "mitata";
import { charts, machine, table, toPng, type Report, type RowResult } from "./report.ts";
import { TARGETS, type EchoClient, type Where } from "./targets.ts";
import { perftestRtt } from "./ucx.bench.ts";

interface Options {
  quick: boolean;
  ids: string[] | null;
  sizes: number[];
  inflight: number[];
  durationS: number;
  json: string;
  serve: string | null;
  connect: string | null;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { quick: false, ids: null, sizes: [], inflight: [1, 16, 64, 256], durationS: 0.5, json: join(import.meta.dir, "results", "latest.json"), serve: null, connect: null };
  let sizes: number[] | null = null;
  let duration: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`bench: ${a} needs a value`);
      return v;
    };
    if (a === "--quick") o.quick = true;
    else if (a === "--transports") o.ids = next().split(",").filter(Boolean);
    else if (a === "--sizes") sizes = next().split(",").map(Number);
    else if (a === "--duration") duration = Number(next());
    else if (a === "--json") o.json = next();
    else if (a === "--serve") o.serve = next();
    else if (a === "--connect") o.connect = next();
    else throw new Error(`bench: unknown option ${a} (see the comment at the top of bench/run.ts)`);
  }
  o.sizes = sizes ?? (o.quick ? [32, 4096, 1 << 20] : [32, 1024, 16384, 262144, 1 << 20]);
  if (!o.sizes.includes(32)) o.sizes.unshift(32);
  if (o.sizes.some((s) => !Number.isInteger(s) || s < 1 || s > 16 << 20)) throw new Error("bench: --sizes must be integers in 1..16777216");
  o.durationS = duration ?? (o.quick ? 0.03 : 0.5);
  if (!(o.durationS > 0)) throw new Error("bench: --duration must be > 0");
  if (o.ids) {
    const known = new Set(TARGETS.map((t) => t.id));
    const bad = o.ids.filter((id) => !known.has(id));
    if (bad.length) throw new Error(`bench: unknown transports ${bad.join(", ")} (known: ${[...known].join(", ")})`);
  }
  return o;
}

/** Calls per second keeping `inFlight` outstanding, over about `seconds`. */
async function throughput(c: EchoClient, inFlight: number, data: Uint8Array, seconds: number): Promise<number> {
  // Calibrate the burst size so one sample takes a fraction of the budget.
  let n = Math.max(inFlight * 4, 64);
  let t0 = Bun.nanoseconds();
  await c.burst(n, inFlight, data);
  const perCall = (Bun.nanoseconds() - t0) / n;
  n = Math.max(inFlight * 2, Math.min(2_000_000, Math.round((seconds * 1e9) / 4 / Math.max(perCall, 1))));
  const stats = await measure(() => c.burst(n, inFlight, data), { min_cpu_time: seconds * 1e9, max_samples: 20, warmup_samples: 1 });
  return n / (stats.avg / 1e9);
}

async function latency(c: EchoClient, data: Uint8Array, seconds: number): Promise<{ p50: number; p99: number }> {
  // Warm-up: at least 200 round trips and 50 ms, so the JIT and both sides' wait policies settle.
  const warmEnd = Bun.nanoseconds() + 50e6;
  for (let i = 0; i < 200 || Bun.nanoseconds() < warmEnd; i++) await c.roundTrip(data);
  const stats = await measure(() => c.roundTrip(data), { min_cpu_time: seconds * 1e9, max_samples: 200_000 });
  return { p50: stats.p50 / 1e3, p99: stats.p99 / 1e3 };
}

async function measureTarget(c: EchoClient, o: Options, maxBurstBytes: number, log: (s: string) => void): Promise<Omit<RowResult, "id" | "label" | "kind" | "reference">> {
  const small = new Uint8Array(32).fill(1);
  const lat = await latency(c, small, o.durationS);
  const sizes: Record<string, number> = { 32: lat.p50 };
  for (const s of o.sizes) {
    if (s === 32) continue;
    log(`payload ${s} B`);
    sizes[s] = (await latency(c, new Uint8Array(s).fill(2), o.durationS)).p50;
  }
  const inflight: Record<string, number> = {};
  for (const n of o.inflight) {
    log(`${n} in flight`);
    inflight[n] = await throughput(c, n, small.subarray(0, Math.min(32, maxBurstBytes)), o.durationS);
  }
  return { p50Us: lat.p50, p99Us: lat.p99, sizes, inflight };
}

export async function runBench(o: Options, print: (s: string) => void): Promise<Report> {
  const where: Where = { host: "127.0.0.1" };
  let targets = TARGETS;
  if (o.connect) {
    const [host, portStr] = o.connect.split(":");
    const port = Number(portStr);
    where.host = host!;
    where.remote = { tcp: `tcp://${host}:${port}`, "ucx-tcp": `ucx://${host}:${port + 1}`, "raw-tcp": `tcp://${host}:${port + 2}` };
    targets = TARGETS.filter((t) => where.remote![t.id] !== undefined);
  }
  if (o.ids) targets = targets.filter((t) => o.ids!.includes(t.id));
  const report: Report = {
    date: new Date().toISOString(),
    machine: machine(),
    options: { quick: o.quick, sizes: o.sizes, inflight: o.inflight, durationS: o.durationS, mode: o.connect ? `connect ${o.connect}` : "one host" },
    rows: [],
    skipped: [],
  };
  print(`hotpath bench${o.quick ? " --quick" : ""}: ${report.machine.cpu}, ${report.machine.cores} cores, ${report.machine.kernel}, Bun ${report.machine.bun}${report.machine.ucx ? `, ${report.machine.ucx}` : ""}`);
  print("clients run in this process; servers in their own processes (inproc and postMessage: a Worker); core placement left to the OS");
  let i = 0;
  for (const t of targets) {
    i++;
    const why = t.unavailable();
    if (why !== null) {
      report.skipped.push({ id: t.id, label: t.label, reason: why });
      print(`[${i}/${targets.length}] ${t.label}: skipped (${why})`);
      continue;
    }
    const step = (s: string) => print(`[${i}/${targets.length}] ${t.label}: ${s}`);
    step("starting");
    let running;
    try {
      running = await t.start(where);
    } catch (e) {
      report.skipped.push({ id: t.id, label: t.label, reason: `failed to start: ${e instanceof Error ? e.message : String(e)}` });
      step(`failed to start (${e instanceof Error ? e.message : String(e)})`);
      continue;
    }
    try {
      step("32 B round trip");
      const r = await measureTarget(running.client, o, t.maxBurstBytes ?? Infinity, step);
      report.rows.push({ id: t.id, label: t.label, kind: t.kind, reference: t.reference, ...r });
      step(`p50 ${r.p50Us.toFixed(2)} µs, ${Math.round(r.inflight[64] ?? 0)} calls/s at 64 in flight`);
    } catch (e) {
      report.skipped.push({ id: t.id, label: t.label, reason: `failed: ${e instanceof Error ? e.message : String(e)}` });
      step(`failed (${e instanceof Error ? e.message : String(e)})`);
    } finally {
      await running.stop();
    }
  }
  // ucx_perftest references for the ucx rows that ran (latency only: perftest measures one size).
  for (const tl of ["tcp", "shm", "rc", "ud", "dc"] as const) {
    if (!report.rows.some((r) => r.id === `ucx-${tl}`) || o.connect) continue;
    print(`ucx_perftest over ${tl} (reference)`);
    const rtt = await perftestRtt(`${tl},self`, o.quick);
    if (rtt === null) report.skipped.push({ id: `ucx-perftest-${tl}`, label: `ucx_perftest ${tl}`, reason: "ucx_perftest not installed (Debian ucx-utils)" });
    else report.rows.push({ id: `ucx-perftest-${tl}`, label: `ucx_perftest am_lat (${tl}, 32 B only)`, kind: "reference", reference: `ucx-perftest-${tl}`, p50Us: rtt, p99Us: NaN, sizes: { 32: rtt }, inflight: {} });
  }
  return report;
}

async function writeOutputs(report: Report, jsonPath: string, print: (s: string) => void): Promise<void> {
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  const { latency, throughput } = charts(report);
  const dir = dirname(jsonPath);
  for (const [name, svg] of [["latency", latency], ["throughput", throughput]] as const) {
    writeFileSync(join(dir, `${name}.svg`), svg);
    const png = await toPng(svg);
    if (typeof png === "string") print(png);
    else writeFileSync(join(dir, `${name}.png`), png);
  }
  print(`\nwrote ${jsonPath} and ${join(dir, "latency.svg")}, ${join(dir, "throughput.svg")} (and .png)`);
}

/** --serve: the across-nodes servers, on fixed ports, until the process is stopped. */
async function serveForPeers(hostPort: string, print: (s: string) => void): Promise<never> {
  const [host, portStr] = hostPort.split(":");
  const port = Number(portStr);
  if (!host || !Number.isInteger(port) || port < 1 || port > 65533) throw new Error(`bench --serve: "${hostPort}" is not HOST:PORT`);
  const { serve } = await import("../src/index.ts");
  const { ECHO_METHOD } = await import("./peers/methods.ts");
  const echo = { [ECHO_METHOD]: (h: { data: Uint8Array }) => h.data };
  const tcp = await serve(`tcp://${host}:${port}`, echo);
  print(`serving hotpath tcp on ${tcp.url}`);
  try {
    process.env.UCX_TLS ??= "tcp,self";
    const { listen, Server } = await import("../src/index.ts");
    const ucx = await listen(`ucx://${host}:${port + 1}`);
    const s = new Server({ onRequest: (h) => void h.reply(h.data) });
    s.attach(ucx);
    print(`serving hotpath ucx on ${ucx.url}`);
  } catch (e) {
    print(`ucx not served: ${e instanceof Error ? e.message : String(e)}`);
  }
  Bun.spawn(["bun", new URL("./peers/echo-server.ts", import.meta.url).pathname, "raw-framed-fixed", `${host}:${port + 2}`], { stdio: ["pipe", "inherit", "inherit"] });
  print(`serving raw tcp (framed) on tcp://${host}:${port + 2}`);
  print("ready");
  return new Promise<never>(() => {});
}

if (import.meta.main) {
  const o = parseArgs(process.argv.slice(2));
  const print = (s: string) => console.log(s);
  if (o.serve) await serveForPeers(o.serve, print);
  const report = await runBench(o, print);
  print("");
  print(table(report));
  await writeOutputs(report, o.json, print);
  process.exit(0);
}
