/**
 * The rows of bench/serve.bench.ts, its fixed-width table and its issue-14 targets (pure
 * functions of the rows: test/bench/serve.test.ts judges them on made-up rows).
 *
 *   const lines = serveLines(rows, meta, skipped); const targets = serveTargets(rows);
 */

/** One Bun.serve front row: HTTP figures from the load generator, CPU from schedstat over its window. */
export interface HttpRow {
  id: string;
  group: "http" | "kv";
  label: string;
  loadgen: "wrk" | "bun";
  requests: number;
  reqPerS: number;
  p50Us: number;
  p99Us: number;
  frontCpuUsPerReq: number;
  /** NaN for the local row. */
  backendCpuUsPerReq: number;
}

/** serve() beside Bun.serve in one process: the HTTP side's and the RPC side's figures (NaN where that load did not run). */
export interface CoexistRow {
  id: string;
  group: "coexist";
  label: string;
  httpReqPerS: number;
  httpP50Us: number;
  httpP99Us: number;
  rpcCallsPerS: number;
  rpcP50Us: number;
  rpcP99Us: number;
}

/** serve() under light load (issue 11's target reads these). */
export interface LightRow {
  id: string;
  group: "light";
  label: string;
  calls: number;
  spacingMs: number;
  backendCpuUsPerReq: number;
  clientCpuUsPerReq: number;
  p50Us: number;
}

export type ServeRow = HttpRow | CoexistRow | LightRow;

export interface ServeMeta {
  machine: string;
  connections: number;
  bodyBytes: number;
  durationMs: number;
  rounds: number;
  loadgen: "wrk" | "bun";
  rpcInflight: number;
  ucxTls: string;
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "—");
const k = (x: number) => (Number.isFinite(x) ? `${(x / 1e3).toFixed(1)}k` : "—");
const ratio = (x: number | undefined, ref: number | undefined) => (x !== undefined && ref !== undefined && Number.isFinite(x) && ref > 0 ? `${(x / ref).toFixed(2)}x` : "—");
const cpu = (r: HttpRow) => r.frontCpuUsPerReq + (Number.isNaN(r.backendCpuUsPerReq) ? 0 : r.backendCpuUsPerReq);

const byId = <T extends ServeRow>(rows: ServeRow[], id: string) => rows.find((r) => r.id === id) as T | undefined;

/** The part's table: HTTP rows (ratios to local and to tcp), RPC beside HTTP (ratios to each side alone), light load. */
export function serveLines(rows: ServeRow[], meta: ServeMeta, skipped: Array<{ id: string; reason: string }>): string[] {
  const http = rows.filter((r): r is HttpRow => r.group === "http" || r.group === "kv");
  const local = byId<HttpRow>(rows, "local");
  const tcp = byId<HttpRow>(rows, "tcp");
  const tool = meta.loadgen === "wrk" ? "wrk -t2 + Lua check (serve-wrk.lua)" : "Bun load generator (serve-load.ts)";
  const out = [
    `${meta.connections} HTTP/1.1 keep-alive connections (one request outstanding each), ${meta.bodyBytes} B bodies, load: ${tool}, ${meta.durationMs} ms per row and round, medians of ${meta.rounds} round(s)`,
    `machine: ${meta.machine}; one process each for the load generator, the front and the backend, no core placement; ucx row: UCX_TLS=${meta.ucxTls} on both sides`,
    "",
    ["row".padEnd(52), "req/s".padStart(8), "÷local".padStart(7), "÷tcp".padStart(6), "p50 µs".padStart(8), "p99 µs".padStart(8), "front µs/req".padStart(13), "backend µs/req".padStart(15), "CPU/req ÷local".padStart(15)].join(" "),
  ];
  for (const r of http) {
    out.push(
      [r.label.padEnd(52), k(r.reqPerS).padStart(8), ratio(r.reqPerS, local?.reqPerS).padStart(7), ratio(r.reqPerS, tcp?.reqPerS).padStart(6), f1(r.p50Us).padStart(8), f1(r.p99Us).padStart(8), f1(r.frontCpuUsPerReq).padStart(13), f1(r.backendCpuUsPerReq).padStart(15), ratio(cpu(r), local ? cpu(local) : undefined).padStart(15)].join(" "),
    );
  }
  const kvShm = byId<HttpRow>(rows, "kv-shm");
  const kvRedis = byId<HttpRow>(rows, "kv-redis");
  if (kvShm && kvRedis) out.push(`KV front, hotpath kv over shm ÷ Bun RedisClient: req/s ${ratio(kvShm.reqPerS, kvRedis.reqPerS)}, p99 ${ratio(kvShm.p99Us, kvRedis.p99Us)}, CPU per request (front + backend) ${ratio(cpu(kvShm), cpu(kvRedis))}`);
  for (const s of skipped) out.push(`skipped ${s.id}: ${s.reason}`);
  const co = rows.filter((r): r is CoexistRow => r.group === "coexist");
  if (co.length > 0) {
    const alone = byId<CoexistRow>(rows, "coexist-http");
    out.push("", `serve() beside Bun.serve in the front's process, one event loop: HTTP load (Bun load generator, ${meta.connections} conns) and an RPC load (another process, ${meta.rpcInflight} calls in flight, every reply checked); ratios to each side alone`);
    out.push(["row".padEnd(52), "HTTP req/s".padStart(10), "p50 µs".padStart(8), "p99 µs".padStart(8), "p99÷alone".padStart(10), "RPC calls/s".padStart(11), "p50 µs".padStart(8), "p99 µs".padStart(8), "p99÷alone".padStart(10)].join(" "));
    for (const r of co) {
      const t = r.id.endsWith("-shm") ? "shm" : r.id.endsWith("-tcp") ? "tcp" : null;
      const rpcAlone = t ? byId<CoexistRow>(rows, `coexist-rpc-${t}`) : undefined;
      out.push(
        [r.label.padEnd(52), k(r.httpReqPerS).padStart(10), f1(r.httpP50Us).padStart(8), f1(r.httpP99Us).padStart(8), ratio(r.httpP99Us, alone?.httpP99Us).padStart(10), k(r.rpcCallsPerS).padStart(11), f1(r.rpcP50Us).padStart(8), f1(r.rpcP99Us).padStart(8), ratio(r.rpcP99Us, rpcAlone?.rpcP99Us).padStart(10)].join(" "),
      );
    }
  }
  const light = rows.filter((r): r is LightRow => r.group === "light");
  const lt = byId<LightRow>(rows, "light-tcp");
  if (light.length > 0) {
    out.push("", `light load: one call every ~${light[0]!.spacingMs} ms from the bench process, ${light[0]!.calls} calls per backend; ratios to serve() over tcp`);
    out.push(["row".padEnd(52), "backend µs/req".padStart(15), "÷tcp".padStart(6), "client µs/req".padStart(14), "÷tcp".padStart(6), "p50 µs".padStart(8)].join(" "));
    for (const x of light) out.push([x.label.padEnd(52), f1(x.backendCpuUsPerReq).padStart(15), ratio(x.backendCpuUsPerReq, lt?.backendCpuUsPerReq).padStart(6), f1(x.clientCpuUsPerReq).padStart(14), ratio(x.clientCpuUsPerReq, lt?.clientCpuUsPerReq).padStart(6), f1(x.p50Us).padStart(8)].join(" "));
  }
  return out;
}

/** Issue 14's HTTP targets, each with its measured value and reference from the same rows: shm ≥ 0.8× local, ≥ 1.2× tcp, ≥ 2× fetch. */
export function serveTargets(rows: ServeRow[]): Array<{ label: string; measured: string; met: boolean }> {
  const shm = byId<HttpRow>(rows, "shm");
  const out: Array<{ label: string; measured: string; met: boolean }> = [];
  for (const [id, factor, name] of [
    ["local", 0.8, "the same server doing the work locally"],
    ["tcp", 1.2, "a hotpath tcp backend"],
    ["fetch", 2, "a fetch() backend"],
  ] as const) {
    const ref = byId<HttpRow>(rows, id);
    const label = `Bun.serve req/s with a hotpath shm backend >= ${factor}x ${name}`;
    if (!shm || !ref) out.push({ label, measured: `not measured (${!shm ? "shm" : id} row missing)`, met: false });
    else out.push({ label, measured: `${shm.reqPerS.toFixed(0)} req/s vs ${ref.reqPerS.toFixed(0)} (${(shm.reqPerS / ref.reqPerS).toFixed(2)}x)`, met: shm.reqPerS >= factor * ref.reqPerS });
  }
  return out;
}
