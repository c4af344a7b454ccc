/**
 * Helper Worker for UCX's idle mode: blocks in poll() on the worker's event fd (armed by the
 * main thread with ucp_worker_arm) and wakes the main thread through Atomics.notify, which the
 * main thread awaits with Atomics.waitAsync. It never touches UCX itself.
 *
 * Control words (Int32Array over a SharedArrayBuffer): [0] state, [1] fd.
 *   IDLE 0 → the main thread sets ARMED 1 and notifies → this thread polls the fd (in 100 ms
 *   slices, so STOP is seen) → READY 2 and notify. STOP 3 ends the thread.
 */

import { pollReadable } from "../ffi/libc.ts";

export const EFD_IDLE = 0;
export const EFD_ARMED = 1;
export const EFD_READY = 2;
export const EFD_STOP = 3;

declare const self: Worker;
if (typeof self !== "undefined" && !Bun.isMainThread) {
  self.onmessage = (e: MessageEvent) => {
    const ctl = new Int32Array(e.data.ctl as SharedArrayBuffer);
    for (;;) {
      const state = Atomics.load(ctl, 0);
      if (state === EFD_STOP) break;
      if (state !== EFD_ARMED) {
        Atomics.wait(ctl, 0, state); // IDLE or READY: sleep until the main thread changes it
        continue;
      }
      if (pollReadable(ctl[1]!, 100) && Atomics.compareExchange(ctl, 0, EFD_ARMED, EFD_READY) === EFD_ARMED) {
        Atomics.notify(ctl, 0);
      }
    }
    process.exit(0);
  };
}
