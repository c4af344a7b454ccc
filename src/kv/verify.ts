/**
 * One-sided read helpers: pure functions over bytes copied out of a kv arena (by RMA gets, or
 * from the arena itself in tests), shared by the RMA client and the tests. A reader that races
 * the server's writes sees a torn slot or record as a crc (or version) mismatch and never a
 * wrong value: a slot is used only when its crc over bytes [0, 24) holds, a record only when its
 * crc over header, key and value holds, its version equals the slot's and its key is the key.
 *
 * A one-sided GET: read the group (256 B at groupOffset); for each candidate read its
 * `entryBytes` at `entryOffset` and verifyEntry; a value -> done; every candidate "other", no
 * torn slot and overflow 0 -> absent; anything torn -> re-read a few times, then RPC GET;
 * overflow > 0 and not found -> RPC GET.
 *
 * Two forms of the same checks: the spec's `scanGroup` / `verifyEntry` (objects and views, for
 * tests and occasional use) and the hot path's `scanGroupInto` / `checkEntry`, which allocate
 * nothing: integers are read byte by byte at fixed offsets (no DataView, no subarray) and the
 * crc32 of short spans (slots, record headers, small records) is computed here, table-driven
 * (`crc32Range`, equal to Bun.hash.crc32); only spans of CRC_NATIVE_BYTES or more go to
 * Bun.hash.crc32 through one subarray. The spec's forms are built on the hot path's, so both
 * decide alike.
 *
 * Example:
 *   const layout = parseHeader(header64);
 *   const h = keyHash(key, layout.hashSeed);
 *   const g = scanGroup(await region.get(groupOffset(layout, h), 256), h);
 *   for (const c of g.candidates) { const r = verifyEntry(await region.get(c.entryOffset, c.entryBytes), key, c.version); ... }
 *   // hot path: scanGroupInto(groupBuf, h, scan); const at = checkEntry(recBuf, len, key, scan.version[i]);
 *
 * Thread: any (pure; the scratch GroupScan of scanGroup is used within one call only).
 */

import { ProtocolError } from "../errors.ts";
import {
  ENTRY_CRC, ENTRY_HEADER_BYTES, ENTRY_KEY_LEN, ENTRY_VALUE_LEN, ENTRY_VERSION, GROUP_BYTES, GROUP_HEADER_BYTES, GROUP_OVERFLOW, HDR_GROUP_COUNT,
  HDR_HASH_SEED, HDR_HEAP_BYTES, HDR_HEAP_OFFSET, HDR_INDEX_OFFSET, HDR_LAYOUT_VERSION, HDR_MAGIC, HDR_SLOTS_PER_GROUP, HEADER_BYTES, KV_LAYOUT_VERSION,
  KV_MAGIC, SLOT_BYTES, SLOT_CRC, SLOT_CRC_COVERS, SLOT_ENTRY_BYTES, SLOT_ENTRY_OFFSET, SLOT_HASH, SLOT_VERSION, SLOTS_PER_GROUP, getU64,
  type KvLayout, type KvValue,
} from "./layout.ts";

function viewOf(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * The layout stated by a 64-byte arena header (`bytes` may be longer). ProtocolError on a short
 * header, a bad magic, layout version, slot count, or geometry that does not add up.
 * `arenaBytes` is heapOffset + heapBytes.
 */
export function parseHeader(bytes: Uint8Array): KvLayout {
  if (bytes.byteLength < HEADER_BYTES) throw new ProtocolError(`kv arena header: ${bytes.byteLength} bytes, expected ${HEADER_BYTES}`);
  const v = viewOf(bytes);
  const magic = v.getUint32(HDR_MAGIC, true);
  if (magic !== KV_MAGIC) throw new ProtocolError(`kv arena header: magic 0x${magic.toString(16)}, expected 0x${KV_MAGIC.toString(16)}`);
  const version = v.getUint32(HDR_LAYOUT_VERSION, true);
  if (version !== KV_LAYOUT_VERSION) throw new ProtocolError(`kv arena header: layout version ${version}, expected ${KV_LAYOUT_VERSION}`);
  const slotsPerGroup = v.getUint32(HDR_SLOTS_PER_GROUP, true);
  if (slotsPerGroup !== SLOTS_PER_GROUP) throw new ProtocolError(`kv arena header: ${slotsPerGroup} slots per group, expected ${SLOTS_PER_GROUP}`);
  const groupCount = v.getUint32(HDR_GROUP_COUNT, true);
  const indexOffset = getU64(v, HDR_INDEX_OFFSET);
  const heapOffset = getU64(v, HDR_HEAP_OFFSET);
  const heapBytes = getU64(v, HDR_HEAP_BYTES);
  if (groupCount < 1 || indexOffset !== HEADER_BYTES || heapOffset !== indexOffset + groupCount * GROUP_BYTES || !Number.isSafeInteger(heapOffset + heapBytes)) {
    throw new ProtocolError(`kv arena header: geometry does not add up (groups ${groupCount}, index at ${indexOffset}, heap at ${heapOffset}, ${heapBytes} bytes)`);
  }
  return { arenaBytes: heapOffset + heapBytes, groupCount, slotsPerGroup, groupBytes: GROUP_BYTES, indexOffset, heapOffset, heapBytes, hashSeed: v.getUint32(HDR_HASH_SEED, true) };
}

/** The arena offset of the group that `hash` (a keyHash) belongs to. */
export function groupOffset(layout: KvLayout, hash: number): number {
  return layout.indexOffset + ((hash >>> 0) % layout.groupCount) * GROUP_BYTES;
}

/**
 * Spans at least this long get their crc32 from Bun.hash.crc32 (through one subarray); shorter
 * ones from crc32Range's table loop, which beats the native call's fixed cost (a call, a view)
 * below it (measured: about 2x faster for a 24-byte slot, even near 200 B, 2x slower at 512 B).
 */
export const CRC_NATIVE_BYTES = 256;

/** crc32 tables for slicing by 8 (IEEE 802.3, reflected, as zlib and Bun.hash.crc32): 8 x 256 entries. */
const CRC_T = ((): Int32Array => {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!;
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
})();

/**
 * crc32 of `b[from, to)`, continuing from `seed` (the crc32 of the bytes before, 0 for none):
 * equal to `Bun.hash.crc32(b.subarray(from, to), seed) >>> 0`, without the subarray below
 * CRC_NATIVE_BYTES. `0 <= from <= to <= b.length` (not checked).
 */
export function crc32Range(b: Uint8Array, from: number, to: number, seed = 0): number {
  if (to - from >= CRC_NATIVE_BYTES) return Bun.hash.crc32(b.subarray(from, to), seed) >>> 0;
  const t = CRC_T;
  let c = ~seed;
  let i = from;
  for (; i + 8 <= to; i += 8) {
    const w = c ^ (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24));
    c = t[1792 + (w & 0xff)]! ^ t[1536 + ((w >>> 8) & 0xff)]! ^ t[1280 + ((w >>> 16) & 0xff)]! ^ t[1024 + (w >>> 24)]! ^
      t[768 + b[i + 4]!]! ^ t[512 + b[i + 5]!]! ^ t[256 + b[i + 6]!]! ^ t[b[i + 7]!]!;
  }
  for (; i < to; i++) c = t[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** The u32 at `o` (little-endian), read byte by byte (no view; any alignment). */
function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** The u64 at `o` as a number (exact below 2^53). */
function u64(b: Uint8Array, o: number): number {
  return u32(b, o + 4) * 0x100000000 + u32(b, o);
}

/**
 * What scanGroupInto found in one group: `count` candidates (slot hash equal to the key's, slot
 * crc valid) in slot order, at index i: entryOffset[i], entryBytes[i], version[i]; `torn`: slots
 * whose crc does not hold (never-written, all-zero slots are not torn); `overflow`: the group's
 * overflow count. Reused from GET to GET by its owner (one per GET in flight). Thread: its owner's.
 */
export class GroupScan {
  count = 0;
  torn = 0;
  overflow = 0;
  readonly entryOffset = new Float64Array(SLOTS_PER_GROUP);
  readonly entryBytes = new Float64Array(SLOTS_PER_GROUP);
  readonly version = new Float64Array(SLOTS_PER_GROUP);
}

/**
 * scanGroup into `out`, allocating nothing: the slots of the 256-byte group at `group[0..256)`
 * for the key hash `hash`. ProtocolError when `group` is shorter than a group.
 */
export function scanGroupInto(group: Uint8Array, hash: number, out: GroupScan): void {
  if (group.length < GROUP_BYTES) throw new ProtocolError(`kv group: ${group.length} bytes, expected ${GROUP_BYTES}`);
  const want = hash >>> 0;
  let n = 0;
  let torn = 0;
  for (let s = GROUP_HEADER_BYTES; s < GROUP_BYTES; s += SLOT_BYTES) {
    // A never-written slot is all zero (its crc field 0, which crc32 of 24 zero bytes is not):
    // empty, not torn. Checked first: most slots of a sparse index are, and this is cheaper.
    if (allZero(group, s, s + SLOT_BYTES)) continue;
    if (crc32Range(group, s, s + SLOT_CRC_COVERS) !== u32(group, s + SLOT_CRC)) {
      torn++;
      continue;
    }
    const h = u32(group, s + SLOT_HASH);
    if (h === 0 || h !== want) continue;
    out.entryOffset[n] = u64(group, s + SLOT_ENTRY_OFFSET);
    out.entryBytes[n] = u32(group, s + SLOT_ENTRY_BYTES);
    out.version[n] = u64(group, s + SLOT_VERSION);
    n++;
  }
  out.count = n;
  out.torn = torn;
  out.overflow = u32(group, GROUP_OVERFLOW);
}

/** scanGroup's own scratch (used within one call: pure from the caller's side). */
const scratch = new GroupScan();

/** The slots of one group read as 256 bytes: candidates whose hash matches and whose slot crc is valid, the count of torn slots, and the group's overflow count. */
export function scanGroup(group: Uint8Array, hash: number): { candidates: Array<{ entryOffset: number; entryBytes: number; version: number }>; torn: number; overflow: number } {
  scanGroupInto(group, hash, scratch);
  const candidates: Array<{ entryOffset: number; entryBytes: number; version: number }> = [];
  for (let i = 0; i < scratch.count; i++) candidates.push({ entryOffset: scratch.entryOffset[i]!, entryBytes: scratch.entryBytes[i]!, version: scratch.version[i]! });
  return { candidates, torn: scratch.torn, overflow: scratch.overflow };
}

function allZero(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/** checkEntry: the record is torn (crc, length or version do not hold). */
export const ENTRY_TORN = -1;
/** checkEntry: the record is whole but another key's (a hash collision). */
export const ENTRY_OTHER = -2;

/**
 * verifyEntry without objects: the entry record in `record[0..len)` (`len` = the slot's
 * entryBytes) checked against `key` and the slot's `version`. Returns where its value starts
 * (the value is `record[at..len)`), ENTRY_TORN, or ENTRY_OTHER. Allocates nothing unless the
 * key and value span CRC_NATIVE_BYTES or more (one subarray for Bun.hash.crc32).
 */
export function checkEntry(record: Uint8Array, len: number, key: Uint8Array, version: number): number {
  if (len < ENTRY_HEADER_BYTES || len > record.length) return ENTRY_TORN;
  const keyLen = u32(record, ENTRY_KEY_LEN);
  if (ENTRY_HEADER_BYTES + keyLen + u32(record, ENTRY_VALUE_LEN) !== len) return ENTRY_TORN;
  if (crc32Range(record, ENTRY_HEADER_BYTES, len, crc32Range(record, 0, ENTRY_CRC)) !== u32(record, ENTRY_CRC)) return ENTRY_TORN;
  if (u64(record, ENTRY_VERSION) !== version) return ENTRY_TORN;
  if (keyLen !== key.length) return ENTRY_OTHER;
  for (let i = 0; i < keyLen; i++) if (record[ENTRY_HEADER_BYTES + i] !== key[i]) return ENTRY_OTHER;
  return ENTRY_HEADER_BYTES + keyLen;
}

/** An entry record read as `entryBytes` bytes: its value if the crc holds, its version equals `version` and its key equals `key`; "torn" if crc or version do not match, "other" if it is another key's (hash collision). The value is a view into `record`. */
export function verifyEntry(record: Uint8Array, key: Uint8Array, version: number): KvValue | "torn" | "other" {
  const at = checkEntry(record, record.length, key, version);
  if (at === ENTRY_TORN) return "torn";
  if (at === ENTRY_OTHER) return "other";
  return { value: record.subarray(at), version };
}
