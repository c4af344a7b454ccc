/**
 * KvStore against a Map model: a seeded random sequence of put/get/del/cas with mixed sizes (a
 * few bytes to a few hundred KiB, some larger than a slab page), binary keys with 0x00 bytes and
 * keys at the limit, checked after every step. Evict "none": the store is exactly the model
 * (a put that finds no memory throws KvFullError and changes nothing). Evict "lru": every key the
 * store has carries the model's latest value and version; a key may be missing only through an
 * eviction.
 */
import { describe, expect, test } from "bun:test";
import { KvFullError } from "../../src/errors.ts";
import { KvStore } from "../../src/kv/store.ts";
import { seededRandom } from "../../src/pool/backoff.ts";

const MAX_KEY = 64;

function keyPool(rand: () => number, n: number): Uint8Array[] {
  const seen = new Set<string>();
  const out: Uint8Array[] = [new Uint8Array([0]), new Uint8Array([0, 0]), new Uint8Array(MAX_KEY).fill(0), new Uint8Array(MAX_KEY).fill(0xff)];
  for (const k of out) seen.add(Buffer.from(k).toString("hex"));
  while (out.length < n) {
    const len = rand() < 0.1 ? MAX_KEY : 1 + Math.floor(rand() * 12);
    const k = new Uint8Array(len);
    for (let i = 0; i < len; i++) k[i] = rand() < 0.3 ? 0 : Math.floor(rand() * 256);
    const hex = Buffer.from(k).toString("hex");
    if (seen.has(hex)) continue;
    seen.add(hex);
    out.push(k);
  }
  return out;
}

function valueOf(rand: () => number, pageBytes: number): Uint8Array {
  const r = rand();
  const len =
    r < 0.5 ? Math.floor(rand() * 100)
    : r < 0.8 ? Math.floor(rand() * 4096)
    : r < 0.94 ? Math.floor(rand() * 64 * 1024)
    : r < 0.99 ? pageBytes + Math.floor(rand() * 2 * pageBytes) // a run of pages
    : 200 * 1024 + Math.floor(rand() * 200 * 1024);
  const v = new Uint8Array(len);
  const fill = Math.floor(rand() * 256);
  v.fill(fill);
  if (len > 0) v[Math.floor(rand() * len)] = (fill + 1) & 255;
  return v;
}

let overflowsSeen = 0;

interface ModelEntry {
  value: Uint8Array;
  version: number;
}

function run(seed: number, evict: "none" | "lru", memoryBytes: number, steps: number, groupCount?: number): { fulls: number; evictions: number; ops: Record<string, number> } {
  const rand = seededRandom(seed);
  using s = KvStore.create({ memoryBytes, evict, maxKeyBytes: MAX_KEY, hashSeed: seed, groupCount });
  const pageBytes = (s as unknown as { slab: { pageBytes: number } }).slab.pageBytes;
  const keys = keyPool(rand, 150);
  const model = new Map<number, ModelEntry>();
  let version = 0;
  let fulls = 0;
  const ops: Record<string, number> = { put: 0, get: 0, del: 0, cas: 0, casFail: 0 };
  const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;
  for (let step = 0; step < steps; step++) {
    const ki = Math.floor(rand() * keys.length);
    const key = keys[ki]!;
    const op = rand();
    if (op < 0.45) {
      const value = valueOf(rand, pageBytes);
      ops.put!++;
      try {
        const v = s.put(key, value);
        expect(v).toBe(++version);
        model.set(ki, { value, version: v });
      } catch (e) {
        if (!(e instanceof KvFullError) || evict === "lru") throw e;
        fulls++;
      }
    } else if (op < 0.7) {
      ops.get!++;
      const got = s.get(key);
      const m = model.get(ki);
      if (got === null) expect(m).toBeUndefined();
      else {
        expect(m).toBeDefined();
        expect(got.version).toBe(m!.version);
        expect(same(got.value, m!.value)).toBe(true);
      }
    } else if (op < 0.8) {
      ops.del!++;
      expect(s.del(key)).toBe(model.has(ki));
      model.delete(ki);
    } else {
      ops.cas!++;
      const m = model.get(ki);
      // Expect the right version most of the time, a wrong or absent one sometimes.
      const r = rand();
      const expected = r < 0.6 ? (m?.version ?? 0) : r < 0.8 ? 0 : version + 1;
      const value = valueOf(rand, pageBytes);
      try {
        const res = s.cas(key, expected, value);
        // The model was synced after the last step (evicted keys dropped), so it is exact here.
        expect(res.ok).toBe(expected === (m?.version ?? 0));
        if (res.ok) {
          expect(res.version).toBe(++version);
          model.set(ki, { value, version: res.version });
        } else {
          ops.casFail!++;
          expect(res.version).toBe(m?.version ?? 0);
        }
      } catch (e) {
        if (!(e instanceof KvFullError) || evict === "lru") throw e;
        fulls++;
      }
    }
    // After every step: the store agrees with the model.
    const st = s.stats();
    if (evict === "none") {
      expect(st.evictions).toBe(0);
      expect(st.keys).toBe(model.size);
    }
    for (const [i, m] of model) {
      const got = s.get(keys[i]!);
      if (got === null) {
        expect(evict).toBe("lru");
        model.delete(i);
        continue;
      }
      expect(got.version).toBe(m.version);
      if (!same(got.value, m.value)) throw new Error(`seed ${seed} step ${step}: key ${i} holds other bytes than the model`);
    }
    expect(st.keys === model.size || evict === "lru").toBe(true);
    expect(s.stats().keys).toBe(model.size);
    if (st.groupOverflows > overflowsSeen) overflowsSeen = st.groupOverflows;
  }
  overflowsSeen = Math.max(overflowsSeen, s.stats().groupOverflows);
  return { fulls, evictions: s.stats().evictions, ops };
}

describe("KvStore against a Map model", () => {
  for (const seed of [1, 2, 3]) {
    test(`evict none, seed ${seed}`, () => {
      const r = run(seed, "none", 3 << 20, 1500);
      expect(r.ops.casFail!).toBeGreaterThan(0);
      expect(r.fulls).toBeGreaterThan(0);
      if (seed === 1) console.log(`evict none seed ${seed}:`, r);
    });
    test(`evict lru, seed ${seed}`, () => {
      const r = run(seed, "lru", 2 << 20, 1500);
      expect(r.evictions).toBeGreaterThan(0);
      if (seed === 1) console.log(`evict lru seed ${seed}:`, r);
    });
  }
  test("a tiny index (8 groups): most keys live in the overflow map, with and without eviction", () => {
    overflowsSeen = 0;
    run(4, "none", 3 << 20, 1500, 8);
    expect(overflowsSeen).toBeGreaterThan(20);
    run(5, "lru", 2 << 20, 1500, 8);
  });
});
