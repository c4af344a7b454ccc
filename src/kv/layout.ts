/**
 * The kv arena's layout: one contiguous block holding a header, the hash index and the heap of
 * entry records, so one RMA registration of the whole arena lets a client read any of it. The
 * server (store.ts) writes it; one-sided readers (verify.ts) parse it. All integers little-endian.
 *
 *   0                 64                          heapOffset                       arenaBytes
 *   +-----------------+---------------------------+--------------------------------+
 *   | header (64 B)   | groupCount groups × 256 B | heap: slab pages of entries    |
 *   +-----------------+---------------------------+--------------------------------+
 *
 *   header: +0 u32 magic "HPKV" (0x564b5048)  +4 u32 layoutVersion 1  +8 u32 groupCount
 *           +12 u32 slotsPerGroup 7  +16 u64 indexOffset (64)  +24 u64 heapOffset
 *           +32 u64 heapBytes  +40 u32 hashSeed  (rest zero)
 *   group:  +0 u32 overflow (keys of this group kept outside its slots; server-side only)
 *           (rest of the 32 B group header zero), then 7 slots of 32 B
 *   slot:   +0 u32 hash (0 = empty)  +4 u32 entryBytes  +8 u64 entryOffset  +16 u64 version
 *           +24 u32 crc32(slot[0..24))  +28 u32 zero
 *   entry:  +0 u64 version  +8 u32 keyLen  +12 u32 valueLen
 *           +16 u32 crc32(entry[0..16) ++ key ++ value)  +20 u32 zero  +24 key  then value
 *
 * Write order (server, one thread; RMA readers read concurrently): a PUT writes the new entry
 * record completely (crc last) into fresh heap memory, then the slot (crc last), then frees the
 * old entry; a DEL clears the slot (hash 0, crc recomputed), then frees the entry.
 *
 * Example:
 *   const layout = computeLayout(64 << 20, undefined, seed);
 *   const g = layout.indexOffset + (keyHash(key, seed) % layout.groupCount) * GROUP_BYTES;
 */

export const KV_MAGIC = 0x564b5048;
export const KV_LAYOUT_VERSION = 1;

export const HEADER_BYTES = 64;
export const HDR_MAGIC = 0;
export const HDR_LAYOUT_VERSION = 4;
export const HDR_GROUP_COUNT = 8;
export const HDR_SLOTS_PER_GROUP = 12;
export const HDR_INDEX_OFFSET = 16;
export const HDR_HEAP_OFFSET = 24;
export const HDR_HEAP_BYTES = 32;
export const HDR_HASH_SEED = 40;

export const GROUP_BYTES = 256;
export const GROUP_HEADER_BYTES = 32;
export const GROUP_OVERFLOW = 0;
export const SLOTS_PER_GROUP = 7;
export const SLOT_BYTES = 32;

export const SLOT_HASH = 0;
export const SLOT_ENTRY_BYTES = 4;
export const SLOT_ENTRY_OFFSET = 8;
export const SLOT_VERSION = 16;
export const SLOT_CRC = 24;
/** The slot crc covers bytes [0, SLOT_CRC). */
export const SLOT_CRC_COVERS = SLOT_CRC;

export const ENTRY_VERSION = 0;
export const ENTRY_KEY_LEN = 8;
export const ENTRY_VALUE_LEN = 12;
export const ENTRY_CRC = 16;
export const ENTRY_HEADER_BYTES = 24;

if (GROUP_HEADER_BYTES + SLOTS_PER_GROUP * SLOT_BYTES !== GROUP_BYTES) throw new Error("kv layout: a group is not 256 bytes");
if (SLOT_CRC + 8 !== SLOT_BYTES || ENTRY_CRC + 8 !== ENTRY_HEADER_BYTES) throw new Error("kv layout: slot or entry header drifted");

/** Heap bytes per index slot when the group count is derived (the spec's "one slot per 128 B of heap"). */
const HEAP_BYTES_PER_SLOT = 128;

/** A value and its version (KvStore.get, verifyEntry). `value` is a view: see the function that returned it for how long it is valid. */
export interface KvValue {
  value: Uint8Array;
  version: number;
}

/** The arena's geometry, as the header states it. */
export interface KvLayout {
  arenaBytes: number;
  groupCount: number;
  slotsPerGroup: number;
  groupBytes: number;
  indexOffset: number;
  heapOffset: number;
  heapBytes: number;
  hashSeed: number;
}

/**
 * The key's index hash: murmur32v3 with the arena's seed, 0 mapped to 1 (0 marks an empty slot).
 * Pure; any thread.
 */
export function keyHash(key: Uint8Array, seed: number): number {
  const h = Bun.hash.murmur32v3(key, seed) >>> 0;
  return h === 0 ? 1 : h;
}

/**
 * The layout of an arena of `arenaBytes`: `groupCount` groups (default: about one slot per
 * 128 B of heap), the heap after the index. Throws RangeError when the arena cannot hold the
 * header, the index and a heap. Pure.
 */
export function computeLayout(arenaBytes: number, groupCount: number | undefined, hashSeed: number): KvLayout {
  if (!Number.isSafeInteger(arenaBytes) || arenaBytes <= HEADER_BYTES + GROUP_BYTES) throw new RangeError(`kv arena of ${arenaBytes} bytes is too small`);
  const groups = groupCount ?? Math.max(1, Math.floor((arenaBytes - HEADER_BYTES) / (GROUP_BYTES + SLOTS_PER_GROUP * HEAP_BYTES_PER_SLOT)));
  if (!Number.isInteger(groups) || groups < 1 || groups > 0xffffffff) throw new RangeError(`kv groupCount ${groups} must be an integer from 1`);
  const heapOffset = HEADER_BYTES + groups * GROUP_BYTES;
  const heapBytes = arenaBytes - heapOffset;
  if (heapBytes <= 0) throw new RangeError(`kv arena of ${arenaBytes} bytes has no room for a heap after ${groups} groups`);
  return { arenaBytes, groupCount: groups, slotsPerGroup: SLOTS_PER_GROUP, groupBytes: GROUP_BYTES, indexOffset: HEADER_BYTES, heapOffset, heapBytes, hashSeed: hashSeed >>> 0 };
}

/** Writes the 64-byte header of `layout` at offset 0 of `view` (the rest of the header zero). */
export function writeHeader(view: DataView, layout: KvLayout): void {
  for (let i = 0; i < HEADER_BYTES; i += 4) view.setUint32(i, 0, true);
  view.setUint32(HDR_MAGIC, KV_MAGIC, true);
  view.setUint32(HDR_LAYOUT_VERSION, KV_LAYOUT_VERSION, true);
  view.setUint32(HDR_GROUP_COUNT, layout.groupCount, true);
  view.setUint32(HDR_SLOTS_PER_GROUP, layout.slotsPerGroup, true);
  setU64(view, HDR_INDEX_OFFSET, layout.indexOffset);
  setU64(view, HDR_HEAP_OFFSET, layout.heapOffset);
  setU64(view, HDR_HEAP_BYTES, layout.heapBytes);
  view.setUint32(HDR_HASH_SEED, layout.hashSeed, true);
}

/** A u64 below 2^53 as two u32 (no BigInt on the data path). */
export function setU64(view: DataView, off: number, v: number): void {
  view.setUint32(off, v >>> 0, true);
  view.setUint32(off + 4, Math.floor(v / 0x100000000), true);
}

/** A u64 read as a number (exact below 2^53). */
export function getU64(view: DataView, off: number): number {
  return view.getUint32(off + 4, true) * 0x100000000 + view.getUint32(off, true);
}

/** crc32 of an entry record: bytes [0, 16) continued over key and value (bytes [24, 24 + keyLen + valueLen)). */
export function entryCrc(record: Uint8Array, keyLen: number, valueLen: number): number {
  const head = Bun.hash.crc32(record.subarray(0, ENTRY_CRC));
  return Bun.hash.crc32(record.subarray(ENTRY_HEADER_BYTES, ENTRY_HEADER_BYTES + keyLen + valueLen), head) >>> 0;
}

/** crc32 of a slot: its bytes [0, 24). `slot` starts at the slot. */
export function slotCrc(slot: Uint8Array): number {
  return Bun.hash.crc32(slot.subarray(0, SLOT_CRC_COVERS)) >>> 0;
}
