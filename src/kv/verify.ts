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
 * Example:
 *   const layout = parseHeader(header64);
 *   const h = keyHash(key, layout.hashSeed);
 *   const g = scanGroup(await region.get(groupOffset(layout, h), 256), h);
 *   for (const c of g.candidates) { const r = verifyEntry(await region.get(c.entryOffset, c.entryBytes), key, c.version); ... }
 *
 * Thread: any (pure; no state).
 */

import { ProtocolError } from "../errors.ts";
import {
  ENTRY_CRC, ENTRY_HEADER_BYTES, ENTRY_KEY_LEN, ENTRY_VALUE_LEN, ENTRY_VERSION, GROUP_BYTES, GROUP_HEADER_BYTES, GROUP_OVERFLOW, HDR_GROUP_COUNT,
  HDR_HASH_SEED, HDR_HEAP_BYTES, HDR_HEAP_OFFSET, HDR_INDEX_OFFSET, HDR_LAYOUT_VERSION, HDR_MAGIC, HDR_SLOTS_PER_GROUP, HEADER_BYTES, KV_LAYOUT_VERSION,
  KV_MAGIC, SLOT_BYTES, SLOT_CRC, SLOT_CRC_COVERS, SLOT_ENTRY_BYTES, SLOT_ENTRY_OFFSET, SLOT_HASH, SLOT_VERSION, SLOTS_PER_GROUP, entryCrc, getU64,
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

/** The slots of one group read as 256 bytes: candidates whose hash matches and whose slot crc is valid, the count of torn slots, and the group's overflow count. */
export function scanGroup(group: Uint8Array, hash: number): { candidates: Array<{ entryOffset: number; entryBytes: number; version: number }>; torn: number; overflow: number } {
  if (group.byteLength < GROUP_BYTES) throw new ProtocolError(`kv group: ${group.byteLength} bytes, expected ${GROUP_BYTES}`);
  const v = viewOf(group);
  const candidates: Array<{ entryOffset: number; entryBytes: number; version: number }> = [];
  let torn = 0;
  for (let i = 0; i < SLOTS_PER_GROUP; i++) {
    const s = GROUP_HEADER_BYTES + i * SLOT_BYTES;
    const crcOk = (Bun.hash.crc32(group.subarray(s, s + SLOT_CRC_COVERS)) >>> 0) === v.getUint32(s + SLOT_CRC, true);
    if (!crcOk) {
      // A never-written slot is all zero; its crc field is 0 but crc32 of 24 zero bytes is not.
      if (!allZero(group, s, s + SLOT_BYTES)) torn++;
      continue;
    }
    const h = v.getUint32(s + SLOT_HASH, true);
    if (h === 0 || h !== hash >>> 0) continue;
    candidates.push({ entryOffset: getU64(v, s + SLOT_ENTRY_OFFSET), entryBytes: v.getUint32(s + SLOT_ENTRY_BYTES, true), version: getU64(v, s + SLOT_VERSION) });
  }
  return { candidates, torn, overflow: v.getUint32(GROUP_OVERFLOW, true) };
}

function allZero(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/** An entry record read as `entryBytes` bytes: its value if the crc holds, its version equals `version` and its key equals `key`; "torn" if crc or version do not match, "other" if it is another key's (hash collision). The value is a view into `record`. */
export function verifyEntry(record: Uint8Array, key: Uint8Array, version: number): KvValue | "torn" | "other" {
  if (record.byteLength < ENTRY_HEADER_BYTES) return "torn";
  const v = viewOf(record);
  const keyLen = v.getUint32(ENTRY_KEY_LEN, true);
  const valueLen = v.getUint32(ENTRY_VALUE_LEN, true);
  if (ENTRY_HEADER_BYTES + keyLen + valueLen !== record.byteLength) return "torn";
  if (entryCrc(record, keyLen, valueLen) !== v.getUint32(ENTRY_CRC, true)) return "torn";
  if (getU64(v, ENTRY_VERSION) !== version) return "torn";
  if (keyLen !== key.byteLength) return "other";
  for (let i = 0; i < keyLen; i++) if (record[ENTRY_HEADER_BYTES + i] !== key[i]) return "other";
  return { value: record.subarray(ENTRY_HEADER_BYTES + keyLen), version };
}
