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
 */

import { DESC_BYTES, RING_DESCS, RING_HEAD, RING_TAIL } from "./layout.ts";

export class RingProducer {
  private readonly tailIdx: number;
  private readonly headIdx: number;
  private readonly mask: number;
  private tail: number;
  /** Last head we read; reloaded only when the ring looks full. */
  private headCache: number;

  constructor(
    private readonly words: Int32Array,
    /** Byte offset of the ring in the segment. */
    readonly offset: number,
    readonly slots: number,
  ) {
    this.tailIdx = (offset + RING_TAIL) >> 2;
    this.headIdx = (offset + RING_HEAD) >> 2;
    this.mask = slots - 1;
    // SYNC: pairs with the consumer's Atomics.store(head) in RingConsumer.release().
    this.tail = Atomics.load(words, this.tailIdx);
    this.headCache = Atomics.load(words, this.headIdx);
  }

  /** Byte offset of the next descriptor to fill, or -1 when the ring is full. */
  reserve(): number {
    if (((this.tail - this.headCache) | 0) >= this.slots) {
      // SYNC: pairs with Atomics.store(head) in RingConsumer.release().
      this.headCache = Atomics.load(this.words, this.headIdx);
      if (((this.tail - this.headCache) | 0) >= this.slots) return -1;
    }
    return this.offset + RING_DESCS + (this.tail & this.mask) * DESC_BYTES;
  }

  /** Makes the descriptor returned by reserve() visible to the consumer. */
  publish(): void {
    this.tail = (this.tail + 1) | 0;
    // SYNC: pairs with Atomics.load(tail) in RingConsumer.available(); every plain store to
    // the descriptor happens before this store.
    Atomics.store(this.words, this.tailIdx, this.tail);
  }

  /** Messages published and not yet freed by the consumer (reads head). */
  inFlight(): number {
    // SYNC: pairs with Atomics.store(head) in RingConsumer.release().
    this.headCache = Atomics.load(this.words, this.headIdx);
    return (this.tail - this.headCache) | 0;
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

  /** Descriptors published and not yet handed out. */
  available(): number {
    if (this.tailCache === this.next) {
      // SYNC: pairs with Atomics.store(tail) in RingProducer.publish().
      this.tailCache = Atomics.load(this.words, this.tailIdx);
    }
    return (this.tailCache - this.next) | 0;
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
