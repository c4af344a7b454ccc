/**
 * One-sided read helpers (verify.ts) over a real store's arena: a clean read finds the value;
 * torn groups and records (every byte flipped, two versions' bytes mixed at every split point,
 * a stale slot over a freed-and-reused entry) are reported torn or other, never a wrong value;
 * the overflow count sends readers to RPC.
 */
import { describe, expect, test } from "bun:test";
import { ProtocolError } from "../../src/errors.ts";
import { GROUP_BYTES, GROUP_HEADER_BYTES, keyHash, SLOT_BYTES } from "../../src/kv/layout.ts";
import { KvStore } from "../../src/kv/store.ts";
import { groupOffset, parseHeader, scanGroup, verifyEntry } from "../../src/kv/verify.ts";

const enc = new TextEncoder();
const b = (s: string) => enc.encode(s);

/** What a one-sided reader would copy out: the key's group and its candidates' records. */
function readOneSided(s: KvStore, key: Uint8Array) {
  const layout = parseHeader(s.arena.slice(0, 64));
  const h = keyHash(key, layout.hashSeed);
  const gOff = groupOffset(layout, h);
  const group = s.arena.slice(gOff, gOff + GROUP_BYTES);
  const scan = scanGroup(group, h);
  return { h, gOff, group, scan, records: scan.candidates.map((c) => ({ c, record: s.arena.slice(c.entryOffset, c.entryOffset + c.entryBytes) })) };
}

/** The slot of `scan`'s first candidate inside the group bytes. */
function slotIndexOf(group: Uint8Array, entryOffset: number): number {
  const v = new DataView(group.buffer, group.byteOffset, group.byteLength);
  for (let i = 0; i < 7; i++) {
    const at = GROUP_HEADER_BYTES + i * SLOT_BYTES;
    if (v.getUint32(at + 8, true) === entryOffset && v.getUint32(at, true) !== 0) return i;
  }
  return -1;
}

const uniform = (v: Uint8Array, byte: number) => v.every((x) => x === byte);

describe("kv verify helpers", () => {
  test("a clean read returns the value and version; absent keys have no candidate", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    const ver = s.put(b("key"), new Uint8Array(300).fill(0x41));
    const r = readOneSided(s, b("key"));
    expect(r.scan.torn).toBe(0);
    expect(r.scan.overflow).toBe(0);
    expect(r.records.length).toBe(1);
    const got = verifyEntry(r.records[0]!.record, b("key"), r.records[0]!.c.version);
    expect(got).not.toBeString();
    const kv = got as { value: Uint8Array; version: number };
    expect(kv.version).toBe(ver);
    expect(uniform(kv.value, 0x41) && kv.value.length === 300).toBe(true);
    // another key's record is "other"
    expect(verifyEntry(r.records[0]!.record, b("kez"), ver)).toBe("other");
    expect(readOneSided(s, b("nothing here")).scan.candidates.length).toBe(0);
    // a deleted key: its slot is cleared with a valid crc, so no candidate and nothing torn
    s.del(b("key"));
    const after = readOneSided(s, b("key"));
    expect(after.scan).toEqual({ candidates: [], torn: 0, overflow: 0 });
  });

  test("parseHeader refuses a bad magic, layout version or geometry", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    const h = s.arena.slice(0, 64);
    expect(parseHeader(h)).toEqual(s.layout);
    const bad = (mutate: (v: DataView) => void) => {
      const c = h.slice();
      mutate(new DataView(c.buffer));
      return () => parseHeader(c);
    };
    expect(bad((v) => v.setUint32(0, 0x12345678, true))).toThrow(ProtocolError);
    expect(bad((v) => v.setUint32(4, 2, true))).toThrow(/layout version 2/);
    expect(bad((v) => v.setUint32(12, 8, true))).toThrow(ProtocolError);
    expect(bad((v) => v.setUint32(8, s.layout.groupCount + 1, true))).toThrow(/geometry/);
    expect(() => parseHeader(h.subarray(0, 63))).toThrow(ProtocolError);
  });

  test("every single byte flipped in a record is torn, never a value", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    const key = new Uint8Array([0, 1, 2, 0, 5]);
    s.put(key, new Uint8Array(200).fill(0x33));
    const { records } = readOneSided(s, key);
    const { c, record } = records[0]!;
    for (let i = 0; i < record.length; i++) {
      for (const bit of [0x01, 0x80]) {
        const torn = record.slice();
        torn[i] ^= bit;
        const r = verifyEntry(torn, key, c.version);
        // bytes 20..24 are the record's reserved zero word, outside the crc: a flip there leaves the value intact
        if (i >= 20 && i < 24) {
          expect(r).not.toBeString();
          expect(uniform((r as { value: Uint8Array }).value, 0x33)).toBe(true);
        } else expect(r).toBe("torn");
      }
    }
    // a record cut short or read too long is torn
    expect(verifyEntry(record.subarray(0, record.length - 1), key, c.version)).toBe("torn");
    expect(verifyEntry(record.subarray(0, 10), key, c.version)).toBe("torn");
    // the right bytes with the wrong version (the slot says another) are torn
    expect(verifyEntry(record, key, c.version + 1)).toBe("torn");
  });

  test("every single byte flipped in a slot is a torn slot, never a wrong candidate", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    s.put(b("k"), b("value"));
    const { group, h, scan } = readOneSided(s, b("k"));
    const good = scan.candidates[0]!;
    const slot = slotIndexOf(group, good.entryOffset);
    expect(slot).toBeGreaterThanOrEqual(0);
    const base = GROUP_HEADER_BYTES + slot * SLOT_BYTES;
    for (let i = 0; i < SLOT_BYTES; i++) {
      const torn = group.slice();
      torn[base + i] ^= 0x10;
      const r = scanGroup(torn, h);
      if (i >= 28) {
        // the reserved zero word after the crc is not covered: the slot is still whole
        expect(r.candidates).toEqual([good]);
      } else {
        expect(r.torn).toBe(1);
        expect(r.candidates).toEqual([]);
      }
    }
  });

  test("two versions' bytes mixed at every split point: torn, or one whole version", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    const key = b("counter");
    const len = 500;
    s.put(key, new Uint8Array(len).fill(1));
    const one = readOneSided(s, key);
    s.put(key, new Uint8Array(len).fill(2));
    const two = readOneSided(s, key);
    const r1 = one.records[0]!;
    const r2 = two.records[0]!;
    expect(r1.c.entryOffset).not.toBe(r2.c.entryOffset);
    let torn = 0;
    for (let split = 0; split <= r1.record.length; split++) {
      const mixed = new Uint8Array(r1.record.length);
      mixed.set(r1.record.subarray(0, split));
      mixed.set(r2.record.subarray(split), split);
      for (const version of [r1.c.version, r2.c.version]) {
        const r = verifyEntry(mixed, key, version);
        if (r === "torn") {
          torn++;
          continue;
        }
        expect(r).not.toBe("other");
        const v = r as { value: Uint8Array; version: number };
        // only a whole record passes, and then its bytes are all its version's byte
        const byte = v.version === r1.c.version ? 1 : 2;
        expect(uniform(v.value, byte)).toBe(true);
        expect(Buffer.compare(mixed, byte === 1 ? r1.record : r2.record)).toBe(0);
      }
    }
    expect(torn).toBeGreaterThan(r1.record.length);
    // slots of both versions mixed at every split point: torn, or exactly one of the two
    const slotAt = GROUP_HEADER_BYTES + slotIndexOf(one.group, r1.c.entryOffset) * SLOT_BYTES;
    for (let split = 0; split <= SLOT_BYTES; split++) {
      const g = one.group.slice();
      g.set(two.group.subarray(slotAt + split, slotAt + SLOT_BYTES), slotAt + split);
      const r = scanGroup(g, one.h);
      for (const c of r.candidates) expect([r1.c, r2.c]).toContainEqual(c);
      expect(r.candidates.length + r.torn).toBe(1);
    }
  });

  test("a stale slot over a freed-and-reused entry is torn (same key, other key)", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    const key = b("k1");
    s.put(key, new Uint8Array(100).fill(7));
    const stale = readOneSided(s, key).records[0]!;
    // rewrite twice: the second rewrite reuses the first record's chunk (freed after the first rewrite)
    s.put(key, new Uint8Array(100).fill(8));
    s.put(key, new Uint8Array(100).fill(9));
    const reread = s.arena.slice(stale.c.entryOffset, stale.c.entryOffset + stale.c.entryBytes);
    expect(reread).not.toEqual(stale.record);
    expect(verifyEntry(reread, key, stale.c.version)).toBe("torn");
    // the chunk reused by another key of another length
    const other = b("k2");
    s.put(other, new Uint8Array(90).fill(5));
    const now = readOneSided(s, key).records[0]!;
    s.del(key);
    s.put(b("k3"), new Uint8Array(101).fill(6));
    const reused = s.arena.slice(now.c.entryOffset, now.c.entryOffset + now.c.entryBytes);
    const r = verifyEntry(reused, key, now.c.version);
    expect(r === "torn" || r === "other").toBe(true);
  });

  test("a full group sends the rest to the overflow map; readers see its count", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, groupCount: 1 });
    for (let i = 0; i < 10; i++) s.put(b(`key${i}`), b(`v${i}`));
    expect(s.stats().groupOverflows).toBe(3);
    const r = readOneSided(s, b("key9"));
    expect(r.scan.overflow).toBe(3);
    expect(r.scan.candidates).toEqual([]);
    for (let i = 0; i < 10; i++) expect(new TextDecoder().decode(s.get(b(`key${i}`))!.value)).toBe(`v${i}`);
    s.del(b("key9"));
    expect(readOneSided(s, b("key0")).scan.overflow).toBe(2);
    s.put(b("key8"), b("again"));
    expect(new TextDecoder().decode(s.get(b("key8"))!.value)).toBe("again");
    expect(s.stats().groupOverflows).toBe(2);
    // a slot comes free; an overflow key rewritten moves into it and readers find it one-sided
    s.del(b("key0"));
    s.put(b("key7"), b("moved"));
    expect(s.stats().groupOverflows).toBe(1);
    const moved = readOneSided(s, b("key7"));
    expect(moved.scan.overflow).toBe(1);
    expect(moved.records.length).toBe(1);
    const got = verifyEntry(moved.records[0]!.record, b("key7"), moved.records[0]!.c.version) as { value: Uint8Array };
    expect(new TextDecoder().decode(got.value)).toBe("moved");
    for (let i = 1; i < 9; i++) expect(s.get(b(`key${i}`))).not.toBeNull();
  });
});
