/**
 * Helper Worker for UCX's idle mode: blocks in poll() on the worker's event fd (armed by the
 * main thread with ucp_worker_arm) and wakes the main thread through Atomics.notify, which the
 * main thread awaits with Atomics.waitAsync. It never touches UCX itself.
 *
 * Control words (Int32Array over a SharedArrayBuffer): [0] state, [1] fd.
 *   IDLE 0 → the main thread sets ARMED 1 and notifies → this thread polls the fd (in 100 ms
 *   slices, so STOP is seen) → READY 2 and notify. STOP 3 ends the thread.
 *
 * Importing this module runs nothing (a Worker of the application that imports hotpath keeps
 * its own message handler): the helper's entry is a two-line module that calls runEfdWaiter(),
 * which runtime.ts starts from a Blob URL, over this file when running from the sources and
 * over its bundle (made by scripts/build.ts) in dist/ and in an application's own bundle.
 */

import { UsageError } from "../errors.ts";
import { pollReadable } from "../ffi/libc.ts";

export const EFD_IDLE = 0;
export const EFD_ARMED = 1;
export const EFD_READY = 2;
export const EFD_STOP = 3;

declare const self: Worker;

/**
 * The helper's body: installs the handler that receives the control words and then loops in
 * this thread until STOP. Call it only on the helper Worker, once (its entry module does).
 */
export function runEfdWaiter(): void {
  if (Bun.isMainThread) throw new UsageError("runEfdWaiter() runs on the helper Worker only");
  self.onmessage = (e: MessageEvent) => {
    const ctl = new Int32Array(e.data.ctl as SharedArrayBuffer);
    for (;;) {
      // SYNC: pairs with UcxRuntime.park()'s store of ARMED and release()'s store of STOP.
      const state = Atomics.load(ctl, 0);
      if (state === EFD_STOP) break;
      if (state !== EFD_ARMED) {
        Atomics.wait(ctl, 0, state); // IDLE or READY: sleep until the main thread changes it
        continue;
      }
      // SYNC: READY pairs with park()'s Atomics.waitAsync on ARMED.
      if (pollReadable(ctl[1]!, 100) && Atomics.compareExchange(ctl, 0, EFD_ARMED, EFD_READY) === EFD_ARMED) {
        Atomics.notify(ctl, 0);
      }
    }
    process.exit(0);
  };
}
