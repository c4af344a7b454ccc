/**
 * Hot-path handlers in Bun servers (issue 14, items 2 and 6): HTTP requests/s of one Bun.serve
 * front handler whose response comes from local work, a hotpath backend (shm, tcp, ucx), a
 * `fetch()` to a second Bun.serve, a gRPC backend (@grpc/grpc-js on both sides), and for the KV
 * front a GET per request from hotpath kv over shm beside Bun's RedisClient against
 * redis-server on a Unix socket; then `serve()` beside Bun.serve on one event loop (HTTP p99
 * with and without an RPC load, RPC p99 with and without an HTTP load); then serve() under
 * light load (one call every ~2 ms), which issue 11's target reads.
 *
 * Layout, one process each (no core placement: the OS places them): the load generator, the
 * front (peers/serve-front.ts: Bun.serve; the hotpath rows share one ConnectionPool client and
 * pass `{ signal: req.signal }`), the backend (peers/serve-backend.ts serve() echo; the kv rows'
 * peers/kv-server.ts or redis-server). Load generator: `wrk -t2 -c64` with peers/serve-wrk.lua
 * (its Lua check, every response equal to an outstanding request's body, adds ~15-25% to wrk's
 * CPU per request, measured against wrk's static POST: it does not dominate, so wrk with the
 * check is the primary tool) in full runs; peers/serve-load.ts (Bun, raw sockets, one request
 * outstanding per connection, every response compared byte for byte with its own request)
 * with --quick (wrk counts whole seconds only) or where wrk is missing, and always for the
 * RPC-beside-HTTP rows (two loads started together need matching warm-up windows). wrk's Lua
 * cannot tell its connections apart, so its check cannot see two concurrent responses swapped:
 * with wrk, each row's warm-up is a serve-load.ts run at the same 64 connections instead, which
 * does check every response against its own request. The table header names the tool. CPU µs
 * per request: schedstat of all threads of the front and of the backend over the timed window
 * (bench/cpu.ts; with wrk, read just before and after its timed run, which also holds its 64
 * connects).
 *
 *   bun bench/serve.bench.ts [--quick] [--json PATH]     // table + targets; exit 1 on a wrong byte
 *   import { measureServe } from "./serve.bench.ts"      // the PartReport, for bench/run.ts
 */

import { writeFileSync } from "node:fs";
import { rpcConnect, transports } from "../src/index.ts";
import { processCpuUs } from "./cpu.ts";
import { os } from "./os.ts";
import { ECHO_METHOD } from "./peers/methods.ts";
import { redisUnavailable, startRedis } from "./redis.ts";
import type { PartReport } from "./report.ts";
import { serveLines, serveTargets, type CoexistRow, type HttpRow, type LightRow, type ServeMeta, type ServeRow } from "./serve-table.ts";

const PEERS = new URL("./peers/", import.meta.url).pathname;
/** UCX transports of the ucx row on both sides: shared memory (the family shm competes with), self for loopback. */
export const SERVE_UCX_TLS = "shm,self";
/** Calls in flight of the RPC load beside HTTP: enough to keep serve() busy, few enough to leave the front a core's share. */
const RPC_INFLIGHT = 8;

interface Opts {
  quick: boolean;
  connections: number;
  bodyBytes: number;
  /** Timed window per row and round, ms (wrk: rounded to whole seconds, at least 1). */
  durationMs: number;
  warmupMs: number;
  rounds: number;
  loadgen: "wrk" | "bun";
  lightCalls: number;
  log: (s: string) => void;
}

interface Proc {
  pid: number;
  ready: Record<string, any>;
  stop(): Promise<void>;
}

/** Starts `bun PEERS/<script> args`, reads its one JSON ready line; stop() closes its stdin (then SIGKILL after 2 s). */
async function start(script: string, args: string[], env: Record<string, string> = {}): Promise<Proc> {
  const proc = Bun.spawn(["bun", PEERS + script, ...args], { stdin: "pipe", stdout: "pipe", stderr: "inherit", env: { ...process.env, ...env } });
  const reader = proc.stdout.getReader();
  let text = "";
  const timer = setTimeout(() => proc.kill(9), 20_000);
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${script} ${args.join(" ")} exited before it was ready (code ${proc.exitCode})`);
      text += new TextDecoder().decode(value);
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  return {
    pid: proc.pid,
    ready: JSON.parse(text.slice(0, text.indexOf("\n"))),
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill(9), 2000);
      await proc.exited;
      clearTimeout(t);
    },
  };
}

/** One JSON line from a child's stdout, after it exits; `{error}` or a non-zero exit throws. */
async function jsonOf(cmd: string[], limitMs: number): Promise<any> {
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill(9), limitMs);
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  clearTimeout(timer);
  let r: any = {};
  try {
    r = JSON.parse(out.trim().split("\n").pop() ?? "{}");
  } catch {
    throw new Error(`${cmd[0]} ${cmd[1]}: no result (exit ${proc.exitCode}): ${(out + err).trim().slice(0, 300)}`);
  }
  if (r.error) throw new Error(`${cmd[1]?.includes("serve-") ? cmd[1]!.split("/").pop() : cmd[0]}: ${r.error}`);
  return r;
}

interface Load {
  requests: number;
  seconds: number;
  p50Us: number;
  p99Us: number;
  cpuUs: number[];
}

/** The Bun load generator against PORT: warm-up, then the timed window; CPU of `pids` over that window. */
async function bunLoad(port: number, pids: number[], o: Opts, kv: boolean): Promise<Load> {
  const r = await jsonOf(["bun", PEERS + "serve-load.ts", String(port), String(o.connections), String(o.warmupMs), String(o.durationMs), String(o.bodyBytes), pids.join(","), ...(kv ? ["kv"] : [])], o.warmupMs + o.durationMs + 30_000);
  if (!(r.requests > 0)) throw new Error("serve-load: no request completed in the timed window");
  return { requests: r.requests, seconds: r.seconds, p50Us: r.p50Us, p99Us: r.p99Us, cpuUs: pids.map((p) => r.cpuUs[p]) };
}

const wrkSeconds = (ms: number) => Math.max(1, Math.round(ms / 1000));

/** wrk with the checking script: a warm-up run, then the timed run with the CPU of `pids` read around it. */
async function wrkLoad(port: number, pids: number[], o: Opts, kv: boolean): Promise<Load> {
  const run = async (ms: number) => {
    const r = await jsonOf(["wrk", "-t2", `-c${o.connections}`, `-d${wrkSeconds(ms)}s`, "-s", PEERS + "serve-wrk.lua", `http://127.0.0.1:${port}/`, "--", String(o.bodyBytes), ...(kv ? ["kv"] : [])], ms + 30_000);
    if (r.mismatches > 0) throw new Error(`wrk: ${r.mismatches} responses differ from every outstanding request (first: ${r.firstMismatch})`);
    if (r.socketErrors > 0) throw new Error(`wrk: ${r.socketErrors} socket errors or non-2xx responses`);
    if (!(r.requests > 0)) throw new Error("wrk: no request completed");
    return r;
  };
  // Warm-up: the Bun load generator, which pairs every response with its own request (wrk's
  // Lua check accepts any request outstanding on its thread, so it cannot see a swap).
  await bunLoad(port, pids, { ...o, warmupMs: Math.min(o.warmupMs, 200), durationMs: o.warmupMs }, kv);
  const c0 = pids.map(processCpuUs);
  const r = await run(o.durationMs);
  const c1 = pids.map(processCpuUs);
  return { requests: r.requests, seconds: r.seconds, p50Us: r.p50Us, p99Us: r.p99Us, cpuUs: c1.map((c, i) => c - c0[i]!) };
}

let names = 0;
const shmName = (what: string) => `shm://serve-bench-${what}-${process.pid}-${names++}`;

interface Backend {
  pid: number;
  url: string;
  stop(): Promise<void>;
}

const peer = async (script: string, args: string[], env: Record<string, string> = {}): Promise<Backend> => {
  const p = await start(script, args, env);
  return { pid: p.pid, url: p.ready.url, stop: () => p.stop() };
};

interface RowSpec {
  id: string;
  label: string;
  group: "http" | "kv";
  /** Front mode (serve-front.ts) and its environment. */
  front: string;
  env?: Record<string, string>;
  backend: (() => Promise<Backend>) | null;
  unavailable: () => Promise<string | null> | string | null;
}

const ucxReason = async (): Promise<string | null> => {
  const t = (await transports()).find((x) => x.scheme === "ucx");
  return t === undefined ? "no ucx transport registered" : t.unavailableReason;
};

const ROWS: RowSpec[] = [
  { id: "local", label: "local work (no backend)", group: "http", front: "local", backend: null, unavailable: () => null },
  { id: "shm", label: "hotpath shm backend", group: "http", front: "hotpath", backend: () => peer("serve-backend.ts", [shmName("echo")]), unavailable: () => null },
  { id: "tcp", label: "hotpath tcp backend", group: "http", front: "hotpath", backend: () => peer("serve-backend.ts", ["tcp://127.0.0.1:0"]), unavailable: () => null },
  {
    id: "ucx",
    label: `hotpath ucx backend (UCX_TLS=${SERVE_UCX_TLS})`,
    group: "http",
    front: "hotpath",
    env: { UCX_TLS: SERVE_UCX_TLS },
    backend: () => peer("serve-backend.ts", ["ucx://127.0.0.1:0"], { UCX_TLS: SERVE_UCX_TLS }),
    unavailable: ucxReason,
  },
  { id: "fetch", label: "fetch() to a second Bun.serve", group: "http", front: "fetch", backend: () => peer("other-servers.ts", ["http", "127.0.0.1"]), unavailable: () => null },
  { id: "grpc", label: "gRPC backend (@grpc/grpc-js both sides)", group: "http", front: "grpc", backend: () => peer("other-servers.ts", ["grpc", "127.0.0.1"]), unavailable: () => null },
  { id: "kv-shm", label: "KV front: hotpath kv over shm, GET per request", group: "kv", front: "kv", backend: () => peer("kv-server.ts", [shmName("kv"), "async"]), unavailable: () => null },
  {
    id: "kv-redis",
    label: "KV front: Bun RedisClient, redis-server (unix socket)",
    group: "kv",
    front: "redis",
    backend: async () => {
      const r = await startRedis();
      return { pid: r.pid, url: r.unixUrl, stop: () => r.stop() };
    },
    unavailable: redisUnavailable,
  },
];

async function measureRow(spec: RowSpec, o: Opts): Promise<HttpRow> {
  const backend = spec.backend === null ? null : await spec.backend();
  let front: Proc | null = null;
  try {
    front = await start("serve-front.ts", [spec.front, ...(backend ? [backend.url] : [])], { SERVE_FRONT_BYTES: String(o.bodyBytes), ...spec.env });
    const pids = [front.pid, ...(backend ? [backend.pid] : [])];
    const kv = spec.group === "kv";
    const r = o.loadgen === "wrk" ? await wrkLoad(front.ready.port, pids, o, kv) : await bunLoad(front.ready.port, pids, o, kv);
    return {
      id: spec.id,
      group: spec.group,
      label: spec.label,
      loadgen: o.loadgen,
      requests: r.requests,
      reqPerS: r.requests / r.seconds,
      p50Us: r.p50Us,
      p99Us: r.p99Us,
      frontCpuUsPerReq: r.cpuUs[0]! / r.requests,
      backendCpuUsPerReq: backend ? r.cpuUs[1]! / r.requests : NaN,
    };
  } finally {
    await front?.stop();
    await backend?.stop();
  }
}

/** serve() on shm and tcp inside the HTTP front's process (item 2): each load alone, then both together. */
async function measureCoexist(o: Opts): Promise<CoexistRow[]> {
  const front = await start("serve-front.ts", ["coexist", shmName("rpc"), "tcp://127.0.0.1:0"]);
  const rpc = front.ready.rpc as { shm: string; tcp: string };
  const http = () => bunLoad(front.ready.port, [front.pid], o, false);
  const rpcLoad = async (url: string) => {
    const r = await jsonOf(["bun", PEERS + "serve-rpc-load.ts", url, String(RPC_INFLIGHT), String(o.warmupMs), String(o.durationMs), String(o.bodyBytes)], o.warmupMs + o.durationMs + 30_000);
    if (!(r.calls > 0)) throw new Error("serve-rpc-load: no call completed in the timed window");
    return r as { calls: number; seconds: number; p50Us: number; p99Us: number };
  };
  const row = (id: string, label: string, h: Load | null, r: { calls: number; seconds: number; p50Us: number; p99Us: number } | null): CoexistRow => ({
    id,
    group: "coexist",
    label,
    httpReqPerS: h ? h.requests / h.seconds : NaN,
    httpP50Us: h?.p50Us ?? NaN,
    httpP99Us: h?.p99Us ?? NaN,
    rpcCallsPerS: r ? r.calls / r.seconds : NaN,
    rpcP50Us: r?.p50Us ?? NaN,
    rpcP99Us: r?.p99Us ?? NaN,
  });
  try {
    const out: CoexistRow[] = [];
    o.log("serve: RPC beside HTTP: HTTP load alone ...");
    out.push(row("coexist-http", "HTTP alone (serve() on shm and tcp idle)", await http(), null));
    for (const t of ["shm", "tcp"] as const) {
      o.log(`serve: RPC beside HTTP: RPC over ${t} alone, then with the HTTP load ...`);
      out.push(row(`coexist-rpc-${t}`, `RPC over ${t} alone (${RPC_INFLIGHT} in flight)`, null, await rpcLoad(rpc[t])));
      const [h, r] = await Promise.all([http(), rpcLoad(rpc[t])]);
      out.push(row(`coexist-both-${t}`, `HTTP + RPC over ${t} at once`, h, r));
    }
    return out;
  } finally {
    await front.stop();
  }
}

/** serve() under light load: one call every ~2 ms from this process, after back-to-back calls that warm both sides' JIT. */
async function measureLight(id: string, label: string, url: string, o: Opts): Promise<LightRow> {
  const backend = await peer("serve-backend.ts", [url]);
  const client = await rpcConnect(backend.url);
  const spacingMs = 2;
  try {
    const b = new Uint8Array(o.bodyBytes).fill(0x61);
    for (let i = 0; i < (o.quick ? 500 : 2000); i++) await client.request(ECHO_METHOD, b);
    const lat: number[] = [];
    const b0 = processCpuUs(backend.pid);
    const c0 = process.cpuUsage();
    for (let i = 0; i < o.lightCalls; i++) {
      await Bun.sleep(spacingMs);
      b[0] = i & 0xff;
      const t = Bun.nanoseconds();
      const out = await client.request(ECHO_METHOD, b);
      lat.push(Bun.nanoseconds() - t);
      if (out.length !== b.length || out.some((x, k) => x !== b[k])) throw new Error(`${id}: a response differs from its request`);
    }
    const b1 = processCpuUs(backend.pid);
    const c1 = process.cpuUsage();
    lat.sort((x, y) => x - y);
    return {
      id,
      group: "light",
      label,
      calls: o.lightCalls,
      spacingMs,
      backendCpuUsPerReq: (b1 - b0) / o.lightCalls,
      clientCpuUsPerReq: (c1.user + c1.system - c0.user - c0.system) / o.lightCalls,
      p50Us: lat[lat.length >> 1]! / 1e3,
    };
  } finally {
    client.close();
    await backend.stop();
  }
}

const median = (xs: number[]): number => {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The first round's row with every numeric figure replaced by its median over the rounds. */
function medianRow<T extends object>(rounds: T[]): T {
  const out = { ...rounds[0]! } as Record<string, unknown>;
  for (const [k, v] of Object.entries(out)) if (typeof v === "number") out[k] = median(rounds.map((r) => (r as Record<string, number>)[k]!));
  return out as T;
}

/** The spec's PartReport, plus the run's settings and the rows that could not run here. */
export interface ServePart extends PartReport {
  meta: ServeMeta;
  skipped: Array<{ id: string; reason: string }>;
}

export interface ServeOptions {
  quick: boolean;
  log: (s: string) => void;
  /** Force a load generator (default: wrk in full runs where installed, else the Bun one). */
  loadgen?: "wrk" | "bun";
}

/**
 * Measures every row in one run (spawns and stops its peers one row at a time; rounds in
 * alternating order, each figure the median of the rounds) and returns the part's report.
 * Throws when a response's bytes are wrong or a peer fails; a row that cannot run here (no
 * libucp, no redis-server) is left out with its reason in `skipped`. Main thread only.
 * About 75 s in full, 15 s with quick.
 */
export async function measureServe(opts: ServeOptions): Promise<ServePart> {
  const quick = opts.quick;
  const loadgen = opts.loadgen ?? (!quick && Bun.which("wrk") !== null ? "wrk" : "bun");
  const o: Opts = {
    quick,
    connections: 64,
    bodyBytes: 32,
    durationMs: quick ? 300 : 2000,
    warmupMs: quick ? 150 : 1000,
    rounds: quick ? 1 : 2,
    loadgen,
    lightCalls: quick ? 100 : 400,
    log: opts.log,
  };
  const skipped: Array<{ id: string; reason: string }> = [];
  const specs: RowSpec[] = [];
  for (const s of ROWS) {
    const why = await s.unavailable();
    if (why === null) specs.push(s);
    else skipped.push({ id: s.id, reason: why });
  }
  const rounds: HttpRow[][] = specs.map(() => []);
  for (let r = 0; r < o.rounds; r++) {
    // Alternate the order: a machine that speeds up or slows down during the run favours no row.
    const order = specs.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) {
      o.log(`serve: round ${r + 1}/${o.rounds}: ${specs[i]!.label} ...`);
      rounds[i]!.push(await measureRow(specs[i]!, o));
    }
  }
  const rows: ServeRow[] = rounds.map((rs) => medianRow(rs));
  rows.push(...(await measureCoexist(o)));
  o.log("serve: light load (one call every ~2 ms), shm and tcp ...");
  rows.push(await measureLight("light-shm", "serve() over shm, default wait mode", shmName("light"), o));
  rows.push(await measureLight("light-tcp", "serve() over tcp", "tcp://127.0.0.1:0", o));
  const meta: ServeMeta = { machine: os(), connections: o.connections, bodyBytes: o.bodyBytes, durationMs: o.durationMs, rounds: o.rounds, loadgen: o.loadgen, rpcInflight: RPC_INFLIGHT, ucxTls: SERVE_UCX_TLS };
  const targets = serveTargets(rows);
  return {
    title: `Bun.serve front calling a backend per HTTP request (bench/serve.bench.ts; load: ${o.loadgen === "wrk" ? "wrk -t2 with a Lua check of every response, after a warm-up by the Bun load generator checking each response against its own request" : "Bun load generator, every response checked byte for byte"}, ${o.connections} connections)`,
    lines: serveLines(rows, meta, skipped),
    targets,
    rows: rows as unknown as Record<string, unknown>[],
    meta,
    skipped,
  };
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  const jsonAt = argv.indexOf("--json");
  const lg = argv.includes("--bun-load") ? "bun" : undefined;
  const part = await measureServe({ quick: argv.includes("--quick"), log: (l) => console.error(l), ...(lg ? { loadgen: lg } : {}) });
  console.log([part.title, ...part.lines, "targets (issue 14):", ...part.targets.map((t) => `  [${t.met ? "met" : "NOT met"}] ${t.label}: ${t.measured}`)].join("\n"));
  if (jsonAt >= 0 && argv[jsonAt + 1]) writeFileSync(argv[jsonAt + 1]!, JSON.stringify(part, null, 2));
  process.exit(0);
}
