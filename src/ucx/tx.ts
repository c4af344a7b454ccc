/**
 * Sending ucx messages (data path): the limits that choose how a send goes (UcxConnection.trySend),
 * and the pooled staging buffer a send copies into when UCX cannot take the caller's memory at once.
 *
 * Contract: a SendStage belongs to one connection; it is filled, handed to UcpEndpoint.amSend
 * (which keeps it reachable while the send is in flight) and back in the connection's pool
 * once the send completed. Its `head` and `body` views are reused while the lengths stay the
 * same, so a steady stream of sends allocates nothing.
 *
 *   const s = stages.pop() ?? new SendStage();  s.fill(head, body, body.length);
 *   ep.amSend(AM_DATA, s.head, s.body, done, s);   // done(status, s) puts it back
 *
 * Threading: the connection's thread.
 */

import { POOLED_HEAD_BYTES } from "./rx.ts";

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
/** Staging buffers a connection keeps for reuse (more are made while more sends are in flight, and dropped after). */
export const STAGES_POOLED = 16;

const EMPTY_BYTES = new Uint8Array(0);

/** A send's own copy of head and body, reused once UCX is done with it. */
export class SendStage {
  readonly headStore = new Uint8Array(POOLED_HEAD_BYTES);
  readonly bodyStore = new Uint8Array(STAGED_MAX_BYTES);
  head = EMPTY_BYTES;
  body: Uint8Array | null = null;
  private bodyView = EMPTY_BYTES;
  bytes = 0;

  fill(head: Uint8Array, body: Uint8Array | null, bl: number): void {
    if (this.head.length !== head.length) this.head = this.headStore.subarray(0, head.length);
    this.head.set(head);
    if (bl === 0) this.body = null;
    else {
      if (this.bodyView.length !== bl) this.bodyView = this.bodyStore.subarray(0, bl);
      this.bodyView.set(body!);
      this.body = this.bodyView;
    }
    this.bytes = head.length + bl;
  }
}

