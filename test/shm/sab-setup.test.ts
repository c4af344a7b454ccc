/**
 * Setting a session up touches only the pages it uses. A segment is a SharedArrayBuffer, and
 * `new SharedArrayBuffer(n)` hands out storage Bun's allocator recycled from an earlier one after
 * zero-filling every byte of it: in a reconnect loop most connects then faulted in the whole
 * default segment (66 MiB, ~17k pages, on each side), 57 to 78 ms per connect on average here.
 * Segments come from freshSharedBuffer() instead (a shared WebAssembly.Memory: pages from the
 * kernel, lazily zero). Counted here as page faults (minflt in /proc/self/stat) over reconnect
 * loops of shm and inproc, both sides in this process.
 */

import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { connect, listen, type Connection } from "../../src/index.ts";
import { computeLayout, DEFAULT_SEGMENT_CONFIG } from "../../src/segment/layout.ts";
import { PAGE_BYTES } from "../../src/ffi/libc.ts";

const SEGMENT_PAGES = Math.ceil(computeLayout(DEFAULT_SEGMENT_CONFIG).totalBytes / PAGE_BYTES);
/** Minor page faults of this process so far (field 10 of /proc/self/stat). */
const minorFaults = () => Number(readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ")[7]);

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(1);
  }
}

for (const scheme of ["shm", "inproc"] as const) {
  test(`${scheme}: 30 reconnects fault in a small fraction of a default segment per connect`, async () => {
    const l = await listen(`${scheme}://sab-setup-${process.pid}`);
    let accepted: Connection | null = null;
    l.onConnection((c) => void (accepted = c));
    const cycle = async () => {
      const a = await connect(l.url);
      await until(() => accepted !== null, "the accept");
      accepted = null;
      a.close();
    };
    // The first few let the runtime warm up and give the allocator freed segments to recycle.
    for (let i = 0; i < 5; i++) await cycle();
    Bun.gc(true);
    const before = minorFaults();
    const N = 30;
    for (let i = 0; i < N; i++) {
      await cycle();
      if (i % 5 === 4) Bun.gc(true); // freed segments go back to the allocator, ready to be recycled
    }
    const perConnect = (minorFaults() - before) / N;
    console.log(`${scheme} reconnect: ${perConnect.toFixed(0)} page faults per connect (both sides), a default segment has ${SEGMENT_PAGES} pages`);
    l.close(true);
    // Measured: ~50 with fresh segments; 3,500 to 5,300 when recycled storage was zero-filled (huge pages fault 512 at a time).
    expect(perConnect).toBeLessThan(SEGMENT_PAGES / 16);
  }, 120_000);
}
