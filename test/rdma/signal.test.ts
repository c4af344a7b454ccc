/**
 * Signal batching (src/rdma/signal.ts): which sends are signaled, the sqDepth >= 2 * batch
 * assertion, and send-queue slots freed only by signaled completions, against a model device that
 * completes sends in order and reports only the signaled ones; with a send queue smaller than the
 * credit window, the send queue is what says Full.
 */
import { describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { IBV } from "../../src/ffi/verbs-layout.ts";
import { CreditFlow } from "../../src/rdma/credits.ts";
import { seededRandom } from "../../src/pool/backoff.ts";
import { assertCqDepth, MAX_UNSIGNALED_BATCH, SignalBatcher, signalBatchFor } from "../../src/rdma/signal.ts";


/** A send queue as the device sees it: posted WRs in order; completing one yields a CQ entry only if signaled. */
class ModelSq {
  readonly posted: Array<{ seq: number; signaled: boolean }> = [];
  constructor(readonly depth: number) {}
  post(seq: number, flags: number): void {
    // The device refuses a post past its depth (ENOMEM): the batcher must never get there.
    expect(this.posted.length).toBeLessThan(this.depth);
    this.posted.push({ seq, signaled: (flags & IBV.IBV_SEND_SIGNALED) !== 0 });
  }
  /** Execute the oldest WR; returns its wr_id when it is signaled (a completion), else 0. */
  executeOne(): number {
    const wr = this.posted.shift()!;
    return wr.signaled ? wr.seq : 0;
  }
}

describe("signal batching", () => {
  test("the batch is derived from the send-queue depth and the constraint is asserted", () => {
    expect(signalBatchFor(128)).toBe(64);
    expect(signalBatchFor(1024)).toBe(MAX_UNSIGNALED_BATCH);
    expect(signalBatchFor(9)).toBe(4);
    expect(signalBatchFor(2)).toBe(1);
    expect(() => signalBatchFor(1)).toThrow(UsageError);
    expect(new SignalBatcher(16).batch).toBe(8);
    expect(() => new SignalBatcher(8, 5)).toThrow(/send queue depth 8 < 2 \* signal batch 5/);
    expect(() => new SignalBatcher(8, 0)).toThrow(UsageError);
    expect(new SignalBatcher(8, 4).batch).toBe(4);
  });

  test("one send in `batch` is signaled; its completion frees every slot up to it", () => {
    const sig = new SignalBatcher(8, 4);
    const flags: number[] = [];
    for (let i = 0; i < 8; i++) flags.push(sig.tryPost());
    expect(flags).toEqual([0, 0, 0, IBV.IBV_SEND_SIGNALED, 0, 0, 0, IBV.IBV_SEND_SIGNALED]);
    expect(sig.lastSeq).toBe(8);
    expect(sig.inFlight).toBe(8);
    expect(sig.tryPost()).toBe(-1); // full: nothing changed
    expect(sig.lastSeq).toBe(8);
    expect(sig.signalPending).toBe(true);
    expect(sig.onCompletion(4)).toBe(4);
    expect(sig.free).toBe(4);
    expect(sig.onCompletion(4)).toBe(0); // a repeat frees nothing
    expect(sig.onCompletion(2)).toBe(0); // an older (flushed) one neither
    expect(() => sig.onCompletion(9)).toThrow(UsageError);
    expect(sig.onCompletion(8)).toBe(4);
    expect(sig.inFlight).toBe(0);
    expect(sig.signalPending).toBe(false);
  });

  test("a forced signal frees the unsignaled tail and restarts the batch", () => {
    const sig = new SignalBatcher(8, 4);
    sig.tryPost();
    sig.tryPost();
    expect(sig.tryPost(true)).toBe(IBV.IBV_SEND_SIGNALED);
    expect(sig.onCompletion(sig.lastSeq)).toBe(3);
    expect(sig.inFlight).toBe(0);
    expect([sig.tryPost(), sig.tryPost(), sig.tryPost(), sig.tryPost()]).toEqual([0, 0, 0, IBV.IBV_SEND_SIGNALED]);
  });

  test("a send queue smaller than the credit window: the send queue says Full, completions resume it", () => {
    const sqDepth = 8;
    const credits = new CreditFlow({ window: 64, returnBatch: 16 });
    const sig = new SignalBatcher(sqDepth);
    const sq = new ModelSq(sqDepth);
    let sent = 0;
    // Post while both credits and the send queue allow.
    for (;;) {
      if (!credits.canSendData()) break;
      const flags = sig.tryPost();
      if (flags < 0) break;
      credits.tryTakeForData();
      sq.post(sig.lastSeq, flags);
      sent++;
    }
    expect(sent).toBe(sqDepth);
    expect(credits.credits).toBe(64 - sqDepth); // credits were left: the send queue stopped it
    expect(sig.signalPending).toBe(true);
    // The device executes the first half; the signaled one at its end frees 4 slots.
    let freed = 0;
    for (let i = 0; i < 4; i++) {
      const wrId = sq.executeOne();
      if (wrId) freed += sig.onCompletion(wrId);
    }
    expect(freed).toBe(4);
    expect(sig.free).toBe(4);
  });

  test("seeded random: never past the send queue, a full queue always has a completion coming, the tail is under a batch", () => {
    let totalFulls = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const r = seededRandom(seed);
      const sqDepth = 2 + Math.floor(r() * 62);
      const batch = 1 + Math.floor(r() * signalBatchFor(sqDepth));
      const sig = new SignalBatcher(sqDepth, batch);
      const sq = new ModelSq(sqDepth);
      let fulls = 0;
      for (let i = 0; i < 3000; i++) {
        if (r() < 0.55) {
          const flags = sig.tryPost(r() < 0.02);
          if (flags < 0) {
            fulls++;
            // Full can mean executed-but-unseen unsignaled sends; a signaled one is still queued.
            expect(sig.signalPending).toBe(true);
            expect(sq.posted.some((w) => w.signaled)).toBe(true);
          } else sq.post(sig.lastSeq, flags);
        } else if (sq.posted.length > 0) {
          const wrId = sq.executeOne();
          if (wrId) sig.onCompletion(wrId);
        }
        // The batcher counts as in use what the device holds plus what it executed unseen.
        expect(sig.inFlight).toBeGreaterThanOrEqual(sq.posted.length);
        expect(sig.inFlight).toBeLessThanOrEqual(sqDepth);
      }
      while (sq.posted.length > 0) {
        const wrId = sq.executeOne();
        if (wrId) sig.onCompletion(wrId);
      }
      // Executed but unsignaled sends after the last signaled one stay counted: fewer than a batch.
      expect(sig.inFlight).toBeLessThan(batch);
      expect(sig.free).toBeGreaterThanOrEqual(sqDepth - batch + 1);
      totalFulls += fulls;
    }
  });

  test("the CQ must hold the send queue and the receive queue", () => {
    expect(() => assertCqDepth(256, 128, 128)).not.toThrow();
    expect(() => assertCqDepth(255, 128, 128)).toThrow(/CQ depth 255 < send queue 128 \+ receive queue 128/);
  });
});
