/**
 * kv snapshots: a round trip keeps every key, value and version (the counter continues above
 * them, from the saved counter); truncated, corrupt, wrong-format and missing files are refused with KvSnapshotError
 * naming the path and the problem; a snapshot larger than the store is refused with KvFullError
 * and nothing is loaded; save is atomic (no temp file left, an old file replaced whole).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvFullError, KvSnapshotError } from "../../src/errors.ts";
import { KvStore } from "../../src/kv/store.ts";
import { thrown } from "../helpers/thrown.ts";

const dir = mkdtempSync(join(tmpdir(), "hotpath-kv-snap-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const enc = new TextEncoder();
const b = (s: string) => enc.encode(s);

/** A store with binary keys, an empty value, a page-run value and a rewritten key. */
function filledStore(): { s: KvStore; entries: Map<string, { value: Uint8Array; version: number }> } {
  const s = KvStore.create({ memoryBytes: 4 << 20, hashSeed: 99 });
  const entries = new Map<string, { value: Uint8Array; version: number }>();
  const put = (key: Uint8Array, value: Uint8Array) => entries.set(Buffer.from(key).toString("hex"), { value, version: s.put(key, value) });
  for (let i = 0; i < 300; i++) put(new Uint8Array([0, i & 255, i >> 8, 0]), new Uint8Array(i * 7).fill(i & 255));
  put(b("empty"), new Uint8Array(0));
  put(b("large"), new Uint8Array(400 * 1024).fill(0xab));
  put(b("rewritten"), b("first"));
  put(b("rewritten"), b("second"));
  s.put(b("deleted"), b("gone"));
  s.del(b("deleted"));
  return { s, entries };
}

function expectSame(s: KvStore, entries: Map<string, { value: Uint8Array; version: number }>): void {
  expect(s.stats().keys).toBe(entries.size);
  for (const [hex, e] of entries) {
    const got = s.get(Buffer.from(hex, "hex"));
    expect(got).not.toBeNull();
    expect(got!.version).toBe(e.version);
    expect(Buffer.compare(got!.value, e.value)).toBe(0);
  }
}

describe("kv snapshot", () => {
  const path = join(dir, "round.snap");
  test("round trip: every key, value and version back; the counter continues from the saved one", () => {
    const { s, entries } = filledStore();
    s.save(path);
    const last = Math.max(...[...entries.values()].map((e) => e.version));
    s.close();
    expect(readdirSync(dir).filter((n) => n.includes(".tmp-"))).toEqual([]);
    using t = KvStore.load(path, { memoryBytes: 4 << 20 });
    expectSame(t, entries);
    expect(t.get(b("deleted"))).toBeNull();
    // the saved counter: "deleted" got last + 1 before the save, so the next write gets last + 2
    expect(t.put(b("after"), b("x"))).toBe(last + 2);
    // a loaded store has its own layout (another seed, another size) and still finds every key
    using u = KvStore.load(path, { memoryBytes: 8 << 20, hashSeed: 7 });
    expectSame(u, entries);
  });

  test("the version counter survives a restart: a deleted key's version is never handed out again", () => {
    const p = join(dir, "counter.snap");
    let deletedVersion: number;
    {
      using s = KvStore.create({ memoryBytes: 1 << 20 });
      s.put(b("kept"), b("1"));
      deletedVersion = s.put(b("gone"), b("2"));
      s.put(b("gone"), b("3"));
      s.del(b("gone"));
      s.save(p);
    }
    {
      using t = KvStore.load(p, { memoryBytes: 1 << 20 });
      expect(t.get(b("kept"))!.version).toBe(1);
      // the largest loaded version is 1; versions 2 and 3 were handed out before the save
      const next = t.put(b("gone"), b("again"));
      expect(next).toBe(deletedVersion + 2);
      expect(t.cas(b("new"), 0, b("x"))).toEqual({ ok: true, version: next + 1 });
      t.save(p); // and again across a second restart
    }
    using u = KvStore.load(p, { memoryBytes: 1 << 20 });
    expect(u.put(b("later"), b("y"))).toBe(deletedVersion + 4);
  });

  test("a format 1 snapshot (no saved counter) still loads; the counter continues above its largest version", () => {
    const p = join(dir, "v1.snap");
    // format 1: a 32-byte header (crc at +24), then the same records and trailer
    const key = b("k1");
    const value = b("old");
    const header = new Uint8Array(32);
    header.set(b("HPKVSNAP"));
    const hv = new DataView(header.buffer);
    hv.setUint32(8, 1, true);
    hv.setUint32(12, 32, true);
    hv.setUint32(16, 1, true);
    hv.setUint32(24, Bun.hash.crc32(header.subarray(0, 24)) >>> 0, true);
    const rec = new Uint8Array(24 + key.length + value.length);
    const rv = new DataView(rec.buffer);
    rv.setUint32(0, 5, true);
    rv.setUint32(8, key.length, true);
    rv.setUint32(12, value.length, true);
    rec.set(key, 24);
    rec.set(value, 24 + key.length);
    rv.setUint32(16, Bun.hash.crc32(rec.subarray(24), Bun.hash.crc32(rec.subarray(0, 16))) >>> 0, true);
    const body = Buffer.concat([header, rec, Buffer.from([0x48, 0x50, 0x4b, 0x45])]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32LE(Bun.hash.crc32(body) >>> 0);
    writeFileSync(p, Buffer.concat([body, crc]));
    using s = KvStore.load(p, { memoryBytes: 1 << 20 });
    expect(s.get(key)!.version).toBe(5);
    expect(Buffer.from(s.get(key)!.value).toString()).toBe("old");
    expect(s.put(b("k2"), b("v"))).toBe(6);
  });

  test("save replaces an older snapshot whole, and an empty store round-trips", () => {
    const p = join(dir, "replace.snap");
    {
      using s = KvStore.create({ memoryBytes: 1 << 20 });
      s.put(b("old"), b("1"));
      s.save(p);
      s.put(b("new"), b("2"));
      s.del(b("old"));
      s.save(p);
    }
    using t = KvStore.load(p, { memoryBytes: 1 << 20 });
    expect(t.get(b("old"))).toBeNull();
    expect(t.get(b("new"))!.version).toBe(2);
    const e = join(dir, "empty.snap");
    {
      using s = KvStore.create({ memoryBytes: 1 << 20 });
      s.save(e);
    }
    using v = KvStore.load(e, { memoryBytes: 1 << 20 });
    expect(v.stats().keys).toBe(0);
    expect(v.put(b("k"), b("v"))).toBe(1);
  });

  test("a missing file, a truncated file at several points, a flipped byte, a wrong magic or version", () => {
    const { s } = filledStore();
    s.save(path);
    s.close();
    const good = readFileSync(path);
    const missing = thrown(() => KvStore.load(join(dir, "nope.snap"), { memoryBytes: 4 << 20 }));
    expect(missing).toBeInstanceOf(KvSnapshotError);
    expect(missing.message).toContain(join(dir, "nope.snap"));
    expect(missing.message).toContain("no such file");

    const bad = join(dir, "bad.snap");
    const refuse = (bytes: Uint8Array, what: RegExp) => {
      writeFileSync(bad, bytes);
      const e = thrown(() => KvStore.load(bad, { memoryBytes: 4 << 20 }));
      expect(e).toBeInstanceOf(KvSnapshotError);
      expect(e.message).toContain(bad);
      expect(e.message).toMatch(what);
    };
    for (const at of [0, 10, 31, 32, 40, 1000, Math.floor(good.length / 2), good.length - 9, good.length - 8, good.length - 4, good.length - 1]) {
      refuse(good.subarray(0, at), /truncated|checksum|trailer|wrong magic/);
    }
    // one byte flipped: in the header, a record header, a key, a value, the trailer
    for (const at of [3, 9, 17, 25, 32, 40, 60, 2000, Math.floor(good.length / 2), good.length - 100, good.length - 6, good.length - 2]) {
      const c = Buffer.from(good);
      c[at] ^= 0x04;
      refuse(c, /checksum|truncated|magic|format version|trailer|after the last/);
    }
    const magic = Buffer.from(good);
    magic.write("NOTASNAP", 0, "latin1");
    refuse(magic, /wrong magic/);
    const version = Buffer.from(good);
    version.writeUInt32LE(3, 8);
    refuse(version, /format version 3/);
    refuse(Buffer.concat([good, Buffer.from([0])]), /checksum|after the last/);
  });

  test("a snapshot larger than the store: KvFullError, nothing loaded", () => {
    const { s } = filledStore();
    s.save(path);
    s.close();
    const e = thrown(() => KvStore.load(path, { memoryBytes: 1 << 20 }));
    expect(e).toBeInstanceOf(KvFullError);
    expect(e.message).toContain(path);
    expect(e.message).toContain("nothing loaded");
    // the same holds with eviction on: a load never evicts
    expect(() => KvStore.load(path, { memoryBytes: 1 << 20, evict: "lru" })).toThrow(KvFullError);
  });

  test("values larger than the writer's 1 MiB chunk round-trip", () => {
    const p = join(dir, "huge.snap");
    const big = new Uint8Array(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 255;
    let version = 0;
    {
      using s = KvStore.create({ memoryBytes: 8 << 20 });
      s.put(b("a"), b("small"));
      version = s.put(b("big"), big);
      s.put(b("z"), new Uint8Array(1024 * 1024 - 30).fill(9));
      s.save(p);
    }
    using t = KvStore.load(p, { memoryBytes: 8 << 20 });
    expect(t.get(b("big"))!.version).toBe(version);
    expect(Buffer.compare(t.get(b("big"))!.value, big)).toBe(0);
    expect(t.get(b("z"))!.value.every((x) => x === 9)).toBe(true);
    expect(new TextDecoder().decode(t.get(b("a"))!.value)).toBe("small");
  });

  test("a snapshot whose keys exceed this store's maxKeyBytes is refused", () => {
    const p = join(dir, "longkey.snap");
    {
      using s = KvStore.create({ memoryBytes: 1 << 20 });
      s.put(new Uint8Array(200).fill(1), b("v"));
      s.save(p);
    }
    expect(() => KvStore.load(p, { memoryBytes: 1 << 20, maxKeyBytes: 100 })).toThrow(/key of 200 bytes/);
  });

  test("a save into a directory that does not exist fails with KvSnapshotError and leaves nothing", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    s.put(b("k"), b("v"));
    const p = join(dir, "no-such-dir", "x.snap");
    const e = thrown(() => s.save(p));
    expect(e).toBeInstanceOf(KvSnapshotError);
    expect(e.message).toContain(p);
    expect(existsSync(join(dir, "no-such-dir"))).toBe(false);
  });
});
