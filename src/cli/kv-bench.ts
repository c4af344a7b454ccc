/**
 * The kv-client's `bench` command: N GETs or PUTs through the client's hot-path callback API
 * (getCb / putCb / poll / onResult), K in flight, each call timed on its own (start at the
 * send, end in onResult), so p50 and p99 are of per-call timings, not of batches.
 *
 * Keys are 32 bytes ("bench:" and a zero-padded index, the key size), cycling over
 * min(N, BENCH_KEYS) keys, so with several servers the calls spread over them. A GET bench
 * first stores every key with a value of the given size (not timed) and checks that each GET
 * returns a value of that size. The first error stops issuing new calls; the calls in flight
 * are waited for, then the error is thrown.
 *
 *   const r = await runBench(client, { count: 2000, sizeBytes: 64, inflight: 1, benchOp: "get" }, onProgress);
 *   formatBench(r)  // "ops/s 412345  p50 2.1 us  p99 5.3 us"
 *
 * Thread: the client's thread; the bench owns client.onResult while it runs and sets it back
 * to null after.
 */

import { SEND_CLOSED, SEND_OK } from "../contract/transport.ts";
import { HotpathError, TimeoutError, UsageError } from "../errors.ts";
import type { KvClient } from "../kv/index.ts";
import { BENCH_MAX_COUNT } from "./kv-command.ts";

/** Distinct keys a bench cycles over: enough to spread over servers and the index, small enough to prefill at once. */
export const BENCH_KEYS = 1024;
const KEY_BYTES = 32;
const KEY_PREFIX = "bench:";
/** Empty polls before yielding to the event loop (event-driven transports deliver there); a spin transport answers within them. */
const POLLS_BEFORE_YIELD = 64;
/** How often progress is reported while a bench runs. */
export const PROGRESS_EVERY_MS = 200;
/** Waiting for the calls in flight after an error: longer than a call's own timeout (5 s by default). */
const DRAIN_WAIT_MS = 15_000;
/** Prefill writes in flight at once (promise API). */
const PREFILL_INFLIGHT = 64;

export interface BenchSpec {
  count: number;
  sizeBytes: number;
  inflight: number;
  benchOp: "get" | "put";
}

export interface BenchResult extends BenchSpec {
  /** Calls completed. */
  done: number;
  elapsedNs: number;
  opsPerSec: number;
  p50Us: number;
  p99Us: number;
}

/** A reply that does not match what the bench stored. */
export class BenchCheckError extends HotpathError {
  constructor(message: string) {
    super("E_BENCH_CHECK", message);
  }
}
Object.defineProperty(BenchCheckError, "name", { value: "BenchCheckError" }); // named after its class, kept through bundling (as errors.ts does)

/** The bench's keys: 32 bytes each, "bench:" then the index padded with zeros. */
export function benchKeys(n: number): Uint8Array[] {
  const enc = new TextEncoder();
  return Array.from({ length: n }, (_, i) => enc.encode(KEY_PREFIX + String(i).padStart(KEY_BYTES - KEY_PREFIX.length, "0")));
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil(q * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))]!;
}

/** The one result line: `ops/s N  p50 X us  p99 Y us`. */
export function formatBench(r: BenchResult): string {
  return `ops/s ${Math.round(r.opsPerSec)}  p50 ${r.p50Us.toFixed(1)} us  p99 ${r.p99Us.toFixed(1)} us`;
}

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Runs one bench on `client`; `onProgress(done, total)` is called about every
 * PROGRESS_EVERY_MS and once at the end. Rejects with the first call's error (after the calls in
 * flight completed) or with BenchCheckError for a GET that returned no value or one of the wrong size.
 * UsageError, before any call, for a count outside 1..BENCH_MAX_COUNT (every call's time is kept)
 * or an in-flight count below 1.
 */
export async function runBench(client: KvClient, spec: BenchSpec, onProgress: (done: number, total: number) => void): Promise<BenchResult> {
  const { count, sizeBytes, inflight, benchOp } = spec;
  if (!Number.isSafeInteger(count) || count < 1 || count > BENCH_MAX_COUNT) throw new UsageError(`bench: N ${count} is out of range (1..${BENCH_MAX_COUNT}): every call's time is kept for p50/p99`);
  if (!Number.isSafeInteger(inflight) || inflight < 1) throw new UsageError(`bench: --inflight ${inflight} must be a whole number >= 1`);
  const keys = benchKeys(Math.min(count, BENCH_KEYS));
  const value = new Uint8Array(sizeBytes).fill(0x76); // "v"
  if (benchOp === "get") {
    for (let i = 0; i < keys.length; i += PREFILL_INFLIGHT) {
      await Promise.all(keys.slice(i, i + PREFILL_INFLIGHT).map((k) => client.put(k, value)));
    }
  }

  const lat = new Float64Array(count);
  const startNs = new Float64Array(inflight);
  const free = Array.from({ length: inflight }, (_, i) => inflight - 1 - i);
  let issued = 0;
  let done = 0;
  let firstError: Error | null = null;
  let wrong = 0;
  client.onResult = (slot, error, found, _version, got) => {
    lat[done++] = Bun.nanoseconds() - startNs[slot]!;
    free.push(slot);
    if (error !== null) firstError ??= error;
    else if (benchOp === "get" && (!found || got === null || got.length !== sizeBytes)) wrong++;
  };
  const t0 = Bun.nanoseconds();
  let lastProgress = t0;
  let idle = 0;
  let drainDeadline = 0;
  try {
    while (done < count) {
      if (firstError === null) {
        while (issued < count && free.length > 0) {
          const slot = free.pop()!;
          const key = keys[issued % keys.length]!;
          startNs[slot] = Bun.nanoseconds();
          const status = benchOp === "get" ? client.getCb(key, slot) : client.putCb(key, value, slot);
          if (status === SEND_OK) {
            issued++;
            continue;
          }
          free.push(slot);
          if (status === SEND_CLOSED) firstError ??= new HotpathError("E_CLOSED", `bench: the connection to ${client.serverFor(key)} is closed`);
          break; // SEND_FULL: poll, then try again
        }
      }
      if (firstError !== null) {
        if (done >= issued) break;
        if (drainDeadline === 0) drainDeadline = Date.now() + DRAIN_WAIT_MS;
        else if (Date.now() > drainDeadline) throw new TimeoutError(`bench: ${issued - done} calls still in flight ${DRAIN_WAIT_MS} ms after the error "${firstError.message}"`);
      }
      if (client.poll() > 0) idle = 0;
      else if (++idle >= POLLS_BEFORE_YIELD) {
        idle = 0;
        await yieldToLoop();
      }
      const now = Bun.nanoseconds();
      if (now - lastProgress >= PROGRESS_EVERY_MS * 1e6) {
        lastProgress = now;
        onProgress(done, count);
      }
    }
  } finally {
    client.onResult = null;
  }
  const elapsedNs = Bun.nanoseconds() - t0;
  onProgress(done, count);
  if (firstError !== null) throw firstError;
  if (wrong > 0) throw new BenchCheckError(`bench: ${wrong} of ${count} gets returned no value or not ${sizeBytes} bytes`);
  const sorted = lat.subarray(0, done).sort();
  return { ...spec, done, elapsedNs, opsPerSec: done / (elapsedNs / 1e9), p50Us: percentile(sorted, 0.5) / 1e3, p99Us: percentile(sorted, 0.99) / 1e3 };
}
