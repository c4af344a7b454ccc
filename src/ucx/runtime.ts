/**
 * UcxRuntime: one UCP context and worker per thread, shared by every ucx connection and
 * listener of that thread, and the driver that makes the worker progress.
 *
 * Active Messages: AM_DATA carries a message (the RPC head as the AM header, the body as AM
 * data); AM_HELLO / AM_HELLO_ACK complete a connect. Every send asks UCX for a reply endpoint
 * (UCP_AM_SEND_FLAG_REPLY), so an arriving message names the local endpoint it came through
 * and is routed to that connection.
 *
 * Progress (WaitPolicy.mode, as for shm):
 *   - "spin": nothing runs by itself; poll() progresses the worker, wait() spins.
 *   - "async" / "adaptive" (default): the worker progresses from the event loop: after a send
 *     (a microtask that spins up to spinNs for the answer), after a delivery (setImmediate),
 *     and when the worker's event fd fires. Idle, the fd is armed (ucp_worker_arm) and a
 *     helper Worker blocks in poll() on it and wakes this thread (Atomics.notify →
 *     Atomics.waitAsync): no busy core while idle.
 */

import { ucpUnavailableReason, UcpContext, type UcpWorker } from "../ffi/ucp.ts";
import { WaitList } from "../waitlist.ts";
import { EFD_ARMED, EFD_IDLE, EFD_STOP } from "./efd-waiter.ts";

export const AM_DATA = 1;
export const AM_HELLO = 2;
export const AM_HELLO_ACK = 3;

export const DEFAULT_UCX_SPIN_NS = 20_000;

/** What the runtime needs from a connection. */
export interface AmSink {
  /** An AM for this connection; pointers are valid during the call only. Returns a ucs_status. */
  onAm(id: number, header: number, headerLength: number, data: number, length: number, recvAttr: number): number;
  /** True while the connection wants event-loop progress (async / adaptive with a receiver). */
  readonly wantsProgress: boolean;
}

const EFD_WAITER = new URL("./efd-waiter.ts", import.meta.url).href;

export class UcxRuntime {
  readonly ctx: UcpContext;
  readonly worker: UcpWorker;
  /** Connections by their local endpoint handle (the reply endpoint of what arrives). */
  readonly sinks = new Map<number, AmSink>();
  /** AMs for endpoints not (yet) known: a server endpoint's HELLO before its handler exists. */
  onUnknownAm: ((id: number, header: number, hlen: number, data: number, len: number, attr: number, replyEp: number) => number) | null = null;
  readonly waiters = new WaitList();
  spinNs = DEFAULT_UCX_SPIN_NS;
  /** Connections and listeners using this runtime; the last release() closes it. */
  users = 0;
  private microQueued = false;
  private immediateQueued = false;
  private pumping = false;
  private sentSincePump = false;
  private delivered = 0;
  private efdCtl: Int32Array | null = null;
  private efdWorker: Worker | null = null;
  private efdWaiting = false;
  /** Never set today (the worker lives as long as the thread); kept for the pump's checks. */
  private readonly closed = false;

  private static readonly runtimes = new Map<string, UcxRuntime>();

  /**
   * The thread's runtime for the UCX configuration in the environment now (UCX_* variables,
   * read by ucp_config_read when the context is made), created on first use.
   */
  static acquire(): UcxRuntime {
    const key = Object.keys(process.env)
      .filter((k) => k.startsWith("UCX_"))
      .sort()
      .map((k) => `${k}=${process.env[k]}`)
      .join(" ");
    let rt = UcxRuntime.runtimes.get(key);
    if (rt === undefined) {
      rt = new UcxRuntime();
      UcxRuntime.runtimes.set(key, rt);
    }
    rt.users++;
    return rt;
  }

  static unavailableReason(): string | null {
    return ucpUnavailableReason();
  }

  private constructor() {
    this.ctx = UcpContext.create();
    this.worker = this.ctx.createWorker();
    for (const id of [AM_DATA, AM_HELLO, AM_HELLO_ACK]) {
      this.worker.setAmHandler(id, (header, hlen, data, len, attr, replyEp) => {
        const sink = this.sinks.get(replyEp);
        if (sink !== undefined) {
          if (id === AM_DATA) this.delivered++;
          return sink.onAm(id, header, hlen, data, len, attr);
        }
        return this.onUnknownAm ? this.onUnknownAm(id, header, hlen, data, len, attr, replyEp) : 0;
      });
    }
  }

  /**
   * Drops one user; the last one stops the helper thread so the process can exit. The worker
   * and context stay for the thread's lifetime and are reused by the next acquire():
   * ucp_worker_destroy in UCX 1.13 aborts the process when an endpoint whose wire-up failed
   * still has a queued send ("pending request ... should have been flushed"), which a refused
   * or timed-out connect leaves behind.
   */
  release(): void {
    if (--this.users > 0) return;
    this.users = 0;
    if (this.efdCtl) {
      Atomics.store(this.efdCtl, 0, EFD_STOP);
      Atomics.notify(this.efdCtl, 0);
      this.efdCtl = null;
      this.efdWorker = null;
      this.efdWaiting = false;
    }
    this.waiters.wake(false);
  }

  /** Progresses until the worker reports no more events (bounded); returns messages delivered. */
  progress(): number {
    const before = this.delivered;
    for (let i = 0; i < 64 && this.worker.progress() > 0; i++) {
      // keep going while UCX has work
    }
    return this.delivered - before;
  }

  private anyWantsProgress(): boolean {
    for (const s of this.sinks.values()) if (s.wantsProgress) return true;
    return false;
  }

  /** After a send: progress soon, spinning up to spinNs for the answer. */
  sent(): void {
    this.sentSincePump = true;
    this.schedule();
  }

  schedule(): void {
    if (this.microQueued || this.closed) return;
    this.microQueued = true;
    queueMicrotask(() => {
      this.microQueued = false;
      this.pump();
    });
  }

  private followUp(): void {
    if (this.immediateQueued || this.closed) return;
    this.immediateQueued = true;
    setImmediate(() => {
      this.immediateQueued = false;
      this.pump();
    });
  }

  /** Spins the worker until a message is delivered or `budgetNs` passes. */
  spin(budgetNs: number): number {
    let n = this.progress();
    if (n > 0 || budgetNs <= 0) return n;
    const end = Bun.nanoseconds() + budgetNs;
    while (Bun.nanoseconds() < end) {
      n = this.progress();
      if (n > 0) return n;
    }
    return 0;
  }

  private pump(): void {
    if (this.closed || this.pumping || !this.anyWantsProgress()) return;
    this.pumping = true;
    const expectReply = this.sentSincePump;
    this.sentSincePump = false;
    let n = 0;
    try {
      n = this.spin(expectReply ? this.spinNs : 0);
    } finally {
      this.pumping = false;
    }
    if (this.closed) return;
    if (n > 0 || this.worker.inFlight > 0) {
      if (n > 0) this.waiters.wake(true);
      this.followUp();
      return;
    }
    this.park();
  }

  /** Arms the event fd and sleeps until it fires (helper Worker + Atomics.waitAsync). */
  private park(): void {
    if (this.closed) return;
    // Re-arm before every sleep: progress may have consumed the previous arming.
    if (!this.worker.arm()) {
      this.followUp(); // events pending: progress before sleeping
      return;
    }
    if (this.efdWaiting) return; // the helper is already polling the fd
    if (this.efdCtl === null) {
      this.efdCtl = new Int32Array(new SharedArrayBuffer(8));
      this.efdCtl[1] = this.worker.eventFd();
      this.efdWorker = new Worker(EFD_WAITER);
      this.efdWorker.unref();
      this.efdWorker.postMessage({ ctl: this.efdCtl.buffer });
    }
    const ctl = this.efdCtl;
    this.efdWaiting = true;
    Atomics.store(ctl, 0, EFD_ARMED);
    Atomics.notify(ctl, 0);
    const r = Atomics.waitAsync(ctl, 0, EFD_ARMED);
    const woke = () => {
      this.efdWaiting = false;
      Atomics.store(ctl, 0, EFD_IDLE);
      this.pump();
    };
    if (r.async) r.value.then(woke);
    else woke();
  }
}
