/**
 * Retiring a QP that shares the runtime's SRQ before its destroy (runtime.ts retireQp): move it
 * to ERR, wait for IBV_EVENT_QP_LAST_WQE_REACHED (the device will take no more SRQ receives for
 * it; at most LAST_WQE_WAIT_MS), poll the CQs, then destroy it. Destroyed at once, a provider
 * drops the QP's unpolled completions (rdma-core's mlx5 cleans the CQ on destroy and frees their
 * SRQ receives): the receive slab would go on counting those receives posted, and the SRQ would
 * shrink with every such close. The software fixture models both (test/rdma/softrc/qp.c).
 *
 * Example (runtime.ts):
 *   const retiring = new QpRetirement(runtime);
 *   retiring.retire(qp, (err) => { deregisterMrs(); onClosed(); });
 *   // in the async-event handler: retiring.onLastWqe(ev.qp.qpNum);
 *
 * Thread: the runtime's.
 */

import { IBV, type VerbsQp } from "../ffi/ibverbs.ts";

/**
 * A QP moved to ERR before its destroy waits this long at most for IBV_EVENT_QP_LAST_WQE_REACHED
 * (hardware raises it within microseconds; the bound covers a provider that never does).
 */
export const LAST_WQE_WAIT_MS = 50;
/** progress() calls at most while retiring a QP (each polls up to 16 × 32 completions). */
const RETIRE_POLLS = 64;

/** What retiring needs of the runtime. */
export interface RetireHost {
  pin(): void;
  unpin(): void;
  progress(): number;
  drainAsyncEvents(): void;
  readonly inProgress: boolean;
}

/** Owner: the runtime (one). */
export class QpRetirement {
  /** QPs being retired: what to run at their IBV_EVENT_QP_LAST_WQE_REACHED, by QP number. */
  private readonly waits = new Map<number, () => void>();
  /** QPs whose IBV_EVENT_QP_LAST_WQE_REACHED came before anyone waited for it (an error moved them to ERR). */
  private readonly seen = new Set<number>();

  constructor(private readonly host: RetireHost) {}

  /** An IBV_EVENT_QP_LAST_WQE_REACHED for QP `qpNum`. */
  onLastWqe(qpNum: number): void {
    const go = this.waits.get(qpNum);
    if (go !== undefined) go();
    else this.seen.add(qpNum);
  }

  /**
   * Destroys `qp`, a QP on this SRQ, without losing receives: moves it to ERR, waits for
   * IBV_EVENT_QP_LAST_WQE_REACHED (at most LAST_WQE_WAIT_MS), polls the CQs (its completions
   * are handled: receives re-posted), handles pending async events, destroys it, then runs
   * `then(error)` (error: what the destroy threw, or null). A provider drops a destroyed QP's
   * unpolled completions (mlx5's CQ clean on destroy frees their SRQ receives): destroyed at
   * once, the slab would go on counting them posted. The runtime stays alive meanwhile (a pin).
   * When the event is there at once and no progress() is running, all of it happens before
   * retire() returns; else later on a clean stack (a microtask after the event or the bound).
   */
  retire(qp: VerbsQp, then: (error: unknown) => void): void {
    this.host.pin();
    const num = qp.qpNum;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let done = false;
    let sync = true;
    const go = () => {
      if (done) return;
      done = true;
      if (timer !== undefined) clearTimeout(timer);
      this.waits.delete(num);
      const finish = () => {
        let error: unknown = null;
        try {
          for (let i = 0; i < RETIRE_POLLS && this.host.progress() > 0; i++);
          this.host.drainAsyncEvents(); // before the QP's address can be reused (see there)
          qp.close();
        } catch (e) {
          error = e;
        }
        this.seen.delete(num);
        try {
          then(error);
        } finally {
          this.host.unpin();
        }
      };
      // Inside progress() its polls would find nothing (nested calls return 0).
      if (sync && !this.host.inProgress) finish();
      else queueMicrotask(finish);
    };
    try {
      qp.modify({ qpState: IBV.IBV_QPS_ERR });
    } catch {
      return go(); // a QP the device cannot move to ERR took no receive: destroyed at once
    }
    this.waits.set(num, go);
    this.host.drainAsyncEvents();
    if (this.seen.has(num)) go();
    sync = false;
    if (!done) timer = setTimeout(go, LAST_WQE_WAIT_MS);
  }
}
