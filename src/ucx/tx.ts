/**
 * Sending ucx messages (data path): the limits that choose how a send goes (UcxConnection.trySend),
 * and the pooled staging buffer a send copies into when UCX cannot take the caller's memory at once.
 *
 * Contract: a SendStage belongs to one connection; it is filled, handed to UcpEndpoint.amSend
 * (which keeps it reachable while the send is in flight) and back in the connection's pool
 * once the send completed. Its `head` and `body` views are reused while the lengths stay the
 * same, so a steady stream of sends allocates nothing.
 *
 *   const s = stages.take(body.length);  s.fill(head, body, body.length);
 *   ep.amSend(AM_DATA, s.head, s.body, done, s);   // done(status, s): stages.put(s)
 *
 * Threading: the connection's thread.
 */

import { POOLED_BODY_BYTES, POOLED_HEAD_BYTES } from "./rx.ts";

/**
 * Bodies up to this size are first offered to UCX for immediate completion, straight from the
 * caller's memory (no copy, no request); UCX's eager limits are below it, so larger ones would
 * only be refused (they go by rendezvous, which needs the memory until the peer fetched it).
 */
export const IMMEDIATE_MAX_BYTES = 16 << 10;
/**
 * Bodies up to this size that UCX would not complete at once from the caller's memory (beyond
 * its short-message limit) are copied into a pooled staging buffer, sent, and the buffer reused
 * when the send completes (inside the call, for eager sends): no allocation per send. UCX's
 * shared-memory eager limit is 8 KiB.
 */
export const STAGED_MAX_BYTES = 8 << 10;
/**
 * Stage bodies up to this size use the stage's own small buffer (RPC requests and replies of a
 * few hundred bytes, as rx.ts's POOLED_BODY_BYTES); larger ones, up to STAGED_MAX_BYTES, a
 * large buffer made the first time one is needed.
 */
export const STAGE_SMALL_BYTES = POOLED_BODY_BYTES;
/**
 * Stages a connection keeps for reuse: one RPC client window (DEFAULT_WINDOW, 256) of sends in
 * flight at once allocates nothing (once something is in flight, every later send is staged
 * until it completed: it must not overtake). At most 256 × 1.3 KiB per connection.
 */
export const STAGES_POOLED = 256;
/** Of those, stages that keep a large buffer (8 KiB each): bounds what a burst of large sends leaves held. */
export const LARGE_STAGES_POOLED = 16;

const EMPTY_BYTES = new Uint8Array(0);

/** A send's own copy of head and body, reused once UCX is done with it. */
export class SendStage {
  readonly headStore = new Uint8Array(POOLED_HEAD_BYTES);
  private readonly smallStore = new Uint8Array(STAGE_SMALL_BYTES);
  /** Made for the first body above STAGE_SMALL_BYTES; dropped when the pool keeps enough of them. */
  large: Uint8Array | null = null;
  head = EMPTY_BYTES;
  body: Uint8Array | null = null;
  private bodyView: Uint8Array = EMPTY_BYTES;
  bytes = 0;

  fill(head: Uint8Array, body: Uint8Array | null, bl: number): void {
    if (this.head.length !== head.length) this.head = this.headStore.subarray(0, head.length);
    this.head.set(head);
    if (bl === 0) this.body = null;
    else {
      const store = bl <= STAGE_SMALL_BYTES ? this.smallStore : (this.large ??= new Uint8Array(STAGED_MAX_BYTES));
      if (this.bodyView.length !== bl || this.bodyView.buffer !== store.buffer) this.bodyView = store.subarray(0, bl);
      this.bodyView.set(body!);
      this.body = this.bodyView;
    }
    this.bytes = head.length + bl;
  }
}

/**
 * A connection's free stages: small-only ones, and up to LARGE_STAGES_POOLED that keep a large
 * buffer (taken first for large bodies, last for small ones). Thread: the connection's.
 */
export class StagePool {
  private readonly small: SendStage[] = [];
  private readonly large: SendStage[] = [];

  /** A stage for a body of `bl` bytes (reused when one is free). */
  take(bl: number): SendStage {
    if (bl > STAGE_SMALL_BYTES) return this.large.pop() ?? this.small.pop() ?? new SendStage();
    return this.small.pop() ?? this.large.pop() ?? new SendStage();
  }

  /** A stage UCX is done with. */
  put(s: SendStage): void {
    if (s.large !== null) {
      if (this.large.length < LARGE_STAGES_POOLED) return void this.large.push(s);
      s.large = null;
    }
    if (this.small.length + this.large.length < STAGES_POOLED) this.small.push(s);
  }
}
