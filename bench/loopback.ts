/**
 * Loopback profile of the segment hot path: ONE thread plays both sides of an in-process
 * segment (a SharedArrayBuffer, the inproc layout; shm runs the same code over mapped pages).
 * Per round trip: client.call -> server.poll / recv / reply -> client.poll / onResponse, set
 * against the raw reference doing the same descriptor-ring traffic without RPC (write the
 * request into a ring descriptor, publish it, read it, copy it into the reply ring, publish,
 * read the reply: bench/peers/raw-shm.ts's ping-pong body, one thread).
 *
 * The figures are ns of CPU per round trip, one thread, no cross-core traffic: what the
 * software costs, not a latency (Bun.nanoseconds() around blocks of 10^3 round trips, raw and
 * RPC blocks interleaved; the fastest block, the one no other process preempted). Objects per
 * round trip: heap cells allocated over `roundTrips` round trips after warm-up, counted with
 * bun:jsc heapStats() (objectTypeCounts summed, which sees garbage not yet collected;
 * objectCount alone only sees what the last collection kept), Bun.gc(true) before each
 * reading (see objectsPer()). The raw reference copies as hotpath does: src/segment/message.ts's
 * copyInto (word stores up to 32 bytes, TypedArray.set above) for the request, and a word loop
 * up to the same length (copyWithin above) from request ring to reply ring; a 4 KiB body gets a
 * 4 KiB ring entry there (the slab path's copy).
 *
 * Run: bun bench/loopback.ts [--quick] [--size N]
 * Example: const { rawNs, rpcNs, overheadNs } = await measureLoopback({ size: 32 });
 */

import { heapStats } from "bun:jsc";
import { Client, SEND_OK, Server } from "../src/index.ts";
import { SegmentConnection, type Signals } from "../src/segment/connection.ts";
import { computeLayout, writeHeader, type SegmentConfig } from "../src/segment/layout.ts";
import { copyInto } from "../src/segment/message.ts";

export interface LoopbackFigures {
  /** Raw ring ping-pong, ns of CPU per round trip (one thread). */
  rawNs: number;
  /** RPC round trip over a segment connection, ns of CPU per round trip (one thread). */
  rpcNs: number;
  /** rpcNs - rawNs: what the RPC layer and the segment connection add. */
  overheadNs: number;
  /** Heap objects allocated per RPC round trip in steady state. */
  objectsPerRoundTrip: number;
  /** Request (and reply) body bytes. */
  size: number;
}

/** No doorbells: one thread, nobody ever parks. */
const QUIET: Signals = { wakeBlocking() {}, wakeEventLoop() {}, waitBlocking() {}, armEventLoop() {} };
/** The default ring, and one 4 KiB class (bodies above the inline limit take the slab path). */
const CONFIG: SegmentConfig = { ringSlots: 256, sizeClasses: [{ slotBytes: 4 << 10, slotCount: 256 }, { slotBytes: 64 << 10, slotCount: 16 }] };
/** Round trips per timed block: ~0.1-0.5 ms, short enough that many blocks run between preemptions, long enough that the two clock reads (~2 x 30 ns) vanish. */
const BLOCK = 1000;

/** A client and a server over one in-process segment (both in this thread, spin mode). */
export function loopbackPair(config: SegmentConfig = CONFIG) {
  const layout = computeLayout(config);
  const buffer = new SharedArrayBuffer(layout.totalBytes);
  writeHeader(new Uint32Array(buffer, 0, 32), layout, 1);
  const mk = (side: "A" | "B") =>
    new SegmentConnection({ transport: "inproc", buffer, layout, side, signals: QUIET, peer: `loopback-${side}`, policy: { mode: "spin", spinNs: 0 } });
  const client = new Client<number>(mk("A"));
  const server = new Server();
  server.addConnection(mk("B"));
  return { client, server };
}

/** `n` round trips: call, server poll/recv/reply (echo), client poll. The pair's thread only. */
export function rpcRounds(client: Client<number>, server: Server, data: Uint8Array, n: number): void {
  for (let i = 0; i < n; i++) {
    if (client.call(1, data, i) !== SEND_OK) throw new Error("loopback: call was not sent");
    server.poll();
    const h = server.recv();
    if (h === null) throw new Error("loopback: no request arrived");
    if (h.reply(h.data) !== SEND_OK) throw new Error("loopback: reply was not sent");
    if (client.poll() !== 1) throw new Error("loopback: no response arrived");
  }
}

/** Ring-to-ring copies up to this many bytes go word by word: src/segment/message.ts's SMALL_COPY_BYTES, so both sides copy small bodies the same way. */
const RAW_SMALL_COPY_BYTES = 32;

/** The raw reference: two descriptor rings in a SharedArrayBuffer, no RPC, one thread. */
function rawRing(size: number) {
  const slots = 256;
  // 64-byte descriptors; a larger body gets an entry of its own size (the slab path's copy).
  const stride = Math.max(64, Math.ceil(size / 64) * 64);
  const ringBytes = slots * stride;
  const buf = new SharedArrayBuffer(256 + 2 * ringBytes);
  const w = new Int32Array(buf);
  const b = new Uint8Array(buf);
  // Int32 indexes of the four counters, each on its own cache line.
  const REQ_TAIL = 0, REQ_HEAD = 16, RESP_TAIL = 32, RESP_HEAD = 48;
  const REQ = 256, RESP = 256 + ringBytes;
  let reqTail = 0, reqHead = 0, respTail = 0, respHead = 0;
  return (data: Uint8Array, n: number): number => {
    let check = 0;
    for (let i = 0; i < n; i++) {
      // client: write the request into a descriptor, publish
      const at = REQ + (reqTail & (slots - 1)) * stride;
      copyInto(b, w, at, data);
      reqTail = (reqTail + 1) | 0;
      Atomics.store(w, REQ_TAIL, reqTail);
      // server: see it, copy it into the reply ring, free the request, publish the reply
      const t = Atomics.load(w, REQ_TAIL);
      while (reqHead !== t) {
        const from = REQ + (reqHead & (slots - 1)) * stride;
        const to = RESP + (respTail & (slots - 1)) * stride;
        if (size > RAW_SMALL_COPY_BYTES) b.copyWithin(to, from, from + size);
        else {
          // Both offsets are 64-byte aligned: whole words, then the tail bytes.
          let k = 0;
          for (; k + 4 <= size; k += 4) w[(to + k) >> 2] = w[(from + k) >> 2]!;
          for (; k < size; k++) b[to + k] = b[from + k]!;
        }
        reqHead = (reqHead + 1) | 0;
        respTail = (respTail + 1) | 0;
      }
      Atomics.store(w, REQ_HEAD, reqHead);
      Atomics.store(w, RESP_TAIL, respTail);
      // client: see the reply, read it, free it
      const rt = Atomics.load(w, RESP_TAIL);
      while (respHead !== rt) {
        check += b[RESP + (respHead & (slots - 1)) * stride]!;
        respHead = (respHead + 1) | 0;
      }
      Atomics.store(w, RESP_HEAD, respHead);
    }
    return check;
  };
}

/**
 * The fastest block's ns per round trip, over `blocks` blocks of BLOCK round trips
 * (Bun.nanoseconds() around each): on a busy machine most blocks lose time to preemption, the
 * fastest one ran undisturbed, so its time is the CPU cost. (The thread CPU clocks Bun offers
 * are tick-sampled, too coarse for this.)
 */
function timeBlocks(blocks: number, run: (n: number) => void): number {
  let best = Infinity;
  for (let k = 0; k < blocks; k++) {
    const t0 = Bun.nanoseconds();
    run(BLOCK);
    best = Math.min(best, (Bun.nanoseconds() - t0) / BLOCK);
  }
  return best;
}

const liveCells = (): number => {
  const counts = heapStats().objectTypeCounts;
  let n = 0;
  for (const k in counts) n += counts[k]!;
  return n;
};

/**
 * Heap objects allocated per call of `run(n)`, divided by the calls counted; NaN when no clean
 * reading could be taken (so any "< limit" assertion fails on it). heapStats().objectTypeCounts
 * (summed) counts every cell not yet collected, so a reading after the run includes what the
 * run allocated and dropped; objectCount alone counts only cells the last collection marked and
 * never sees garbage. Bun.gc(true) runs before each chunk; a chunk during which a collection ran
 * (objectCount moved) lost its garbage, so it is run again, smaller, down to MIN_CHUNK calls; a
 * chunk that still sees a collection is left out of the figure (never counted as 0). The figure
 * is taken only when clean chunks cover at least half of the `n` calls, else NaN: a body that
 * allocates enough to trigger a collection in most chunks (one 64 KiB array per call) reads
 * "no clean reading", never 0 or below. The objects the readings themselves allocate (the same
 * readings around nothing) are subtracted. Same thread as whatever `run` drives.
 */
export function objectsPer(n: number, run: (n: number) => void, chunk = 100_000): number {
  /** Smallest chunk tried: each reading costs a full collection (~ms), so 100k calls stay a few hundred readings at worst. */
  const MIN_CHUNK = 500;
  const reading = (k: number, body: (k: number) => void): number | null => {
    Bun.gc(true);
    const marked = heapStats().objectCount;
    const c0 = liveCells();
    body(k);
    const c1 = liveCells();
    return heapStats().objectCount === marked ? c1 - c0 : null;
  };
  const nothing = (_k: number) => {};
  let total = 0;
  let done = 0;
  let counted = 0;
  while (done < n) {
    const k = Math.min(chunk, n - done);
    const got = reading(k, run);
    if (got === null) {
      // A collection took some of the chunk's garbage: run it again, smaller; at MIN_CHUNK the
      // chunk's calls are spent but not counted.
      if (chunk > MIN_CHUNK) chunk >>= 1;
      else done += k;
      continue;
    }
    done += k;
    // The same readings around nothing: what the measuring itself allocates.
    total += got - (reading(k, nothing) ?? 0);
    counted += k;
  }
  return counted * 2 >= n && counted > 0 ? total / counted : Number.NaN;
}

/**
 * Measures the loopback figures (see the module comment). Runs in the calling thread for a few
 * seconds at most; creates and closes its own segment.
 */
export async function measureLoopback(opts: { roundTrips?: number; size?: number } = {}): Promise<LoopbackFigures> {
  const roundTrips = opts.roundTrips ?? 100_000;
  const size = opts.size ?? 32;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + 1) & 0xff;
  const blocks = Math.max(3, Math.round(roundTrips / BLOCK));

  const raw = rawRing(size);
  const rawData = data;
  const { client, server } = loopbackPair();
  let seen = 0;
  client.onResponse = (_ud, body, err) => {
    if (err !== null) throw err;
    if (body.length !== size || body[size - 1] !== data[size - 1]) throw new Error("loopback: wrong reply bytes");
    seen++;
  };
  const runRpc = (n: number) => rpcRounds(client, server, data, n);
  let rawSink = 0;
  const runRaw = (n: number) => void (rawSink += raw(rawData, n));
  try {
    // Warm-up: let the JIT settle both bodies.
    runRaw(roundTrips);
    runRpc(roundTrips);
    const objectsPerRoundTrip = objectsPer(roundTrips, runRpc);
    // Interleave the two so load on a shared machine falls on both alike.
    const rawTimes: number[] = [];
    const rpcTimes: number[] = [];
    for (let r = 0; r < 10; r++) {
      rawTimes.push(timeBlocks(Math.ceil(blocks / 10), runRaw));
      rpcTimes.push(timeBlocks(Math.ceil(blocks / 10), runRpc));
    }
    const rawNs = Math.min(...rawTimes);
    const rpcNs = Math.min(...rpcTimes);
    if (seen === 0 || rawSink === 0) throw new Error("loopback: no response was delivered");
    return { rawNs, rpcNs, overheadNs: rpcNs - rawNs, objectsPerRoundTrip, size };
  } finally {
    client.close();
    server.close();
  }
}

if (import.meta.main) {
  const quick = process.argv.includes("--quick");
  const at = process.argv.indexOf("--size");
  const sizes = at > 0 ? [Number(process.argv[at + 1])] : [32, 4096];
  console.log("loopback: ns of CPU per round trip, one thread, no cross-core traffic (fastest block of 10^3)");
  for (const size of sizes) {
    const f = await measureLoopback({ size, roundTrips: quick ? 20_000 : 100_000 });
    console.log(
      `  ${String(size).padStart(5)} B  raw ${f.rawNs.toFixed(0)} ns  rpc ${f.rpcNs.toFixed(0)} ns  ` +
        `overhead ${f.overheadNs.toFixed(0)} ns (rpc/raw ${(f.rpcNs / f.rawNs).toFixed(2)}x)  objects/round trip ${f.objectsPerRoundTrip.toFixed(3)}`,
    );
  }
}
