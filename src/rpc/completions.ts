/**
 * CompletionRing: the client's queue of completed hot-path calls waiting for poll(), at most one
 * entry per slot (so `size` = the window suffices), in arrival order. Allocation-free.
 *
 * Contract: push() a completion (the message, still the transport's view, or an error);
 * shift() returns the oldest entry's slot and leaves its message and error in `msg` / `err`
 * (the caller releases the message). ownQueued() at close. The client's thread.
 *
 * Example: ring.push(3, msg, null); const slot = ring.shift(); use(ring.msg); ring.msg?.release();
 */

import { copyBytes, EMPTY_BYTES } from "../bytes.ts";
import type { HotpathError } from "../errors.ts";
import type { RxMessage } from "../contract/transport.ts";

export class CompletionRing {
  private readonly slots: Int32Array;
  private readonly msgs: (RxMessage | null)[];
  private readonly errs: (HotpathError | null)[];
  private head = 0;
  private count = 0;
  /** The message and error of the entry shift() returned last. */
  msg: RxMessage | null = null;
  err: HotpathError | null = null;

  constructor(private readonly size: number) {
    this.slots = new Int32Array(size);
    this.msgs = new Array(size).fill(null);
    this.errs = new Array(size).fill(null);
  }

  get length(): number {
    return this.count;
  }

  push(slot: number, msg: RxMessage | null, err: HotpathError | null): void {
    let i = this.head + this.count;
    if (i >= this.size) i -= this.size;
    this.slots[i] = slot;
    this.msgs[i] = msg;
    this.errs[i] = err;
    this.count++;
  }

  /** The oldest entry's slot (its message and error in `msg` / `err`); the ring must not be empty. */
  shift(): number {
    const i = this.head;
    this.msg = this.msgs[i]!;
    this.err = this.errs[i]!;
    this.msgs[i] = null;
    this.errs[i] = null;
    this.head = i + 1 === this.size ? 0 : i + 1;
    this.count--;
    return this.slots[i]!;
  }

  /** See ownQueued(). */
  ownQueued(): void {
    ownQueued(this.msgs, this.head, this.count);
  }
}


/**
 * At close, the responses that arrived but wait in the client's completion queue (`msgs`, a ring
 * of `msgs.length` from `head`, `count` long) give their views back to the transport (a ring slot,
 * a read buffer, a receive slot: the connection may go away before the next poll(), or never see
 * one) and wait as owned copies instead, which that poll() still delivers. Cold path: allocates.
 */
export function ownQueued(msgs: (RxMessage | null)[], head: number, count: number): void {
  for (let k = 0, i = head; k < count; k++, i = i + 1 === msgs.length ? 0 : i + 1) {
    const msg = msgs[i];
    if (msg == null || msg instanceof OwnedMessage) continue;
    msgs[i] = new OwnedMessage(copyBytes(msg.body));
    msg.release();
  }
}

/** A response body the client owns (ownQueued, slots.ts splitResponse): release() does nothing. */
export class OwnedMessage implements RxMessage {
  readonly head = EMPTY_BYTES;
  readonly headBuf = EMPTY_BYTES;
  readonly headOffset = 0;
  readonly headLength = 0;
  constructor(readonly body: Uint8Array) {}
  get bodyLength(): number {
    return this.body.length;
  }
  release(): void {}
}
