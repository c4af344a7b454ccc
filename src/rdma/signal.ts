/**
 * Selective signaling for one RC send queue, as pure logic. A signaled send costs a completion
 * (a CQ entry and a poll); an unsignaled one costs nothing, but its send-queue slot is known free
 * only when a later signaled send on the same QP completes (RC completes in order). So one send in
 * `batch` is signaled, and the signaled completion frees every slot up to and including it.
 *
 * Contract:
 * - `sqDepth >= 2 * batch`, asserted at construction (eRPC's static_assert(kSQDepth >= 2 *
 *   kUnsigBatch)): while the signaled send closing one batch is completing, the next batch still
 *   fits, so a steady sender never waits on the send queue for a completion it has not yet asked
 *   for. signalBatchFor(sqDepth) derives the largest such batch, capped at MAX_UNSIGNALED_BATCH.
 * - Every posted send gets a sequence number (1, 2, ...; `lastSeq` after tryPost), which the
 *   caller puts in the signaled send's wr_id; onCompletion(wr_id) frees the slots. A completion
 *   for an older sequence (e.g. flushed unsignaled sends after the QP went to error) frees nothing.
 * - At most sqDepth sends are outstanding: tryPost() returns -1 when the queue is full (the
 *   caller reports Full; credits may allow more than the send queue holds). Among any sqDepth
 *   consecutive sends one is signaled (batch <= sqDepth / 2), so a full queue always drains on a
 *   completion the caller will see.
 * - `tryPost(true)` signals out of turn: a send whose buffer must be reclaimed, or the last one
 *   before idling, so no slots stay unknown. The batch count restarts there.
 * - assertCqDepth(): a CQ takes the signaled sends and, on a QP error, a flush entry for every
 *   outstanding send and receive, so it must hold sqDepth + receive depth.
 * Nothing is allocated per send: number fields only.
 *
 * Thread: the JS thread that owns the QP; no locking.
 *
 * Example:
 *   const sig = new SignalBatcher(128);                 // batch 64
 *   const flags = sig.tryPost();                        // -1: send queue full
 *   if (flags >= 0) wrs.set(0, sig.lastSeq, IBV.IBV_WR_SEND, flags | IBV.IBV_SEND_INLINE, ...);
 *   // on a send completion: sig.onCompletion(wcs.wrId(i));
 */

import { UsageError } from "../errors.ts";
import { IBV } from "../ffi/verbs-layout.ts";

/** Largest unsignaled batch (eRPC's kUnsigBatch): beyond it a completion frees too many slots at once for little gain. */
export const MAX_UNSIGNALED_BATCH = 64;

/** The largest batch a send queue of `sqDepth` slots allows (sqDepth >= 2 * batch), at most `maxBatch`. */
export function signalBatchFor(sqDepth: number, maxBatch = MAX_UNSIGNALED_BATCH): number {
  if (!Number.isInteger(sqDepth) || sqDepth < 2) throw new UsageError(`send queue depth must be an integer >= 2 (got ${sqDepth})`);
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new UsageError(`maxBatch must be an integer >= 1 (got ${maxBatch})`);
  return Math.min(maxBatch, Math.floor(sqDepth / 2));
}

/**
 * Checks that a CQ of `cqDepth` entries can hold a flush of every outstanding send and receive
 * (sqDepth + recvDepth) and throws UsageError if not. For an SRQ shared by several QPs on one CQ,
 * pass the sum of their send depths and the SRQ depth.
 */
export function assertCqDepth(cqDepth: number, sqDepth: number, recvDepth: number): void {
  if (!(cqDepth >= sqDepth + recvDepth)) {
    throw new UsageError(`CQ depth ${cqDepth} < send queue ${sqDepth} + receive queue ${recvDepth}: a flush could overrun it`);
  }
}

/**
 * Which sends of one QP are signaled, and how many send-queue slots are in use.
 * Owner: the connection's data path; single thread.
 */
export class SignalBatcher {
  readonly sqDepth: number;
  readonly batch: number;
  /** Sequence of the latest post (0 before the first). */
  private seq = 0;
  /** Highest sequence known complete: every slot up to it is free. */
  private completed = 0;
  /** Sequence of the latest signaled post (0 when none). */
  private lastSignaledSeq = 0;
  /** Unsignaled posts since the latest signaled one. */
  private sinceSignal = 0;

  constructor(sqDepth: number, batch = signalBatchFor(sqDepth)) {
    if (!Number.isInteger(sqDepth) || sqDepth < 2) throw new UsageError(`send queue depth must be an integer >= 2 (got ${sqDepth})`);
    if (!Number.isInteger(batch) || batch < 1) throw new UsageError(`signal batch must be an integer >= 1 (got ${batch})`);
    // eRPC: static_assert(kSQDepth >= 2 * kUnsigBatch).
    if (sqDepth < 2 * batch) throw new UsageError(`send queue depth ${sqDepth} < 2 * signal batch ${batch}`);
    this.sqDepth = sqDepth;
    this.batch = batch;
  }

  /** Sequence number of the latest post: the wr_id to give it. */
  get lastSeq(): number {
    return this.seq;
  }

  /** Send-queue slots in use (posted, not yet known complete). */
  get inFlight(): number {
    return this.seq - this.completed;
  }

  /** Send-queue slots free. */
  get free(): number {
    return this.sqDepth - (this.seq - this.completed);
  }

  /** Whether a signaled send is posted and not yet complete (a completion is coming). */
  get signalPending(): boolean {
    return this.lastSignaledSeq > this.completed;
  }

  /**
   * Take a send-queue slot for the next post. Returns -1 when the queue is full (nothing
   * changed), else the send flags to OR in: IBV_SEND_SIGNALED for every `batch`-th post (or when
   * `forceSignal`), else 0. The post's sequence is then `lastSeq`. If the post itself fails, the
   * QP is broken and the caller closes it; there is no undo.
   */
  tryPost(forceSignal = false): number {
    if (this.seq - this.completed >= this.sqDepth) return -1;
    this.seq++;
    if (forceSignal || this.sinceSignal + 1 >= this.batch) {
      this.sinceSignal = 0;
      this.lastSignaledSeq = this.seq;
      return IBV.IBV_SEND_SIGNALED;
    }
    this.sinceSignal++;
    return 0;
  }

  /**
   * A send completion with `wrId` (its sequence) arrived: frees its slot and every earlier one.
   * Returns the slots freed (0 for a sequence already known complete). Throws UsageError for a
   * sequence never posted.
   */
  onCompletion(wrId: number): number {
    if (!Number.isInteger(wrId) || wrId < 1 || wrId > this.seq) throw new UsageError(`send completion for sequence ${wrId}, latest posted ${this.seq}`);
    if (wrId <= this.completed) return 0;
    const freed = wrId - this.completed;
    this.completed = wrId;
    return freed;
  }
}
