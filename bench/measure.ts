/**
 * The one client body every row of the main benchmark runs, and how its figures are taken.
 *
 * A row supplies a Driver (send / poll / wait over its transport); this module runs the same
 * body over it: `spinLatency` / `spinBurst` for spin-mode rows (synchronous, no promise on the
 * path) and `asyncLatency` / `asyncBurst` for event-loop rows (the same loop, `await wait()`
 * where the spin body polls again). Every request carries distinct bytes (its sequence number
 * in bytes 0..3, then a pattern that depends on its pool slot) and every reply is compared
 * byte for byte with its own request; a wrong byte or length throws a ByteCheckError.
 *
 * Latency: Bun.nanoseconds() around each call, into a preallocated Float64Array; p50 / p99
 * are percentiles of those per-call times (no batching). Throughput: complete bursts of n
 * calls keeping `inFlight` outstanding; calls/s = calls completed / wall time of the bursts.
 * CPU: client process.cpuUsage() and the server's /proc figures (bench/cpu.ts) around the
 * timed windows only. Heap: objects allocated per round trip, see HeapFigures.
 *
 *   const fig = await measureRow(driver, { durationS: 0.5, sizes: [32, 1024], inflight: [1, 64], cpu });
 */

import { heapStats } from "bun:jsc";
import type { CpuProbe } from "./cpu.ts";

/** One row's transport, driven by the body below. Owned by the row; used from the main thread only. */
export interface Driver {
  /** Sends `req` tagged `seq`; false when it cannot go now (retry after poll / wait). The driver may hold `req` until its reply is delivered. */
  send(req: Uint8Array, seq: number): boolean;
  /** Flushes queued output and delivers arrived replies to `onReply`; returns how many it delivered. */
  poll(): number;
  /** Event-loop rows: resolves when a reply may have arrived. Spin rows never call it. */
  wait(): Promise<unknown>;
  /** Set by the body: called once per reply, with a view valid during the call only. */
  onReply: (seq: number, data: Uint8Array) => void;
  close(): void | Promise<void>;
}

/** A reply whose bytes or length differ from its request's: the row fails. */
export class ByteCheckError extends Error {
  override name = "ByteCheckError";
}

/** Requests in the pool per size: more than the most calls ever in flight, so no request's bytes change before its reply is checked. */
const POOL_SLOTS = 1024;
/** Above this size one call is in flight at a time (the payload sweep), so two buffers suffice. */
const BIG_BYTES = 4096;

/** Distinct request bytes per call: slot `seq % slots` holds seq (u32 LE) then a slot pattern. */
export class RequestPool {
  readonly slots: number;
  private readonly bufs: Uint8Array[];
  private readonly views: DataView[];

  constructor(readonly size: number) {
    this.slots = size > BIG_BYTES ? 2 : POOL_SLOTS;
    this.bufs = [];
    this.views = [];
    for (let k = 0; k < this.slots; k++) {
      const b = new Uint8Array(size);
      for (let i = 0; i < size; i++) b[i] = (i * 131 + k * 7 + 1) & 0xff;
      this.bufs.push(b);
      this.views.push(new DataView(b.buffer));
    }
  }

  /** The request for `seq`, with seq written into its first bytes. */
  stamp(seq: number): Uint8Array {
    const k = seq % this.slots;
    const b = this.bufs[k]!;
    if (this.size >= 4) this.views[k]!.setUint32(0, seq >>> 0, true);
    else b[0] = seq & 0xff;
    return b;
  }

  /** Throws ByteCheckError unless `data` equals the request of `seq`, every byte. */
  check(seq: number, data: Uint8Array): void {
    const want = this.bufs[seq % this.slots]!;
    if (data.length !== want.length) throw new ByteCheckError(`reply to call ${seq}: ${data.length} bytes, sent ${want.length}`);
    if (want.length > 64) {
      if (Buffer.compare(data, want) === 0) return;
    } else {
      let i = 0;
      while (i < want.length && data[i] === want[i]) i++;
      if (i === want.length) return;
    }
    let i = 0;
    while (data[i] === want[i]) i++;
    throw new ByteCheckError(`reply to call ${seq}: byte ${i} of ${want.length} is ${data[i]}, sent ${want[i]}`);
  }
}

/** Shared state of one row's body: the pool in use, calls completed, the first failure. */
class Body implements LoopBody {
  pool: RequestPool;
  nextSeq = 0;
  done = 0;
  failure: Error | null = null;

  constructor(readonly d: Driver, size: number) {
    this.pool = new RequestPool(size);
    d.onReply = (seq, data) => {
      this.done++;
      if (this.failure !== null) return;
      try {
        this.pool.check(seq, data);
      } catch (e) {
        this.failure = e as Error;
      }
    };
  }

  send(seq: number): boolean {
    return this.d.send(this.pool.stamp(seq), seq);
  }

  use(pool: RequestPool): void {
    this.pool = pool;
  }

  rethrow(): void {
    if (this.failure !== null) throw this.failure;
  }
}

// ------------------------------------------------------------------ the body (both modes)

/**
 * What the loops below drive: a body that sends call `seq` (its own bytes, timing hooks) and
 * counts completed calls in `done` from its driver's callback. Both this module's Body and
 * bench/kv-measure.ts's KvBody are one. Main thread only.
 */
export interface LoopBody {
  readonly d: { poll(): number; wait(): Promise<unknown> };
  nextSeq: number;
  done: number;
  /** Sends call `seq`; false when it cannot go now (retry after poll / wait). */
  send(seq: number): boolean;
  /** Throws the first failure a callback recorded. */
  rethrow(): void;
}

/** Spin mode: `n` calls one at a time, each timed into `out[at..at+n)` (ns). Allocates nothing itself. */
export function spinLatency(b: LoopBody, n: number, out: Float64Array, at: number): void {
  const d = b.d;
  for (let i = 0; i < n; i++) {
    const seq = b.nextSeq++;
    const target = b.done + 1;
    const t0 = Bun.nanoseconds();
    while (!b.send(seq)) d.poll();
    while (b.done < target) d.poll();
    out[at + i] = Bun.nanoseconds() - t0;
  }
  b.rethrow();
}

/** Event-loop mode: the same loop as spinLatency, awaiting wait() where it polls again. */
export async function asyncLatency(b: LoopBody, n: number, out: Float64Array, at: number): Promise<void> {
  const d = b.d;
  for (let i = 0; i < n; i++) {
    const seq = b.nextSeq++;
    const target = b.done + 1;
    const t0 = Bun.nanoseconds();
    while (!b.send(seq)) if (d.poll() === 0) await d.wait();
    while (b.done < target) if (d.poll() === 0) await d.wait();
    out[at + i] = Bun.nanoseconds() - t0;
  }
  b.rethrow();
}

/** Spin mode: `n` calls keeping `inFlight` outstanding, until all n have replied. */
export function spinBurst(b: LoopBody, n: number, inFlight: number): void {
  const d = b.d;
  const start = b.done;
  let sent = 0;
  while (b.done - start < n) {
    while (sent < n && sent - (b.done - start) < inFlight && b.send(b.nextSeq)) {
      b.nextSeq++;
      sent++;
    }
    d.poll();
  }
  b.rethrow();
}

/** Event-loop mode: the same loop as spinBurst. */
export async function asyncBurst(b: LoopBody, n: number, inFlight: number): Promise<void> {
  const d = b.d;
  const start = b.done;
  let sent = 0;
  while (b.done - start < n) {
    while (sent < n && sent - (b.done - start) < inFlight && b.send(b.nextSeq)) {
      b.nextSeq++;
      sent++;
    }
    if (d.poll() === 0) await d.wait();
  }
  b.rethrow();
}

// ------------------------------------------------------------------ figures

/** Per call, over a timed window: µs of CPU on each side. */
export interface CpuPerCall {
  clientUs: number;
  serverUs: number;
}

/** Heap figures over the timed 32-byte calls (client side). */
export interface HeapFigures {
  /**
   * JS heap objects the client allocated per round trip: the rise of heapStats()'s
   * objectTypeCounts, summed (every cell not yet collected, garbage included), over windows
   * that start after a Bun.gc(true) and in which no collection ran (objectCount unchanged);
   * the objects a reading itself allocates are subtracted. Null when every window saw a collection.
   */
  objectsPerCall: number | null;
  /** Windows that counted (a collection inside a window voids it). */
  cleanWindows: number;
}

export interface RowFigures {
  /** Per-call 32 B round trip percentiles (µs). */
  p50Us: number;
  p99Us: number;
  /** Calls timed for p50 / p99. */
  samples: number;
  /** Per-call round trip p50 (µs) by payload bytes. */
  sizes: Record<string, number>;
  /** Calls per second by calls in flight (32 B), from complete bursts. */
  inflight: Record<string, number>;
  /** CPU per call at one in flight (the 32 B latency calls) and at 64 in flight. */
  cpu: { at1: CpuPerCall; at64: CpuPerCall | null };
  heap: HeapFigures;
}

export interface MeasureOptions {
  durationS: number;
  sizes: number[];
  inflight: number[];
  mode: "spin" | "async";
  cpu: CpuProbe;
  /** Largest payload the row measures (raw shm's bulk area). */
  maxBytes?: number;
  log?: (s: string) => void;
}

const MAX_SAMPLES = 1 << 21;
/** Fewest 32-byte calls timed per row, whatever --duration says: enough that p99 is not the slowest call. */
const MIN_SAMPLES = 1000;
/** A latency window's length: short enough that few windows see a collection, long enough for the heap's block granularity to vanish. */
const WINDOW_NS = 20e6;
/** At most this many calls per window (about 20 ms at the fastest rows' ~1 µs). */
const MAX_WINDOW_CALLS = 20_000;
/** One preallocated sample buffer for every row (16 MiB): nothing is allocated per timed call. */
const SAMPLES = new Float64Array(MAX_SAMPLES);

/** Cells in the heap not yet collected (live and garbage). */
export function heapCells(): number {
  const counts = heapStats().objectTypeCounts;
  let n = 0;
  for (const k in counts) n += counts[k]!;
  return n;
}

export function percentile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/**
 * JS heap objects `run` allocates: a full GC, then what one heapCells() reading itself allocates,
 * then the rise of heapCells() across run() less that. Null when a collection ran meanwhile (the
 * count is void). A `run` that returns undefined is not awaited, so nothing is allocated between
 * it and the readings. Main thread only.
 */
export async function heapWindow(run: () => void | Promise<void>): Promise<number | null> {
  Bun.gc(true);
  const marked = heapStats().objectCount;
  // What one reading allocates, once readings are steady (the first after a GC makes more).
  heapCells();
  const r1 = heapCells();
  const reading = heapCells() - r1;
  const c0 = heapCells();
  const p = run();
  if (p !== undefined) await p;
  const c1 = heapCells();
  return heapStats().objectCount === marked ? c1 - c0 - reading : null;
}

/** What latencyWindows measured: the sorted per-call times (ns, a view of the shared sample buffer) and their CPU and heap. */
export interface WindowFigures {
  sorted: Float64Array;
  samples: number;
  cpuAt1: CpuPerCall;
  heap: HeapFigures;
}

/**
 * Per-call latency at one in flight, in windows of about WINDOW_NS each (the next window's calls
 * follow the last one's pace), for `durationS` in all; a full GC before each window, outside the
 * timing; CPU and heap objects counted around the windows only. The result's `sorted` is valid
 * until the next call. Main thread only.
 */
export async function latencyWindows(b: LoopBody, o: { durationS: number; mode: "spin" | "async"; cpu: CpuProbe }): Promise<WindowFigures> {
  const spin = o.mode === "spin";
  const t0 = Bun.nanoseconds();
  if (spin) spinLatency(b, 100, SAMPLES, 0);
  else await asyncLatency(b, 100, SAMPLES, 0);
  // The first window is at most 2000 calls: a spinning pair on a busy machine can be much slower than its first 100 calls.
  let calls = Math.max(50, Math.min(2000, Math.round(WINDOW_NS / Math.max((Bun.nanoseconds() - t0) / 100, 50))));
  let n = 0;
  let spentNs = 0;
  let allocObjects = 0;
  let allocCalls = 0;
  let clean = 0;
  let cpuClient = 0;
  let cpuServer = 0;
  // A collection inside a window voids its heap count: while none counted, up to 4 more windows, each half as long.
  for (let w = 0; (spentNs < o.durationS * 1e9 || w < 2 || n < MIN_SAMPLES || (clean === 0 && w < 6)) && n + calls <= MAX_SAMPLES; w++) {
    const extra = w >= 2 && spentNs >= o.durationS * 1e9 && n >= MIN_SAMPLES;
    if (extra) calls = Math.max(20, calls >> 1);
    Bun.gc(true);
    const marked = heapStats().objectCount;
    // What one reading allocates, once readings are steady (the first after a GC makes more).
    heapCells();
    const r1 = heapCells();
    const reading = heapCells() - r1;
    const c0 = o.cpu.read();
    const h0 = heapCells();
    const w0 = Bun.nanoseconds();
    if (spin) spinLatency(b, calls, SAMPLES, n);
    else await asyncLatency(b, calls, SAMPLES, n);
    const wallNs = Bun.nanoseconds() - w0;
    const h1 = heapCells();
    const c1 = o.cpu.read();
    n += calls;
    spentNs += wallNs;
    cpuClient += c1.clientUs - c0.clientUs;
    cpuServer += c1.serverUs - c0.serverUs;
    if (heapStats().objectCount === marked) {
      allocObjects += h1 - h0 - reading;
      allocCalls += calls;
      clean++;
    }
    if (!extra) calls = Math.max(50, Math.min(MAX_WINDOW_CALLS, Math.round((calls * WINDOW_NS) / Math.max(wallNs, 1))));
  }
  return {
    sorted: SAMPLES.subarray(0, n).sort(),
    samples: n,
    cpuAt1: { clientUs: cpuClient / n, serverUs: cpuServer / n },
    heap: { objectsPerCall: allocCalls > 0 ? Math.max(0, allocObjects) / allocCalls : null, cleanWindows: clean },
  };
}

/**
 * `n` calls of `size` bytes timed one by one after 5 untimed ones, every reply checked (the
 * driver's onReply is this run's): p50 / p99 in µs. Spin mode awaits nothing around the calls.
 */
export async function timedCalls(d: Driver, size: number, n: number, mode: "spin" | "async"): Promise<{ p50Us: number; p99Us: number; samples: number }> {
  const b = new Body(d, size);
  const t = new Float64Array(n);
  const lat = (k: number): Promise<void> | void => (mode === "spin" ? spinLatency(b, k, t, 0) : asyncLatency(b, k, t, 0));
  await lat(5); // warm-up
  await lat(n);
  t.sort();
  return { p50Us: percentile(t, 0.5) / 1e3, p99Us: percentile(t, 0.99) / 1e3, samples: n };
}

/** Runs one row: warm-up, per-call latency (32 B, with CPU and heap), the payload sweep, throughput. */
export async function measureRow(d: Driver, o: MeasureOptions): Promise<RowFigures> {
  const b = new Body(d, 32);
  const spin = o.mode === "spin";
  // Spin rows run their calls without an await (nothing allocated around the timed calls).
  const lat = (n: number, at = 0): Promise<void> | void => (spin ? spinLatency(b, n, SAMPLES, at) : asyncLatency(b, n, SAMPLES, at));
  const burst = (n: number, k: number) => (spin ? spinBurst(b, n, k) : asyncBurst(b, n, k));

  // Warm-up: at least 200 round trips and 50 ms, so the JIT and both sides' wait policies settle.
  const warmEnd = Bun.nanoseconds() + 50e6;
  while (Bun.nanoseconds() < warmEnd || b.nextSeq < 200) await lat(50);
  await burst(2000, 64);

  // 32 B latency at one in flight.
  const win = await latencyWindows(b, o);
  const { sorted, samples: n } = win;
  const p50Us = percentile(sorted, 0.5) / 1e3;
  const p99Us = percentile(sorted, 0.99) / 1e3;

  const sizes: Record<string, number> = { 32: p50Us };
  for (const s of o.sizes) {
    if (s === 32 || s > (o.maxBytes ?? Infinity)) continue;
    o.log?.(`payload ${s} B`);
    b.use(new RequestPool(s));
    await lat(5);
    const t0 = Bun.nanoseconds();
    await lat(5);
    const per = Math.max((Bun.nanoseconds() - t0) / 5, 50);
    const k = Math.max(20, Math.min(MAX_SAMPLES, Math.round((o.durationS * 1e9) / per)));
    await lat(k);
    sizes[s] = percentile(SAMPLES.subarray(0, k).sort(), 0.5) / 1e3;
  }
  b.use(new RequestPool(32));

  const inflight: Record<string, number> = {};
  let at64: CpuPerCall | null = null;
  for (const k of o.inflight) {
    o.log?.(`${k} in flight`);
    let size = Math.max(k * 4, 64);
    const t0 = Bun.nanoseconds();
    await burst(size, k);
    const per = Math.max((Bun.nanoseconds() - t0) / size, 20);
    // Bursts of about a tenth of the budget each, every one run to completion.
    size = Math.max(k * 2, Math.min(2_000_000, Math.round((o.durationS * 1e9) / 10 / per)));
    const end = Bun.nanoseconds() + o.durationS * 1e9;
    let calls = 0;
    let wallNs = 0;
    const c0 = o.cpu.read();
    do {
      const s0 = Bun.nanoseconds();
      await burst(size, k);
      wallNs += Bun.nanoseconds() - s0;
      calls += size;
    } while (Bun.nanoseconds() < end || calls < 3 * size);
    const c1 = o.cpu.read();
    inflight[k] = calls / (wallNs / 1e9);
    if (k === 64) at64 = { clientUs: (c1.clientUs - c0.clientUs) / calls, serverUs: (c1.serverUs - c0.serverUs) / calls };
  }
  return {
    p50Us,
    p99Us,
    samples: n,
    sizes,
    inflight,
    cpu: { at1: win.cpuAt1, at64 },
    heap: win.heap,
  };
}
