/**
 * SPSC descriptor ring over shared memory (a mapped ArrayBuffer or a SharedArrayBuffer): one
 * producer, one consumer, each possibly in another process. Indexes are free-running u32
 * counters; slot = index & (slots - 1).
 *
 * Record-sequence-last (Aeron's OneToOneRingBuffer writes the record length last): there is no
 * shared tail index. The producer writes a descriptor with plain stores, then publishes it by
 * storing its sequence word (seqOf(index): index + 1, never 0) with Atomics.store; the
 * consumer reads the sequence word of the descriptor it expects next with Atomics.load before
 * it reads anything else of it. Atomics are sequentially consistent and JSC never moves plain
 * accesses across them, so a descriptor is complete before its sequence is visible: a partly
 * written descriptor is never seen, and the consumer polls the very cache line it then reads.
 * The consumer frees descriptors with Atomics.store(head) only after it stopped reading them,
 * and the producer reads head with Atomics.load before reusing one.
 *
 * The consumer may release messages out of order: `head` only moves over a released prefix,
 * so a descriptor (and an inline body in it) is never reused while a view into it is held.
 *
 * Nothing the peer wrote is trusted: each load lands in a local that is checked before use (a
 * peer can change the word between two reads). The consumer takes the descriptor at `next`
 * only when its sequence is exactly seqOf(next), and never while it holds a ring's worth
 * already; a sequence that is neither that nor "not yet" (0, never written, or the previous
 * lap's seqOf(next - slots)) is a fault. The producer accepts a head only at or past the head
 * it saw last and not past its own tail. A fault makes the call return RING_FAULT, `fault`
 * says what was wrong with which values, and the connection aborts.
 *
 * Example: const d = p.reserve(); if (d >= 0) { fill(d); p.publish(); }
 *          if (c.available() > 0) { const i = c.take(); read(c.descOffset(i)); c.release(i); }
 * Threading: a producer or consumer belongs to its connection's thread.
 */

import { DESC_BYTES, DESC_SEQ, RING_DESCS, RING_HEAD } from "./layout.ts";

/** reserve(): the ring is full (backpressure). */
export const RING_FULL = -1;
/** reserve() / available() / takeNext(): what the peer wrote is impossible; `fault` says why. */
export const RING_FAULT = -2;
/** takeNext(): nothing published yet. */
export const RING_EMPTY = -1;

/** The sequence word that publishes ring index `index`: index + 1, with 0 (never written) skipped. */
export function seqOf(index: number): number {
  return ((index + 1) | 0) || 1;
}

const DESC_WORDS = DESC_BYTES >> 2;

export class RingProducer {
  private readonly headIdx: number;
  /** Word index of descriptor 0's sequence word. */
  private readonly seqBase: number;
  private readonly mask: number;
  private tail: number;
  /** Last head we read (checked); reloaded only when the ring looks full. */
  private headCache: number;
  /** What was wrong with the peer's head, once reserve() returned RING_FAULT. */
  fault: string | null = null;

  constructor(
    private readonly words: Int32Array,
    /** Byte offset of the ring in the segment. */
    readonly offset: number,
    readonly slots: number,
  ) {
    this.headIdx = (offset + RING_HEAD) >> 2;
    this.seqBase = (offset + RING_DESCS + DESC_SEQ) >> 2;
    this.mask = slots - 1;
    // A session's segment is fresh: nothing is published yet, so the first index is the head.
    // SYNC: pairs with the consumer's Atomics.store(head) in RingConsumer.release().
    this.headCache = Atomics.load(words, this.headIdx);
    this.tail = this.headCache;
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
    const t = this.tail;
    this.tail = (t + 1) | 0;
    // SYNC: pairs with Atomics.load(seq) in RingConsumer.available(); every plain store to
    // the descriptor happens before this store.
    Atomics.store(this.words, this.seqBase + (t & this.mask) * DESC_WORDS, seqOf(t));
  }
}

export class RingConsumer {
  private readonly headIdx: number;
  private readonly seqBase: number;
  private readonly mask: number;
  /** Next index to hand out. */
  private next: number;
  /** The index takeNext() handed out last. */
  taken = 0;
  /** Oldest index not yet freed (the shared head). */
  private head: number;
  /** Per slot: released by the application but not yet freed because an older one is held. */
  private readonly released: Uint8Array;
  /** What was wrong with the peer's sequence word, once available() returned RING_FAULT. */
  fault: string | null = null;

  constructor(
    private readonly words: Int32Array,
    readonly offset: number,
    readonly slots: number,
  ) {
    this.headIdx = (offset + RING_HEAD) >> 2;
    this.seqBase = (offset + RING_DESCS + DESC_SEQ) >> 2;
    this.mask = slots - 1;
    this.head = Atomics.load(words, this.headIdx);
    this.next = this.head;
    this.released = new Uint8Array(slots);
  }

  /**
   * 1 when the descriptor at `next` is published, 0 when not yet (or this side holds a ring's
   * worth), RING_FAULT when its sequence word is impossible. Nonzero means "poll() has
   * something to look at". One Atomics.load of the descriptor's own cache line.
   */
  available(): number {
    const next = this.next;
    // Every descriptor is held here: none can be new (a sequence written into a held one is ignored).
    if (((next - this.head) | 0) >= this.slots) return 0;
    // SYNC: pairs with Atomics.store(seq) in RingProducer.publish().
    const s = Atomics.load(this.words, this.seqBase + (next & this.mask) * DESC_WORDS);
    if (s === seqOf(next)) return 1;
    if (s === 0 || s === seqOf(next - this.slots)) return 0;
    return this.seqFault(next, s);
  }

  private seqFault(next: number, s: number): number {
    this.fault = `ring descriptor ${next >>> 0} has sequence ${s >>> 0}, neither ${seqOf(next) >>> 0} (published) nor ${seqOf(next - this.slots) >>> 0} (not yet; ring size ${this.slots})`;
    return RING_FAULT;
  }

  /**
   * available() and take() in one: the byte offset of the next descriptor when it is published
   * (its index is then `taken`, for release()), RING_EMPTY when not yet, RING_FAULT (see
   * available()). The delivery loop's one call per message.
   */
  takeNext(): number {
    const next = this.next;
    if (((next - this.head) | 0) >= this.slots) return RING_EMPTY;
    const k = next & this.mask;
    // SYNC: pairs with Atomics.store(seq) in RingProducer.publish().
    const s = Atomics.load(this.words, this.seqBase + k * DESC_WORDS);
    if (s !== seqOf(next)) return s === 0 || s === seqOf(next - this.slots) ? RING_EMPTY : this.seqFault(next, s);
    this.taken = next;
    this.next = (next + 1) | 0;
    return this.offset + RING_DESCS + k * DESC_BYTES;
  }

  /** Hands out the next descriptor: returns its index (for release); call available() first. */
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
    if (index === this.head && ((index + 1) | 0) === this.next) {
      // The only one held (the usual case): no bitmap to walk.
      this.head = this.next;
      // SYNC: pairs with Atomics.load(head) in RingProducer.reserve(), as below.
      Atomics.store(this.words, this.headIdx, this.next);
      return;
    }
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
