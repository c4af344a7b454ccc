/**
 * The one client body of the kv benchmark (bench/kv.bench.ts): every kv row and every Redis
 * row runs it, over a KvDriver (get / put / poll / wait over one store). Its loops and its
 * method are bench/measure.ts's: a spin form (synchronous polling, no promise on the path) and
 * an event-loop form (the same loop, `await wait()` where the spin form polls again); each call
 * timed alone with Bun.nanoseconds() into a preallocated buffer; windows of about 20 ms with a
 * full GC before each (heap objects counted per call as measure.ts does); complete bursts for
 * ops/s; CPU per call of both sides around the timed windows only.
 *
 * Keys: 1024 keys of 32 bytes ("kvbench:" + slot + a slot pattern). Before a row is timed every
 * key is PUT with a value of that row's size whose bytes depend on its slot (and whose first four
 * bytes are its sequence number). Every reply is checked inside the timed call: a GET must find
 * the key, return exactly the value last put (every byte and the length) and, where the store
 * keeps versions, that put's version; a PUT must return a version above the key's last one. After
 * a PUT row every key is read back and checked the same way. The first difference fails the row.
 *
 *   const fig = await measureKvRow(driver, { op: "get", valueBytes: 64, durationS: 0.3, mode: "spin", cpu });
 */

import { SEND_OK } from "../src/index.ts";
import type { CpuProbe } from "./cpu.ts";
import { asyncBurst, asyncLatency, ByteCheckError, type CpuPerCall, type HeapFigures, latencyWindows, type LoopBody, percentile, spinBurst, spinLatency } from "./measure.ts";

/** One row's store client, driven by the body. Owned by the row; main thread only. */
export interface KvDriver {
  /** Whether results carry the store's versions (hotpath kv: yes; Redis: no, version 0). */
  readonly versions: boolean;
  /** Sends a GET tagged `seq`; false when it cannot go now (retry after poll / wait). */
  get(key: Uint8Array, seq: number): boolean;
  /** Sends a PUT tagged `seq`; the driver may hold `value` until its result is delivered. */
  put(key: Uint8Array, value: Uint8Array, seq: number): boolean;
  /** Flushes queued output and delivers arrived results to `onResult`; returns how many. */
  poll(): number;
  /** Event-loop rows: resolves when a result may have arrived. Spin rows never call it. */
  wait(): Promise<unknown>;
  /** Set by the body: one call per result; `value` (GET) is valid during the call only. */
  onResult: (seq: number, error: Error | null, found: boolean, version: number, value: Uint8Array | null) => void;
  close(): void | Promise<void>;
}

/** What hotPathKvDriver needs of a kv client: the no-promise hot path (getCb / putCb / poll / onResult). */
export interface KvHotPathClient {
  onResult: ((userData: number, error: Error | null, found: boolean, version: number, value: Uint8Array | null) => void) | null;
  getCb(key: Uint8Array, userData: number): number;
  putCb(key: Uint8Array, value: Uint8Array, userData: number): number;
  poll(): number;
  close(): Promise<void>;
}

/** A KvDriver over a kv client's hot path: results through onResult, no promise per call (spin rows). Takes over `c.onResult`; main thread only. */
export function hotPathKvDriver(c: KvHotPathClient): KvDriver {
  const d: KvDriver = {
    versions: true,
    onResult: () => {},
    get: (key, seq) => c.getCb(key, seq) === SEND_OK,
    put: (key, value, seq) => c.putCb(key, value, seq) === SEND_OK,
    poll: () => c.poll(),
    wait: () => Promise.resolve(),
    close: () => c.close(),
  };
  c.onResult = (seq, error, found, version, value) => d.onResult(seq, error, found, version, value);
  return d;
}

export interface KvMeasureOptions {
  op: "get" | "put";
  valueBytes: number;
  durationS: number;
  mode: "spin" | "async";
  cpu: CpuProbe;
  /** Calls in flight for ops/s (default [1, 64]); 64 also gets per-call p50 / p99. */
  inflight?: number[];
  /** --corrupt-reply: after the preload this key slot's stored value gets one byte flipped behind the body's back, so its GET fails the row. */
  corruptSlot?: number;
}

export interface KvRowFigures {
  /** Per-call round trips at one in flight (µs). */
  p50Us: number;
  p99Us: number;
  samples: number;
  /** Results the row received in all (preload, warm-up and read-back included). */
  calls: number;
  /** Per-call round trips (send to its own result) inside the 64-in-flight bursts (µs). */
  at64: { p50Us: number; p99Us: number; samples: number } | null;
  /** Operations per second by calls in flight, from complete bursts. */
  opsPerS: Record<string, number>;
  cpu: { at1: CpuPerCall; at64: CpuPerCall | null };
  heap: HeapFigures;
}

/** A result the body did not expect: key missing, wrong version, an error from the store. */
export class KvCheckError extends Error {
  override name = "KvCheckError";
}

/** Keys per row: more than ever in flight, so no key's expected value changes before its result is checked. */
export const KEY_SLOTS = 1024;
export const KEY_BYTES = 32;

/** The 32-byte key of `slot`: "kvbench:" + the slot in 6 digits + ":" + a slot pattern. */
export function benchKey(slot: number): Uint8Array {
  const k = new Uint8Array(KEY_BYTES);
  k.set(new TextEncoder().encode(`kvbench:${String(slot).padStart(6, "0")}:`));
  for (let i = 16; i < KEY_BYTES; i++) k[i] = 0x61 + ((slot + i) % 26);
  return k;
}

/** Per-call times inside the 64-in-flight bursts (16 MiB, preallocated): nothing is allocated per timed call. */
const BURST_SAMPLES = new Float64Array(1 << 21);
/** Warm-up and preload calls' times (never read). */
const SCRATCH = new Float64Array(64);

/** The row's keys, their expected values and versions, and the check of every result; measure.ts's loops drive it. */
class KvBody implements LoopBody {
  readonly keys: Uint8Array[] = [];
  readonly vals: Uint8Array[] = [];
  private readonly views: DataView[] = [];
  readonly versions = new Float64Array(KEY_SLOTS);
  readonly sendNs = new Float64Array(KEY_SLOTS);
  op: "get" | "put" = "put";
  nextSeq = 0;
  done = 0;
  timing = false;
  timed = 0;
  ignore = 0;
  failure: Error | null = null;

  constructor(readonly d: KvDriver, size: number) {
    for (let k = 0; k < KEY_SLOTS; k++) {
      this.keys.push(benchKey(k));
      const v = new Uint8Array(size);
      for (let i = 0; i < size; i++) v[i] = (i * 131 + k * 7 + 1) & 0xff;
      this.vals.push(v);
      this.views.push(new DataView(v.buffer));
    }
    d.onResult = (seq, error, found, version, value) => {
      this.done++;
      const slot = seq & (KEY_SLOTS - 1);
      if (this.timing) BURST_SAMPLES[this.timed++] = Bun.nanoseconds() - this.sendNs[slot]!;
      if (this.ignore > 0) return void this.ignore--;
      if (this.failure !== null) return;
      if (error !== null) return void (this.failure = error);
      if (this.op === "get") this.checkGet(seq, slot, found, version, value);
      else if (d.versions) {
        if (!(version > this.versions[slot]!)) this.failure = new KvCheckError(`PUT ${seq} (key ${slot}): version ${version}, the key's last was ${this.versions[slot]}`);
        this.versions[slot] = version;
      }
    };
  }

  private checkGet(seq: number, slot: number, found: boolean, version: number, value: Uint8Array | null): void {
    if (!found || value === null) return void (this.failure = new KvCheckError(`GET ${seq} (key ${slot}): not found`));
    const want = this.vals[slot]!;
    if (value.length !== want.length || Buffer.compare(value, want) !== 0) {
      let i = 0;
      while (i < want.length && value[i] === want[i]) i++;
      this.failure = new ByteCheckError(value.length !== want.length ? `reply to GET ${seq} (key ${slot}): ${value.length} bytes, stored ${want.length}` : `reply to GET ${seq} (key ${slot}): byte ${i} of ${want.length} is ${value[i]}, stored ${want[i]}`);
      return;
    }
    if (this.d.versions && version !== this.versions[slot]) this.failure = new KvCheckError(`GET ${seq} (key ${slot}): version ${version}, stored ${this.versions[slot]}`);
  }

  /** Sends call `seq`: a GET of its key, or a PUT of its key's value stamped with seq. */
  send(seq: number): boolean {
    const slot = seq & (KEY_SLOTS - 1);
    if (this.timing) this.sendNs[slot] = Bun.nanoseconds();
    if (this.op === "get") return this.d.get(this.keys[slot]!, seq);
    const v = this.vals[slot]!;
    if (v.length >= 4) this.views[slot]!.setUint32(0, seq >>> 0, true);
    return this.d.put(this.keys[slot]!, v, seq);
  }

  rethrow(): void {
    if (this.failure !== null) throw this.failure;
  }
}

/** Runs one row: preload, warm-up, per-call latency at 1 in flight (with CPU and heap), bursts per in-flight count, and for PUT the read-back. */
export async function measureKvRow(d: KvDriver, o: KvMeasureOptions): Promise<KvRowFigures> {
  const b = new KvBody(d, o.valueBytes);
  const spin = o.mode === "spin";
  const lat = (n: number) => (spin ? spinLatency(b, n, SCRATCH, 0) : asyncLatency(b, n, SCRATCH, 0));
  const burst = (n: number, k: number) => (spin ? spinBurst(b, n, k) : asyncBurst(b, n, k));
  // Preload: every key PUT once (seq 0..1023: each value's first bytes are its slot), versions recorded.
  b.op = "put";
  await burst(KEY_SLOTS, 64);
  if (o.corruptSlot !== undefined) {
    const slot = o.corruptSlot & (KEY_SLOTS - 1);
    const bad = Uint8Array.from(b.vals[slot]!);
    bad[5] = bad[5]! ^ 0xff;
    b.ignore = 1;
    const target = b.done + 1;
    while (!d.put(b.keys[slot]!, bad, slot)) if (d.poll() === 0 && !spin) await d.wait();
    while (b.done < target) if (d.poll() === 0 && !spin) await d.wait();
  }
  b.op = o.op;

  const warmEnd = Bun.nanoseconds() + 50e6;
  while (Bun.nanoseconds() < warmEnd || b.done < KEY_SLOTS + 200) await lat(50);
  await burst(2000, 64);

  const win = await latencyWindows(b, o);
  const { sorted, samples: n } = win;

  const opsPerS: Record<string, number> = {};
  let cpu64: CpuPerCall | null = null;
  let at64: KvRowFigures["at64"] = null;
  for (const k of o.inflight ?? [1, 64]) {
    let size = Math.max(k * 4, 64);
    const t0 = Bun.nanoseconds();
    await burst(size, k);
    const per = Math.max((Bun.nanoseconds() - t0) / size, 20);
    size = Math.max(k * 2, Math.min(1_000_000, Math.round((o.durationS * 1e9) / 10 / per)));
    const end = Bun.nanoseconds() + o.durationS * 1e9;
    let done = 0;
    let wallNs = 0;
    b.timed = 0;
    b.timing = k === 64;
    const c0 = o.cpu.read();
    do {
      const s0 = Bun.nanoseconds();
      await burst(size, k);
      wallNs += Bun.nanoseconds() - s0;
      done += size;
    } while ((Bun.nanoseconds() < end || done < 3 * size) && b.timed + size <= BURST_SAMPLES.length);
    const c1 = o.cpu.read();
    b.timing = false;
    opsPerS[k] = done / (wallNs / 1e9);
    if (k === 64) {
      cpu64 = { clientUs: (c1.clientUs - c0.clientUs) / done, serverUs: (c1.serverUs - c0.serverUs) / done };
      const s = BURST_SAMPLES.subarray(0, b.timed).sort();
      at64 = { p50Us: percentile(s, 0.5) / 1e3, p99Us: percentile(s, 0.99) / 1e3, samples: b.timed };
    }
  }
  if (o.op === "put") {
    // Read-back: every key holds exactly the value (and version) its last PUT sent.
    b.op = "get";
    b.nextSeq += KEY_SLOTS - (b.nextSeq & (KEY_SLOTS - 1));
    await burst(KEY_SLOTS, 64);
  }
  return {
    p50Us: percentile(sorted, 0.5) / 1e3,
    p99Us: percentile(sorted, 0.99) / 1e3,
    samples: n,
    calls: b.done,
    at64,
    opsPerS,
    cpu: { at1: win.cpuAt1, at64: cpu64 },
    heap: win.heap,
  };
}
