/**
 * verify.ts's allocation-free forms against the spec's: crc32Range equals Bun.hash.crc32 for
 * every length around the table / native switch, any offset and seed; scanGroupInto and
 * checkEntry decide exactly as scanGroup and verifyEntry on clean, torn and other-key bytes,
 * with a GroupScan and a record buffer reused from read to read (stale bytes after the record,
 * an earlier group's candidates) changing nothing; slots whose crc field is 0 but whose bytes
 * are not are torn, all-zero slots are not.
 */
import { describe, expect, test } from "bun:test";
import { GROUP_BYTES, GROUP_HEADER_BYTES, keyHash, SLOT_BYTES } from "../../src/kv/layout.ts";
import { KvStore } from "../../src/kv/store.ts";
import { checkEntry, CRC_NATIVE_BYTES, crc32Range, ENTRY_OTHER, ENTRY_TORN, GroupScan, groupOffset, parseHeader, scanGroup, scanGroupInto, verifyEntry } from "../../src/kv/verify.ts";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const enc = new TextEncoder();

/** The key's group and first candidate's record, copied out of the arena. */
function read(s: KvStore, key: Uint8Array) {
  const layout = parseHeader(s.arena.slice(0, 64));
  const h = keyHash(key, layout.hashSeed);
  const g = groupOffset(layout, h);
  const group = s.arena.slice(g, g + GROUP_BYTES);
  const c = scanGroup(group, h).candidates[0]!;
  return { h, group, c, record: s.arena.slice(c.entryOffset, c.entryOffset + c.entryBytes) };
}

/** What checkEntry says, in verifyEntry's words (value copied), for the record at the start of `buf`. */
function viaCheck(buf: Uint8Array, len: number, key: Uint8Array, version: number) {
  const at = checkEntry(buf, len, key, version);
  if (at === ENTRY_TORN) return "torn";
  if (at === ENTRY_OTHER) return "other";
  return { value: Array.from(buf.subarray(at, len)), version };
}

function viaVerify(record: Uint8Array, key: Uint8Array, version: number) {
  const r = verifyEntry(record, key, version);
  return typeof r === "string" ? r : { value: Array.from(r.value), version: r.version };
}

describe("kv verify: allocation-free forms", () => {
  test("crc32Range equals Bun.hash.crc32 at every length around the native switch, any offset and seed", () => {
    const r = rng(1);
    const buf = new Uint8Array(CRC_NATIVE_BYTES * 3).map(() => (r() * 256) | 0);
    for (let len = 0; len <= CRC_NATIVE_BYTES + 40; len++) {
      const from = (r() * 9) | 0;
      const seed = len % 3 === 0 ? 0 : (r() * 2 ** 32) >>> 0;
      expect([len, crc32Range(buf, from, from + len, seed)]).toEqual([len, Bun.hash.crc32(buf.subarray(from, from + len), seed) >>> 0]);
    }
    // continuing over a split is the crc of the whole
    expect(crc32Range(buf, 100, 700, crc32Range(buf, 0, 100))).toBe(Bun.hash.crc32(buf.subarray(0, 700)) >>> 0);
  });

  test("checkEntry in a reused, larger buffer decides as verifyEntry on the exact record: clean, every byte flipped, other key, wrong version", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    const key = enc.encode("fast-key");
    for (const size of [0, 5, 64, 200, CRC_NATIVE_BYTES, 3000]) {
      s.put(key, new Uint8Array(size).fill(0x5a));
      const { c, record } = read(s, key);
      // A kept buffer: longer than the record, stale bytes after it.
      const buf = new Uint8Array(record.length + 97).fill(0xee);
      const at = (rec: Uint8Array) => (buf.set(rec), buf);
      expect(viaCheck(at(record), record.length, key, c.version)).toEqual(viaVerify(record, key, c.version));
      expect(typeof viaVerify(record, key, c.version)).toBe("object");
      expect(viaCheck(at(record), record.length, enc.encode("fast-kez"), c.version)).toBe("other");
      expect(viaCheck(at(record), record.length, key, c.version + 1)).toBe("torn");
      // a length that is not the record's (too short, too long, beyond the buffer) is torn
      expect(viaCheck(at(record), record.length - 1, key, c.version)).toBe("torn");
      expect(viaCheck(at(record), record.length + 1, key, c.version)).toBe("torn");
      expect(viaCheck(record, record.length + 1, key, c.version)).toBe("torn");
      const step = record.length > 400 ? 7 : 1;
      for (let i = 0; i < record.length; i += step) {
        const torn = record.slice();
        torn[i] ^= 0x04;
        expect([i, viaCheck(at(torn), torn.length, key, c.version)]).toEqual([i, viaVerify(torn, key, c.version)]);
        if (i < 20 || i >= 24) expect(viaVerify(torn, key, c.version)).toBe("torn");
      }
    }
  });

  test("scanGroupInto with one GroupScan reused decides as scanGroup: clean groups, torn slots, crc field 0", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, groupCount: 2 });
    const keys = Array.from({ length: 20 }, (_, i) => enc.encode(`g-${i}`));
    for (const k of keys) s.put(k, enc.encode("v"));
    const scan = new GroupScan();
    const asSpec = () => ({
      candidates: Array.from({ length: scan.count }, (_, i) => ({ entryOffset: scan.entryOffset[i]!, entryBytes: scan.entryBytes[i]!, version: scan.version[i]! })),
      torn: scan.torn,
      overflow: scan.overflow,
    });
    let found = 0;
    for (const k of keys) {
      const layout = s.layout;
      const h = keyHash(k, layout.hashSeed);
      const go = groupOffset(layout, h);
      const group = s.arena.slice(go, go + GROUP_BYTES);
      scanGroupInto(group, h, scan);
      expect(asSpec()).toEqual(scanGroup(group, h));
      found += scan.count; // 0 for a key in its group's overflow
      for (let i = GROUP_HEADER_BYTES; i < GROUP_BYTES; i += 5) {
        const torn = group.slice();
        torn[i] ^= 0x20;
        scanGroupInto(torn, h, scan);
        expect(asSpec()).toEqual(scanGroup(torn, h));
      }
    }
    // Every key was found in its slot but those in an overflow (20 keys, 14 slots: some are).
    expect(s.stats().groupOverflows).toBeGreaterThanOrEqual(keys.length - 14);
    expect(found).toBe(keys.length - s.stats().groupOverflows);
    // An empty group after a full one: no candidate left over from the last scan.
    scanGroupInto(new Uint8Array(GROUP_BYTES), 123, scan);
    expect(asSpec()).toEqual({ candidates: [], torn: 0, overflow: 0 });
    // A slot whose crc field is 0 but whose other bytes are not is torn, not empty.
    const g = new Uint8Array(GROUP_BYTES);
    g[GROUP_HEADER_BYTES + SLOT_BYTES + 9] = 1;
    scanGroupInto(g, 123, scan);
    expect([scan.count, scan.torn]).toEqual([0, 1]);
    expect(() => scanGroupInto(g.subarray(0, GROUP_BYTES - 1), 1, scan)).toThrow(/expected 256/);
  });
});
