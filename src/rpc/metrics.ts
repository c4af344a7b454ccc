/**
 * RPC metrics: per (transport, method) counters and a latency histogram, a Prometheus text
 * exposition (format 0.0.4) of them, and a Bun.serve fetch handler that serves it.
 *
 * Contract:
 * - RpcMetrics.record() takes one completed call: calls += 1, errors[code] += 1 when it failed,
 *   bytes in / out added, its latency recorded (failed calls included). It allocates only the
 *   first time it sees a (transport, method) or a (transport, method, code); after that, nothing.
 *   Bytes are this side's: a client's out is requests, in is responses; a server's the reverse.
 * - Cardinality is bounded: past MAX_METHODS_PER_TRANSPORT methods of one transport, further
 *   methods count under method "other"; past MAX_CODES_PER_METHOD codes of one method, further
 *   codes count under code "other".
 * - snapshot() is plain data (numbers, strings, arrays), safe to keep, send or JSON.stringify.
 * - toPrometheus() writes counters hotpath_rpc_{calls,errors,bytes_in,bytes_out}_total and the
 *   histogram hotpath_rpc_latency_seconds with `le` at PROMETHEUS_BOUNDS_NS (powers of two,
 *   each an exact bucket bound of the HDR histogram, so every `_bucket` count is exact).
 *
 * Client and Server record into one when their `metrics` option is on (meter.ts, handle.ts);
 * any code may record its own calls too.
 *
 * Example:
 *   const m = new RpcMetrics();
 *   m.record("shm", 1, null, 32, 32, 1800);              // ok, 1.8 µs
 *   m.record("shm", 1, "TimeoutError", 32, 0, 5e7);
 *   Bun.serve({ port: 9464, fetch: metricsHandler(() => toPrometheus(m.snapshot(), { role: "client" })) });
 *
 * Threading: an RpcMetrics belongs to the thread that records into it; snapshots travel freely.
 */

import { HotpathError, RemoteError, UsageError, describeThrown, errorNameOf } from "../errors.ts";
import { bucketIndex, bucketUpperNs, LatencyHistogram, snapshotCountAtMost, type HistogramSnapshot } from "./histogram.ts";

/** Methods kept apart per transport: a server records method ids off the wire, and a peer must not grow the registry without bound. */
export const MAX_METHODS_PER_TRANSPORT = 1024;
/** Error codes kept apart per method: codes come from error names, and a handler may throw errors with arbitrary names. */
export const MAX_CODES_PER_METHOD = 64;
/** The method and code under which calls past those limits count. */
export const OTHER = "other";

/**
 * The latency histogram's Prometheus bounds: 2^8 ns (256 ns, below a shm round trip) to 2^35 ns
 * (~34 s, past the default 30 s request timeout), every power of two. Each is an upper bound of
 * an HDR bucket (asserted below), so the count of calls <= each bound is exact.
 */
export const PROMETHEUS_BOUNDS_NS: readonly number[] = Object.freeze(Array.from({ length: 28 }, (_, k) => 2 ** (k + 8)));
for (const b of PROMETHEUS_BOUNDS_NS) {
  if (bucketUpperNs(bucketIndex(b)) !== b) throw new Error(`metrics: Prometheus bound ${b} ns is not an HDR bucket bound`);
}

/**
 * The code name a failed call counts under: a RemoteError's (or rebuilt registered error's)
 * remote name, a HotpathError's class name, else errors.ts's errorNameOf(). Allocates nothing
 * for errors of hotpath's classes. Any thread.
 */
export function errorCodeName(e: unknown): string {
  if (e instanceof RemoteError) return (e as RemoteError).remoteName;
  if (e instanceof HotpathError) return e.name;
  return errorNameOf(e);
}

/** One (transport, method)'s counters and latency. Live: RpcMetrics.record() updates it. Same thread as its registry. */
export class MethodMetrics {
  readonly transport: string;
  /** The method's label: its name, or its id as decimal text. */
  readonly method: string;
  /** The method id when it was recorded by id (not for "other"). */
  readonly methodId: number | null;
  /** Completed calls, failed ones included. */
  calls = 0;
  /** Failed calls by code name (see errorCodeName()); an entry is made at a code's first failure. */
  readonly errors = new Map<string, number>();
  bytesIn = 0;
  bytesOut = 0;
  /** Latency of every completed call, ns. */
  readonly latency = new LatencyHistogram();

  constructor(transport: string, method: string, methodId: number | null) {
    this.transport = transport;
    this.method = method;
    this.methodId = methodId;
  }

  /** Counts one failure under `code` (or "other" past MAX_CODES_PER_METHOD codes). */
  countError(code: string): void {
    const n = this.errors.get(code);
    if (n !== undefined) this.errors.set(code, n + 1);
    else if (this.errors.size < MAX_CODES_PER_METHOD - 1 || code === OTHER) this.errors.set(code, 1);
    else this.errors.set(OTHER, (this.errors.get(OTHER) ?? 0) + 1);
  }
}

/** Plain data for one (transport, method). */
export interface MethodSnapshot {
  transport: string;
  method: string;
  methodId: number | null;
  calls: number;
  /** Failed calls per code, sorted by code. */
  errors: Array<{ code: string; count: number }>;
  bytesIn: number;
  bytesOut: number;
  latency: HistogramSnapshot;
}

export interface RpcMetricsSnapshot {
  /** Sorted by transport, then method label. */
  methods: MethodSnapshot[];
}

export interface RpcMetricsOptions {
  /** The label of a method recorded by id (a service definition's name); default: the id in decimal. Called once per new method. */
  methodName?: (id: number) => string | undefined;
}

/**
 * The registry: MethodMetrics per (transport, method). record() is the hot path (see the module
 * comment for what it allocates). Same thread as its records.
 */
export class RpcMetrics {
  private readonly byTransport = new Map<string, Map<number | string, MethodMetrics>>();
  private readonly methodName: ((id: number) => string | undefined) | undefined;
  // The last (transport, method) recorded: a run of calls to one method skips both lookups.
  private lastTransport: string | null = null;
  private lastMethod: number | string | null = null;
  private last: MethodMetrics | null = null;

  constructor(opts: RpcMetricsOptions = {}) {
    this.methodName = opts.methodName;
  }

  /**
   * Records one completed call of `method` (id or name) over `transport` ("shm", "tcp", ...):
   * `errorCode` null when it succeeded, else its code name (errorCodeName(error)); bytes this
   * side received and sent; latency in ns (finite, >= 0, else UsageError). O(1). Record a
   * method always by id or always by name: an id whose methodName() is a name also recorded as
   * a name makes two entries with one label (duplicate series in toPrometheus()).
   */
  record(transport: string, method: number | string, errorCode: string | null, bytesIn: number, bytesOut: number, latencyNs: number): void {
    let m = this.last;
    if (m === null || this.lastMethod !== method || this.lastTransport !== transport) {
      m = this.entry(transport, method);
      this.last = m;
      this.lastTransport = transport;
      this.lastMethod = method;
    }
    m.latency.record(latencyNs); // first: a bad latency throws before anything is counted
    m.calls++;
    m.bytesIn += bytesIn;
    m.bytesOut += bytesOut;
    if (errorCode !== null) m.countError(errorCode);
  }

  /** The live metrics of (transport, method), or undefined when none was recorded. */
  get(transport: string, method: number | string): MethodMetrics | undefined {
    return this.byTransport.get(transport)?.get(method);
  }

  private entry(transport: string, method: number | string): MethodMetrics {
    let methods = this.byTransport.get(transport);
    if (methods === undefined) {
      if (typeof transport !== "string") throw new UsageError(`metrics record: transport ${String(transport)} must be a string`);
      methods = new Map();
      this.byTransport.set(transport, methods);
    }
    const known = methods.get(method);
    if (known !== undefined) return known;
    if (typeof method !== "string" && !(Number.isInteger(method) && method >= 0)) {
      throw new UsageError(`metrics record: method ${String(method)} must be a name or an integer id >= 0`);
    }
    if (methods.size >= MAX_METHODS_PER_TRANSPORT - 1 && method !== OTHER) {
      let other = methods.get(OTHER);
      if (other === undefined) {
        other = new MethodMetrics(transport, OTHER, null);
        methods.set(OTHER, other);
      }
      return other;
    }
    const label = typeof method === "string" ? method : (this.methodName?.(method) ?? String(method));
    const made = new MethodMetrics(transport, label, typeof method === "number" ? method : null);
    methods.set(method, made);
    return made;
  }

  /** Plain data for every (transport, method) recorded (allocates; not for the hot path). */
  snapshot(): RpcMetricsSnapshot {
    const methods: MethodSnapshot[] = [];
    for (const ms of this.byTransport.values()) {
      for (const m of ms.values()) {
        methods.push({
          transport: m.transport,
          method: m.method,
          methodId: m.methodId,
          calls: m.calls,
          errors: [...m.errors].map(([code, count]) => ({ code, count })).sort((a, b) => (a.code < b.code ? -1 : a.code > b.code ? 1 : 0)),
          bytesIn: m.bytesIn,
          bytesOut: m.bytesOut,
          latency: m.latency.snapshot(),
        });
      }
    }
    methods.sort((a, b) => (a.transport !== b.transport ? (a.transport < b.transport ? -1 : 1) : a.method < b.method ? -1 : a.method > b.method ? 1 : 0));
    return { methods };
  }

  /** Forgets every method (the next record() of each allocates again). */
  reset(): void {
    this.byTransport.clear();
    this.last = null;
    this.lastTransport = null;
    this.lastMethod = null;
  }
}

// --- Prometheus text exposition, format 0.0.4

export type MetricsRole = "client" | "server";

export interface PrometheusOptions {
  /** Metric name prefix; default "hotpath". Must match [a-zA-Z_:][a-zA-Z0-9_:]*. */
  prefix?: string;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** A label value as the text format writes it: backslash, double quote and newline escaped. Pure. */
export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === "\\" ? "\\\\" : c === '"' ? '\\"' : "\\n"));
}

/** A sample value: integers and floats as JS prints them (Go's ParseFloat reads both), infinities as +Inf / -Inf. Pure. */
export function formatSampleValue(v: number): string {
  return v === Infinity ? "+Inf" : v === -Infinity ? "-Inf" : Number.isNaN(v) ? "NaN" : String(v);
}

/**
 * The Prometheus text (format 0.0.4) for one snapshot under `role`. Every family gets its HELP
 * and TYPE lines even when there are no samples. Pure; UsageError for a bad role or prefix.
 */
export function toPrometheus(snapshot: RpcMetricsSnapshot, opts: PrometheusOptions & { role: MetricsRole }): string {
  return toPrometheusAll([{ snapshot, role: opts.role }], opts);
}

/**
 * The Prometheus text for several snapshots at once (a process's clients and servers): each
 * family's HELP and TYPE appear once, as the format requires, with every part's samples under
 * them. Two parts with the same role, transport and method give duplicate series: merge such
 * registries first. Pure; UsageError for a bad role or prefix.
 */
export function toPrometheusAll(parts: ReadonlyArray<{ snapshot: RpcMetricsSnapshot; role: MetricsRole }>, opts: PrometheusOptions = {}): string {
  const prefix = opts.prefix ?? "hotpath";
  if (typeof prefix !== "string" || !METRIC_NAME.test(prefix)) throw new UsageError(`toPrometheus: prefix ${JSON.stringify(prefix)} must match [a-zA-Z_:][a-zA-Z0-9_:]*`);
  for (const p of parts) {
    if (p.role !== "client" && p.role !== "server") throw new UsageError(`toPrometheus: role ${JSON.stringify(p.role)} must be "client" or "server"`);
  }
  const name = `${prefix}_rpc`;
  const rows: Array<{ labels: string; m: MethodSnapshot }> = [];
  for (const p of parts) {
    for (const m of p.snapshot.methods) {
      rows.push({ labels: `role="${p.role}",transport="${escapeLabelValue(m.transport)}",method="${escapeLabelValue(m.method)}"`, m });
    }
  }
  const out: string[] = [];
  const counter = (metric: string, help: string, value: (m: MethodSnapshot) => number) => {
    out.push(`# HELP ${name}_${metric} ${help}`, `# TYPE ${name}_${metric} counter`);
    for (const r of rows) out.push(`${name}_${metric}{${r.labels}} ${formatSampleValue(value(r.m))}`);
  };
  counter("calls_total", "RPC calls completed (failed ones included), per role, transport and method.", (m) => m.calls);
  out.push(`# HELP ${name}_errors_total RPC calls that failed, per role, transport, method and error code.`, `# TYPE ${name}_errors_total counter`);
  for (const r of rows) for (const e of r.m.errors) out.push(`${name}_errors_total{${r.labels},code="${escapeLabelValue(e.code)}"} ${formatSampleValue(e.count)}`);
  counter("bytes_in_total", "Body bytes this side received (a client's responses, a server's requests).", (m) => m.bytesIn);
  counter("bytes_out_total", "Body bytes this side sent (a client's requests, a server's responses).", (m) => m.bytesOut);
  const h = `${name}_latency_seconds`;
  out.push(`# HELP ${h} RPC call latency in seconds (failed calls included).`, `# TYPE ${h} histogram`);
  for (const r of rows) {
    const lat = r.m.latency;
    for (const b of PROMETHEUS_BOUNDS_NS) out.push(`${h}_bucket{${r.labels},le="${formatSampleValue(b / 1e9)}"} ${snapshotCountAtMost(lat, b)}`);
    out.push(`${h}_bucket{${r.labels},le="+Inf"} ${lat.count}`, `${h}_sum{${r.labels}} ${formatSampleValue(lat.sumNs / 1e9)}`, `${h}_count{${r.labels}} ${lat.count}`);
  }
  return out.join("\n") + "\n";
}

/** The content type of the Prometheus text format 0.0.4. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * A fetch handler for Bun.serve that answers GET and HEAD (any path) with `source()`'s text as
 * PROMETHEUS_CONTENT_TYPE; other methods get 405, and a `source` that throws gets 500 with its
 * message. `source` runs on the server's thread at every request.
 *
 *   Bun.serve({ hostname: "127.0.0.1", port: 9464, fetch: metricsHandler(() => toPrometheus(m.snapshot(), { role: "server" })) });
 */
export function metricsHandler(source: () => string): (req: Request) => Response {
  if (typeof source !== "function") throw new UsageError("metricsHandler: source must be a function returning the exposition text");
  return (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("metrics: only GET and HEAD\n", { status: 405, headers: { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" } });
    }
    let text: string;
    try {
      text = source();
    } catch (e) {
      return new Response(`metrics source failed: ${describeThrown(e)}\n`, { status: 500, headers: { "content-type": "text/plain; charset=utf-8" } });
    }
    return new Response(req.method === "HEAD" ? null : text, { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } });
  };
}
