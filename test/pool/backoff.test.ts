/** Backoff policy as data (gRPC's connection backoff) and the manual clock the pool is driven by. */
import { describe, expect, test } from "bun:test";
import { attemptTimes, Backoff, backoffPolicy, DEFAULT_BACKOFF, seededRandom } from "../../src/pool/backoff.ts";
import { ManualClock } from "../../src/pool/clock.ts";
import { UsageError } from "../../src/errors.ts";

describe("backoff", () => {
  test("without jitter the attempt times follow initial * multiplier^k, capped at max", () => {
    const times = attemptTimes({ jitter: 0 }, 14);
    const want = [0];
    let d = 1000;
    for (let i = 1; i < 14; i++) {
      want.push(want[i - 1]! + d);
      d = Math.min(d * 1.6, 120_000);
    }
    expect(times.map((t) => Math.round(t))).toEqual(want.map((t) => Math.round(t)));
    // the cap is reached: the last gap is exactly maxMs
    expect(Math.round(times[13]! - times[12]!)).toBe(120_000);
  });

  test("gRPC defaults", () => {
    expect(DEFAULT_BACKOFF).toEqual({ initialMs: 1000, multiplier: 1.6, maxMs: 120_000, jitter: 0.2, minConnectTimeoutMs: 20_000 });
    const b = new Backoff();
    expect(b.connectTimeoutMs(1000)).toBe(20_000);
    expect(b.connectTimeoutMs(50_000)).toBe(50_000);
  });

  test("an attempt that fails slowly delays the next to its failure (min connect timeout)", () => {
    const times = attemptTimes({ jitter: 0, initialMs: 100, minConnectTimeoutMs: 500 }, 3, Math.random, 10_000);
    expect(times).toEqual([0, 500, 1000]);
  });

  test("each jittered delay stays within ±jitter of its base", () => {
    const b = new Backoff({ initialMs: 100, multiplier: 2, maxMs: 10_000, jitter: 0.2 }, seededRandom(7));
    let base = 100;
    for (let i = 0; i < 12; i++) {
      const d = b.nextDelayMs();
      expect(d).toBeGreaterThanOrEqual(base * 0.8);
      expect(d).toBeLessThanOrEqual(base * 1.2);
      base = Math.min(base * 2, 10_000);
    }
    b.reset();
    expect(b.nextDelayMs()).toBeLessThanOrEqual(120);
  });

  test("jitter disperses 100 clients' first retries", () => {
    const n = 100;
    const rnd = seededRandom(12345);
    const firstRetry = Array.from({ length: n }, () => attemptTimes({}, 2, rnd)[1]!);
    // Uniform over [800, 1200] ms: a 100 ms window holds n * 100 / 400 = 25 on average.
    const windowMs = 100;
    const spanMs = 2 * DEFAULT_BACKOFF.jitter * DEFAULT_BACKOFF.initialMs;
    const expected = (n * windowMs) / spanMs;
    const sorted = firstRetry.sort((a, b) => a - b);
    let busiest = 0;
    for (let i = 0, j = 0; i < n; i++) {
      while (sorted[i]! - sorted[j]! >= windowMs) j++;
      busiest = Math.max(busiest, i - j + 1);
    }
    console.log(`100 clients: busiest ${windowMs} ms window holds ${busiest} first retries (uniform: ${expected}); spread ${(sorted[n - 1]! - sorted[0]!).toFixed(0)} ms`);
    expect(busiest).toBeLessThanOrEqual(2 * expected);
    expect(sorted[n - 1]! - sorted[0]!).toBeGreaterThan(3 * windowMs);
  });

  test("policy fields are validated", () => {
    expect(() => backoffPolicy({ multiplier: 0.5 })).toThrow(UsageError);
    expect(() => backoffPolicy({ jitter: 2 })).toThrow(UsageError);
    expect(() => backoffPolicy({ initialMs: NaN })).toThrow(UsageError);
    expect(() => backoffPolicy({ initialMs: 10, maxMs: 5 })).toThrow(UsageError);
    expect(() => backoffPolicy({ minConnectTimeoutMs: -1 })).toThrow(UsageError);
  });
});

describe("manual clock", () => {
  test("fires due timers in time order, including timers armed while firing", () => {
    const c = new ManualClock();
    const seen: string[] = [];
    c.setTimeout(() => seen.push("b"), 20);
    const x = c.setTimeout(() => seen.push("x"), 5);
    c.setTimeout(() => { seen.push("a"); c.setTimeout(() => seen.push("c"), 5); }, 10);
    c.clearTimeout(x);
    c.advance(15);
    expect(seen).toEqual(["a", "c"]);
    c.advance(5);
    expect(seen).toEqual(["a", "c", "b"]);
    expect(c.pending).toBe(0);
    expect(c.now()).toBe(20);
  });
});
