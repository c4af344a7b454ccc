/**
 * The raw reference: a plain Bun shared-memory echo with no RPC at all. Two processes share a
 * mapping; the client writes a message and bumps a request counter, this server spins on it
 * (Atomics.load), copies the bytes to the response area and bumps the response counter.
 * For many in flight, request and response are SPSC rings of fixed 32-byte entries.
 *
 * Layout (bytes): 0 req tail, 64 req head, 128 resp tail, 192 resp head, 256 ping, 320 pong,
 * 384 ping length; RING at 4096 (RING_SLOTS × 32 each way); BULK at 1 MiB (1 MiB each way).
 * The mapping is a /dev/shm file mapped with Bun.mmap(path, { shared: true }) on both sides (no
 * FFI): this server creates it (0600) and the client unlinks it once both have it mapped.
 * Run: bun bench/peers/raw-shm.ts NAME   (prints {"url"}; exits on stdin EOF)
 */

import { closeSync, ftruncateSync, openSync, unlinkSync } from "node:fs";

export const RAW = { REQ_TAIL: 0, REQ_HEAD: 16, RESP_TAIL: 32, RESP_HEAD: 48, PING: 64, PONG: 80, LEN: 96 } as const; // Int32 indexes
export const RING_SLOTS = 256;
export const RING_AT = 4096;
export const BULK_AT = 1 << 20;
export const BULK_BYTES = 1 << 20;
export const TOTAL_BYTES = BULK_AT + 2 * BULK_BYTES;

/** The file behind segment `name` ("/hotpath-bench-raw-123"). */
export const rawShmPath = (name: string) => `/dev/shm${name}`;

/** Maps segment `name`, creating it first when `create`; the views live as long as the process holds them. */
export function mapRawShm(name: string, create: boolean): { w: Int32Array; b: Uint8Array } {
  const path = rawShmPath(name);
  if (create) {
    const fd = openSync(path, "wx+", 0o600);
    ftruncateSync(fd, TOTAL_BYTES);
    closeSync(fd);
  }
  const b = Bun.mmap(path, { shared: true });
  if (b.length < TOTAL_BYTES) throw new Error(`raw shm ${path}: ${b.length} bytes, expected ${TOTAL_BYTES}`);
  return { b, w: new Int32Array(b.buffer, b.byteOffset, b.length >> 2) };
}

/** Removes segment `name`'s file (already gone is fine). */
export function unlinkRawShm(name: string): void {
  try {
    unlinkSync(rawShmPath(name));
  } catch {
    // the client unlinked it
  }
}

if (import.meta.main) {
  const name = process.argv[2]!;
  const { w, b } = mapRawShm(name, true);
  const reqRing = RING_AT;
  const respRing = RING_AT + RING_SLOTS * 32;
  console.log(JSON.stringify({ url: name }));
  let running = true;
  (async () => {
    for await (const _ of Bun.stdin.stream()) {
      // EOF ends the benchmark
    }
    running = false;
  })();
  let pong = 0;
  let head = 0;
  let respTail = 0;
  while (running) {
    const end = Bun.nanoseconds() + 2e6;
    while (Bun.nanoseconds() < end) {
      const ping = Atomics.load(w, RAW.PING); // SYNC: pairs with drivers.ts rawShmDriver's Atomics.store(PING)
      if (ping !== pong) {
        const len = w[RAW.LEN]!;
        b.copyWithin(BULK_AT + BULK_BYTES, BULK_AT, BULK_AT + len);
        pong = ping;
        Atomics.store(w, RAW.PONG, pong); // SYNC: pairs with rawShmDriver's Atomics.load(PONG)
      }
      const tail = Atomics.load(w, RAW.REQ_TAIL); // SYNC: pairs with rawShmDriver's Atomics.store(REQ_TAIL)
      while (head !== tail) {
        while (((respTail - Atomics.load(w, RAW.RESP_HEAD)) | 0) >= RING_SLOTS) {} // SYNC: pairs with rawShmDriver's Atomics.store(RESP_HEAD)
        const s = (head & (RING_SLOTS - 1)) * 32;
        b.copyWithin(respRing + (respTail & (RING_SLOTS - 1)) * 32, reqRing + s, reqRing + s + 32);
        head = (head + 1) | 0;
        respTail = (respTail + 1) | 0;
      }
      Atomics.store(w, RAW.REQ_HEAD, head); // no reader: kept for the layout
      Atomics.store(w, RAW.RESP_TAIL, respTail); // SYNC: pairs with rawShmDriver's Atomics.load(RESP_TAIL)
    }
    await new Promise((r) => setImmediate(r));
  }
  unlinkRawShm(name);
  process.exit(0);
}
