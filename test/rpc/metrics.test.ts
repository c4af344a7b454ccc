/**
 * RPC metrics (src/rpc/histogram.ts, src/rpc/metrics.ts), not yet wired into Client / Server:
 * - the HDR buckets: every bucket's bounds, width <= max(1, lower / 32), values at and just past
 *   each bound land where the module says;
 * - percentile(q) against the exact nearest-rank quantile of known and seeded-random sequences:
 *   |p - x| <= max(1 ns, x / 64), exact for integers up to 64 ns; clamping, merge, reset;
 * - RpcMetrics over a known sequence of calls: calls, errors by code, bytes, latency buckets;
 *   the bounds on methods and codes;
 * - the Prometheus text: escaping, and a strict parser (every line a comment, blank or
 *   `name{labels} value`; a TYPE before each family's samples; cumulative, non-decreasing
 *   buckets; _count equal to the +Inf bucket), on the text itself and served by a real
 *   Bun.serve through metricsHandler;
 * - record() allocates 0 heap objects per call after warm-up (bench/loopback.ts's objectsPer(),
 *   as test/rpc/alloc.test.ts counts them).
 */

import { describe, expect, test } from "bun:test";
import { objectsPer } from "../../bench/loopback.ts";
import { RemoteError, TimeoutError, UsageError } from "../../src/errors.ts";
import { seededRandom } from "../../src/pool/backoff.ts";
import { BUCKET_COUNT, MAX_TRACKABLE_NS, LatencyHistogram, bucketIndex, bucketLowerNs, bucketUpperNs, bucketWidthNs } from "../../src/rpc/histogram.ts";
import {
  MAX_CODES_PER_METHOD,
  MAX_METHODS_PER_TRANSPORT,
  OTHER,
  PROMETHEUS_BOUNDS_NS,
  PROMETHEUS_CONTENT_TYPE,
  RpcMetrics,
  errorCodeName,
  escapeLabelValue,
  metricsHandler,
  toPrometheus,
  toPrometheusAll,
} from "../../src/rpc/metrics.ts";
import { parseExposition, sampleValue } from "./metrics-exposition.ts";

/** The exact nearest-rank q-quantile: the ceil(q * n)-th smallest (the smallest for q = 0). */
function exactQuantile(sorted: number[], q: number): number {
  return sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1]!;
}

/** The stated bound: |p - x| <= max(1 ns, x / 64). */
function withinBound(p: number, x: number): boolean {
  return Math.abs(p - x) <= Math.max(1, x / 64);
}

const QS = [0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1];

function checkPercentiles(values: number[], extraQs: number[] = []): { checked: number; inexact: number } {
  const h = new LatencyHistogram();
  for (const v of values) h.record(v);
  const sorted = [...values].sort((a, b) => a - b);
  let checked = 0;
  let inexact = 0;
  for (const q of [...QS, ...extraQs]) {
    const x = exactQuantile(sorted, q);
    const p = h.percentile(q);
    if (!withinBound(p, x)) throw new Error(`q ${q}: percentile ${p} vs exact ${x}, bound ${Math.max(1, x / 64)}`);
    if (p !== x) inexact++;
    checked++;
  }
  return { checked, inexact };
}

describe("HDR buckets", () => {
  test(`${BUCKET_COUNT} buckets: contiguous, upper-inclusive, width <= max(1, lower / 32), last bound 2^40`, () => {
    expect(BUCKET_COUNT).toBe(1152);
    expect(bucketLowerNs(0)).toBe(0);
    expect(bucketUpperNs(BUCKET_COUNT - 1)).toBe(MAX_TRACKABLE_NS);
    expect(MAX_TRACKABLE_NS).toBe(2 ** 40);
    let bad = 0;
    for (let i = 0; i < BUCKET_COUNT; i++) {
      const lo = bucketLowerNs(i);
      const hi = bucketUpperNs(i);
      if (i > 0 && lo !== bucketUpperNs(i - 1)) bad++;
      if (hi - lo !== bucketWidthNs(i) || bucketWidthNs(i) > Math.max(1, lo / 32)) bad++;
      if (bucketIndex(hi) !== i) bad++; // the upper bound is inside
      if (i < BUCKET_COUNT - 1 && bucketIndex(hi + 0.5) !== i + 1) bad++; // just past it is the next
      if (i > 0 && bucketIndex(lo) !== i - 1) bad++; // the lower bound is the previous bucket's
    }
    expect(bad).toBe(0);
    expect([bucketIndex(0), bucketIndex(0.3), bucketIndex(1), bucketIndex(1.01), bucketIndex(64), bucketIndex(65), bucketIndex(66), bucketIndex(66.5)]).toEqual([0, 0, 0, 1, 63, 64, 64, 65]);
    expect(bucketIndex(2 ** 41)).toBe(BUCKET_COUNT - 1);
    expect(() => bucketUpperNs(BUCKET_COUNT)).toThrow(UsageError);
  });

  test("every Prometheus bound is an HDR bucket bound, so countAtMost() is exact there (values exactly at a bound included)", () => {
    expect(PROMETHEUS_BOUNDS_NS.length).toBe(28);
    expect([PROMETHEUS_BOUNDS_NS[0], PROMETHEUS_BOUNDS_NS.at(-1)]).toEqual([256, 2 ** 35]);
    const h = new LatencyHistogram();
    const values: number[] = [];
    for (const b of PROMETHEUS_BOUNDS_NS) for (const v of [b - 1, b - 0.25, b, b + 0.25, b + 1]) values.push(v);
    for (const v of values) h.record(v);
    for (const b of PROMETHEUS_BOUNDS_NS) {
      expect(bucketUpperNs(bucketIndex(b))).toBe(b);
      expect(h.countAtMost(b)).toBe(values.filter((v) => v <= b).length);
    }
  });
});

describe("LatencyHistogram", () => {
  test("count, sum, min, max of a known sequence; an empty histogram gives NaN", () => {
    const h = new LatencyHistogram();
    expect([h.count, h.sum, h.min, h.max, h.percentile(0.5)]).toEqual([0, 0, NaN, NaN, NaN]);
    for (const v of [5, 1, 1000, 2.5, 70_000]) h.record(v);
    expect([h.count, h.sum, h.min, h.max, h.clamped]).toEqual([5, 71_008.5, 1, 70_000, 0]);
    // Ranks 1..5 are 1, 2.5, 5, 1000, 70000: 2.5 answers as 3 (its 1 ns bucket's upper bound,
    // within 1 ns), 1000 as its 16 ns bucket's middle (992, 1008], 70000 kept within max.
    expect([0, 0.2, 0.4, 0.6, 0.8, 1].map((q) => h.percentile(q))).toEqual([1, 1, 3, 5, 1000, 70_000]);
  });

  test("integers 1..64 ns are exact at every quantile; 1..10000 stay within max(1, x/64)", () => {
    const small = Array.from({ length: 64 }, (_, i) => i + 1);
    const h = new LatencyHistogram();
    for (const v of small) h.record(v);
    for (let r = 1; r <= 64; r++) expect(h.percentile(r / 64)).toBe(r);
    const r = checkPercentiles(Array.from({ length: 10_000 }, (_, i) => i + 1), Array.from({ length: 999 }, (_, i) => (i + 1) / 1000));
    expect(r.checked).toBe(QS.length + 999);
    expect(r.inexact).toBeGreaterThan(0); // an approximation, within its bound
  });

  test.each([
    ["log-uniform over 0..2^40 ns", 1, (rnd: () => number) => Math.floor(2 ** (rnd() * 40))],
    ["uniform 0..1 ms, fractional", 2, (rnd: () => number) => rnd() * 1e6],
    ["heavy tail (Pareto, shm-like body at 500 ns)", 3, (rnd: () => number) => 500 / (1 - rnd()) ** 1.5],
    ["a few distinct values", 4, (rnd: () => number) => [300, 1800, 25_000, 9e9][Math.floor(rnd() * 4)]!],
  ])("seeded random, %s: every quantile within max(1, x/64)", (_name, seed, gen) => {
    const rnd = seededRandom(seed);
    const values = Array.from({ length: 50_000 }, () => gen(rnd));
    const qs = Array.from({ length: 200 }, () => rnd());
    expect(checkPercentiles(values, qs).checked).toBe(QS.length + 200);
  });

  test("values above 2^40 ns are clamped into the last bucket and counted; sum / max keep the true values", () => {
    const h = new LatencyHistogram();
    h.record(10);
    h.record(2 ** 41);
    h.record(2 ** 40);
    expect([h.count, h.clamped, h.max, h.sum]).toEqual([3, 1, 2 ** 41, 10 + 2 ** 41 + 2 ** 40]);
    expect(h.bucketCount(BUCKET_COUNT - 1)).toBe(2);
    expect([h.countAtMost(2 ** 40), h.countAtMost(2 ** 45), h.countAtMost(Infinity)]).toEqual([2, 2, 3]);
    const s = h.snapshot();
    expect(s.buckets).toEqual([{ upperNs: 10, count: 1 }, { upperNs: 2 ** 40, count: 1 }]);
  });

  test("bad values and quantiles are UsageErrors and count nothing", () => {
    const h = new LatencyHistogram();
    for (const v of [-1, NaN, Infinity, -Infinity]) expect(() => h.record(v)).toThrow(UsageError);
    expect(h.count).toBe(0);
    h.record(1);
    for (const q of [-0.1, 1.5, NaN]) expect(() => h.percentile(q)).toThrow(UsageError);
    expect(() => h.countAtMost(NaN)).toThrow(UsageError);
  });

  test("countAtMost() between bucket bounds counts whole buckets only (1000 ns lies in (992, 1008])", () => {
    const h = new LatencyHistogram();
    h.record(1000);
    expect([h.countAtMost(992), h.countAtMost(1000), h.countAtMost(1007.9), h.countAtMost(1008), h.countAtMost(-1)]).toEqual([0, 0, 0, 1, 0]);
  });

  test("merge equals recording both into one; reset empties it", () => {
    const rnd = seededRandom(9);
    const a = new LatencyHistogram();
    const b = new LatencyHistogram();
    const both = new LatencyHistogram();
    for (let i = 0; i < 20_000; i++) {
      const v = 2 ** (rnd() * 30);
      (i % 3 === 0 ? a : b).record(v);
      both.record(v);
    }
    a.merge(b);
    const sa = a.snapshot();
    const sb = both.snapshot();
    expect(sa.buckets).toEqual(sb.buckets);
    expect([sa.count, sa.minNs, sa.maxNs, sa.p50Ns, sa.p99Ns, sa.p999Ns]).toEqual([sb.count, sb.minNs, sb.maxNs, sb.p50Ns, sb.p99Ns, sb.p999Ns]);
    expect(sa.sumNs).toBeCloseTo(sb.sumNs, 0);
    a.reset();
    expect([a.count, a.sum, a.clamped, a.min, a.snapshot().buckets.length]).toEqual([0, 0, 0, NaN, 0]);
    a.record(7);
    expect([a.min, a.max, a.percentile(0.5)]).toEqual([7, 7, 7]);
  });
});

/** A known sequence: [transport, method, code, bytesIn, bytesOut, ns]. */
const CALLS: Array<[string, number | string, string | null, number, number, number]> = [
  ["shm", 1, null, 32, 16, 300],
  ["shm", 1, null, 32, 16, 1024],
  ["shm", 1, "TimeoutError", 0, 16, 5e7],
  ["shm", 1, null, 32, 16, 1024.5],
  ["shm", 2, "RemoteError", 10, 100, 4000],
  ["tcp", "scan", null, 4096, 8, 2e6],
  ["tcp", "scan", "UsageError", 0, 8, 100],
  ["tcp", "scan", "UsageError", 0, 8, 200],
];

function knownMetrics(): RpcMetrics {
  const m = new RpcMetrics({ methodName: (id) => (id === 1 ? "get" : undefined) });
  for (const c of CALLS) m.record(...c);
  return m;
}

describe("RpcMetrics", () => {
  test("a known sequence of calls: calls, errors by code, bytes and latency per (transport, method)", () => {
    const s = knownMetrics().snapshot();
    expect(s.methods.map((m) => [m.transport, m.method, m.methodId, m.calls, m.errors, m.bytesIn, m.bytesOut])).toEqual([
      ["shm", "2", 2, 1, [{ code: "RemoteError", count: 1 }], 10, 100],
      ["shm", "get", 1, 4, [{ code: "TimeoutError", count: 1 }], 96, 64],
      ["tcp", "scan", null, 3, [{ code: "UsageError", count: 2 }], 4096, 24],
    ]);
    const get = s.methods[1]!.latency;
    expect([get.count, get.sumNs, get.minNs, get.maxNs]).toEqual([4, 300 + 1024 + 5e7 + 1024.5, 300, 5e7]);
    expect(get.buckets.reduce((n, b) => n + b.count, 0)).toBe(4);
    expect(get.buckets.find((b) => b.upperNs === 1024)!.count).toBe(1); // 1024 ns exactly; 1024.5 is past the bound
  });

  test("errorCodeName: a RemoteError's remote name, a HotpathError's class, else the error's name", () => {
    expect(errorCodeName(new RemoteError("UnknownMethodError", "no method 9"))).toBe("UnknownMethodError");
    expect(errorCodeName(new TimeoutError("late"))).toBe("TimeoutError");
    expect(errorCodeName(new RangeError("x"))).toBe("RangeError");
    expect(errorCodeName("a string")).toBe("Error");
  });

  test(`methods past ${MAX_METHODS_PER_TRANSPORT} per transport and codes past ${MAX_CODES_PER_METHOD} per method count under "${OTHER}"`, () => {
    const m = new RpcMetrics();
    for (let id = 0; id < MAX_METHODS_PER_TRANSPORT + 50; id++) m.record("tcp", id, null, 1, 1, 100);
    const s = m.snapshot().methods;
    expect(s.length).toBe(MAX_METHODS_PER_TRANSPORT);
    expect(s.find((x) => x.method === OTHER)!.calls).toBe(51);
    expect(s.reduce((n, x) => n + x.calls, 0)).toBe(MAX_METHODS_PER_TRANSPORT + 50);
    for (let c = 0; c < MAX_CODES_PER_METHOD + 10; c++) m.record("shm", 1, `E${c}`, 0, 0, 1);
    const errors = m.snapshot().methods.find((x) => x.transport === "shm")!.errors;
    expect(errors.length).toBe(MAX_CODES_PER_METHOD);
    expect(errors.find((e) => e.code === OTHER)!.count).toBe(11);
    expect(() => m.record("shm", -1, null, 0, 0, 1)).toThrow(UsageError);
    expect(() => m.record("shm", 1, null, 0, 0, -5)).toThrow(UsageError);
    expect(m.get("shm", 1)!.calls).toBe(MAX_CODES_PER_METHOD + 10);
  });

  test("record() allocates 0 heap objects per call after the first call of each (transport, method, code)", () => {
    const m = new RpcMetrics();
    const transports = ["shm", "tcp"];
    const codes = [null, "TimeoutError", null, null, "RemoteError"];
    const lat = new Float64Array(1024).map((_, i) => 100 + i * 977.5);
    const run = (n: number) => {
      for (let i = 0; i < n; i++) m.record(transports[i & 1]!, i % 3, codes[i % 5]!, 32, 64, lat[i & 1023]!);
    };
    run(100_000); // warm-up: every (transport, method, code) seen, JIT
    const per = objectsPer(100_000, run);
    console.log(`RpcMetrics.record: ${per.toFixed(4)} heap objects per call`);
    expect(per).toBeLessThan(0.01);
    const h = new LatencyHistogram();
    expect(objectsPer(100_000, (n) => {
      for (let i = 0; i < n; i++) h.record(lat[i & 1023]!);
    })).toBeLessThan(0.01);
    const e = new TimeoutError("late");
    const r = new RemoteError("DecodeError", "bad");
    let names = 0;
    errorCodeName(e);
    errorCodeName(r);
    expect(objectsPer(100_000, (n) => {
      for (let i = 0; i < n; i++) names += errorCodeName(i & 1 ? e : r).length;
    })).toBeLessThan(0.01);
    expect(names).toBeGreaterThan(0);
  });
});

// The strict parser of the text format 0.0.4 is metrics-exposition.ts's (shared with the client and server tests).

describe("Prometheus text", () => {
  test("escaping of label values: backslash, double quote, newline", () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    const m = new RpcMetrics();
    m.record('t"x', 'm\\e\nthod', 'Code"1', 1, 2, 3);
    const text = toPrometheus(m.snapshot(), { role: "server" });
    expect(text).toContain('hotpath_rpc_calls_total{role="server",transport="t\\"x",method="m\\\\e\\nthod"} 1\n');
    const { samples } = parseExposition(text);
    expect(sampleValue(samples, "hotpath_rpc_errors_total", { role: "server", transport: 't"x', method: "m\\e\nthod", code: 'Code"1' })).toBe(1);
  });

  test("the known sequence parses strictly and matches it: counters, cumulative buckets at every bound, _sum, _count", () => {
    const text = toPrometheus(knownMetrics().snapshot(), { role: "client" });
    const { types, samples } = parseExposition(text);
    expect(Object.fromEntries(types)).toEqual({
      hotpath_rpc_calls_total: "counter",
      hotpath_rpc_errors_total: "counter",
      hotpath_rpc_bytes_in_total: "counter",
      hotpath_rpc_bytes_out_total: "counter",
      hotpath_rpc_latency_seconds: "histogram",
    });
    const labels = (transport: string, method: string) => ({ role: "client", transport, method });
    for (const [transport, method, key] of [["shm", "get", 1], ["shm", "2", 2], ["tcp", "scan", "scan"]] as const) {
      const calls = CALLS.filter((c) => c[0] === transport && c[1] === key);
      const l = labels(transport, method);
      expect(sampleValue(samples, "hotpath_rpc_calls_total", l)).toBe(calls.length);
      expect(sampleValue(samples, "hotpath_rpc_bytes_in_total", l)).toBe(calls.reduce((n, c) => n + c[3], 0));
      expect(sampleValue(samples, "hotpath_rpc_bytes_out_total", l)).toBe(calls.reduce((n, c) => n + c[4], 0));
      for (const code of new Set(calls.map((c) => c[2]).filter((c) => c !== null))) {
        expect(sampleValue(samples, "hotpath_rpc_errors_total", { ...l, code: code! })).toBe(calls.filter((c) => c[2] === code).length);
      }
      // Each bucket's count straight from the raw latencies: calls with latency <= le.
      for (const b of PROMETHEUS_BOUNDS_NS) {
        expect(sampleValue(samples, "hotpath_rpc_latency_seconds_bucket", { ...l, le: String(b / 1e9) })).toBe(calls.filter((c) => c[5] <= b).length);
      }
      expect(sampleValue(samples, "hotpath_rpc_latency_seconds_bucket", { ...l, le: "+Inf" })).toBe(calls.length);
      expect(sampleValue(samples, "hotpath_rpc_latency_seconds_count", l)).toBe(calls.length);
      expect(sampleValue(samples, "hotpath_rpc_latency_seconds_sum", l)).toBeCloseTo(calls.reduce((n, c) => n + c[5], 0) / 1e9, 12);
    }
    // 1024 ns exactly is in le=1.024e-6; 1024.5 is not.
    expect(sampleValue(samples, "hotpath_rpc_latency_seconds_bucket", { ...labels("shm", "get"), le: "0.000001024" })).toBe(2);
  });

  test("client and server together: one HELP and TYPE per family; a custom prefix; bad options are UsageErrors", () => {
    const m = knownMetrics();
    const text = toPrometheusAll([{ snapshot: m.snapshot(), role: "client" }, { snapshot: m.snapshot(), role: "server" }], { prefix: "app" });
    const { samples } = parseExposition(text);
    expect(text.match(/^# TYPE /gm)!.length).toBe(5);
    expect(sampleValue(samples, "app_rpc_calls_total", { role: "server", transport: "tcp", method: "scan" })).toBe(3);
    expect(parseExposition(toPrometheus({ methods: [] }, { role: "client" })).samples).toEqual([]);
    expect(() => toPrometheus({ methods: [] }, { role: "client", prefix: "bad-prefix" })).toThrow(UsageError);
    expect(() => toPrometheus({ methods: [] }, { role: "peer" as "client" })).toThrow(UsageError);
  });

  test("the strict parser rejects what the format forbids", () => {
    const ok = "# TYPE a counter\na 1\n";
    expect(parseExposition(ok).samples.length).toBe(1);
    for (const bad of ["a 1\n# TYPE a counter\n", "# TYPE a counter\na{x=\"1\",} 1\n", "# TYPE a counter\na 1", "# TYPE a counter\na one\n", '# TYPE a counter\na{x="\\q"} 1\n',
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n']) {
      expect(() => parseExposition(bad)).toThrow();
    }
  });

  test("served by a real Bun.serve on 127.0.0.1 through metricsHandler: content type, strict parse, live counts; 405 and 500", async () => {
    const m = knownMetrics();
    let fail = false;
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: metricsHandler(() => {
        if (fail) throw new Error("registry gone");
        return toPrometheus(m.snapshot(), { role: "server" });
      }),
    });
    try {
      const url = `http://127.0.0.1:${server.port}/metrics`;
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe(PROMETHEUS_CONTENT_TYPE);
      expect(PROMETHEUS_CONTENT_TYPE).toBe("text/plain; version=0.0.4; charset=utf-8");
      const first = parseExposition(await res.text()).samples;
      expect(sampleValue(first, "hotpath_rpc_latency_seconds_count", { role: "server", transport: "shm", method: "get" })).toBe(4);
      m.record("shm", 1, null, 1, 1, 700);
      const second = parseExposition(await (await fetch(url)).text()).samples;
      expect(sampleValue(second, "hotpath_rpc_calls_total", { role: "server", transport: "shm", method: "get" })).toBe(5);
      const head = await fetch(url, { method: "HEAD" });
      expect([head.status, head.headers.get("content-type"), await head.text()]).toEqual([200, PROMETHEUS_CONTENT_TYPE, ""]);
      const post = await fetch(url, { method: "POST", body: "x" });
      expect([post.status, post.headers.get("allow")]).toEqual([405, "GET, HEAD"]);
      await post.text();
      fail = true;
      const broken = await fetch(url);
      expect([broken.status, await broken.text()]).toEqual([500, "metrics source failed: registry gone\n"]);
    } finally {
      server.stop(true);
    }
  });
});
