/**
 * Slab of payload slots for one direction of a session, in size classes. The sender of the
 * direction allocates (FREE → ALLOCATED, generation + 1) and marks a slot SENT before it
 * publishes the descriptor that names it; the receiver checks the descriptor's (slot,
 * generation) against the slot, and frees it (SENT → FREE) when the message is released.
 * Only one side writes each transition, so plain Atomics.store suffices (no CAS).
 *
 * Views over every slot are made once, at setup; alloc() hands out those views.
 * Exhaustion is backpressure: alloc() returns -1 and the sender reports Full.
 *
 * The peer writes the shared state and generation words too, so neither side trusts them alone:
 * the sender keeps its own record of the slots it allocated and of their generations (a peer
 * that marks one of them FREE cannot make alloc() hand it out twice), and the receiver keeps its
 * own record of the slots it holds and of the generation it last took from each (a descriptor
 * naming a slot still held, or replaying a generation taken already, is refused).
 */

import { SLOT_ALLOCATED, SLOT_FREE, SLOT_SENT, type SlabLayout } from "./layout.ts";

export class Slab {
  /** One view per slot, full slot size. */
  readonly views: Uint8Array[] = [];
  /** Per slot: its class. */
  private readonly classOf: Uint8Array;
  private readonly stateBase: number;
  private readonly genBase: number;
  /** Allocation cursor per class (sender side). */
  private readonly cursor: Int32Array;
  /** Per slot, local: sender side 1 while allocated and unsent; receiver side 1 while a message holds it. */
  private readonly mine: Uint8Array;
  /** Per slot, local: sender side the generation of its latest allocation; receiver side the last one taken. */
  private readonly gens: Int32Array;
  readonly maxSlotBytes: number;
  /** Where the segment starts in its buffer (the byteOffset of `bytes`). */
  private readonly base: number;

  constructor(
    private readonly words: Int32Array,
    bytes: Uint8Array,
    readonly layout: SlabLayout,
  ) {
    this.base = bytes.byteOffset;
    this.stateBase = layout.statesOffset >> 2;
    this.genBase = layout.gensOffset >> 2;
    this.classOf = new Uint8Array(layout.totalSlots);
    this.cursor = new Int32Array(layout.classes.length);
    this.mine = new Uint8Array(layout.totalSlots);
    this.gens = new Int32Array(layout.totalSlots);
    layout.classes.forEach((c, ci) => {
      for (let i = 0; i < c.slotCount; i++) {
        const at = c.offset + i * c.slotBytes;
        this.views.push(bytes.subarray(at, at + c.slotBytes));
        this.classOf[c.firstSlot + i] = ci;
      }
    });
    this.maxSlotBytes = layout.classes[layout.classes.length - 1]!.slotBytes;
  }

  // ---- sender side ----

  /** A free slot of at least `lenBytes` (smallest class first, larger ones when full), or -1. */
  alloc(lenBytes: number): number {
    const classes = this.layout.classes;
    for (let ci = 0; ci < classes.length; ci++) {
      const c = classes[ci]!;
      if (c.slotBytes < lenBytes) continue;
      const n = c.slotCount;
      let i = this.cursor[ci]!;
      for (let k = 0; k < n; k++) {
        const slot = c.firstSlot + i;
        i = i + 1 === n ? 0 : i + 1;
        // SYNC: pairs with Atomics.store(state, FREE) in free() on the receiving side.
        if (this.mine[slot] === 0 && Atomics.load(this.words, this.stateBase + slot) === SLOT_FREE) {
          this.cursor[ci] = i;
          this.mine[slot] = 1;
          const gen = (this.gens[slot]! + 1) | 0;
          this.gens[slot] = gen;
          this.words[this.genBase + slot] = gen;
          Atomics.store(this.words, this.stateBase + slot, SLOT_ALLOCATED);
          return slot;
        }
      }
    }
    return -1;
  }

  /** The slot's generation (sender side, after alloc): this side's record, not the shared word. */
  generation(slot: number): number {
    return this.gens[slot]!;
  }

  /** Hands the slot to the receiver; call before publishing its descriptor. */
  markSent(slot: number): void {
    this.mine[slot] = 0;
    // SYNC: pairs with Atomics.load(state) in take() on the receiving side.
    Atomics.store(this.words, this.stateBase + slot, SLOT_SENT);
  }

  /** Returns an allocated, unsent slot (a send that failed). */
  unalloc(slot: number): void {
    this.mine[slot] = 0;
    Atomics.store(this.words, this.stateBase + slot, SLOT_FREE);
  }

  /** The slot whose view `buf` lies in, or -1 when `buf` is not slab memory of this slab. */
  slotOfView(buf: Uint8Array): number {
    // Relative to the segment start (the segment may begin past offset 0 of its buffer).
    const off = buf.byteOffset - this.base;
    for (const c of this.layout.classes) {
      const end = c.offset + c.slotBytes * c.slotCount;
      if (off >= c.offset && off < end) {
        const i = Math.floor((off - c.offset) / c.slotBytes);
        if (off + buf.length > c.offset + (i + 1) * c.slotBytes) return -1;
        return c.firstSlot + i;
      }
    }
    return -1;
  }

  // ---- receiver side ----

  /**
   * Takes `slot` for a received message of `len` bytes whose descriptor names generation `gen`
   * (values the peer wrote, each read once by the caller). Returns null when the slot is in
   * range, not held by an earlier message, a generation not taken before, sent and of that
   * generation in the slab, and at least `len` bytes long; else what is wrong, with the values.
   * A taken slot is held until free().
   */
  take(slot: number, gen: number, len: number): string | null {
    if (slot >= this.layout.totalSlots) return `descriptor names slot ${slot}, the slab has ${this.layout.totalSlots}`;
    if (this.mine[slot] !== 0) return `descriptor names slot ${slot}, which a message not yet released holds (a descriptor reused)`;
    if (this.gens[slot] === gen) return `slot ${slot} generation ${gen >>> 0} is stale: that message was delivered already`;
    // SYNC: pairs with Atomics.store(state, SENT) in markSent(); the generation word is stored before it.
    const state = Atomics.load(this.words, this.stateBase + slot);
    const slabGen = this.words[this.genBase + slot]!;
    if (state !== SLOT_SENT || slabGen !== gen) {
      return `descriptor names slot ${slot} generation ${gen >>> 0}, slot is in state ${state} generation ${slabGen >>> 0}`;
    }
    const room = this.views[slot]!.length;
    if (len > room) return `${len} bytes do not fit slot ${slot} of ${room}`;
    this.mine[slot] = 1;
    this.gens[slot] = gen;
    return null;
  }

  /** Gives a taken slot back to the sender. */
  free(slot: number): void {
    this.mine[slot] = 0;
    // SYNC: pairs with Atomics.load(state) in alloc() on the sending side.
    Atomics.store(this.words, this.stateBase + slot, SLOT_FREE);
  }

  /** Slots not FREE (for tests and accounting). */
  used(): number {
    let n = 0;
    for (let s = 0; s < this.layout.totalSlots; s++) if (Atomics.load(this.words, this.stateBase + s) !== SLOT_FREE) n++;
    return n;
  }
}
