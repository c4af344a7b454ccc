/**
 * gRPC's connection backoff (doc/connection-backoff.md): the first attempt at once, then each
 * retry `initialMs * multiplier^k` (capped at `maxMs`) after the previous attempt started, each
 * delay jittered by ±`jitter`; an attempt may take max(delay, minConnectTimeoutMs) to connect.
 * Every delay is jittered, the first included, so a fleet whose server restarts spreads out.
 *
 *   const b = new Backoff({ initialMs: 100 }, seededRandom(1));
 *   b.nextDelayMs(); // ~100 (80..120)
 *   b.nextDelayMs(); // ~160
 *   b.reset();
 */

import { UsageError } from "../errors.ts";

export interface BackoffPolicy {
  /** First retry delay. gRPC default 1 s. */
  initialMs: number;
  /** Growth per retry (≥ 1). gRPC default 1.6. */
  multiplier: number;
  /** Largest delay before jitter. gRPC default 120 s. */
  maxMs: number;
  /** Each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]; 0..1. gRPC default 0.2. */
  jitter: number;
  /** An attempt is given at least this long to connect. gRPC default 20 s. */
  minConnectTimeoutMs: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffPolicy> = Object.freeze({
  initialMs: 1000,
  multiplier: 1.6,
  maxMs: 120_000,
  jitter: 0.2,
  minConnectTimeoutMs: 20_000,
});

/** Fills in gRPC's defaults and checks every field (UsageError naming the field and value). */
export function backoffPolicy(p: Partial<BackoffPolicy> = {}): BackoffPolicy {
  const out = { ...DEFAULT_BACKOFF, ...p };
  const finite = (name: keyof BackoffPolicy, min: number, max = Infinity) => {
    const v = out[name];
    if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
      throw new UsageError(`backoff ${name} ${String(v)} must be a finite number in ${min}..${max}`);
    }
  };
  finite("initialMs", 0);
  finite("multiplier", 1);
  finite("maxMs", 0);
  finite("jitter", 0, 1);
  finite("minConnectTimeoutMs", 0);
  if (out.maxMs < out.initialMs) throw new UsageError(`backoff maxMs ${out.maxMs} is below initialMs ${out.initialMs}`);
  return out;
}

/** A random source in [0, 1). */
export type Random = () => number;

/** A small deterministic random (mulberry32) for tests and reproducible fleets. */
export function seededRandom(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The backoff state of one target. Not shared between threads. */
export class Backoff {
  readonly policy: BackoffPolicy;
  private readonly random: Random;
  private current: number;
  /** Retries since the last reset. */
  retries = 0;

  constructor(policy: Partial<BackoffPolicy> = {}, random: Random = Math.random) {
    this.policy = backoffPolicy(policy);
    this.random = random;
    this.current = this.policy.initialMs;
  }

  /** The jittered delay from this attempt's start to the next one; grows the base delay. */
  nextDelayMs(): number {
    const { jitter, multiplier, maxMs } = this.policy;
    const base = this.current;
    this.current = Math.min(base * multiplier, maxMs);
    this.retries++;
    return base * (1 - jitter + 2 * jitter * this.random());
  }

  /** How long an attempt that starts now may take to connect, given its delay to the next one. */
  connectTimeoutMs(delayMs: number): number {
    return Math.max(delayMs, this.policy.minConnectTimeoutMs);
  }

  /** Back to the initial delay (after a connection stayed READY long enough). */
  reset(): void {
    this.current = this.policy.initialMs;
    this.retries = 0;
  }
}

/**
 * The policy as data: start times of the first `n` attempts when each fails after
 * `failAfterMs` (0: at once), with the delay counted from each attempt's start, as gRPC does.
 */
export function attemptTimes(policy: Partial<BackoffPolicy>, n: number, random: Random = Math.random, failAfterMs = 0): number[] {
  const b = new Backoff(policy, random);
  const out: number[] = [];
  let t = 0;
  for (let i = 0; i < n; i++) {
    out.push(t);
    const delay = b.nextDelayMs();
    t += Math.max(delay, Math.min(failAfterMs, b.connectTimeoutMs(delay)));
  }
  return out;
}
