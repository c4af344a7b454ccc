/**
 * Inside Bun.serve: HTTP requests/s of a Bun.serve front whose handler calls a hotpath backend
 * once per request, over tcp and over shm, beside the same handler doing the work itself.
 *
 * Layout, one process each: the load generator (peers/serve-load.ts: raw TCP sockets, HTTP/1.1
 * keep-alive, CONNS connections with one request outstanding each, every response checked byte
 * for byte against its request), the front (peers/serve-front.ts: Bun.serve, one hotpath client
 * shared by all requests, `await client.request()` per HTTP request), and the backend
 * (peers/serve-backend.ts: serve(), echo). No core placement: the OS schedules the three on the
 * machine's cores. Rows: local (no backend), tcp backend, shm backend (default wait mode, on both
 * sides), shm with spinNs: 0 (both sides park at once). Per row: HTTP req/s, p50/p99 of each
 * request (load generator's timing, per call), CPU µs per HTTP request of the front and of the
 * backend (/proc/<pid>/task/<tid>/schedstat summed over threads, read by the load generator at
 * the start and end of its timed window), each as a ratio to the tcp-backend row.
 *
 * Light load: this process calls a serve() backend (shm, default wait mode; and tcp) once every
 * ~2 ms for a while, after 2000 back-to-back calls (500 with --quick) that warm both sides'
 * JIT; the figure is the backend's CPU µs per request (and this client's).
 *
 *   bun bench/serve-backend.bench.ts [--quick] [--json PATH]
 *   import { measureServeBackend } from "./serve-backend.bench.ts"  // the rows, for the main bench
 */

import { writeFileSync } from "node:fs";
import { rpcConnect } from "../src/index.ts";
import { processCpuUs } from "./cpu.ts";
import { os } from "./os.ts";
import { ECHO_METHOD } from "./peers/methods.ts";

const PEERS = new URL("./peers/", import.meta.url).pathname;

export interface ServeBackendOptions {
  /** Shorter windows (the CI smoke run). */
  quick?: boolean;
  /** HTTP connections of the load generator (default 64). */
  connections?: number;
  /** Timed window per row and round, ms (default 2000; 1000 with quick). */
  durationMs?: number;
  /** Rounds over all rows, in alternating order; each figure is the median over rounds (default 3; 2 with quick). */
  rounds?: number;
  /** Request and response body, bytes (default 32). */
  bodyBytes?: number;
  /** Light-load calls per backend and round (default 400; 200 with quick), one every `lightSpacingMs`. */
  lightCalls?: number;
  lightSpacingMs?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface ServeRow {
  id: string;
  label: string;
  /** Wait policy of the hotpath sides (front client and backend), as passed; null: defaults or no hotpath. */
  wait: Record<string, unknown> | null;
  reqPerS: number;
  p50Us: number;
  p99Us: number;
  frontCpuUsPerReq: number;
  /** NaN for the local row. */
  backendCpuUsPerReq: number;
}

export interface LightRow {
  id: string;
  label: string;
  calls: number;
  spacingMs: number;
  backendCpuUsPerReq: number;
  clientCpuUsPerReq: number;
  p50Us: number;
}

export interface ServeBackendResult {
  machine: string;
  connections: number;
  bodyBytes: number;
  durationMs: number;
  rounds: number;
  rows: ServeRow[];
  light: LightRow[];
}

interface Proc {
  proc: ReturnType<typeof Bun.spawn>;
  ready: Record<string, any>;
  stop(): Promise<void>;
}

/** Starts `bun PEERS/<script> args`, reads its one JSON ready line; stop() closes its stdin (then SIGKILL after 2 s). */
async function start(script: string, args: string[]): Promise<Proc> {
  const proc = Bun.spawn(["bun", PEERS + script, ...args], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
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
    proc,
    ready: JSON.parse(text.slice(0, text.indexOf("\n"))),
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill(9), 2000);
      await proc.exited;
      clearTimeout(t);
    },
  };
}

type Opts = Required<Omit<ServeBackendOptions, "log">>;

async function runLoad(port: number, pids: number[], o: Opts, warmupMs: number): Promise<any> {
  const proc = Bun.spawn(["bun", PEERS + "serve-load.ts", String(port), String(o.connections), String(warmupMs), String(o.durationMs), String(o.bodyBytes), pids.join(",")], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const timer = setTimeout(() => proc.kill(9), warmupMs + o.durationMs + 30_000);
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  clearTimeout(timer);
  const r = JSON.parse(out.trim().split("\n").pop() ?? "{}");
  if (r.error) throw new Error(`load generator: ${r.error}`);
  if (!(r.requests > 0)) throw new Error(`load generator: no result (${out.slice(0, 200)})`);
  return r;
}

let names = 0;
const shmUrl = () => `shm://serve-bench-${process.pid}-${names++}`;

interface RowSpec {
  id: string;
  label: string;
  backend: string | null;
  wait: Record<string, unknown> | null;
}

const ROWS: RowSpec[] = [
  { id: "local", label: "local (handler does the work, no backend)", backend: null, wait: null },
  { id: "tcp", label: "hotpath tcp backend", backend: "tcp://127.0.0.1:0", wait: null },
  { id: "shm", label: "hotpath shm backend, default wait mode", backend: "shm", wait: null },
  { id: "shm-spin0", label: "hotpath shm backend, spinNs: 0", backend: "shm", wait: { spinNs: 0 } },
];

async function measureRow(spec: RowSpec, o: Opts, warmupMs: number): Promise<ServeRow> {
  const waitArg = spec.wait ? [JSON.stringify(spec.wait)] : [];
  const backend = spec.backend === null ? null : await start("serve-backend.ts", [spec.backend === "shm" ? shmUrl() : spec.backend, ...waitArg]);
  let front: Proc | null = null;
  try {
    front = await start("serve-front.ts", backend === null ? ["local"] : ["hotpath", backend.ready.url, ...waitArg]);
    const pids = [front.ready.pid as number, ...(backend ? [backend.ready.pid as number] : [])];
    const r = await runLoad(front.ready.port, pids, o, warmupMs);
    return {
      id: spec.id,
      label: spec.label,
      wait: spec.wait,
      reqPerS: r.requests / r.seconds,
      p50Us: r.p50Us,
      p99Us: r.p99Us,
      frontCpuUsPerReq: r.cpuUs[pids[0]!] / r.requests,
      backendCpuUsPerReq: backend ? r.cpuUs[pids[1]!] / r.requests : NaN,
    };
  } finally {
    await front?.stop();
    await backend?.stop();
  }
}

async function measureLight(id: string, label: string, url: string, o: Opts): Promise<LightRow> {
  const backend = await start("serve-backend.ts", [url]);
  const client = await rpcConnect(backend.ready.url);
  try {
    const body = new Uint8Array(o.bodyBytes).fill(0x61);
    // Back-to-back first, so both sides run JIT-compiled code (a long-running server would).
    for (let i = 0; i < (o.quick ? 500 : 2000); i++) await client.request(ECHO_METHOD, body);
    const lat: number[] = [];
    const pid = backend.ready.pid as number;
    const b0 = processCpuUs(pid);
    const c0 = process.cpuUsage();
    for (let i = 0; i < o.lightCalls; i++) {
      await Bun.sleep(o.lightSpacingMs);
      body[0] = i & 0xff;
      const t = Bun.nanoseconds();
      const out = await client.request(ECHO_METHOD, body);
      lat.push(Bun.nanoseconds() - t);
      if (out.length !== body.length || out.some((x, k) => x !== body[k])) throw new Error(`${id}: a response differs from its request`);
    }
    const b1 = processCpuUs(pid);
    const c1 = process.cpuUsage();
    lat.sort((a, b) => a - b);
    return {
      id,
      label,
      calls: o.lightCalls,
      spacingMs: o.lightSpacingMs,
      backendCpuUsPerReq: (b1 - b0) / o.lightCalls,
      clientCpuUsPerReq: (c1.user + c1.system - c0.user - c0.system) / o.lightCalls,
      p50Us: lat[lat.length >> 1]! / 1e3,
    };
  } finally {
    client.close();
    await backend.stop();
  }
}

/**
 * Measures every row (one after the other, in this process's event loop; spawns and stops its
 * peers) and returns them. Runs on the main thread; takes ~4 × (warm-up + durationMs) plus the
 * light-load calls.
 */
export async function measureServeBackend(opts: ServeBackendOptions = {}): Promise<ServeBackendResult> {
  const quick = opts.quick ?? false;
  const o: Opts = {
    quick,
    connections: opts.connections ?? 64,
    durationMs: opts.durationMs ?? (quick ? 1000 : 2000),
    rounds: opts.rounds ?? (quick ? 2 : 3),
    bodyBytes: opts.bodyBytes ?? 32,
    lightCalls: opts.lightCalls ?? (quick ? 200 : 400),
    lightSpacingMs: opts.lightSpacingMs ?? 2,
  };
  const warmupMs = quick ? 300 : 700;
  const log = opts.log ?? (() => {});
  const rowRounds: ServeRow[][] = ROWS.map(() => []);
  const lightSpecs = [
    { id: "light-shm", label: "serve() over shm, default wait mode", url: shmUrl },
    { id: "light-tcp", label: "serve() over tcp", url: () => "tcp://127.0.0.1:0" },
  ];
  const lightRounds: LightRow[][] = lightSpecs.map(() => []);
  for (let r = 0; r < o.rounds; r++) {
    // Alternate the order: a machine that speeds up or slows down during the run favours no row.
    const order = ROWS.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) {
      log(`serve-backend: round ${r + 1}/${o.rounds}: ${ROWS[i]!.label} ...`);
      rowRounds[i]!.push(await measureRow(ROWS[i]!, o, warmupMs));
    }
    for (const i of r % 2 === 1 ? [1, 0] : [0, 1]) {
      const l = lightSpecs[i]!;
      log(`serve-backend: round ${r + 1}/${o.rounds}: light load, ${l.label} ...`);
      lightRounds[i]!.push(await measureLight(l.id, l.label, l.url(), o));
    }
  }
  const rows = rowRounds.map((rs) => medianRow(rs));
  const light = lightRounds.map((rs) => medianRow(rs));
  return { machine: os(), connections: o.connections, bodyBytes: o.bodyBytes, durationMs: o.durationMs, rounds: o.rounds, rows, light };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The first round's row with every numeric figure replaced by its median over the rounds. */
function medianRow<T extends object>(rounds: T[]): T {
  const out = { ...rounds[0]! } as Record<string, unknown>;
  for (const [k, v] of Object.entries(out)) if (typeof v === "number") out[k] = median(rounds.map((r) => (r as Record<string, number>)[k]!));
  return out as T;
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "—");
const ratio = (x: number, ref: number) => (Number.isFinite(x) && ref > 0 ? `${(x / ref).toFixed(2)}x` : "—");

/** The result as a text table: each figure beside its ratio to the tcp-backend row of the same run. */
export function serveBackendTable(r: ServeBackendResult): string {
  const tcp = r.rows.find((x) => x.id === "tcp")!;
  const lines = [
    `Bun.serve front calling a hotpath backend per HTTP request: ${r.connections} HTTP connections (one request outstanding each), ${r.bodyBytes} B bodies, ${r.durationMs} ms per row and round, medians of ${r.rounds} rounds`,
    `machine: ${r.machine}; three processes (load generator, front, backend), no core placement; ratios are to the tcp-backend row of this run`,
    "",
    ["row".padEnd(44), "req/s".padStart(9), "÷tcp".padStart(6), "p50 µs".padStart(8), "÷tcp".padStart(6), "p99 µs".padStart(8), "÷tcp".padStart(6), "front µs/req".padStart(13), "÷tcp".padStart(6), "backend µs/req".padStart(15), "÷tcp".padStart(6)].join(" "),
  ];
  for (const x of r.rows) {
    lines.push(
      [
        x.label.padEnd(44),
        (x.reqPerS / 1e3).toFixed(1).padStart(8) + "k",
        ratio(x.reqPerS, tcp.reqPerS).padStart(6),
        f1(x.p50Us).padStart(8),
        ratio(x.p50Us, tcp.p50Us).padStart(6),
        f1(x.p99Us).padStart(8),
        ratio(x.p99Us, tcp.p99Us).padStart(6),
        f1(x.frontCpuUsPerReq).padStart(13),
        ratio(x.frontCpuUsPerReq, tcp.frontCpuUsPerReq).padStart(6),
        f1(x.backendCpuUsPerReq).padStart(15),
        ratio(x.backendCpuUsPerReq, tcp.backendCpuUsPerReq).padStart(6),
      ].join(" "),
    );
  }
  const lt = r.light.find((x) => x.id === "light-tcp")!;
  lines.push("", `light load: one call every ~${lt.spacingMs} ms from this process, ${lt.calls} calls per backend; ratios are to serve() over tcp`);
  lines.push(["row".padEnd(44), "backend µs/req".padStart(15), "÷tcp".padStart(6), "client µs/req".padStart(14), "÷tcp".padStart(6), "p50 µs".padStart(8)].join(" "));
  for (const x of r.light) {
    lines.push(
      [
        x.label.padEnd(44),
        f1(x.backendCpuUsPerReq).padStart(15),
        ratio(x.backendCpuUsPerReq, lt.backendCpuUsPerReq).padStart(6),
        f1(x.clientCpuUsPerReq).padStart(14),
        ratio(x.clientCpuUsPerReq, lt.clientCpuUsPerReq).padStart(6),
        f1(x.p50Us).padStart(8),
      ].join(" "),
    );
  }
  const shm = r.rows.find((x) => x.id === "shm")!;
  const ls = r.light.find((x) => x.id === "light-shm")!;
  const cpuShm = shm.frontCpuUsPerReq + shm.backendCpuUsPerReq;
  const cpuTcp = tcp.frontCpuUsPerReq + tcp.backendCpuUsPerReq;
  const met = (ok: boolean) => (ok ? "met" : "NOT met");
  lines.push(
    "",
    "targets (issue 11):",
    `  shm backend req/s ≥ 1.2× tcp backend's: ${ratio(shm.reqPerS, tcp.reqPerS)} — ${met(shm.reqPerS >= 1.2 * tcp.reqPerS)}`,
    `  CPU per request (front + backend) ≤ tcp's: ${f1(cpuShm)} vs ${f1(cpuTcp)} µs (${ratio(cpuShm, cpuTcp)}) — ${met(cpuShm <= cpuTcp)}`,
    `  serve() under light load, CPU per request ≤ the tcp server's: ${f1(ls.backendCpuUsPerReq)} vs ${f1(lt.backendCpuUsPerReq)} µs (${ratio(ls.backendCpuUsPerReq, lt.backendCpuUsPerReq)}) — ${met(ls.backendCpuUsPerReq <= lt.backendCpuUsPerReq)}`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  const jsonAt = argv.indexOf("--json");
  const result = await measureServeBackend({ quick: argv.includes("--quick"), log: (l) => console.error(l) });
  console.log(serveBackendTable(result));
  if (jsonAt >= 0 && argv[jsonAt + 1]) writeFileSync(argv[jsonAt + 1]!, JSON.stringify(result, null, 2));
  process.exit(0);
}
