/**
 * Session segment layout, shared by `shm` (mmap'd POSIX shared memory) and `inproc`
 * (a SharedArrayBuffer). One segment carries one session between exactly two peers: the
 * client ("A") and the server ("B"). Everything inside is an offset from the segment start,
 * never a pointer; all words are 32-bit little-endian.
 *
 *   ┌──────────────────────────────────────────────────────────────┐ 0
 *   │ header: magic, version, sizes, generation, closed flags,     │
 *   │         region offsets, size-class table (HEADER_BYTES)      │
 *   ├──────────────────────────────────────────────────────────────┤ ringOffset[A→B]
 *   │ ring A→B: tail │ head │ doorbell seq, armed │ descriptors…   │
 *   ├──────────────────────────────────────────────────────────────┤ ringOffset[B→A]
 *   │ ring B→A (same shape)                                        │
 *   ├──────────────────────────────────────────────────────────────┤ slabOffset[A→B]
 *   │ slab A→B: slot states │ slot generations │ class 0 slots │ … │
 *   ├──────────────────────────────────────────────────────────────┤ slabOffset[B→A]
 *   │ slab B→A (same shape)                                        │
 *   └──────────────────────────────────────────────────────────────┘ totalBytes
 *
 * Each direction has its own ring and its own slab: the sender of that direction is the only
 * one that allocates slab slots (state FREE → ALLOCATED → SENT) and the receiver the only one
 * that frees them (SENT → FREE), so no slot ever needs a compare-and-swap.
 *
 * Ring control words sit on separate cache lines (producer tail, consumer head, consumer
 * doorbell) so the two processes do not false-share.
 *
 * Header (byte offsets):
 *   0 magic  4 version  8 totalBytes  12 ringSlots  16 descBytes  20 classCount
 *   24 generation  28 closed flags (bit 0: A closed, bit 1: B closed)
 *   32 ring A→B offset  36 ring B→A offset  40 slab A→B offset  44 slab B→A offset
 *   48 slab bytes (per direction)  64 size classes: classCount × {slotBytes, slotCount}
 *
 * Ring (byte offsets from the ring's start):
 *   0 unused (version 2's tail index: descriptors carry their own sequence now)
 *   64 head (consumer's next index to free)
 *   128 doorbell seq (futex word)    132 armed (0 awake, 1 parked in futex, 2 parked in event loop)
 *   136 space wanted (producer found the ring/slab full; the consumer rings it when it frees)
 *   192 descriptors: ringSlots × DESC_BYTES
 *
 * Descriptor (one 64-byte cache line, so a small message moves one line each way; the
 * consumer polls its first word, ring.ts):
 *   0 sequence (ring index + 1, never 0; stored last, it publishes the descriptor)
 *   4 headLen u8 | flags u8 | u16: the body length (inline) or the slot index (DESC_FLAG_SLOT)
 *   inline message (no DESC_FLAG_SLOT): 8 head, then body; together at most 56 bytes
 *   slot message (DESC_FLAG_SLOT): 8 bodyLen   12 slot generation   16 head, at most 48 bytes
 */

import { ProtocolError, UsageError } from "../errors.ts";
import type { SegmentConfig, SizeClass } from "./config.ts";

/** The bytes "HPSM" at offset 0, read as a little-endian u32. */
export const SEGMENT_MAGIC = 0x4d535048;
/** 3: descriptors carry a sequence word (record-sequence-last); no tail index. */
export const SEGMENT_VERSION = 3;
export const CACHE_LINE = 64;

export const HDR_MAGIC = 0;
export const HDR_VERSION = 4;
export const HDR_TOTAL_BYTES = 8;
export const HDR_RING_SLOTS = 12;
export const HDR_DESC_BYTES = 16;
export const HDR_CLASS_COUNT = 20;
export const HDR_GENERATION = 24;
export const HDR_CLOSED = 28;
export const HDR_RING_AB = 32;
export const HDR_RING_BA = 36;
export const HDR_SLAB_AB = 40;
export const HDR_SLAB_BA = 44;
export const HDR_SLAB_BYTES = 48;
export const HDR_CLASSES = 64;
export const MAX_CLASSES = 8;
/** Slots per direction at most: each gets a view and table entries at setup, so a peer's header cannot make setup build millions. */
export const MAX_SLOTS = 1 << 16;
export const HEADER_BYTES = HDR_CLASSES + MAX_CLASSES * 8; // 128

export const CLOSED_A = 1;
export const CLOSED_B = 2;

export const RING_HEAD = CACHE_LINE;
export const RING_DOORBELL = RING_HEAD + CACHE_LINE;
export const RING_ARMED = RING_DOORBELL + 4;
/** Set by the producer when it found the ring or slab full; the consumer rings it on release. */
export const RING_SPACE_WANTED = RING_DOORBELL + 8;
export const RING_DESCS = RING_DOORBELL + CACHE_LINE;

export const ARMED_AWAKE = 0;
export const ARMED_FUTEX = 1;
export const ARMED_EVENT_LOOP = 2;

export const DESC_BYTES = CACHE_LINE;
/** The sequence word that publishes the descriptor (ring.ts seqOf). */
export const DESC_SEQ = 0;
/** headLen (bits 0-7) | flags (bits 8-15) | body length inline, slot index in a slot message (bits 16-31). */
export const DESC_LEN_FLAGS = 4;
/** Inline messages: head and body from here to the end of the descriptor. */
export const DESC_INLINE = 8;
export const DESC_INLINE_BYTES = DESC_BYTES - DESC_INLINE; // 56
/** Slot messages: the body length and the slot's generation, then the head. */
export const DESC_BODY_LEN = 8;
export const DESC_SLOT_GEN = 12;
export const DESC_SLOT_HEAD = 16;
export const DESC_SLOT_HEAD_BYTES = DESC_BYTES - DESC_SLOT_HEAD; // 48
export const DESC_FLAG_SLOT = 1;

export const SLOT_FREE = 0;
export const SLOT_ALLOCATED = 1;
export const SLOT_SENT = 2;

// A 24-byte RPC wire header and a 32-byte body travel inline; a 24-byte application header fits
// beside the wire header of a slot message.
// Slot indexes travel in 16 bits, heads' lengths in 8.
if (DESC_INLINE_BYTES !== 56 || DESC_SLOT_HEAD_BYTES !== 48 || RING_DESCS !== 192 || HEADER_BYTES !== 128 || MAX_SLOTS > 1 << 16) {
  throw new Error("shm layout constants drifted");
}

// The segment's shape is part of the contract (connect options name it): declared there.
export type { SegmentConfig, SizeClass };

/**
 * Defaults: 256 descriptors each way; slab classes sized so 8 callers with 256 KiB messages
 * keep flowing (16 × 256 KiB) and 16 MiB messages fit (1 slot); ~37 MiB per direction of
 * which only touched pages cost memory.
 */
export const DEFAULT_SEGMENT_CONFIG: SegmentConfig = {
  ringSlots: 256,
  sizeClasses: [
    { slotBytes: 4 << 10, slotCount: 256 },
    { slotBytes: 64 << 10, slotCount: 64 },
    { slotBytes: 256 << 10, slotCount: 16 },
    { slotBytes: 1 << 20, slotCount: 8 },
    { slotBytes: 16 << 20, slotCount: 1 },
  ],
};

export interface SlabLayout {
  offset: number;
  /** Byte offset of the state words (one u32 per slot, all classes in order). */
  statesOffset: number;
  gensOffset: number;
  totalSlots: number;
  /** Per class: first slot index and byte offset of slot 0. */
  classes: Array<SizeClass & { firstSlot: number; offset: number }>;
}

export interface SegmentLayout {
  totalBytes: number;
  ringSlots: number;
  ringBytes: number;
  /** Ring offsets by direction: [A→B, B→A]. */
  rings: [number, number];
  slabs: [SlabLayout, SlabLayout];
  slabBytes: number;
  sizeClasses: SizeClass[];
}

const align = (n: number, a = CACHE_LINE) => Math.ceil(n / a) * a;

function slabLayout(offset: number, classes: SizeClass[]): { layout: SlabLayout; bytes: number } {
  const totalSlots = classes.reduce((n, c) => n + c.slotCount, 0);
  const statesOffset = offset;
  const gensOffset = statesOffset + align(totalSlots * 4);
  let at = gensOffset + align(totalSlots * 4);
  let firstSlot = 0;
  const out: SlabLayout["classes"] = [];
  for (const c of classes) {
    out.push({ ...c, firstSlot, offset: at });
    firstSlot += c.slotCount;
    at += align(c.slotBytes * c.slotCount);
  }
  return { layout: { offset, statesOffset, gensOffset, totalSlots, classes: out }, bytes: at - offset };
}

export function validateConfig(cfg: SegmentConfig): void {
  const { ringSlots, sizeClasses } = cfg;
  if (!Number.isInteger(ringSlots) || ringSlots < 2 || ringSlots > 1 << 16 || (ringSlots & (ringSlots - 1)) !== 0) {
    throw new UsageError(`shm ringSlots ${ringSlots} must be a power of two in 2..65536`);
  }
  if (sizeClasses.length === 0 || sizeClasses.length > MAX_CLASSES) {
    throw new UsageError(`shm needs 1..${MAX_CLASSES} size classes, got ${sizeClasses.length}`);
  }
  let prev = 0;
  for (const c of sizeClasses) {
    if (!Number.isInteger(c.slotBytes) || c.slotBytes <= prev || c.slotBytes % CACHE_LINE !== 0) {
      throw new UsageError(`shm size class ${c.slotBytes} bytes: classes must grow and be multiples of ${CACHE_LINE}`);
    }
    if (!Number.isInteger(c.slotCount) || c.slotCount < 1) throw new UsageError(`shm size class ${c.slotBytes}: slotCount must be ≥ 1`);
    prev = c.slotBytes;
  }
  const slots = sizeClasses.reduce((n, c) => n + c.slotCount, 0);
  if (slots > MAX_SLOTS) throw new UsageError(`shm size classes have ${slots} slots, at most ${MAX_SLOTS} per direction`);
}

export function computeLayout(cfg: SegmentConfig): SegmentLayout {
  validateConfig(cfg);
  const ringBytes = RING_DESCS + cfg.ringSlots * DESC_BYTES;
  const ringAB = HEADER_BYTES;
  const ringBA = ringAB + align(ringBytes);
  const slabStart = ringBA + align(ringBytes);
  const ab = slabLayout(slabStart, cfg.sizeClasses);
  const ba = slabLayout(slabStart + ab.bytes, cfg.sizeClasses);
  const totalBytes = slabStart + ab.bytes + ba.bytes;
  if (totalBytes > 0xffffffff) throw new UsageError(`shm segment of ${totalBytes} bytes exceeds 4 GiB`);
  return { totalBytes, ringSlots: cfg.ringSlots, ringBytes, rings: [ringAB, ringBA], slabs: [ab.layout, ba.layout], slabBytes: ab.bytes, sizeClasses: cfg.sizeClasses };
}

/** Writes the header of a fresh segment (the creator does this before the peer maps it). */
export function writeHeader(words: Uint32Array, l: SegmentLayout, generation: number): void {
  words[HDR_VERSION / 4] = SEGMENT_VERSION;
  words[HDR_TOTAL_BYTES / 4] = l.totalBytes;
  words[HDR_RING_SLOTS / 4] = l.ringSlots;
  words[HDR_DESC_BYTES / 4] = DESC_BYTES;
  words[HDR_CLASS_COUNT / 4] = l.sizeClasses.length;
  words[HDR_GENERATION / 4] = generation;
  words[HDR_CLOSED / 4] = 0;
  words[HDR_RING_AB / 4] = l.rings[0];
  words[HDR_RING_BA / 4] = l.rings[1];
  words[HDR_SLAB_AB / 4] = l.slabs[0].offset;
  words[HDR_SLAB_BA / 4] = l.slabs[1].offset;
  words[HDR_SLAB_BYTES / 4] = l.slabBytes;
  l.sizeClasses.forEach((c, i) => {
    words[HDR_CLASSES / 4 + 2 * i] = c.slotBytes;
    words[HDR_CLASSES / 4 + 2 * i + 1] = c.slotCount;
  });
  // Magic last: a peer that sees it sees a complete header.
  Atomics.store(words as unknown as Int32Array, HDR_MAGIC / 4, SEGMENT_MAGIC | 0);
}

/**
 * Reads and checks the header of a segment made by the peer: magic, version, sizes within the
 * bounds validateConfig() sets (ring size a power of two in 2..65536, 1..8 classes growing in
 * multiples of 64 bytes, at most MAX_SLOTS slots, the whole under 4 GiB and within the `lenBytes`
 * mapped), and every offset equal to what this side derives from those sizes (so regions lie
 * in order, inside the mapping, never overlapping). Each word is read once: the peer may still
 * be writing it. Nothing re-reads the header afterwards; the returned layout is this side's.
 * Throws ProtocolError naming the value.
 */
export function readHeader(words: Uint32Array, what: string, lenBytes: number): SegmentLayout {
  const magic = words[HDR_MAGIC / 4]!;
  if (magic !== SEGMENT_MAGIC) throw new ProtocolError(`${what}: bad magic 0x${magic.toString(16)}, not a hotpath segment`);
  const version = words[HDR_VERSION / 4]!;
  if (version !== SEGMENT_VERSION) throw new ProtocolError(`${what}: segment has version ${version}, expected ${SEGMENT_VERSION}`);
  const count = words[HDR_CLASS_COUNT / 4]!;
  if (count < 1 || count > MAX_CLASSES) throw new ProtocolError(`${what}: ${count} size classes`);
  const sizeClasses: SizeClass[] = [];
  for (let i = 0; i < count; i++) {
    sizeClasses.push({ slotBytes: words[HDR_CLASSES / 4 + 2 * i]!, slotCount: words[HDR_CLASSES / 4 + 2 * i + 1]! });
  }
  let l: SegmentLayout;
  try {
    l = computeLayout({ ringSlots: words[HDR_RING_SLOTS / 4]!, sizeClasses });
  } catch (e) {
    throw new ProtocolError(`${what}: header: ${(e as Error).message}`);
  }
  const checks: Array<[string, number, number]> = [
    ["totalBytes", words[HDR_TOTAL_BYTES / 4]!, l.totalBytes],
    ["descBytes", words[HDR_DESC_BYTES / 4]!, DESC_BYTES],
    ["ring A→B offset", words[HDR_RING_AB / 4]!, l.rings[0]],
    ["ring B→A offset", words[HDR_RING_BA / 4]!, l.rings[1]],
    ["slab A→B offset", words[HDR_SLAB_AB / 4]!, l.slabs[0].offset],
    ["slab B→A offset", words[HDR_SLAB_BA / 4]!, l.slabs[1].offset],
  ];
  for (const [name, got, want] of checks) {
    if (got !== want) throw new ProtocolError(`${what}: header ${name} is ${got}, expected ${want}`);
  }
  if (l.totalBytes > lenBytes) throw new ProtocolError(`${what}: layout needs ${l.totalBytes} bytes, segment has ${lenBytes}`);
  return l;
}
