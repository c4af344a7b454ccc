/**
 * Pieces of the segment data path kept apart from channel.ts: the message object each ring
 * descriptor delivers through, the small-copy routine of the send path, what a throwing
 * receiver becomes and what a refused descriptor's fault says.
 *
 * Contract: a SegmentRxMessage is owned by its channel and reused for every message of its
 * descriptor (valid from delivery until release(), then possibly describing a later message).
 * Example: copyInto(bytes, words, at, src) copies src to bytes[at ..).
 *
 * Threading: the connection's thread.
 */

import { HotpathError, ProtocolError } from "../errors.ts";
import type { RxMessage } from "../contract/transport.ts";
import { DESC_FLAG_SLOT, DESC_INLINE_BYTES, DESC_SLOT_HEAD_BYTES } from "./layout.ts";

/** What a message asks of the channel that delivered it. */
export interface MessageOwner {
  /** The body view of a message (cached per descriptor / slot). */
  bodyView(m: SegmentRxMessage): Uint8Array;
  /** Frees the message's slot and descriptor. */
  releaseMessage(index: number, slot: number): void;
}

/**
 * One per ring descriptor, reused for every message that descriptor carries: a descriptor is
 * handed out again only after its message was released, so a message object is never shared by
 * two live messages. A released message object may be reused for a later message (its fields
 * then describe that one): keep nothing of it past release().
 */
export class SegmentRxMessage implements RxMessage {
  /** Ring index of the message it describes now. */
  index = 0;
  headOffset = 0;
  headLength = 0;
  bodyLength = 0;
  /** Slab slot of the body, or -1 when the body is inline after the head. */
  slot = -1;
  /** Delivered and not yet released. */
  held = false;
  constructor(
    private readonly conn: MessageOwner,
    readonly headBuf: Uint8Array,
    readonly headWords: Int32Array,
  ) {}
  get head(): Uint8Array {
    return this.headBuf.subarray(this.headOffset, this.headOffset + this.headLength);
  }
  get body(): Uint8Array {
    return this.conn.bodyView(this);
  }
  release(): void {
    if (!this.held) return;
    this.held = false;
    this.conn.releaseMessage(this.index, this.slot);
  }
}

/** The head trySendWords() writes: six words. */
export const WORDS_HEAD_BYTES = 24;
/**
 * Bodies and heads up to this many bytes are copied by a loop of word stores rather than
 * TypedArray.set: measured in Bun 1.4.5, set() costs ~30-40 ns for any small length (a call
 * into the runtime), the loop ~15 ns for 32 bytes and more than set() above ~48.
 */
const SMALL_COPY_BYTES = 32;

/**
 * Copies `src` to `bytes[at ..)` (`words` is the same memory): word stores (4 bytes assembled
 * little-endian, the segment's byte order) for small lengths at an aligned `at`, else set().
 */
export function copyInto(bytes: Uint8Array, words: Int32Array, at: number, src: Uint8Array): void {
  const len = src.length;
  if (len > SMALL_COPY_BYTES) {
    bytes.set(src, at);
    return;
  }
  let k = 0;
  if ((at & 3) === 0) {
    for (; k + 4 <= len; k += 4) words[(at + k) >> 2] = src[k]! | (src[k + 1]! << 8) | (src[k + 2]! << 16) | (src[k + 3]! << 24);
  }
  for (; k < len; k++) bytes[at + k] = src[k]!;
}

/** What a throwing receiver becomes: its own HotpathError, or a ProtocolError naming what it threw. */
export function receiverFailed(what: string, thrown: unknown): HotpathError {
  let why: string;
  try {
    if (thrown instanceof HotpathError) return thrown;
    why = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : String(thrown);
  } catch {
    why = "a value that cannot be described";
  }
  return new ProtocolError(`${what}: the receiver threw ${why}`);
}


/** What is wrong with a descriptor whose length/flags word (as read: `lf`) and body length `bl` the delivery loop refused. */
export function descriptorFault(lf: number, bl: number): string {
  const hl = lf & 0xff;
  const flags = (lf >>> 8) & 0xff;
  if (flags === DESC_FLAG_SLOT) return `descriptor head of ${hl} bytes exceeds ${DESC_SLOT_HEAD_BYTES}`;
  if (flags !== 0) return `descriptor flags 0x${flags.toString(16)} are not known (0x${DESC_FLAG_SLOT.toString(16)}: a slot message, 0: inline)`;
  return `inline message of ${hl}+${bl} bytes exceeds ${DESC_INLINE_BYTES}`;
}
