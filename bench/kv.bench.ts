/**
 * The kv benchmark (issue 13): hotpath kv GET and PUT (32-byte keys, 64 B and 4 KiB values) at
 * 1 and 64 in flight over shm (spin client, spin server, separate processes; and, like for like
 * with the Redis rows, shm through the promise API on the event loop with an event-driven
 * server), tcp, ucx (UCX_TLS=tcp,self and shm,self) and one-sided GET beside RPC GET over ucx
 * (two clients of the same server: oneSided "auto" and "never", so two connections, not one);
 * beside them, in the
 * same run and through the same client body (bench/kv-measure.ts), Redis (Debian's redis-server,
 * started here on a Unix socket and a tcp port, persistence off) driven by Bun's built-in
 * RedisClient, and `redis-benchmark -P 64` (C) on the same socket. Every reply is checked
 * (bytes, length, version); a wrong one fails its row. Prints the table, then issue 13's targets
 * with their ratios (met / NOT met); exits 1 when a row failed.
 *
 *   bun bench/kv.bench.ts [--quick] [--duration S] [--transports shm,shm-promise,tcp,ucx-tcp,ucx-shm,redis-unix,redis-tcp,redis-benchmark]
 *                         [--sizes 64,4096] [--json PATH] [--corrupt-reply N]
 * `--corrupt-reply N`: after each row's preload, key N's stored value gets one byte flipped
 * behind the body's back, so the row's GETs of it fail the byte check (PUT rows are unaffected).
 * `measureKv(opts)` returns the report for bench/run.ts (its kv part).
 */

import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { processProbe, type CpuProbe } from "./cpu.ts";
import { PromiseInbox } from "./drivers.ts";
import { hotPathKvDriver, KEY_SLOTS, measureKvRow, type KvDriver, type KvRowFigures } from "./kv-measure.ts";
import { redisBenchmark, redisBenchmarkUnavailable, redisDriver, redisUnavailable, startRedis, type RedisBenchmarkRow } from "./redis.ts";
import type { TargetCheck } from "./report.ts";
import { startPeer } from "./spawn.ts";

/** The slice of src/kv's client API the bench drives (spec: kvConnect, hot path and promises). */
interface KvClientApi {
  onResult: ((userData: number, error: Error | null, found: boolean, version: number, value: Uint8Array | null) => void) | null;
  getCb(key: Uint8Array, userData: number): number;
  putCb(key: Uint8Array, value: Uint8Array, userData: number): number;
  poll(): number;
  get(key: Uint8Array): Promise<{ value: Uint8Array; version: number } | null>;
  put(key: Uint8Array, value: Uint8Array): Promise<number>;
  stats(): Promise<Array<{ url: string; stats?: unknown; error?: Error }>>;
  close(): Promise<void>;
}
interface KvApi {
  kvConnect(urls: string | string[], opts?: Record<string, unknown>): Promise<KvClientApi>;
}

export interface KvRowResult extends KvRowFigures {
  id: string;
  label: string;
  section: string;
  op: "get" | "put";
  valueBytes: number;
  kind: "hotpath" | "reference";
  mode: "spin" | "async";
  layout: string;
  serverCpu: string;
  /** GET rows of hotpath kv: GETs the server answered itself during the row, of `calls` (one-sided reads do not reach it: only their RPC fallbacks count). */
  serverGets?: number;
  /** Rows compared with, first = the table's ref column (itself for references). */
  references: string[];
  /** Per reference: p50 at 1 in flight / its p50, ops/s at 64 in flight / its. */
  ratios: Record<string, { p50: number; at64: number | null }>;
}

export interface KvReport {
  date: string;
  options: { quick: boolean; durationS: number; sizes: number[]; sections: string[] };
  redisVersion: string | null;
  rows: KvRowResult[];
  redisBenchmark: RedisBenchmarkRow[];
  skipped: Array<{ id: string; label: string; reason: string }>;
  failed: Array<{ id: string; label: string; reason: string }>;
  targets: TargetCheck[];
}

export interface KvBenchOptions {
  quick?: boolean;
  durationS?: number;
  sizes?: number[];
  /** Section ids to run (default all): shm shm-promise tcp ucx-tcp ucx-shm redis-unix redis-tcp redis-benchmark. */
  sections?: string[];
  corruptReply?: number;
  log?: (s: string) => void;
}

interface Client {
  /** rpc: the section's own client; one-sided / rpc-promise: the ucx pair (promise API, one client each). */
  variant: "rpc" | "one-sided" | "rpc-promise";
  mode: "spin" | "async";
  driver: KvDriver;
}
interface Started {
  clients: Client[];
  /** The server's count of GETs it answered itself (its store's `gets`); null for Redis. One-sided reads never reach it. */
  serverGets(): Promise<number | null>;
  cpu: CpuProbe;
  note: string;
  stop(): Promise<void>;
}
interface Section {
  id: string;
  label: string;
  kind: "hotpath" | "reference";
  mode: "spin" | "async";
  layout: string;
  unavailable(): string | null;
  start(): Promise<Started>;
}

const KV_INDEX = new URL("../src/kv/index.ts", import.meta.url).pathname;
const ONE_SIDED = new URL("../src/kv/one-sided.ts", import.meta.url).pathname;
const KV_PEER = new URL("./peers/kv-server.ts", import.meta.url).pathname;
const CLIENT_HERE = "client: this process (main thread)";
const SECTION_IDS = ["shm", "shm-promise", "tcp", "ucx-tcp", "ucx-shm", "redis-unix", "redis-tcp", "redis-benchmark"];

let kvApi: KvApi | null = null;
async function loadKv(): Promise<KvApi> {
  kvApi ??= (await import(KV_INDEX)) as KvApi;
  if (typeof kvApi.kvConnect !== "function") throw new Error("src/kv/index.ts has no kvConnect");
  return kvApi;
}
const kvMissing = () => (existsSync(KV_INDEX) ? null : "src/kv/index.ts (kvServe / kvConnect) is not present yet");

/** hotpath kv's promise API (get / put), as a Bun service would call it: the event-loop rows. */
function promiseDriver(c: KvClientApi): KvDriver {
  const inbox = new PromiseInbox();
  const d: KvDriver = {
    versions: true,
    onResult: () => {},
    get(key, seq) {
      c.get(key).then((r) => (d.onResult(seq, null, r !== null, r?.version ?? 0, r?.value ?? null), inbox.settled()), inbox.fail);
      return true;
    },
    put(key, value, seq) {
      c.put(key, value).then((v) => (d.onResult(seq, null, true, v, null), inbox.settled()), inbox.fail);
      return true;
    },
    poll: () => inbox.poll(),
    wait: () => inbox.wait(),
    close: () => c.close(),
  };
  return d;
}

/** Runs `f` with UCX_TLS set (the UCP context is chosen by the environment at connect), then puts it back. */
async function withUcxTls<T>(tls: string | undefined, f: () => Promise<T>): Promise<T> {
  if (tls === undefined) return f();
  const saved = process.env.UCX_TLS;
  process.env.UCX_TLS = tls;
  try {
    return await f();
  } finally {
    if (saved === undefined) delete process.env.UCX_TLS;
    else process.env.UCX_TLS = saved;
  }
}

function kvSection(id: string, label: string, url: string, mode: "spin" | "async", tls?: string): Section {
  const oneSided = tls !== undefined;
  return {
    id,
    label,
    kind: "hotpath",
    mode,
    layout:
      mode === "spin"
        ? `${CLIENT_HERE}, hot path (getCb / putCb / poll), spin; server: own process (peers/kv-server.ts, kvServe, spin)${tls ? `; UCX_TLS=${tls} on both sides` : ""}`
        : `${CLIENT_HERE}, promise API (get / put), event loop; server: own process (peers/kv-server.ts, kvServe, default wait policy)`,
    unavailable: () => kvMissing(),
    start: async () => {
      const api = await loadKv();
      const peer = await startPeer([KV_PEER, url, mode], tls ? { UCX_TLS: tls } : {});
      const clients: Client[] = [];
      let stats: KvClientApi | null = null;
      try {
        // Spin rows: the client's connection in spin mode too (the spin body polls it).
        const pool = { connect: mode === "spin" ? { wait: { mode: "spin", spinNs: 0 }, window: 256 } : { window: 256 } };
        await withUcxTls(tls, async () => {
          const rpc = await api.kvConnect(peer.url, { pool, oneSided: "never" });
          stats = rpc;
          clients.push({ variant: "rpc", mode, driver: mode === "spin" ? hotPathKvDriver(rpc) : promiseDriver(rpc) });
          // One-sided GET is get()'s (the hot path is RPC only). Its row (one client, oneSided
          // "auto") is set beside the RPC GET of another client of the same server (oneSided
          // "never", the "-p" rows) through the same promise body: two connections of the same
          // kind, not one, since a kv client chooses one-sided reads per client.
          if (oneSided && existsSync(ONE_SIDED)) {
            clients.push({ variant: "one-sided", mode: "async", driver: promiseDriver(await api.kvConnect(peer.url, { pool, oneSided: "auto" })) });
            clients.push({ variant: "rpc-promise", mode: "async", driver: promiseDriver(await api.kvConnect(peer.url, { pool, oneSided: "never" })) });
          }
        });
      } catch (e) {
        for (const c of clients) await c.driver.close();
        await peer.stop();
        throw e;
      }
      return {
        clients,
        cpu: processProbe(peer.proc.pid),
        note: `server ${peer.url}`,
        async serverGets() {
          const s = (await stats!.stats())[0]?.stats as { gets?: unknown } | undefined;
          return typeof s?.gets === "number" ? s.gets : null;
        },
        async stop() {
          for (const c of clients) await c.driver.close();
          await peer.stop();
        },
      };
    },
  };
}

function redisSection(id: "redis-unix" | "redis-tcp"): Section {
  const unix = id === "redis-unix";
  return {
    id,
    label: `Redis over ${unix ? "a Unix socket" : "tcp"} (Bun RedisClient)`,
    kind: "reference",
    mode: "async",
    layout: `${CLIENT_HERE}, Bun's RedisClient (promise per call, the commands of one turn sent together), event loop; server: redis-server in its own process (${unix ? "Unix socket" : "tcp 127.0.0.1"}, --save "" --appendonly no)`,
    unavailable: redisUnavailable,
    start: async () => {
      const r = await startRedis();
      try {
        const driver = await redisDriver(unix ? r.unixUrl : r.tcpUrl);
        return { clients: [{ variant: "rpc", mode: "async", driver }], serverGets: async () => null, cpu: processProbe(r.pid), note: `${r.version}, ${unix ? r.unixUrl : r.tcpUrl}`, stop: async () => (await driver.close(), await r.stop()) };
      } catch (e) {
        await r.stop();
        throw e;
      }
    },
  };
}

const SECTIONS: Section[] = [
  kvSection("shm", "hotpath kv shm (spin)", `shm://bench-kv-${process.pid}`, "spin"),
  // Like for like with the Redis rows: promise API on the event loop, event-driven server.
  kvSection("shm-promise", "hotpath kv shm (promises, event loop)", `shm://bench-kvp-${process.pid}`, "async"),
  kvSection("tcp", "hotpath kv tcp (promises)", "tcp://127.0.0.1:0", "async"),
  kvSection("ucx-tcp", "hotpath kv ucx (UCX_TLS=tcp,self, spin)", "ucx://127.0.0.1:0", "spin", "tcp,self"),
  kvSection("ucx-shm", "hotpath kv ucx (UCX_TLS=shm,self, spin)", "ucx://127.0.0.1:0", "spin", "shm,self"),
  redisSection("redis-unix"),
  redisSection("redis-tcp"),
];

const fmtBytes = (b: number) => (b >= 1024 ? `${b / 1024} KiB` : `${b} B`);
const message = (e: unknown) => (e instanceof Error ? `${e.name === "Error" ? "" : `${e.name}: `}${e.message}` : String(e));
/** A one-sided row's GETs that reached the server (RPC fallbacks), for its line under the table. */
const rowGets = (r: KvRowResult) => r.calls - KEY_SLOTS;
const fallbackNote = (r: KvRowResult) => (r.serverGets === undefined ? "server GET count not read" : `${rowGets(r) - r.serverGets} of the row's ${rowGets(r)} GETs read one-sided, ${r.serverGets} answered by the server (RPC fallbacks)`);
/** One-sided rows count only when (nearly) every read stayed one-sided: at most this share fell back to the RPC GET (no writes run during a GET row, so torn reads are rare). */
const MAX_FALLBACK_SHARE = 0.01;
const VARIANT_TAG = { rpc: "", "one-sided": "-1s", "rpc-promise": "-p" } as const;
const VARIANT_LABEL = { rpc: "", "one-sided": " one-sided (promise API)", "rpc-promise": " RPC (promise API, 2nd client)" } as const;
const rowId = (section: string, variant: Client["variant"], op: string, size: number) => `${section}${VARIANT_TAG[variant]}-${op}-${size}`;

/** Runs every section (each server started once for its rows), then redis-benchmark; fills ratios and targets. Main thread only. */
export async function measureKv(o: KvBenchOptions = {}): Promise<KvReport> {
  const quick = o.quick ?? false;
  const durationS = o.durationS ?? (quick ? 0.03 : 0.3);
  const sizes = o.sizes ?? [64, 4096];
  const sections = o.sections ?? SECTION_IDS;
  const log = o.log ?? (() => {});
  const report: KvReport = { date: new Date().toISOString(), options: { quick, durationS, sizes, sections }, redisVersion: null, rows: [], redisBenchmark: [], skipped: [], failed: [], targets: [] };
  for (const s of SECTIONS.filter((x) => sections.includes(x.id))) {
    const why = s.unavailable();
    if (why !== null) {
      report.skipped.push({ id: s.id, label: s.label, reason: why });
      log(`${s.label}: skipped (${why})`);
      continue;
    }
    log(`${s.label}: starting`);
    let st: Started;
    try {
      st = await s.start();
    } catch (e) {
      report.failed.push({ id: s.id, label: s.label, reason: `failed to start: ${message(e)}` });
      log(`${s.label}: failed to start (${message(e)})`);
      continue;
    }
    try {
      if (s.id.startsWith("ucx-") && !st.clients.some((c) => c.variant === "one-sided")) {
        report.skipped.push({ id: `${s.id}-1s`, label: `${s.label}, one-sided GET`, reason: "src/kv/one-sided.ts (one-sided GET) is not present yet" });
      }
      for (const op of ["get", "put"] as const) {
        for (const size of sizes) {
          for (const c of st.clients) {
            if (c.variant !== "rpc" && op === "put") continue;
            const id = rowId(s.id, c.variant, op, size);
            const label = `${s.label}${VARIANT_LABEL[c.variant]} ${op.toUpperCase()} ${fmtBytes(size)}`;
            log(`${label}: measuring`);
            try {
              const gets0 = op === "get" ? await st.serverGets() : null;
              const fig = await measureKvRow(c.driver, { op, valueBytes: size, durationS, mode: c.mode, cpu: st.cpu, ...(o.corruptReply ? { corruptSlot: o.corruptReply } : {}) });
              const refs = s.kind === "reference" ? [id] : c.variant === "one-sided" ? [rowId(s.id, "rpc-promise", op, size), rowId(s.id, "rpc", op, size)] : [rowId("redis-unix", "rpc", op, size), rowId("redis-tcp", "rpc", op, size), ...(s.id === "shm-promise" ? [rowId("shm", "rpc", op, size)] : [])];
              const gets1 = gets0 !== null ? await st.serverGets() : null;
              const row: KvRowResult = { id, label, section: s.id, op, valueBytes: size, kind: s.kind, mode: c.mode, layout: `${c.variant === "rpc" ? s.layout : `${CLIENT_HERE}, promise API (get), event loop; server: the ${s.id} row's (spin)`}${c.variant === "one-sided" ? "; oneSided: auto (RMA reads of the registered arena)" : s.kind === "hotpath" ? "; oneSided: never" : ""}; ${st.note}`, serverCpu: st.cpu.server, references: refs, ratios: {}, ...fig };
              if (gets0 !== null && gets1 !== null) row.serverGets = gets1 - gets0;
              report.rows.push(row);
              if (s.id === "redis-unix" && report.redisVersion === null) report.redisVersion = st.note.split(",")[0]!;
              log(`${label}: p50 ${fig.p50Us.toFixed(2)} µs, ${Math.round(fig.opsPerS[64] ?? 0)} ops/s at 64 in flight`);
            } catch (e) {
              report.failed.push({ id, label, reason: message(e) });
              log(`${label}: FAILED (${message(e)})`);
            }
          }
        }
      }
    } finally {
      await st.stop();
    }
  }
  if (sections.includes("redis-benchmark")) await runRedisBenchmark(report, quick, sizes, log);
  addKvRatios(report);
  report.targets = kvTargets(report);
  return report;
}

/** redis-benchmark -P 64 on the Unix socket: -c 1 (64 in flight, as the rows' bursts) and its default -c 50. */
async function runRedisBenchmark(report: KvReport, quick: boolean, sizes: number[], log: (s: string) => void): Promise<void> {
  const why = redisUnavailable() ?? redisBenchmarkUnavailable();
  if (why !== null) {
    report.skipped.push({ id: "redis-benchmark", label: "redis-benchmark -P 64", reason: why });
    return;
  }
  log("redis-benchmark -P 64 (C reference)");
  let r;
  try {
    r = await startRedis();
  } catch (e) {
    report.failed.push({ id: "redis-benchmark", label: "redis-benchmark -P 64", reason: `redis-server failed to start: ${message(e)}` });
    return;
  }
  try {
    report.redisVersion ??= r.version;
    for (const size of sizes) for (const clients of [1, 50]) report.redisBenchmark.push(...(await redisBenchmark(r, size, 64, clients, quick ? 20_000 : 200_000)));
  } catch (e) {
    report.failed.push({ id: "redis-benchmark", label: "redis-benchmark -P 64", reason: message(e) });
  } finally {
    await r.stop();
  }
}

function addKvRatios(report: KvReport): void {
  const byId = new Map(report.rows.map((r) => [r.id, r]));
  for (const r of report.rows) {
    for (const id of r.references) {
      const ref = byId.get(id);
      if (ref === undefined || id === r.id) continue;
      const a = r.opsPerS[64];
      const b = ref.opsPerS[64];
      r.ratios[id] = { p50: r.p50Us / ref.p50Us, at64: a !== undefined && b !== undefined ? a / b : null };
    }
  }
}

const f2 = (v: number) => v.toFixed(2);
const fmtRate = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(0));
const fmtUs = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "-" : v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(2)} µs`);
const fmtX = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "-" : `${v < 0.1 ? v.toPrecision(2) : v.toFixed(2)}x`);

/** Issue 13's targets, judged on this run's rows (null: a row it needs did not run). */
export function kvTargets(report: KvReport): TargetCheck[] {
  const row = (id: string) => report.rows.find((r) => r.id === id);
  const out: TargetCheck[] = [];
  const add = (target: string, met: boolean | null, measured: string, reference: string) => out.push({ target, met, measured, reference });
  for (const size of report.options.sizes) {
    const b = fmtBytes(size);
    const kv = row(`shm-get-${size}`);
    const redis = row(`redis-unix-get-${size}`);
    const a = kv?.opsPerS[64];
    const c = redis?.opsPerS[64];
    // Judged on the hot-path row (spin); the like-for-like promise-API row's ratio is shown beside it.
    const p = row(`shm-promise-get-${size}`)?.opsPerS[64];
    const promiseNote = p !== undefined ? `; like for like, promise API on the event loop: ${fmtRate(p)} (${c ? f2(p / c) : "-"}x)` : "";
    add(`kv shm GET ${b}: ops/s at 64 in flight >= 5x Bun's RedisClient over a Unix socket (judged on the hot path, spin)`, a !== undefined && c !== undefined ? a >= 5 * c : null, a !== undefined ? `hot path ${fmtRate(a)} (${c ? f2(a / c) : "-"}x)${promiseNote}` : `-${promiseNote}`, c !== undefined ? fmtRate(c) : "not run");
    const rb = report.redisBenchmark.find((x) => x.op === "GET" && x.valueBytes === size && x.clients === 50);
    add(`kv shm GET ${b}: ops/s at 64 in flight >= redis-benchmark -P 64 GET (its default 50 clients)`, a !== undefined && rb ? a >= rb.rps : null, a !== undefined ? `${fmtRate(a)} (${rb ? f2(a / rb.rps) : "-"}x)` : "-", rb ? `${fmtRate(rb.rps)}` : "not run");
    const rb1 = report.redisBenchmark.find((x) => x.op === "GET" && x.valueBytes === size && x.clients === 1);
    add(`kv shm GET ${b}: ops/s at 64 in flight >= redis-benchmark -P 64 -c 1 GET (64 in flight)`, a !== undefined && rb1 ? a >= rb1.rps : null, a !== undefined ? `${fmtRate(a)} (${rb1 ? f2(a / rb1.rps) : "-"}x)` : "-", rb1 ? `${fmtRate(rb1.rps)}` : "not run");
    add(`kv shm GET ${b}: p50 at 1 in flight <= 2 µs (spin)`, kv ? kv.p50Us <= 2 : null, kv ? fmtUs(kv.p50Us) : "-", "2.00 µs");
    for (const tl of ["shm", "tcp"]) {
      const os = row(`ucx-${tl}-1s-get-${size}`);
      const rpc = row(`ucx-${tl}-p-get-${size}`);
      if (tl === "tcp" && (os === undefined || rpc === undefined)) continue; // the target names ucx(shm); tcp is shown when measured
      const fellBack = os?.serverGets === undefined ? 0 : os.serverGets / rowGets(os);
      const measured = os ? `${fmtUs(os.p50Us)} (${rpc ? f2(os.p50Us / rpc.p50Us) : "-"}x)${fellBack > 0 ? `, ${(fellBack * 100).toFixed(fellBack < 0.1 ? 2 : 0)}% of its GETs fell back to RPC` : ""}` : "not run";
      add(`one-sided GET ${b} over ucx(${tl}): p50 <= the RPC GET to the same server (a 2nd client, oneSided never: its own connection), same promise body (and at most 1% fallbacks)`, os && rpc ? os.p50Us <= rpc.p50Us && fellBack <= MAX_FALLBACK_SHARE : null, measured, rpc ? fmtUs(rpc.p50Us) : "not run");
    }
  }
  return out;
}

/** The kv table, redis-benchmark lines, the targets, then (withStatus) skipped and failed rows. */
export function kvLines(report: KvReport, withStatus = true): string[] {
  const head = ["row", "body", "p50 @1", "p99 @1", "p50 @64", "p99 @64", "ops/s @1", "ops/s @64", "ref", "p50/ref", "@64/ref", "CPU µs/op @1 cli|srv", "CPU µs/op @64 cli|srv", "objs/op", "also vs (p50, @64)"];
  const byId = new Map(report.rows.map((r) => [r.id, r]));
  const cpu = (c: { clientUs: number; serverUs: number } | null) => (c ? `${Number.isFinite(c.clientUs) ? f2(c.clientUs) : "-"} | ${Number.isFinite(c.serverUs) ? f2(c.serverUs) : "-"}` : "-");
  const lines = [head];
  for (const r of report.rows) {
    const ref = r.references[0]!;
    const self = ref === r.id;
    const also = r.references.slice(1).filter((id) => r.ratios[id]).map((id) => `${id} ${fmtX(r.ratios[id]!.p50)} ${fmtX(r.ratios[id]!.at64)}`).join("; ");
    lines.push([r.label, r.mode, fmtUs(r.p50Us), fmtUs(r.p99Us), fmtUs(r.at64?.p50Us), fmtUs(r.at64?.p99Us), fmtRate(r.opsPerS[1] ?? NaN), fmtRate(r.opsPerS[64] ?? NaN), self ? "(itself)" : byId.has(ref) ? ref : `${ref} (not run)`, self ? "1.00x" : fmtX(r.ratios[ref]?.p50), self ? "1.00x" : fmtX(r.ratios[ref]?.at64), cpu(r.cpu.at1), cpu(r.cpu.at64), r.heap.objectsPerCall === null ? "-" : r.heap.objectsPerCall.toFixed(2), also]);
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? "").length)));
  const out = lines.map((l) => l.map((c, i) => (c ?? "").padEnd(widths[i]!)).join("  ").trimEnd());
  out.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  out.push("");
  out.push(`kv (issue 13): 32-byte keys (1024 per row), every reply checked (bytes, length, version). p50/p99 @1: per-call round trips one at a time; @64: each call from its send to its own result inside bursts keeping 64 in flight. ops/s: complete bursts. CPU: µs per op, client | server. objs/op: JS heap objects the client allocated per op (@1).${report.redisVersion ? ` Redis: ${report.redisVersion}.` : ""}`);
  // One layout line per section (its rows share the server and the client's wait mode).
  const seen = new Set<string>();
  for (const r of report.rows) {
    const key = r.id.slice(0, r.id.lastIndexOf(`-${r.op}-`));
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(`  ${key}: ${r.layout}; server CPU: ${r.serverCpu}`);
  }
  for (const r of report.rows.filter((x) => x.id.includes("-1s-"))) out.push(`  ${r.id}: ${fallbackNote(r)}; its RPC reference ${r.references[0]} is a second client (oneSided: never) of the same server, so another connection of the same kind, not the same connection`);
  if (report.redisBenchmark.length > 0) {
    out.push("redis-benchmark (C reference; Unix socket, its own key key:__rand_int__, 16 B; latency per request as it measures it):");
    for (const x of report.redisBenchmark) out.push(`  redis-benchmark -P ${x.pipeline} -c ${x.clients} -t ${x.op.toLowerCase()} -d ${x.valueBytes} -n ${x.requests}: ${fmtRate(x.rps)} req/s, p50 ${fmtUs(x.p50Us)}, p99 ${fmtUs(x.p99Us)}`);
  }
  out.push("issue 13 targets (this run; ratios within it):");
  for (const t of report.targets) out.push(`  [${t.met === null ? "n/a" : t.met ? "met" : "NOT met"}] ${t.target}: ${t.measured} vs ${t.reference}`);
  if (!withStatus) return out;
  for (const s of report.skipped) out.push(`skipped ${s.label}: ${s.reason}`);
  for (const f of report.failed) out.push(`FAILED ${f.label}: ${f.reason}`);
  return out;
}

function parseArgs(argv: string[]): KvBenchOptions & { json: string | null } {
  const o: KvBenchOptions & { json: string | null } = { json: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`kv bench: ${a} needs a value`);
      return v;
    };
    if (a === "--quick") o.quick = true;
    else if (a === "--duration") o.durationS = Number(next());
    else if (a === "--sizes") o.sizes = next().split(",").map(Number);
    else if (a === "--transports") o.sections = next().split(",").filter(Boolean);
    else if (a === "--json") o.json = next();
    else if (a === "--corrupt-reply") o.corruptReply = Number(next());
    else throw new Error(`kv bench: unknown option ${a} (see the comment at the top of bench/kv.bench.ts)`);
  }
  const bad = (o.sections ?? []).filter((s) => !SECTION_IDS.includes(s));
  if (bad.length) throw new Error(`kv bench: unknown transports ${bad.join(", ")} (known: ${SECTION_IDS.join(", ")})`);
  if (o.sizes?.some((s) => !Number.isInteger(s) || s < 4 || s > 1 << 20)) throw new Error("kv bench: --sizes must be integers in 4..1048576");
  if (o.durationS !== undefined && !(o.durationS > 0)) throw new Error("kv bench: --duration must be > 0");
  if (o.corruptReply !== undefined && !(Number.isInteger(o.corruptReply) && o.corruptReply > 0)) throw new Error("kv bench: --corrupt-reply must be a key number >= 1");
  return o;
}

if (import.meta.main) {
  const o = parseArgs(process.argv.slice(2));
  const report = await measureKv({ ...o, log: (s) => console.log(s) });
  console.log("");
  for (const l of kvLines(report)) console.log(l);
  if (o.json) {
    mkdirSync(dirname(o.json), { recursive: true });
    writeFileSync(o.json, `${JSON.stringify(report, null, 2)}\n`);
  }
  process.exit(report.failed.length > 0 ? 1 : 0);
}
