/**
 * The raw reference: a plain Bun shared-memory echo with no RPC at all. Two processes share a
 * mapping; the client writes a message and bumps a request counter, this server spins on it
 * (Atomics.load), copies the bytes to the response area and bumps the response counter.
 * For many in flight, request and response are SPSC rings of fixed 32-byte entries.
 *
 * Layout (bytes): 0 req tail, 64 req head, 128 resp tail, 192 resp head, 256 ping, 320 pong,
 * 384 ping length; RING at 4096 (RING_SLOTS × 32 each way); BULK at 1 MiB (1 MiB each way).
 * Run: bun bench/peers/raw-shm.ts NAME   (prints {"url"}; exits on stdin EOF)
 */

import { ShmMapping, shmUnlink } from "../../src/ffi/libc.ts";

export const RAW = { REQ_TAIL: 0, REQ_HEAD: 16, RESP_TAIL: 32, RESP_HEAD: 48, PING: 64, PONG: 80, LEN: 96 } as const; // Int32 indexes
export const RING_SLOTS = 256;
export const RING_AT = 4096;
export const BULK_AT = 1 << 20;
export const BULK_BYTES = 1 << 20;
export const TOTAL_BYTES = BULK_AT + 2 * BULK_BYTES;

if (import.meta.main) {
  const name = process.argv[2]!;
  const m = ShmMapping.create(name, TOTAL_BYTES);
  const w = new Int32Array(m.buffer);
  const b = new Uint8Array(m.buffer);
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
      const ping = Atomics.load(w, RAW.PING);
      if (ping !== pong) {
        const len = w[RAW.LEN]!;
        b.copyWithin(BULK_AT + BULK_BYTES, BULK_AT, BULK_AT + len);
        pong = ping;
        Atomics.store(w, RAW.PONG, pong);
      }
      const tail = Atomics.load(w, RAW.REQ_TAIL);
      while (head !== tail) {
        while (((respTail - Atomics.load(w, RAW.RESP_HEAD)) | 0) >= RING_SLOTS) {}
        const s = (head & (RING_SLOTS - 1)) * 32;
        b.copyWithin(respRing + (respTail & (RING_SLOTS - 1)) * 32, reqRing + s, reqRing + s + 32);
        head = (head + 1) | 0;
        respTail = (respTail + 1) | 0;
      }
      Atomics.store(w, RAW.REQ_HEAD, head);
      Atomics.store(w, RAW.RESP_TAIL, respTail);
    }
    await new Promise((r) => setImmediate(r));
  }
  m.close();
  shmUnlink(name);
  process.exit(0);
}
