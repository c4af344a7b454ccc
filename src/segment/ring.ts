/**
 * SPSC descriptor ring over shared memory (a mapped ArrayBuffer or a SharedArrayBuffer): one
 * producer, one consumer, each possibly in another process. Indexes are free-running u32
 * counters; slot = index & (slots - 1).
 *
 * Ordering: the producer writes a descriptor with plain stores, then publishes it with
 * Atomics.store(tail); the consumer reads tail with Atomics.load before it reads any
 * descriptor. Atomics are sequentially consistent and JSC never moves plain accesses across
 * them, so a descriptor is complete before its tail is visible: a partly written descriptor
 * is never seen. Likewise the consumer frees a descriptor with Atomics.store(head) only after
 * it stopped reading it, and the producer reads head with Atomics.load before reusing it.
 *
 * The consumer may release messages out of order: `head` only moves over a released prefix,
 * so a descriptor (and an inline body in it) is never reused while a view into it is held.
 *
 * The peer's index is never trusted: each load of it lands in a local that is checked before
 * use (a peer can change the word between two reads). The consumer accepts a tail only between
 * what it already took and `slots` past its head; the producer accepts a head only at or past
 * the head it saw last and not past its own tail. Anything else is a fault: the call returns
 * RING_FAULT, `fault` says what was wrong with which values, and the connection aborts. The
 * checks are integer compares on the loaded value, paid only when the index is reloaded.
 */

import { DESC_BYTES, RING_DESCS, RING_HEAD, RING_TAIL } from "./layout.ts";

/** reserve(): the ring is full (backpressure). */
export const RING_FULL = -1;
/** reserve() / available(): the peer's index is impossible; `fault` says why. */
export const RING_FAULT = -2;

export class RingProducer {
  private readonly tailIdx: number;
  private readonly headIdx: number;
  private readonly mask: number;
  private tail: number;
  /** Last head we read (checked); reloaded only when the ring looks full. */
  private headCache: number;
  /** What was wrong with the peer's head, once reserve() returned RING_FAULT (or at setup). */
  fault: string | null = null;

  constructor(
    private readonly words: Int32Array,
    /** Byte offset of the ring in the segment. */
    readonly offset: number,
    readonly slots: number,
  ) {
    this.tailIdx = (offset + RING_TAIL) >> 2;
    this.headIdx = (offset + RING_HEAD) >> 2;
    this.mask = slots - 1;
    // The creator of the segment wrote these words: a ring whose tail is not within `slots`
    // past its head is refused (`fault`, checked by the connection at setup).
    this.tail = Atomics.load(words, this.tailIdx);
    // SYNC: pairs with the consumer's Atomics.store(head) in RingConsumer.release().
    this.headCache = Atomics.load(words, this.headIdx);
    if (((this.tail - this.headCache) >>> 0) > slots) {
      this.fault = `ring tail ${this.tail >>> 0} is ${(this.tail - this.headCache) >>> 0} ahead of head ${this.headCache >>> 0} at setup (ring size ${slots})`;
    }
  }

  /**
   * Byte offset of the next descriptor to fill; RING_FULL when the ring is full, RING_FAULT
   * when the head the consumer wrote is impossible (moved back, or past our tail).
   */
  reserve(): number {
    if (((this.tail - this.headCache) | 0) >= this.slots) {
      // SYNC: pairs with Atomics.store(head) in RingConsumer.release().
      const h = Atomics.load(this.words, this.headIdx);
      if (((h - this.headCache) | 0) < 0 || ((this.tail - h) >>> 0) > this.slots) return this.headFault(h);
      this.headCache = h;
      if (((this.tail - h) | 0) >= this.slots) return RING_FULL;
    }
    return this.offset + RING_DESCS + (this.tail & this.mask) * DESC_BYTES;
  }

  private headFault(h: number): number {
    // Named by the nearer reading: moved back from the head seen last, or past our tail.
    this.fault = ((this.headCache - h) >>> 0) < ((h - this.tail) >>> 0)
      ? `ring head moved back from ${this.headCache >>> 0} to ${h >>> 0}`
      : `ring head ${h >>> 0} is past the tail ${this.tail >>> 0} (ring size ${this.slots})`;
    return RING_FAULT;
  }

  /** Makes the descriptor returned by reserve() visible to the consumer. */
  publish(): void {
    this.tail = (this.tail + 1) | 0;
    // SYNC: pairs with Atomics.load(tail) in RingConsumer.available(); every plain store to
    // the descriptor happens before this store.
    Atomics.store(this.words, this.tailIdx, this.tail);
  }
}

export class RingConsumer {
  private readonly tailIdx: number;
  private readonly headIdx: number;
  private readonly mask: number;
  /** Next index to hand out. */
  private next: number;
  /** Oldest index not yet freed (the shared head). */
  private head: number;
  private tailCache: number;
  /** Per slot: released by the application but not yet freed because an older one is held. */
  private readonly released: Uint8Array;
  /** What was wrong with the peer's tail, once available() returned RING_FAULT. */
  fault: string | null = null;

  constructor(
    private readonly words: Int32Array,
    readonly offset: number,
    readonly slots: number,
  ) {
    this.tailIdx = (offset + RING_TAIL) >> 2;
    this.headIdx = (offset + RING_HEAD) >> 2;
    this.mask = slots - 1;
    this.head = Atomics.load(words, this.headIdx);
    this.next = this.head;
    this.tailCache = this.head;
    this.released = new Uint8Array(slots);
  }

  /**
   * Descriptors published and not yet handed out, or RING_FAULT when the tail the producer
   * wrote is impossible (behind what was taken already, or more than `slots` past the head).
   * Nonzero means "poll() has something to look at".
   */
  available(): number {
    if (this.tailCache === this.next) {
      // SYNC: pairs with Atomics.store(tail) in RingProducer.publish().
      const t = Atomics.load(this.words, this.tailIdx);
      // Valid: next <= t <= head + slots, i.e. 0 <= t - next <= slots - (next - head) (one unsigned compare).
      if (((t - this.next) >>> 0) > this.slots - ((this.next - this.head) | 0)) return this.tailFault(t);
      this.tailCache = t;
    }
    return (this.tailCache - this.next) | 0;
  }

  private tailFault(t: number): number {
    // Named by the nearer reading: moved back behind what was taken, or too far past the head.
    this.fault = ((this.next - t) >>> 0) < ((t - this.head) >>> 0)
      ? `ring tail ${t >>> 0} moved back behind ${this.next >>> 0} already published`
      : `ring tail ${t >>> 0} is ${(t - this.head) >>> 0} ahead of head ${this.head >>> 0} (ring size ${this.slots})`;
    return RING_FAULT;
  }

  /** Hands out the next descriptor: returns its index (for release) ; call available() first. */
  take(): number {
    const i = this.next;
    this.next = (i + 1) | 0;
    return i;
  }

  descOffset(index: number): number {
    return this.offset + RING_DESCS + (index & this.mask) * DESC_BYTES;
  }

  /** Marks descriptor `index` done; frees the released prefix for the producer. */
  release(index: number): void {
    this.released[index & this.mask] = 1;
    if (index !== this.head) return;
    let h = this.head;
    while (h !== this.next && this.released[h & this.mask] === 1) {
      this.released[h & this.mask] = 0;
      h = (h + 1) | 0;
    }
    this.head = h;
    // SYNC: pairs with Atomics.load(head) in RingProducer.reserve(); the consumer's reads of
    // the freed descriptors happen before this store.
    Atomics.store(this.words, this.headIdx, h);
  }

  /** Handed out and not released. */
  held(): number {
    return (this.next - this.head) | 0;
  }
}
