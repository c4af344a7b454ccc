/**
 * What `bun run bench` shows: a terminal table, a JSON file with the machine's details, and two
 * charts (latency vs payload size, throughput vs calls in flight) as SVG, plus PNG rendered by
 * @resvg/resvg-js when it is installed.
 */

import { cpus, release } from "node:os";

export interface RowResult {
  id: string;
  label: string;
  kind: "hotpath" | "peer" | "reference";
  reference: string;
  /** 32-byte round trip. */
  p50Us: number;
  p99Us: number;
  /** Round-trip p50 (µs) by payload bytes. */
  sizes: Record<string, number>;
  /** Calls per second by calls in flight (32-byte payload). */
  inflight: Record<string, number>;
}

export interface Report {
  date: string;
  machine: { cpu: string; cores: number; kernel: string; bun: string; ucx: string | null };
  options: { quick: boolean; sizes: number[]; inflight: number[]; durationS: number; mode: string };
  rows: RowResult[];
  skipped: Array<{ id: string; label: string; reason: string }>;
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

/** The terminal table: one row per target, ratios against each row's named reference. */
export function table(report: Report): string {
  const byId = new Map(report.rows.map((r) => [r.id, r]));
  const head = ["row", "p50 32 B", "p99 32 B", "ref", "p50/ref", ...report.options.sizes.filter((s) => s !== 32).map((s) => `p50 ${fmtBytes(s)}`), ...report.options.inflight.map((n) => `calls/s @${n}`), "@64 / ref"];
  const lines = [head];
  for (const r of report.rows) {
    const ref = byId.get(r.reference);
    const refP50 = ref?.p50Us;
    lines.push([
      r.label,
      fmtUs(r.p50Us),
      Number.isFinite(r.p99Us) ? fmtUs(r.p99Us) : "-",
      r.reference === r.id ? "(itself)" : (ref?.label ?? `${r.reference} (not run)`),
      refP50 ? `${(r.p50Us / refP50).toFixed(2)}x` : "-",
      ...report.options.sizes.filter((s) => s !== 32).map((s) => (r.sizes[s] !== undefined ? fmtUs(r.sizes[s]!) : "-")),
      ...report.options.inflight.map((n) => (r.inflight[n] !== undefined ? fmtRate(r.inflight[n]!) : "-")),
      ref?.inflight[64] && r.inflight[64] ? `${(r.inflight[64] / ref.inflight[64]).toFixed(2)}x` : "-",
    ]);
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? "").length)));
  const out = lines.map((l) => l.map((c, i) => (c ?? "").padEnd(widths[i]!)).join("  "));
  out.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  for (const s of report.skipped) out.push(`skipped ${s.label}: ${s.reason}`);
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

/** PNG of an SVG via @resvg/resvg-js, or null (with the reason) when it is not available. */
export async function toPng(svg: string): Promise<Uint8Array | string> {
  try {
    const { Resvg } = await import("@resvg/resvg-js");
    return new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" }, fitTo: { mode: "original" } }).render().asPng();
  } catch (e) {
    return `PNG not written: ${e instanceof Error ? e.message : String(e)}`;
  }
}
