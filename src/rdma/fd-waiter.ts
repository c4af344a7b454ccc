/**
 * FdWaiter: the rdma runtime's idle wait. A helper Worker blocks in poll(2) on the watched fds
 * (the verbs completion channel, the context's async-event fd, rdma_cm's event channel) and
 * wakes this thread through Atomics.notify, which this thread awaits with Atomics.waitAsync: no
 * busy core while idle, and every fd handler runs on the thread that owns the fd.
 *
 * Contract: watch(fd, onReadable) is level-triggered; onReadable runs on the owner thread when
 * the fd is readable (or in error), and the fd is polled again only after every handler of that
 * round returned, so a handler must drain what it can (a handler that reads nothing is called
 * again at once). Unwatching (the returned function) is idempotent. A change to the fd set
 * while the helper polls interrupts it through an eventfd, so a new fd is polled at once.
 *
 * Control words (Int32Array over a SharedArrayBuffer):
 *   [0] state   IDLE 0 → ARMED 1 (owner: fds written, notify) → READY 2 (helper: ready flags
 *               written, notify) → IDLE (owner: handlers ran). STOP 3 ends the helper.
 *   [1] count   fds watched, [2] the interrupt eventfd, [3 .. 3+MAX) the fds,
 *   [3+MAX .. 3+2·MAX) ready flags (1: that fd had events).
 *
 * Importing this module runs nothing: the helper's entry is a two-line module that calls
 * runFdWaiter(), started from a Blob URL over this file in the sources, over its bundle
 * (HOTPATH_RDMA_FD_WAITER_JS, made by scripts/build.ts) in dist/.
 *
 * Example:
 *   const w = new FdWaiter();
 *   const unwatch = w.watch(channel.fd, () => drainCompletions());
 *   unwatch(); w.stop();
 *
 * Thread: an FdWaiter belongs to the thread that made it.
 */

import { existsSync, readSync, writeSync, closeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { RdmaUnavailableError, UsageError } from "../errors.ts";
import { eventfdCreate, pollAny } from "../ffi/libc.ts";

export const FDW_IDLE = 0;
export const FDW_ARMED = 1;
export const FDW_READY = 2;
export const FDW_STOP = 3;
/** Fds one waiter watches at most (a runtime watches two, rdma_cm one per thread). */
export const FDW_MAX = 32;
const AT_COUNT = 1;
const AT_WAKE_FD = 2;
const AT_FDS = 3;
const AT_READY = AT_FDS + FDW_MAX;
/** The helper's poll slice: it re-reads the control word this often even without an fd event (STOP always comes with an interrupt; this bounds a lost one). */
const POLL_SLICE_MS = 1000;

declare const self: Worker;
/** The helper's bundled entry (scripts/build.ts); undefined in the sources. */
declare const HOTPATH_RDMA_FD_WAITER_JS: string | undefined;

let waiterUrl: string | null = null;
let waiterFailure: string | null = null;

/** Why no helper can start in this process, or null. */
export function fdWaiterUnavailableReason(): string | null {
  fdWaiterSource();
  return waiterFailure;
}

function fdWaiterSource(): string | null {
  if (waiterUrl !== null || waiterFailure !== null) return waiterUrl;
  let code: string;
  if (typeof HOTPATH_RDMA_FD_WAITER_JS === "string") code = HOTPATH_RDMA_FD_WAITER_JS;
  else {
    const file = new URL("./fd-waiter.ts", import.meta.url);
    if (file.protocol !== "file:" || !existsSync(fileURLToPath(file))) {
      waiterFailure = `its helper Worker's code is missing (${file.href} does not exist: hotpath's sources were bundled without the package build)`;
      return null;
    }
    code = `import { runFdWaiter } from ${JSON.stringify(file.href)};\nrunFdWaiter();\n`;
  }
  waiterUrl = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  return waiterUrl;
}

const one = new BigUint64Array([1n]);

/** The owner side: the watched fds and their handlers, the helper Worker. Owner: a runtime (or rdma_cm's per-thread channel); its thread. */
export class FdWaiter {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(4 * (AT_READY + FDW_MAX)));
  private readonly handlers = new Map<number, () => void>();
  private helper: Worker | null = null;
  private wakeFd = -1;
  private parked = false;
  private stopped = false;
  /** Rounds of handlers run (a test reads it). */
  rounds = 0;

  /** Watches `fd` (see the module comment); returns the unwatch function. UsageError past FDW_MAX fds or for an fd already watched. */
  watch(fd: number, onReadable: () => void): () => void {
    if (this.stopped) throw new UsageError("rdma fd waiter: stopped");
    if (this.handlers.has(fd)) throw new UsageError(`rdma fd waiter: fd ${fd} is already watched`);
    if (this.handlers.size >= FDW_MAX) throw new UsageError(`rdma fd waiter: at most ${FDW_MAX} fds`);
    this.handlers.set(fd, onReadable);
    this.changed();
    let on = true;
    return () => {
      if (!on) return;
      on = false;
      if (this.handlers.get(fd) === onReadable) this.handlers.delete(fd);
      this.changed();
    };
  }

  /** Fds watched now. */
  get size(): number {
    return this.handlers.size;
  }

  /** Ends the helper (it closes its interrupt fd); watch() refuses from then on. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.handlers.clear();
    const ctl = this.ctl;
    // SYNC: the helper reads STOP after its poll returns; the interrupt makes that at once.
    Atomics.store(ctl, 0, FDW_STOP);
    Atomics.notify(ctl, 0);
    this.interrupt();
    this.helper = null;
  }

  private interrupt(): void {
    if (this.wakeFd < 0) return;
    try {
      writeSync(this.wakeFd, one);
    } catch {
      // the counter is full (never in practice): the helper is awake anyway
    }
  }

  /** The fd set changed: the helper polls the new set (an interrupt ends a poll of the old one). */
  private changed(): void {
    if (this.stopped) return;
    if (this.parked && Atomics.load(this.ctl, 0) === FDW_ARMED) {
      // SYNC: ARMED → IDLE pairs with the helper's compareExchange ARMED → READY: whoever wins decides.
      if (Atomics.compareExchange(this.ctl, 0, FDW_ARMED, FDW_IDLE) === FDW_ARMED) {
        this.interrupt();
        Atomics.notify(this.ctl, 0); // resolves park()'s waitAsync: woke() re-arms with the new set
      }
      return;
    }
    if (!this.parked) this.arm();
  }

  private start(): void {
    const url = fdWaiterSource();
    if (url === null) throw new RdmaUnavailableError(waiterFailure!);
    this.wakeFd = eventfdCreate();
    this.ctl[AT_WAKE_FD] = this.wakeFd;
    const helper = new Worker(url);
    helper.addEventListener("error", (e) => {
      e.preventDefault();
      console.error(`hotpath rdma: the fd waiter's helper Worker failed: ${String(e.message).split("\n")[0]}`);
    });
    helper.unref();
    helper.postMessage({ ctl: this.ctl.buffer });
    this.helper = helper;
  }

  private arm(): void {
    if (this.stopped || this.handlers.size === 0 || this.parked) return;
    if (this.helper === null) this.start();
    const ctl = this.ctl;
    let i = 0;
    for (const fd of this.handlers.keys()) ctl[AT_FDS + i++] = fd;
    ctl[AT_COUNT] = i;
    this.parked = true;
    // SYNC: the fds above are written before ARMED; the helper reads them after it loads ARMED.
    Atomics.store(ctl, 0, FDW_ARMED);
    Atomics.notify(ctl, 0);
    this.park();
  }

  private park(): void {
    const r = Atomics.waitAsync(this.ctl, 0, FDW_ARMED);
    if (r.async) r.value.then(this.woke);
    else queueMicrotask(this.woke);
  }

  private readonly woke = (): void => {
    const ctl = this.ctl;
    const state = Atomics.load(ctl, 0);
    if (state === FDW_STOP || this.stopped) return;
    if (state === FDW_ARMED) return this.park(); // spurious
    this.parked = false;
    if (state === FDW_READY) {
      const fds: number[] = [];
      const n = ctl[AT_COUNT]!;
      for (let i = 0; i < n; i++) if (ctl[AT_READY + i] === 1) fds.push(ctl[AT_FDS + i]!);
      Atomics.store(ctl, 0, FDW_IDLE);
      this.rounds++;
      for (const fd of fds) {
        const h = this.handlers.get(fd);
        if (h === undefined) continue;
        try {
          h();
        } catch (e) {
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    }
    this.arm();
  };
}

/**
 * The helper's body: receives the control words, then loops on this thread until STOP. Call it
 * only on the helper Worker, once (its entry module does).
 */
export function runFdWaiter(): void {
  if (Bun.isMainThread) throw new UsageError("runFdWaiter() runs on the helper Worker only");
  self.onmessage = (e: MessageEvent) => {
    const ctl = new Int32Array(e.data.ctl as SharedArrayBuffer);
    const fds = new Int32Array(FDW_MAX + 1);
    const ready = new Uint8Array(FDW_MAX + 1);
    const drain = new BigUint64Array(1);
    const wakeFd = ctl[AT_WAKE_FD]!;
    for (;;) {
      // SYNC: pairs with FdWaiter.arm()'s store of ARMED and stop()'s store of STOP.
      const state = Atomics.load(ctl, 0);
      if (state === FDW_STOP) break;
      if (state !== FDW_ARMED) {
        Atomics.wait(ctl, 0, state);
        continue;
      }
      const n = ctl[AT_COUNT]!;
      fds[0] = wakeFd;
      for (let i = 0; i < n; i++) fds[i + 1] = ctl[AT_FDS + i]!;
      const hits = pollAny(fds, n + 1, ready, POLL_SLICE_MS);
      if (ready[0] === 1) {
        try {
          readSync(wakeFd, drain);
        } catch {
          // EAGAIN: another round drained it
        }
      }
      if (hits - ready[0]! <= 0) continue;
      for (let i = 0; i < n; i++) ctl[AT_READY + i] = ready[i + 1]!;
      // SYNC: the ready flags are written before READY; the owner reads them after it loads READY.
      if (Atomics.compareExchange(ctl, 0, FDW_ARMED, FDW_READY) === FDW_ARMED) Atomics.notify(ctl, 0);
    }
    try {
      closeSync(wakeFd);
    } catch {
      // already closed
    }
    process.exit(0);
  };
}
