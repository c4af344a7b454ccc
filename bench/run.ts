/**
 * `bun run bench` / `hotpath bench`: every transport and peer, measured by the same client body
 * (bench/measure.ts: one spin body, one event-loop body; every reply checked byte for byte),
 * each row beside named references measured in the same run. Writes a JSON report and charts;
 * exits 1 when a row or a part (loopback, serve, worker-pool, idle-wake, stream, kv, rdma) failed to start or while measured, or
 * a ucx_perftest reference did not finish (a wrong reply byte among the causes), all listed
 * under FAILED; a row or part that cannot run here (a missing tool) is listed as skipped with
 * its reason and does not fail the run.
 *
 *   --quick               short samples (the CI smoke run)
 *   --transports a,b      only these rows (ids: raw-tcp raw-tcp-bytes raw-unix raw-shm inproc
 *                         shm-spin shm-async tcp ucx-tcp ucx-shm ucx-rc ucx-ud ucx-dc rdma ipc
 *                         worker http ws grpc loopback serve worker-pool idle-wake stream kv)
 *   --rdma-fixture        the rdma part (bench/rdma.bench.ts) runs on the software RC test
 *                         provider (test/rdma/softrc, built for it) when no RDMA device exists:
 *                         a functional row, labelled so, never hardware performance
 *   --sizes 32,1024,...   payload sweep in bytes (32 is always measured)
 *   --duration S          seconds of samples per measurement (default 0.5; --quick 0.03)
 *   --json PATH           report path (default bench/results/latest.json; charts beside it)
 *   --corrupt-reply N     the raw reference echo servers flip one byte of their N-th reply
 *                         (HOTPATH_BENCH_CORRUPT_REPLY): shows the byte check failing the row;
 *                         the kv part's stored value of key N gets one byte flipped (its GET rows fail);
 *                         the stream part's peers flip one byte of the N-th message of every stream
 *   --serve HOST:PORT     across nodes: run the tcp, ucx and raw tcp servers here (ports PORT,
 *                         PORT+1, PORT+2) until interrupted
 *   --connect HOST:PORT   across nodes: measure those servers from this node
 */

import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { kvLines, measureKv, type KvReport } from "./kv.bench.ts";
import { measureRow } from "./measure.ts";
import { perftest } from "./perftest.ts";
import { addRatios, charts, checkTargets, machine, serveChart, table, toPng, type PartReport, type Report, type RowResult } from "./report.ts";
import { PLACEMENT, TARGETS, type Where } from "./targets.ts";

interface Options {
  quick: boolean;
  ids: string[] | null;
  sizes: number[];
  inflight: number[];
  durationS: number;
  json: string;
  serve: string | null;
  connect: string | null;
  corruptReply: number;
  rdmaFixture: boolean;
}

/** Ids of the sections that are not TARGETS rows. */
const EXTRA_IDS = ["loopback", "serve", "worker-pool", "idle-wake", "stream", "kv", "rdma"];

/** Issue 14's parts and issue 16's stream part: id, title while it runs, the module (another engineer's until it lands) and its measure function. */
const PARTS = [
  { id: "serve", label: "Bun.serve front with backends (bench/serve.bench.ts)", file: "./serve.bench.ts", fn: "measureServe" },
  { id: "worker-pool", label: "worker pool against postMessage (bench/worker-pool.bench.ts)", file: "./worker-pool.bench.ts", fn: "measureWorkerPool" },
  { id: "idle-wake", label: "idle-to-woken calls (bench/idle-wake.bench.ts)", file: "./idle-wake.bench.ts", fn: "measureIdleWake" },
  { id: "stream", label: "stream throughput beside gRPC and WebSocket (bench/stream.bench.ts)", file: "./stream.bench.ts", fn: "measureStream" },
] as const;

type PartFn = (opts: { quick: boolean; log: (s: string) => void }) => Promise<PartReport & { skipped?: Array<{ id: string; reason: string }> }>;
/** The kv part's seconds per figure and value sizes: 18 rows (64 B values), about 35 s of a full run. Shorter windows understate the spin rows several times over (0.05 s: 96k GETs/s at 64 in flight where 0.3 s gave 948k, same server), so the part uses kv.bench.ts's own 0.3 s. */
const KV_DURATION_S = 0.3;
const KV_SIZES = [64];

function parseArgs(argv: string[]): Options {
  const o: Options = { quick: false, ids: null, sizes: [], inflight: [1, 16, 64, 256], durationS: 0.5, json: join(import.meta.dir, "results", "latest.json"), serve: null, connect: null, corruptReply: 0, rdmaFixture: false };
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
    else if (a === "--corrupt-reply") o.corruptReply = Number(next());
    else if (a === "--rdma-fixture") o.rdmaFixture = true;
    else throw new Error(`bench: unknown option ${a} (see the comment at the top of bench/run.ts)`);
  }
  o.sizes = sizes ?? (o.quick ? [32, 4096, 1 << 20] : [32, 1024, 16384, 262144, 1 << 20]);
  if (!o.sizes.includes(32)) o.sizes.unshift(32);
  if (o.sizes.some((s) => !Number.isInteger(s) || s < 1 || s > 16 << 20)) throw new Error("bench: --sizes must be integers in 1..16777216");
  o.durationS = duration ?? (o.quick ? 0.03 : 0.5);
  if (!(o.durationS > 0)) throw new Error("bench: --duration must be > 0");
  if (!Number.isInteger(o.corruptReply) || o.corruptReply < 0) throw new Error("bench: --corrupt-reply must be a reply number (1 = the first)");
  if (o.ids) {
    const known = new Set([...TARGETS.map((t) => t.id), ...EXTRA_IDS]);
    const bad = o.ids.filter((id) => !known.has(id));
    if (bad.length) throw new Error(`bench: unknown transports ${bad.join(", ")} (known: ${[...known].join(", ")})`);
  }
  return o;
}

const message = (e: unknown) => (e instanceof Error ? `${e.name === "Error" ? "" : `${e.name}: `}${e.message}` : String(e));

/** A module another part of the project provides, or null while it does not exist yet. */
async function optional<T>(file: string): Promise<T | null> {
  const path = new URL(file, import.meta.url).pathname;
  if (!existsSync(path)) return null;
  return (await import(path)) as T;
}

/** Thrown by a part that cannot run on this machine (a missing tool or module): reported as skipped, not failed. */
export class SkipPart extends Error {
  override name = "SkipPart";
}

/**
 * Runs one section of the bench that is not a TARGETS row (loopback, serve, worker-pool, idle-wake, kv): a throw
 * lists it under report.failed (the run exits 1: a wrong reply byte is among the causes), a
 * SkipPart under report.skipped with its reason. Same thread as runBench.
 */
export async function runPart(report: Report, id: string, label: string, print: (s: string) => void, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    if (e instanceof SkipPart) {
      report.skipped.push({ id, label, reason: e.message });
      print(`${label}: skipped (${e.message})`);
    } else {
      report.failed.push({ id, label, reason: message(e) });
      print(`${label}: FAILED (${message(e)})`);
    }
  }
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
  if (o.corruptReply > 0) process.env.HOTPATH_BENCH_CORRUPT_REPLY = String(o.corruptReply);
  const report: Report = {
    date: new Date().toISOString(),
    machine: machine(),
    options: { quick: o.quick, sizes: o.sizes, inflight: o.inflight, durationS: o.durationS, mode: o.connect ? `connect ${o.connect}` : "one host" },
    rows: [],
    skipped: [],
    failed: [],
  };
  print(`hotpath bench${o.quick ? " --quick" : ""}: ${report.machine.cpu}, ${report.machine.cores} cores, ${report.machine.kernel}, Bun ${report.machine.bun}${report.machine.ucx ? `, ${report.machine.ucx}` : ""}`);
  print(`clients run in this process; servers in their own processes or a Worker (see each row's layout); core placement: ${PLACEMENT}`);
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
      report.failed.push({ id: t.id, label: t.label, reason: `failed to start: ${message(e)}` });
      step(`failed to start (${message(e)})`);
      continue;
    }
    try {
      step(`32 B round trips (${t.mode} body)`);
      const fig = await measureRow(running.driver, { durationS: o.durationS, sizes: o.sizes, inflight: o.inflight, mode: t.mode, cpu: running.cpu, maxBytes: t.maxBytes, log: step });
      const row: RowResult = { id: t.id, label: t.label, kind: t.kind, references: t.references, mode: t.mode, layout: running.note ? `${t.layout}; ${running.note}` : t.layout, placement: PLACEMENT, serverCpu: running.cpu.server, ratios: {}, ...fig };
      if (t.ucxTls) row.ucxTls = t.ucxTls;
      report.rows.push(row);
      step(`p50 ${fig.p50Us.toFixed(2)} µs, ${Math.round(fig.inflight[64] ?? 0)} calls/s at 64 in flight`);
    } catch (e) {
      report.failed.push({ id: t.id, label: t.label, reason: message(e) });
      step(`FAILED (${message(e)})`);
    } finally {
      await running.stop();
    }
  }
  // ucx_perftest references for the ucx rows that ran, with exactly each row's UCX_TLS.
  for (const t of targets) {
    if (!t.ucxTls || o.connect || !report.rows.some((r) => r.id === t.id)) continue;
    const id = t.references[0]!;
    const label = `ucx_perftest ucp_am_lat (UCX_TLS=${t.ucxTls}, 32 B only)`;
    print(`${label} (reference)`);
    const iters = o.quick ? 2_000 : 20_000;
    const pt = await perftest(t.ucxTls, iters, o.quick ? 0.3 : 2);
    if (pt === null) {
      // Not installed: cannot run here (skipped). Installed but no result: a failure.
      if (Bun.which("ucx_perftest")) report.failed.push({ id, label, reason: "ucx_perftest did not finish" });
      else report.skipped.push({ id, label, reason: "ucx_perftest not installed (Debian ucx-utils)" });
      continue;
    }
    report.rows.push({
      id,
      label,
      kind: "reference",
      references: [id],
      mode: "spin",
      layout: `two ucx_perftest processes (server; client to 127.0.0.1), both busy-polling, UCX_TLS=${t.ucxTls}; p50 from a run with -R 50 over ${iters} iterations, p99 from a second run with -R 99 over ${pt.itersP99}, each over the last 2048 iterations of its run only (UCX keeps TIMING_QUEUE_SIZE = 2048 iteration times) and doubled (perftest reports half a ping-pong iteration; two runs, so on a busy machine p99 can come out below p50)`,
      placement: PLACEMENT,
      serverCpu: "perftest server process (resourceUsage, difference of two run lengths)",
      ucxTls: t.ucxTls,
      ratios: {},
      p50Us: pt.p50Us,
      p99Us: pt.p99Us,
      samples: iters,
      sizes: { 32: pt.p50Us },
      inflight: {},
      cpu: { at1: { clientUs: pt.clientCpuUs, serverUs: pt.serverCpuUs }, at64: null },
      heap: { objectsPerCall: null, cleanWindows: 0 },
    });
  }
  if (!o.connect && (o.ids === null || o.ids.includes("loopback"))) {
    print("loopback (one thread): client and server of one segment in this thread");
    await runPart(report, "loopback", "loopback (one thread)", print, async () => {
      const mod = await optional<{ measureLoopback(opts: { roundTrips?: number; size?: number }): Promise<Record<string, unknown>> }>("./loopback.ts");
      if (mod === null) throw new SkipPart("bench/loopback.ts is not present");
      report.loopback = await mod.measureLoopback({ roundTrips: o.quick ? 20_000 : 100_000, size: 32 });
    });
  }
  for (const part of PARTS) {
    if (o.connect || (o.ids !== null && !o.ids.includes(part.id))) continue;
    print(part.label);
    await runPart(report, part.id, part.label, print, async () => {
      const mod = await optional<Record<string, unknown>>(part.file);
      const fn = mod?.[part.fn];
      if (typeof fn !== "function") throw new SkipPart(`bench/${part.file.slice(2)} is not present${mod ? ` (no ${part.fn} export)` : ""}`);
      const r = await (fn as PartFn)({ quick: o.quick, log: (s) => print(`${part.id}: ${s}`) });
      if (typeof r?.title !== "string" || !Array.isArray(r.lines) || !Array.isArray(r.targets) || !Array.isArray(r.rows)) throw new Error(`${part.fn} returned no PartReport (title, lines, targets, rows)`);
      (report.parts ??= {})[part.id] = r;
      for (const s of r.skipped ?? []) report.skipped.push({ id: `${part.id}:${s.id}`, label: `${part.id}: ${s.id}`, reason: s.reason });
    });
  }
  if (!o.connect && (o.ids === null || o.ids.includes("kv"))) {
    print("hotpath kv and Redis (bench/kv.bench.ts)");
    await runPart(report, "kv", "hotpath kv and Redis", print, async () => {
      const kv = await measureKv({ quick: o.quick, durationS: o.quick ? 0.03 : KV_DURATION_S, sizes: KV_SIZES, ...(o.corruptReply > 0 ? { corruptReply: o.corruptReply } : {}), log: (s) => print(`kv: ${s}`) });
      (report as Report & { kv?: KvReport }).kv = kv;
      for (const s of kv.skipped) report.skipped.push({ id: `kv:${s.id}`, label: `kv: ${s.label}`, reason: s.reason });
      for (const f of kv.failed) report.failed.push({ id: `kv:${f.id}`, label: `kv: ${f.label}`, reason: f.reason });
    });
  }
  if (!o.connect && (o.ids === null || o.ids.includes("rdma"))) {
    print("hotpath rdma (bench/rdma.bench.ts)");
    const { measureRdma, RdmaSkip } = await import("./rdma.bench.ts");
    await runPart(report, "rdma", "rdma", print, async () => {
      try {
        (report.parts ??= {}).rdma = await measureRdma({ quick: o.quick, durationS: o.durationS, fixture: o.rdmaFixture, log: (s) => print(`rdma: ${s}`) });
      } catch (e) {
        if (!(e instanceof RdmaSkip)) throw e;
        report.skipped.push({ id: "rdma", label: "rdma", reason: e.message });
        print(`rdma: skipped: ${e.message}`);
      }
    });
  }
  addRatios(report);
  if (!o.connect) report.targets = checkTargets(report);
  return report;
}

async function writeOutputs(report: Report, jsonPath: string, print: (s: string) => void): Promise<void> {
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  const { latency, throughput } = charts(report);
  const dir = dirname(jsonPath);
  const serve = report.parts?.serve;
  const written: Array<[string, string]> = [["latency", latency], ["throughput", throughput]];
  if (serve) written.push(["serve", serveChart(serve, report)]);
  for (const [name, svg] of written) {
    writeFileSync(join(dir, `${name}.svg`), svg);
    const png = await toPng(svg);
    if (typeof png === "string") print(png);
    else writeFileSync(join(dir, `${name}.png`), png);
  }
  print(`\nwrote ${jsonPath} and ${written.map(([n]) => join(dir, `${n}.svg`)).join(", ")} (and .png)`);
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
  print(`serving raw tcp (framed, replies coalesced per read) on tcp://${host}:${port + 2}`);
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
  const kv = (report as Report & { kv?: KvReport }).kv;
  if (kv) print(["", "hotpath kv and Redis (bench/kv.bench.ts; skipped and failed kv rows are listed above):", ...kvLines(kv, false)].join("\n"));
  await writeOutputs(report, o.json, print);
  process.exit(report.failed.length > 0 ? 1 : 0);
}
