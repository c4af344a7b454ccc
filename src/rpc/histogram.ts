/**
 * LatencyHistogram: an HDR-style log-linear histogram of durations in nanoseconds, a fixed
 * array of counts allocated once, so record() is O(1) and allocates nothing.
 *
 * Buckets are upper-inclusive, like Prometheus's `le`: bucket 0 holds [0, 1] ns, every other
 * bucket (lower, upper]. Below 64 ns each bucket is 1 ns wide; from 64 ns on, each power of two
 * [2^k, 2^(k+1)) is split into SUB_BUCKETS (32) linear sub-buckets, so a bucket is at most 1/32
 * of its lower bound wide. The last bucket ends at MAX_TRACKABLE_NS (2^40 ns, about 18 min);
 * larger values are clamped into it and counted in `clamped` (count, sum, min and max keep the
 * true values).
 *
 * Percentiles: percentile(q) answers for the nearest-rank q-quantile x of the recorded values
 * (the ceil(q * count)-th smallest, the smallest for q = 0) with p where
 * |p - x| <= max(1 ns, x / 64): half a sub-bucket width; exact when x is an integer in 1..64 ns.
 * No bound holds for a clamped value (one above MAX_TRACKABLE_NS).
 *
 * Because every power of two from 64 ns up is a bucket bound, the count of values <= 2^k ns
 * is exact (countAtMost()), which is what the Prometheus exposition uses.
 *
 * Example:
 *   const h = new LatencyHistogram();
 *   h.record(1500); h.record(2500);
 *   h.percentile(0.5); // ~1500 (within 1500 / 64)
 *
 * Threading: a histogram belongs to one thread; merge() a copy to combine threads' figures.
 */

import { UsageError } from "../errors.ts";

/** log2 of the sub-buckets per power of two: 32 keeps the relative error at 1/64 for 9 KiB of counts. */
export const SUB_BUCKET_BITS = 5;
export const SUB_BUCKETS = 1 << SUB_BUCKET_BITS;
/** log2 of the largest value tracked: 2^40 ns (~18 min) is far past any RPC deadline. */
export const MAX_TRACKABLE_BITS = 40;
export const MAX_TRACKABLE_NS = 2 ** MAX_TRACKABLE_BITS;
/** Buckets: SUB_BUCKETS exact ones below 32, then SUB_BUCKETS per power of two from 2^5 to 2^39. */
export const BUCKET_COUNT = SUB_BUCKETS + (MAX_TRACKABLE_BITS - SUB_BUCKET_BITS) * SUB_BUCKETS;
const TOP = BUCKET_COUNT - 1;
const TWO_32 = 2 ** 32;

/** 2^k for k = 0..MAX_TRACKABLE_BITS: the division by a power of two in bucketIndex() reads it. */
const POW2 = new Float64Array(MAX_TRACKABLE_BITS + 1).map((_, k) => 2 ** k);

/** The bucket a value (ns, >= 0, finite) falls into; values above MAX_TRACKABLE_NS give the last one. Pure, any thread. */
export function bucketIndex(ns: number): number {
  if (ns <= 1) return 0;
  if (ns > MAX_TRACKABLE_NS) return TOP;
  // Buckets hold (lower, upper]: index the integer ceil(ns) - 1 with [lower, upper) buckets.
  const u = Math.ceil(ns) - 1;
  if (u < SUB_BUCKETS) return u;
  const e = u < TWO_32 ? 31 - Math.clz32(u) : 63 - Math.clz32(u / TWO_32);
  const shift = e - SUB_BUCKET_BITS;
  return SUB_BUCKETS + shift * SUB_BUCKETS + (Math.floor(u / POW2[shift]!) - SUB_BUCKETS);
}

/** The width of bucket `i` in ns: 1 below 64 ns, then 2^(k-5) within [2^k, 2^(k+1)). Pure, any thread. */
export function bucketWidthNs(i: number): number {
  return i < 2 * SUB_BUCKETS ? 1 : POW2[Math.floor((i - SUB_BUCKETS) / SUB_BUCKETS)]!;
}

/** The inclusive upper bound of bucket `i` in ns (the last one's is MAX_TRACKABLE_NS). Pure, any thread. */
export function bucketUpperNs(i: number): number {
  if (!Number.isInteger(i) || i < 0 || i > TOP) throw new UsageError(`histogram bucket ${String(i)} must be an integer in 0..${TOP}`);
  if (i < SUB_BUCKETS) return i + 1;
  const shift = Math.floor((i - SUB_BUCKETS) / SUB_BUCKETS);
  const sub = (i - SUB_BUCKETS) % SUB_BUCKETS;
  return (SUB_BUCKETS + sub + 1) * POW2[shift]!;
}

/** The exclusive lower bound of bucket `i` in ns (bucket 0 also holds 0 itself). Pure, any thread. */
export function bucketLowerNs(i: number): number {
  return bucketUpperNs(i) - bucketWidthNs(i);
}

/** Plain-data copy of a histogram (see LatencyHistogram.snapshot()). Empty: count 0, min / max / percentiles NaN. */
export interface HistogramSnapshot {
  count: number;
  sumNs: number;
  minNs: number;
  maxNs: number;
  /** Values above MAX_TRACKABLE_NS, counted in the last bucket. */
  clamped: number;
  p50Ns: number;
  p90Ns: number;
  p99Ns: number;
  p999Ns: number;
  /**
   * The non-empty buckets in order: `count` values in (previous bucket's bound, upperNs], not
   * cumulative. Clamped values are left out (they are above every bound): the counts add up to
   * count - clamped.
   */
  buckets: Array<{ upperNs: number; count: number }>;
}

/**
 * A latency histogram (see the module comment). record() allocates nothing; snapshot() and
 * percentile() read it. Not shared between threads.
 */
export class LatencyHistogram {
  /** Count per bucket; a Float64Array so counts stay exact past 2^32 (to 2^53). */
  private readonly counts = new Float64Array(BUCKET_COUNT);
  /** Values recorded. */
  count = 0;
  /** Sum of the values recorded, ns (true values, clamped ones included). */
  sum = 0;
  /** Values above MAX_TRACKABLE_NS (in the last bucket). */
  clamped = 0;
  private lo = Infinity;
  private hi = -Infinity;

  /** Smallest value recorded (ns); NaN when empty. */
  get min(): number {
    return this.count === 0 ? Number.NaN : this.lo;
  }

  /** Largest value recorded (ns); NaN when empty. */
  get max(): number {
    return this.count === 0 ? Number.NaN : this.hi;
  }

  /**
   * Adds one duration in ns (any finite number >= 0; fractions kept in sum / min / max). O(1),
   * allocates nothing; UsageError for a negative, NaN or infinite value (a caller bug).
   */
  record(ns: number): void {
    if (!(ns >= 0 && ns < Infinity)) throw new UsageError(`histogram record: ${String(ns)} ns must be a finite number >= 0`);
    const i = bucketIndex(ns);
    this.counts[i]!++;
    if (ns > MAX_TRACKABLE_NS) this.clamped++;
    this.count++;
    this.sum += ns;
    if (ns < this.lo) this.lo = ns;
    if (ns > this.hi) this.hi = ns;
  }

  /** Values recorded in bucket `i` (not cumulative). */
  bucketCount(i: number): number {
    return this.counts[i] ?? 0;
  }

  /**
   * Values recorded that are <= `boundNs`; exact when `boundNs` is a bucket bound
   * (bucketUpperNs(i): every integer up to 64 and every power of two up to 2^40), else it counts
   * whole buckets up to the last one whose upper bound is <= boundNs. Clamped values count
   * only for boundNs = Infinity.
   */
  countAtMost(boundNs: number): number {
    if (Number.isNaN(boundNs)) throw new UsageError("histogram countAtMost: the bound is NaN");
    if (boundNs === Infinity) return this.count;
    if (boundNs >= MAX_TRACKABLE_NS) return this.count - this.clamped;
    let n = 0;
    const last = bucketIndex(boundNs);
    const end = bucketUpperNs(last) <= boundNs ? last : last - 1;
    for (let i = 0; i <= end; i++) n += this.counts[i]!;
    return n;
  }

  /**
   * The q-quantile (q in 0..1) within the bound of the module comment: the bucket of the
   * nearest-rank value, as its middle (its upper bound for 1 ns buckets), kept within
   * [min, max]. NaN when empty; UsageError for q outside 0..1. O(BUCKET_COUNT).
   */
  percentile(q: number): number {
    if (!(q >= 0 && q <= 1)) throw new UsageError(`histogram percentile: q ${String(q)} must be a number in 0..1`);
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    let i = 0;
    for (; i < TOP; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) break;
    }
    const w = bucketWidthNs(i);
    const upper = bucketUpperNs(i);
    const p = w === 1 ? upper : upper - w / 2;
    return p < this.lo ? this.lo : p > this.hi ? this.hi : p;
  }

  /** Adds `other`'s values into this one (same layout: every histogram has it). `other` is unchanged. */
  merge(other: LatencyHistogram): void {
    const src = other.counts;
    const dst = this.counts;
    for (let i = 0; i < BUCKET_COUNT; i++) dst[i]! += src[i]!;
    this.count += other.count;
    this.sum += other.sum;
    this.clamped += other.clamped;
    if (other.lo < this.lo) this.lo = other.lo;
    if (other.hi > this.hi) this.hi = other.hi;
  }

  /** Forgets every value (the counts array is kept). */
  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.clamped = 0;
    this.lo = Infinity;
    this.hi = -Infinity;
  }

  /** A plain-data copy (allocates; not for the hot path). */
  snapshot(): HistogramSnapshot {
    const buckets: Array<{ upperNs: number; count: number }> = [];
    for (let i = 0; i < BUCKET_COUNT; i++) {
      const n = i === TOP ? this.counts[i]! - this.clamped : this.counts[i]!;
      if (n > 0) buckets.push({ upperNs: bucketUpperNs(i), count: n });
    }
    const empty = this.count === 0;
    return {
      count: this.count,
      sumNs: this.sum,
      minNs: this.min,
      maxNs: this.max,
      clamped: this.clamped,
      p50Ns: empty ? Number.NaN : this.percentile(0.5),
      p90Ns: empty ? Number.NaN : this.percentile(0.9),
      p99Ns: empty ? Number.NaN : this.percentile(0.99),
      p999Ns: empty ? Number.NaN : this.percentile(0.999),
      buckets,
    };
  }
}

/** Values <= `boundNs` in a snapshot, as countAtMost() answers it (clamped values only at Infinity). Pure. */
export function snapshotCountAtMost(s: HistogramSnapshot, boundNs: number): number {
  if (boundNs === Infinity) return s.count;
  let n = 0;
  for (const b of s.buckets) if (b.upperNs <= boundNs) n += b.count;
  return n;
}
