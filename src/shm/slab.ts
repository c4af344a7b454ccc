/**
 * Slab of payload slots for one direction of a session, in size classes. The sender of the
 * direction allocates (FREE → ALLOCATED, generation + 1) and marks a slot SENT before it
 * publishes the descriptor that names it; the receiver checks the descriptor's (slot,
 * generation) against the slot, and frees it (SENT → FREE) when the message is released.
 * Only one side writes each transition, so plain Atomics.store suffices (no CAS).
 *
 * Views over every slot are made once, at setup; alloc() hands out those views.
 * Exhaustion is backpressure: alloc() returns -1 and the sender reports Full.
 */

import { ProtocolError } from "../errors.ts";
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
  readonly maxSlotBytes: number;

  constructor(
    private readonly words: Int32Array,
    bytes: Uint8Array,
    readonly layout: SlabLayout,
  ) {
    this.stateBase = layout.statesOffset >> 2;
    this.genBase = layout.gensOffset >> 2;
    this.classOf = new Uint8Array(layout.totalSlots);
    this.cursor = new Int32Array(layout.classes.length);
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
        if (Atomics.load(this.words, this.stateBase + slot) === SLOT_FREE) {
          this.cursor[ci] = i;
          Atomics.store(this.words, this.stateBase + slot, SLOT_ALLOCATED);
          this.words[this.genBase + slot] = (this.words[this.genBase + slot]! + 1) | 0;
          return slot;
        }
      }
    }
    return -1;
  }

  /** The slot's generation (sender side, after alloc). */
  generation(slot: number): number {
    return this.words[this.genBase + slot]!;
  }

  /** Hands the slot to the receiver; call before publishing its descriptor. */
  markSent(slot: number): void {
    // SYNC: pairs with Atomics.load(state) in check() on the receiving side.
    Atomics.store(this.words, this.stateBase + slot, SLOT_SENT);
  }

  /** Returns an allocated, unsent slot (a send that failed). */
  unalloc(slot: number): void {
    Atomics.store(this.words, this.stateBase + slot, SLOT_FREE);
  }

  /** The slot whose view `buf` lies in, or -1 when `buf` is not slab memory of this slab. */
  slotOfView(buf: Uint8Array): number {
    const off = buf.byteOffset;
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

  isAllocated(slot: number): boolean {
    return Atomics.load(this.words, this.stateBase + slot) === SLOT_ALLOCATED;
  }

  // ---- receiver side ----

  /** Throws ProtocolError unless `slot` is a sent slot of generation `gen` able to hold `len` bytes. */
  check(slot: number, gen: number, len: number): void {
    if (slot >= this.layout.totalSlots) throw new ProtocolError(`shm: descriptor names slot ${slot}, slab has ${this.layout.totalSlots}`);
    // SYNC: pairs with Atomics.store(state, SENT) in markSent().
    const state = Atomics.load(this.words, this.stateBase + slot);
    if (state !== SLOT_SENT || this.words[this.genBase + slot] !== gen) {
      throw new ProtocolError(`shm: descriptor names slot ${slot} generation ${gen >>> 0}, slot is in state ${state} generation ${this.words[this.genBase + slot]! >>> 0}`);
    }
    if (len > this.views[slot]!.length) throw new ProtocolError(`shm: ${len} bytes do not fit slot ${slot} of ${this.views[slot]!.length}`);
  }

  /** Gives the slot back to the sender. */
  free(slot: number): void {
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
