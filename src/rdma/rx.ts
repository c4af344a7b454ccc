/**
 * Received rdma messages: views into the runtime's receive slab (small messages, one SRQ slot
 * each) or into the connection's landing zone (large ones), valid until release(), and the
 * placeholder of a message skipped for its size (contract item 8).
 *
 * Ownership: a message holds its slot (or the zone) until release(), which is idempotent and
 * hands it back to the connection (re-post, credit owed; zone: a new grant). The connection
 * reuses released objects. Thread: the connection's.
 */

import type { RxMessage } from "../contract/transport.ts";

/** `slot` of a message that lives in the landing zone. */
export const ZONE_SLOT = -2;
/** `slot` of a released message. */
export const NO_SLOT = -1;

/** What a message hands back on release. */
export interface RxOwner {
  onRelease(m: RdmaRxMessage, slot: number): void;
}

export class RdmaRxMessage implements RxMessage {
  head: Uint8Array = EMPTY;
  body: Uint8Array = EMPTY;
  headBuf: Uint8Array = EMPTY;
  headOffset = 0;
  headLength = 0;
  bodyLength = 0;
  /** Words over headBuf (slab messages: their head starts 4-aligned); undefined for zone messages. */
  headWords: Int32Array | undefined = undefined;
  /** The slab slot held, ZONE_SLOT, or NO_SLOT once released. */
  slot = NO_SLOT;
  constructor(private readonly owner: RxOwner) {}

  /** Points the views at `buf[at + 12 ..]`: head of `hl` bytes, then body of `bl`. */
  fill(buf: Uint8Array, at: number, hl: number, bl: number, slot: number, words: Int32Array | undefined): void {
    this.headBuf = buf;
    this.headWords = words;
    this.headOffset = at;
    this.headLength = hl;
    this.bodyLength = bl;
    this.head = buf.subarray(at, at + hl);
    this.body = buf.subarray(at + hl, at + hl + bl);
    this.slot = slot;
  }

  release(): void {
    const s = this.slot;
    if (s === NO_SLOT) return;
    this.slot = NO_SLOT;
    this.owner.onRelease(this, s);
  }
}

const EMPTY = new Uint8Array(0);

/** A message skipped for its size, waiting in the queue for its turn to be reported. */
export class Oversized {
  constructor(
    readonly head: Uint8Array,
    readonly bodyLength: number,
  ) {}
}
