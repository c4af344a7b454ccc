/**
 * The other process of test/shm/sab.test.ts: maps a segment of the test process (its fd, opened
 * as /proc/<pid>/fd/<fd>, mapped with ShmMapping: an independent mapping of the same memfd) and
 * answers requests written into it, so the test sees that what one side writes through its
 * SharedArrayBuffer reaches the other process, and back.
 *
 *   bun sab-peer.ts <pid> <fd> <bytes>      prints {"ready":true,"pid":…} once mapped
 *
 * Protocol (Int32 words of the segment, byte offsets):
 *   0 request seq (the test side's Atomics.store, after it wrote the request)
 *   4 reply seq (ours, after the reply is written)   8 request length n (≤ 4096)
 *   REQUEST_AT: the request bytes   REPLY_AT: each request byte XOR 0xff
 * A length word outside 0..REPLY_AT - REQUEST_AT is no request (a test filled the segment).
 * On SIGUSR1 it prints {"sum":…,"nonzero":…} of the bytes of its own mapping: what it still sees.
 * Exits when stdin closes (the test is gone).
 */

import { openFile, ShmMapping } from "../../src/ffi/libc.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

export const REQUEST_AT = 256;
export const REPLY_AT = 8192;

if (import.meta.main) {
  const [pid, fd, bytes] = process.argv.slice(2).map(Number) as [number, number, number];
  const mapping = ShmMapping.fromFd("sab-peer", openFile(`/proc/${pid}/fd/${fd}`, "rdwr"), bytes);
  const words = new Int32Array(mapping.sab, mapping.byteOffset, bytes >> 2);
  const all = new Uint8Array(mapping.sab, mapping.byteOffset, bytes);
  process.on("SIGUSR1", () => {
    let sum = 0;
    let nonzero = 0;
    for (let i = 0; i < all.length; i++) {
      sum = (sum + all[i]!) >>> 0;
      if (all[i] !== 0) nonzero++;
    }
    console.log(JSON.stringify({ sum, nonzero }));
  });
  exitWhenParentGoes(() => mapping.close());
  console.log(JSON.stringify({ ready: true, pid: process.pid }));
  let seen = 0;
  for (;;) {
    // SYNC: pairs with the test side's Atomics.store of the request seq, after its request bytes.
    const seq = Atomics.load(words, 0);
    if (seq !== seen) {
      seen = seq;
      const n = words[2]!;
      // Anything else in the length word is not a request (a test filled the segment): ignored.
      if (n >= 0 && n <= REPLY_AT - REQUEST_AT) {
        for (let i = 0; i < n; i++) all[REPLY_AT + i] = all[REQUEST_AT + i]! ^ 0xff;
        // SYNC: pairs with the test side's Atomics.load of the reply seq.
        Atomics.store(words, 1, seq);
      }
    }
    await Bun.sleep(1);
  }
}
