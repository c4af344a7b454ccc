/**
 * What `bun run bench` shows: a terminal table, a JSON file with the machine's details, and two
 * charts (latency vs payload size, throughput vs calls in flight) as SVG, plus PNG rendered by
 * @resvg/resvg-js when it is installed.
 */

import { cpus, release } from "node:os";
import type { RowFigures } from "./measure.ts";

export interface RowResult extends RowFigures {
  id: string;
  label: string;
  kind: "hotpath" | "peer" | "reference";
  /** Rows this one is compared with; the first is the table's ref column. */
  references: string[];
  /** The client body that ran it: spin (synchronous polling) or async (event loop). */
  mode: "spin" | "async";
  /** Process layout and wait mode of both sides. */
  layout: string;
  /** Core placement (nothing is pinned). */
  placement: string;
  /** How the server side's CPU was read. */
  serverCpu: string;
  ucxTls?: string;
  /** Per reference: this row's p50 / its p50, and its calls/s at 64 in flight / the reference's. */
  ratios: Record<string, { p50: number | null; at64: number | null }>;
}

/** One issue-14 part of the bench (serve, worker-pool, idle-wake): what each part module's measure function returns. */
export interface PartReport {
  /** One line. */
  title: string;
  /** The table, printed as is (fixed-width columns). */
  lines: string[];
  /** Each issue-14 target with its measured value and the reference from the same run. */
  targets: { label: string; measured: string; met: boolean }[];
  /** The figures, for JSON. */
  rows: Record<string, unknown>[];
}

export interface Report {
  date: string;
  machine: { cpu: string; cores: number; kernel: string; bun: string; ucx: string | null };
  options: { quick: boolean; sizes: number[]; inflight: number[]; durationS: number; mode: string };
  rows: RowResult[];
  skipped: Array<{ id: string; label: string; reason: string }>;
  /** Rows and parts that failed to start or while measured (a wrong reply byte among them), and references that did not finish: the run exits 1. */
  failed: Array<{ id: string; label: string; reason: string }>;
  /** bench/loopback.ts's one-thread figures, when that module is present. */
  loopback?: Record<string, unknown> | { error: string };
  /** Issue 14's parts that ran (serve, worker-pool, idle-wake), by id: each module's PartReport. */
  parts?: Record<string, PartReport>;
  /** Issue 11's and issue 14's targets, each beside its measured value and the reference from this run. */
  targets?: TargetCheck[];
}

export interface TargetCheck {
  target: string;
  measured: string;
  reference: string;
  met: boolean | null;
}

const f2 = (v: number) => v.toFixed(2);

/** Checks issue 11's targets against the rows of this run (null: a row it needs did not run), then lists each issue-14 part's own targets (judged by the part on its rows). */
export function checkTargets(report: Report): TargetCheck[] {
  const row = (id: string) => report.rows.find((r) => r.id === id);
  const out: TargetCheck[] = [];
  const add = (target: string, ok: boolean | null, measured: string, reference: string) => out.push({ target, measured, reference, met: ok });
  const lb = report.loopback as { overheadNs?: number; rawNs?: number; rpcNs?: number; objectsPerRoundTrip?: number } | undefined;
  if (lb && typeof lb.overheadNs === "number") add("shm spin: RPC overhead per round trip <= 150 ns (loopback, one thread)", lb.overheadNs <= 150, `${lb.overheadNs.toFixed(0)} ns (rpc ${lb.rpcNs!.toFixed(0)} ns)`, `raw ring ${lb.rawNs!.toFixed(0)} ns`);
  else add("shm spin: RPC overhead per round trip <= 150 ns (loopback, one thread)", null, "-", "loopback not run");
  const raw = row("raw-shm");
  const spin = row("shm-spin");
  add("shm spin: 32 B p50 <= raw shm p50 + 0.2 µs", raw && spin ? spin.p50Us <= raw.p50Us + 0.2 : null, spin ? `${f2(spin.p50Us)} µs` : "-", raw ? `${f2(raw.p50Us)} µs` : "-");
  const a = spin?.inflight[64];
  const b = raw?.inflight[64];
  add("shm spin: calls/s at 64 in flight >= 0.5x raw shm", a !== undefined && b !== undefined ? a >= 0.5 * b : null, a !== undefined ? `${fmtRate(a)} (${b ? f2(a / b) : "-"}x)` : "-", b !== undefined ? fmtRate(b) : "-");
  const objs = [spin?.heap.objectsPerCall, row("inproc")?.heap.objectsPerCall, lb?.objectsPerRoundTrip].filter((v): v is number => typeof v === "number");
  add("hot-path allocations per round trip: 0 (shm spin, inproc, loopback; under 0.005 counts as 0)", objs.length ? objs.every((v) => v < 0.005) : null, objs.map((v) => v.toFixed(3)).join(", ") || "-", "0");
  // The serve part's rows (bench/serve.bench.ts): the Bun.serve front with an shm / tcp backend, and serve() under light load.
  const sb = report.parts?.serve?.rows as Array<{ id: string; reqPerS: number; frontCpuUsPerReq: number; backendCpuUsPerReq: number }> | undefined;
  const shmB = sb?.find((r) => r.id === "shm");
  const tcpB = sb?.find((r) => r.id === "tcp");
  add("Bun.serve: req/s with an shm backend >= 1.2x a tcp backend", shmB && tcpB ? shmB.reqPerS >= 1.2 * tcpB.reqPerS : null, shmB ? `${shmB.reqPerS.toFixed(0)} req/s (${tcpB ? f2(shmB.reqPerS / tcpB.reqPerS) : "-"}x)` : "-", tcpB ? `${tcpB.reqPerS.toFixed(0)} req/s` : "-");
  const cpu = (r: { frontCpuUsPerReq: number; backendCpuUsPerReq: number }) => r.frontCpuUsPerReq + r.backendCpuUsPerReq;
  add("Bun.serve: CPU per request (front + backend) with shm <= with tcp", shmB && tcpB ? cpu(shmB) <= cpu(tcpB) : null, shmB ? `${f2(cpu(shmB))} µs` : "-", tcpB ? `${f2(cpu(tcpB))} µs` : "-");
  // Issue 11 item 4: a serve() process under light load (one call every few ms) spends no more
  // CPU per request than the tcp server (the serve part's light rows: the serving process's CPU).
  const light = sb as unknown as Array<{ id: string; backendCpuUsPerReq: number }> | undefined;
  const ls = light?.find((r) => r.id === "light-shm");
  const lt = light?.find((r) => r.id === "light-tcp");
  add("serve() under light load: CPU per request over shm <= the tcp server's", ls && lt ? ls.backendCpuUsPerReq <= lt.backendCpuUsPerReq : null, ls ? `${f2(ls.backendCpuUsPerReq)} µs (${lt ? f2(ls.backendCpuUsPerReq / lt.backendCpuUsPerReq) : "-"}x)` : "-", lt ? `${f2(lt.backendCpuUsPerReq)} µs` : "serve part not run");
  const tcp = row("tcp");
  const rt = row("raw-tcp");
  add("tcp: 32 B p50 <= 1.1x the fair raw framed socket", tcp && rt ? tcp.p50Us <= 1.1 * rt.p50Us : null, tcp ? `${f2(tcp.p50Us)} µs (${rt ? f2(tcp.p50Us / rt.p50Us) : "-"}x)` : "-", rt ? `${f2(rt.p50Us)} µs` : "-");
  const c = tcp?.inflight[64];
  const d = rt?.inflight[64];
  add("tcp: calls/s at 64 in flight >= 1.0x the fair raw framed socket", c !== undefined && d !== undefined ? c >= d : null, c !== undefined ? `${fmtRate(c)} (${d ? f2(c / d) : "-"}x)` : "-", d !== undefined ? fmtRate(d) : "-");
  for (const r of report.rows.filter((x) => x.id.startsWith("ucx-") && !x.id.startsWith("ucx-perftest"))) {
    const ref = row(r.references[0]!);
    add(`ucx (UCX_TLS=${r.ucxTls}): 32 B p50 <= 1.5x ucx_perftest am_lat, same UCX_TLS`, ref ? r.p50Us <= 1.5 * ref.p50Us : null, `${f2(r.p50Us)} µs (${ref ? f2(r.p50Us / ref.p50Us) : "-"}x)`, ref ? `${f2(ref.p50Us)} µs` : "not run");
  }
  // Issue 14: each part states its targets with the measured value and its reference from the same run.
  for (const [id, part] of Object.entries(report.parts ?? {})) for (const t of part.targets) add(`issue 14, ${id}: ${t.label}`, t.met, t.measured, "");
  return out;
}

/** The targets as lines under the table. */
export function targetLines(checks: TargetCheck[]): string[] {
  return ["targets of issues 11 and 14 (this run; ratios within it):", ...checks.map((t) => `  [${t.met === null ? "n/a" : t.met ? "met" : "NOT met"}] ${t.target}: ${t.measured}${t.reference ? ` vs ${t.reference}` : ""}`)];
}

/** Fills each row's ratios against its references (rows of the same run). */
export function addRatios(report: Report): void {
  const byId = new Map(report.rows.map((r) => [r.id, r]));
  for (const r of report.rows) {
    r.ratios = {};
    for (const id of r.references) {
      const ref = byId.get(id);
      if (ref === undefined || id === r.id) continue;
      const a = r.inflight[64];
      const b = ref.inflight[64];
      r.ratios[id] = { p50: r.p50Us / ref.p50Us, at64: a !== undefined && b !== undefined ? a / b : null };
    }
  }
}

export function machine(): Report["machine"] {
  const c = cpus();
  let ucx: string | null = null;
  if (Bun.which("ucx_info")) {
    const r = Bun.spawnSync(["ucx_info", "-v"]);
    const v = r.stdout.toString().split("\n")[0]?.replace(/^#\s*(Version\s*)?/, "").trim();
    ucx = v ? `UCX ${v}` : null;
  }
  return { cpu: c[0]?.model ?? "unknown", cores: c.length, kernel: `Linux ${release()}`, bun: Bun.version, ucx };
}

const fmtUs = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(2)} µs`);
const fmtRate = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(0));
const fmtBytes = (b: number) => (b >= 1 << 20 ? `${b / (1 << 20)} MiB` : b >= 1024 ? `${b / 1024} KiB` : `${b} B`);

const fmtCpu = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? "-" : v.toFixed(2));
const fmtX = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "-" : `${v < 0.1 ? v.toPrecision(2) : v.toFixed(2)}x`);

/** An issue-14 part under the main table: its title, its table as is, its targets with their measured values. */
export function partLines(id: string, part: PartReport): string[] {
  return [`${part.title} [${id}]`, ...part.lines, ...part.targets.map((t) => `  [${t.met ? "met" : "NOT met"}] ${t.label}: ${t.measured}`)];
}

/** The terminal table: one row per target, ratios against each row's references; then each row's layout. */
export function table(report: Report): string {
  const byId = new Map(report.rows.map((r) => [r.id, r]));
  const extraSizes = report.options.sizes.filter((s) => s !== 32);
  const head = [
    "row",
    "body",
    "p50 32 B",
    "p99 32 B",
    "ref",
    "p50/ref",
    ...extraSizes.map((s) => `p50 ${fmtBytes(s)}`),
    ...report.options.inflight.map((n) => `calls/s @${n}`),
    "@64/ref",
    "CPU µs/call @1 cli|srv",
    "CPU µs/call @64 cli|srv",
    "objs/call",
    "also vs (p50, @64)",
  ];
  const lines = [head];
  for (const r of report.rows) {
    const refId = r.references[0]!;
    const ref = byId.get(refId);
    const main = r.ratios[refId];
    const also = r.references
      .slice(1)
      .filter((id) => r.ratios[id] !== undefined)
      .map((id) => `${id} ${fmtX(r.ratios[id]!.p50)} ${fmtX(r.ratios[id]!.at64)}`)
      .join("; ");
    lines.push([
      r.label,
      r.mode,
      fmtUs(r.p50Us),
      Number.isFinite(r.p99Us) ? fmtUs(r.p99Us) : "-",
      refId === r.id ? "(itself)" : ref ? refId : `${refId} (not run)`,
      refId === r.id ? "1.00x" : fmtX(main?.p50),
      ...extraSizes.map((s) => (r.sizes[s] !== undefined ? fmtUs(r.sizes[s]!) : "-")),
      ...report.options.inflight.map((n) => (r.inflight[n] !== undefined ? fmtRate(r.inflight[n]!) : "-")),
      refId === r.id ? (r.inflight[64] ? "1.00x" : "-") : fmtX(main?.at64),
      `${fmtCpu(r.cpu.at1.clientUs)} | ${fmtCpu(r.cpu.at1.serverUs)}`,
      r.cpu.at64 ? `${fmtCpu(r.cpu.at64.clientUs)} | ${fmtCpu(r.cpu.at64.serverUs)}` : "-",
      r.heap.objectsPerCall === null ? "-" : r.heap.objectsPerCall.toFixed(2),
      also,
    ]);
  }
  const lb = report.loopback;
  const l = lb as { rawNs?: unknown; rpcNs?: unknown; overheadNs?: unknown; objectsPerRoundTrip?: unknown } | undefined;
  if (l && typeof l.rawNs === "number" && typeof l.rpcNs === "number" && typeof l.overheadNs === "number" && typeof l.objectsPerRoundTrip === "number") {
    lines.push(["loopback (one thread)", "spin", `${(l.rpcNs / 1e3).toFixed(3)} µs CPU`, "-", "raw ring, same thread", fmtX(l.rpcNs / l.rawNs), ...extraSizes.map(() => "-"), ...report.options.inflight.map(() => "-"), "-", `${(l.rpcNs / 1e3).toFixed(3)} (both sides)`, "-", l.objectsPerRoundTrip.toFixed(2), `overhead ${l.overheadNs.toFixed(0)} ns over raw ${l.rawNs.toFixed(0)} ns`]);
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? "").length)));
  const out = lines.map((l) => l.map((c, i) => (c ?? "").padEnd(widths[i]!)).join("  ").trimEnd());
  out.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  out.push("");
  out.push("p50/p99: percentiles of per-call round trips (each call timed alone; ucx_perftest rows: over the last 2048 iterations of each run, all UCX keeps). calls/s: complete bursts, calls / wall time. CPU: µs per call, client | server. objs/call: JS heap objects the client allocated per round trip.");
  out.push(`layout of each row (core placement: ${report.rows[0]?.placement ?? "OS-placed"}):`);
  for (const r of report.rows) out.push(`  ${r.id}: ${r.layout}; server CPU: ${r.serverCpu}`);
  if (lb && "error" in lb) out.push(`loopback (one thread): not measured (${lb.error})`);
  else if (lb && !(l && typeof l.rpcNs === "number")) out.push(`loopback (one thread): ${JSON.stringify(lb)}`);
  for (const [id, part] of Object.entries(report.parts ?? {})) out.push("", ...partLines(id, part));
  if (report.targets) out.push(...targetLines(report.targets));
  for (const s of report.skipped) out.push(`skipped ${s.label}: ${s.reason}`);
  for (const f of report.failed) out.push(`FAILED ${f.label}: ${f.reason}`);
  return out.join("\n");
}

// ---------------------------------------------------------------- charts

/** Twenty distinct colours: every row of a full run gets its own. */
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8", "#ff9896", "#98df8a", "#c5b0d5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"];

interface Series {
  name: string;
  points: Array<[number, number]>;
  dashed: boolean;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** A log-log line chart. Ticks at powers of ten on y and at the measured x values. */
function chart(title: string, xLabel: string, yLabel: string, series: Series[], xTick: (v: number) => string, yTick: (v: number) => string, subtitle: string): string {
  const W = 980;
  const H = 560;
  const L = 90;
  const R = 290;
  const T = 64;
  const B = 70;
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v > 0);
  if (xs.length === 0 || ys.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="80"><text x="10" y="40">${esc(title)}: no data</text></svg>`;
  const lx0 = Math.log10(xs[0]!);
  const lx1 = Math.log10(xs[xs.length - 1]!);
  const ly0 = Math.floor(Math.log10(Math.min(...ys)));
  const ly1 = Math.ceil(Math.log10(Math.max(...ys)));
  const px = (x: number) => L + (lx1 === lx0 ? 0.5 : (Math.log10(x) - lx0) / (lx1 - lx0)) * (W - L - R);
  const py = (y: number) => T + (1 - (Math.log10(y) - ly0) / Math.max(1e-9, ly1 - ly0)) * (H - T - B);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${L}" y="28" font-size="18" font-weight="bold">${esc(title)}</text>`);
  parts.push(`<text x="${L}" y="48" font-size="12" fill="#555">${esc(subtitle)}</text>`);
  for (let e = ly0; e <= ly1; e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (Math.log10(v) > ly1 + 1e-9) continue;
      const y = py(v);
      parts.push(`<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="${m === 1 ? "#ccc" : "#eee"}"/>`);
      if (m === 1 || ly1 - ly0 <= 2) parts.push(`<text x="${L - 8}" y="${y + 4}" font-size="12" text-anchor="end">${esc(yTick(v))}</text>`);
    }
  }
  for (const x of xs) {
    const X = px(x);
    parts.push(`<line x1="${X}" x2="${X}" y1="${T}" y2="${H - B}" stroke="#eee"/>`);
    parts.push(`<text x="${X}" y="${H - B + 18}" font-size="12" text-anchor="middle">${esc(xTick(x))}</text>`);
  }
  parts.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#333"/>`);
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 24}" font-size="13" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(`<text x="22" y="${(T + H - B) / 2}" font-size="13" text-anchor="middle" transform="rotate(-90 22 ${(T + H - B) / 2})">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const pts = s.points.filter((p) => p[1] > 0).sort((a, b) => a[0] - b[0]);
    if (pts.length === 0) return;
    const d = pts.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
    parts.push(`<polyline points="${d}" fill="none" stroke="${color}" stroke-width="${s.dashed ? 1.8 : 3}"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`);
    for (const p of pts) parts.push(`<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="${pts.length === 1 ? 5 : 3}" fill="${color}"/>`);
    const ly = T + 8 + i * 22;
    parts.push(`<line x1="${W - R + 16}" x2="${W - R + 46}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`);
    parts.push(`<text x="${W - R + 52}" y="${ly + 4}" font-size="12">${esc(s.name)}</text>`);
  });
  parts.push(`</svg>`);
  return parts.join("\n");
}

/** Axis ticks: no trailing zeros (0.1 µs, 1 µs, 10 ms, 2M). */
const trim = (v: number) => String(Number(v.toPrecision(3)));
const tickUs = (v: number) => (v >= 1000 ? `${trim(v / 1000)} ms` : `${trim(v)} µs`);
const tickRate = (v: number) => (v >= 1e6 ? `${trim(v / 1e6)}M` : v >= 1e3 ? `${trim(v / 1e3)}k` : trim(v));

export function charts(report: Report): { latency: string; throughput: string } {
  const sub = `${report.machine.cpu}, ${report.machine.cores} cores, Bun ${report.machine.bun}, ${report.date.slice(0, 10)}. Solid: hotpath; dashed: references and other tools. Log scales.`;
  const series = (pick: (r: RowResult) => Array<[number, number]>) => report.rows.map((r) => ({ name: r.label, points: pick(r), dashed: r.kind !== "hotpath" }));
  const latency = chart(
    "Round-trip latency (p50) vs payload size — lower is better",
    "payload bytes each way",
    "round trip p50",
    series((r) => Object.entries(r.sizes).map(([b, v]) => [Number(b), v])),
    fmtBytes,
    tickUs,
    sub,
  );
  const throughput = chart(
    "Throughput vs calls in flight (32-byte payload) — higher is better",
    "calls in flight",
    "calls per second",
    series((r) => Object.entries(r.inflight).map(([n, v]) => [Number(n), v])),
    (v) => String(v),
    tickRate,
    sub,
  );
  return { latency, throughput };
}

/**
 * The serve part's chart: one bar per Bun.serve front row (HTTP and KV rows), req/s on the left
 * and CPU µs per request on the right (front solid, backend lighter, stacked). Linear scales; a
 * CPU bar over 4x the rows' median (gRPC) is cut at the panel's edge, its value still printed.
 */
export function serveChart(part: PartReport, report: Report): string {
  const rows = (part.rows as Array<{ group?: string; label?: string; reqPerS?: number; frontCpuUsPerReq?: number; backendCpuUsPerReq?: number }>).filter((r) => (r.group === "http" || r.group === "kv") && typeof r.reqPerS === "number");
  const W = 1100;
  const BAR = 24;
  const T = 78;
  const LABEL = 370;
  const GAP = 40;
  const panel = (W - LABEL - 2 * GAP - 20) / 2;
  const H = T + rows.length * (BAR + 10) + 50;
  const num = (v: number | undefined) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  const maxRate = Math.max(1, ...rows.map((r) => num(r.reqPerS)));
  const totals = rows.map((r) => num(r.frontCpuUsPerReq) + num(r.backendCpuUsPerReq)).sort((a, b) => a - b);
  const cap = 4 * (totals[totals.length >> 1] ?? 1);
  const maxCpu = Math.max(1, ...totals.filter((t) => t <= cap));
  const x0 = LABEL;
  const x1 = LABEL + panel + GAP;
  const p: string[] = [];
  p.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`);
  p.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  p.push(`<text x="20" y="28" font-size="18" font-weight="bold">${esc("Bun.serve front, one backend call per request: req/s (higher is better), CPU per request (lower)")}</text>`);
  p.push(`<text x="20" y="48" font-size="12" fill="#555">${esc(`${part.title.replace(/^Bun.serve front calling a backend per HTTP request /, "")}. ${report.machine.cpu}, ${report.machine.cores} cores, Bun ${report.machine.bun}, ${report.date.slice(0, 10)}.`)}</text>`);
  p.push(`<text x="${x0}" y="${T - 10}" font-size="13" font-weight="bold">HTTP requests/s</text>`);
  p.push(`<text x="${x1}" y="${T - 10}" font-size="13" font-weight="bold">CPU µs per request: front (dark) + backend (light)</text>`);
  rows.forEach((r, i) => {
    const y = T + i * (BAR + 10);
    const color = PALETTE[i % PALETTE.length]!;
    const rate = num(r.reqPerS);
    const front = num(r.frontCpuUsPerReq);
    const back = num(r.backendCpuUsPerReq);
    const wr = (rate / maxRate) * (panel - 60);
    const room = panel - 60;
    const wf = Math.min(room, (front / maxCpu) * room);
    const wb = Math.min(room - wf, (back / maxCpu) * room);
    p.push(`<text x="${LABEL - 10}" y="${y + BAR / 2 + 4}" font-size="12" text-anchor="end">${esc(String(r.label ?? ""))}</text>`);
    p.push(`<rect x="${x0}" y="${y}" width="${wr.toFixed(1)}" height="${BAR}" fill="${color}"/>`);
    p.push(`<text x="${(x0 + wr + 6).toFixed(1)}" y="${y + BAR / 2 + 4}" font-size="12">${esc(fmtRate(rate))}</text>`);
    p.push(`<rect x="${x1}" y="${y}" width="${wf.toFixed(1)}" height="${BAR}" fill="${color}"/>`);
    p.push(`<rect x="${(x1 + wf).toFixed(1)}" y="${y}" width="${wb.toFixed(1)}" height="${BAR}" fill="${color}" fill-opacity="0.4"/>`);
    p.push(`<text x="${(x1 + wf + wb + 6).toFixed(1)}" y="${y + BAR / 2 + 4}" font-size="12">${esc(`${front.toFixed(1)} + ${back.toFixed(1)}`)}</text>`);
  });
  p.push(`</svg>`);
  return p.join("\n");
}

/** PNG of an SVG via @resvg/resvg-js, or null (with the reason) when it is not available. */
export async function toPng(svg: string): Promise<Uint8Array | string> {
  try {
    const { Resvg } = await import("@resvg/resvg-js");
    return new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" }, fitTo: { mode: "original" } }).render().asPng();
  } catch (e) {
    return `PNG not written: ${e instanceof Error ? e.message : String(e)}`;
  }
}
