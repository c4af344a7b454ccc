/**
 * KvStore in process: the operations, limits, versions, memory full with and without LRU,
 * stats, hugepages fallback and close().
 */
import { describe, expect, test } from "bun:test";
import { KvFullError, KvKeyError, KvValueTooLargeError, UsageError } from "../../src/errors.ts";
import { KvStore } from "../../src/kv/store.ts";
import { parseHeader } from "../../src/kv/verify.ts";

const enc = new TextEncoder();
const b = (s: string) => enc.encode(s);
const filled = (n: number, byte: number) => new Uint8Array(n).fill(byte);

describe("KvStore basics", () => {
  test("put/get/del/cas and versions", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    expect(s.get(b("a"))).toBeNull();
    const v1 = s.put(b("a"), b("one"));
    expect(v1).toBe(1);
    const got = s.get(b("a"))!;
    expect(Array.from(got.value)).toEqual(Array.from(b("one")));
    expect(got.version).toBe(1);
    const v2 = s.put(b("b"), b("two"));
    expect(v2).toBe(2);
    expect(s.cas(b("a"), 1, b("uno"))).toEqual({ ok: true, version: 3 });
    expect(s.cas(b("a"), 1, b("x"))).toEqual({ ok: false, version: 3 });
    expect(new TextDecoder().decode(s.get(b("a"))!.value)).toBe("uno");
    expect(s.cas(b("c"), 0, b("new"))).toEqual({ ok: true, version: 4 });
    expect(s.cas(b("c"), 0, b("again"))).toEqual({ ok: false, version: 4 });
    expect(s.cas(b("zz"), 7, b("x"))).toEqual({ ok: false, version: 0 });
    expect(s.del(b("a"))).toBe(true);
    expect(s.del(b("a"))).toBe(false);
    expect(s.get(b("a"))).toBeNull();
    expect(s.cas(b("a"), 0, b("back"))).toEqual({ ok: true, version: 5 });
    expect(s.put(b("e"), new Uint8Array(0))).toBe(6);
    expect(s.get(b("e"))!.value.byteLength).toBe(0);
    const st = s.stats();
    expect(st).toMatchObject({ keys: 4, puts: 6, dels: 1, casFailures: 3, hugepages: false, groupOverflows: 0, evictions: 0 });
    expect(st.gets).toBe(5);
    expect(st.heapBytes).toBe(s.layout.heapBytes);
    // four entries, each in the 64-byte class (24-byte header + key + value <= 64)
    expect(st.heapUsedBytes).toBe(4 * 64);
  });

  test("binary keys with 0x00 bytes are distinct keys", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    const k1 = new Uint8Array([0]);
    const k2 = new Uint8Array([0, 0]);
    const k3 = new Uint8Array([0, 1, 0]);
    s.put(k1, b("1"));
    s.put(k2, b("2"));
    s.put(k3, b("3"));
    expect(new TextDecoder().decode(s.get(k1)!.value)).toBe("1");
    expect(new TextDecoder().decode(s.get(k2)!.value)).toBe("2");
    expect(new TextDecoder().decode(s.get(k3)!.value)).toBe("3");
  });

  test("the arena header is what parseHeader reads", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, hashSeed: 1234 });
    expect(parseHeader(s.arena)).toEqual(s.layout);
    expect(s.layout).toMatchObject({ arenaBytes: 1 << 20, slotsPerGroup: 7, groupBytes: 256, indexOffset: 64, hashSeed: 1234 });
    expect(s.layout.heapOffset).toBe(64 + 256 * s.layout.groupCount);
  });
});

describe("KvStore limits", () => {
  test("empty key, key over the limit, key at the limit", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, maxKeyBytes: 100 });
    expect(() => s.put(new Uint8Array(0), b("v"))).toThrow(KvKeyError);
    expect(() => s.get(new Uint8Array(0))).toThrow(KvKeyError);
    expect(() => s.put(filled(101, 7), b("v"))).toThrow(/key of 101 bytes, must be 1 to 100/);
    expect(() => s.del(filled(101, 7))).toThrow(KvKeyError);
    const v = s.put(filled(100, 7), b("v"));
    expect(s.get(filled(100, 7))!.version).toBe(v);
    using d = KvStore.create({ memoryBytes: 1 << 20 });
    expect(d.maxKeyBytes).toBe(1024);
    d.put(filled(1024, 1), b("x"));
    expect(() => d.put(filled(1025, 1), b("x"))).toThrow(KvKeyError);
  });

  test("value over maxValueBytes, at the limit, and larger than the arena can hold", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, maxValueBytes: 1000 });
    s.put(b("k"), filled(1000, 1));
    const e = (() => {
      try {
        s.put(b("k"), filled(1001, 1));
      } catch (x) {
        return x as Error;
      }
    })();
    expect(e).toBeInstanceOf(KvValueTooLargeError);
    expect(e!.message).toContain("1001");
    expect(e!.message).toContain("1000");
    expect(s.get(b("k"))!.value.byteLength).toBe(1000);
    using d = KvStore.create({ memoryBytes: 1 << 20, evict: "lru" });
    expect(() => d.put(b("k"), filled(2 << 20, 1))).toThrow(KvValueTooLargeError);
    // the default limit is what the heap holds: that value fits in an empty store
    d.put(b("k"), filled(d.maxValueBytes, 3));
    expect(d.get(b("k"))!.value.byteLength).toBe(d.maxValueBytes);
  });
});

describe("KvStore memory full", () => {
  test("evict none: KvFullError, the old value stays, nothing is lost", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20 });
    const value = filled(3000, 5);
    let n = 0;
    let err: unknown = null;
    for (; n < 10_000; n++) {
      try {
        s.put(b(`key-${n}`), value);
      } catch (e) {
        err = e;
        break;
      }
    }
    expect(err).toBeInstanceOf(KvFullError);
    expect(n).toBeGreaterThan(10);
    // an overwrite of an existing key with a value of the same class needs a new chunk too: full
    const v0 = s.get(b("key-0"))!.version;
    expect(() => s.put(b("key-0"), filled(3000, 9))).toThrow(KvFullError);
    expect(s.get(b("key-0"))!.version).toBe(v0);
    expect(s.get(b("key-0"))!.value[0]).toBe(5);
    for (let i = 0; i < n; i++) expect(s.get(b(`key-${i}`))!.value.byteLength).toBe(3000);
    expect(s.stats().keys).toBe(n);
    expect(s.stats().evictions).toBe(0);
    // after a delete there is room again
    s.del(b("key-1"));
    s.put(b("key-0"), filled(3000, 9));
    expect(s.get(b("key-0"))!.value[0]).toBe(9);
  });

  test("evict lru: least recently used first (get and put are uses)", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, evict: "lru" });
    const value = filled(3000, 1);
    let n = 0;
    // fill until the first eviction
    for (; s.stats().evictions === 0; n++) s.put(b(`k${n}`), value);
    // k0 was evicted first; now use k1 (get) and k2 (put), then force more evictions
    expect(s.get(b("k0"))).toBeNull();
    expect(s.get(b("k1"))).not.toBeNull();
    // order, oldest first: k2 k3 k4 ... k1; the put of k2 needs a new chunk and evicts the
    // oldest, k2's own old record, then the new value makes k2 the most recent
    s.put(b("k2"), filled(3000, 2));
    expect(s.stats().evictions).toBe(2);
    s.put(b("new-a"), value);
    s.put(b("new-b"), value);
    // k3 and k4 are now the oldest: gone; k1, k2 and k5 survived
    expect(s.get(b("k3"))).toBeNull();
    expect(s.get(b("k4"))).toBeNull();
    expect(s.get(b("k1"))).not.toBeNull();
    expect(s.get(b("k2"))!.value[0]).toBe(2);
    expect(s.get(b("k5"))).not.toBeNull();
    expect(s.stats().evictions).toBe(4);
    expect(s.stats().keys).toBe(n - 1);
  });

  test("evict lru across classes: a large value evicts the oldest entries of any class", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, evict: "lru" });
    let i = 0;
    for (; s.stats().evictions === 0; i++) s.put(b(`small${i}`), filled(100, 1));
    const before = s.stats().evictions;
    const big = filled(300 * 1024, 7);
    s.put(b("big"), big);
    expect(s.get(b("big"))!.value).toEqual(big);
    expect(s.stats().evictions).toBeGreaterThan(before);
    // the newest small entries survive; the oldest went first
    expect(s.get(b(`small${i - 1}`))).not.toBeNull();
    expect(s.get(b("small1"))).toBeNull();
  });

  test("heapUsedBytes goes back to 0 when every key is deleted", () => {
    using s = KvStore.create({ memoryBytes: 4 << 20 });
    for (let i = 0; i < 200; i++) s.put(b(`k${i}`), filled(i * 37, i & 255));
    s.put(b("large"), filled(200 * 1024, 1));
    expect(s.stats().heapUsedBytes).toBeGreaterThan(200 * 1024);
    for (let i = 0; i < 200; i++) expect(s.del(b(`k${i}`))).toBe(true);
    s.del(b("large"));
    expect(s.stats()).toMatchObject({ keys: 0, heapUsedBytes: 0 });
  });
});

describe("KvStore lifecycle", () => {
  test("close() frees; later calls throw UsageError; twice is harmless", () => {
    const s = KvStore.create({ memoryBytes: 1 << 20 });
    s.put(b("k"), b("v"));
    s.close();
    s.close();
    expect(() => s.get(b("k"))).toThrow(UsageError);
    expect(() => s.put(b("k"), b("v"))).toThrow(UsageError);
    expect(() => s.del(b("k"))).toThrow(UsageError);
    expect(() => s.cas(b("k"), 0, b("v"))).toThrow(UsageError);
    expect(() => s.stats()).toThrow(UsageError);
    expect(() => s.save("/tmp/never-written.snap")).toThrow(UsageError);
  });

  test("hugepages: falls back to ordinary pages with a note when none are available", () => {
    const pool = require("node:fs").readFileSync("/proc/sys/vm/nr_hugepages", "utf8").trim();
    using s = KvStore.create({ memoryBytes: 3 << 20, hugepages: true });
    if (pool === "0") {
      expect(s.hugepagesNote).toStartWith("no huge pages: /proc/sys/vm/nr_hugepages is 0");
      expect(s.hugepagesNote).toContain("using ordinary pages");
      expect(s.stats().hugepages).toBe(false);
      expect(s.arena.byteLength).toBe(3 << 20);
    } else {
      console.log(`nr_hugepages ${pool}: hugepages ${s.stats().hugepages}, note ${s.hugepagesNote}`);
    }
    s.put(b("k"), b("v"));
    expect(s.get(b("k"))!.version).toBe(1);
    using plain = KvStore.create({ memoryBytes: 1 << 20 });
    expect(plain.hugepagesNote).toBeNull();
  });

  test("bad options are UsageErrors", () => {
    expect(() => KvStore.create({ memoryBytes: 100 })).toThrow(UsageError);
    expect(() => KvStore.create({ memoryBytes: 1 << 20, evict: "fifo" as "lru" })).toThrow(UsageError);
    expect(() => KvStore.create({ memoryBytes: 1 << 20, maxKeyBytes: 0 })).toThrow(UsageError);
    expect(() => KvStore.create({ memoryBytes: 1 << 20, groupCount: 1 << 20 })).toThrow(UsageError);
    expect(() => KvStore.create({ memoryBytes: 1 << 20, maxValueBytes: -1 })).toThrow(UsageError);
    expect(() => KvStore.create({ memoryBytes: 1 << 20, hashSeed: 2 ** 32 })).toThrow(UsageError);
  });
});

describe("KvStore values from its own arena", () => {
  test("put of a value that is a view of an entry evicted to make room stores the right bytes", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, evict: "lru" });
    let n = 0;
    for (; s.stats().evictions === 0; n++) s.put(b(`k${n}`), filled(3000, n & 255));
    // the oldest live entry is the next victim; its value is the source of the put
    const oldest = s.get(b("k1"))!;
    for (let i = 2; i < n; i++) s.get(b(`k${i}`));
    s.put(b("copy"), oldest.value);
    expect(s.stats().evictions).toBe(2);
    expect(s.get(b("k1"))).toBeNull();
    expect(uniformBytes(s.get(b("copy"))!.value, 1)).toBe(true);
  });
});

function uniformBytes(v: Uint8Array, byte: number): boolean {
  return v.length > 0 && v.every((x) => x === byte);
}

describe("kv errors over RPC", () => {
  test("a RemoteError named after a kv class is rebuilt as that class, message kept, with no registration by the user", async () => {
    const errors = await import("../../src/errors.ts");
    for (const [name, cls, code] of [
      ["KvFullError", errors.KvFullError, "E_KV_FULL"],
      ["KvKeyError", errors.KvKeyError, "E_KV_KEY"],
      ["KvValueTooLargeError", errors.KvValueTooLargeError, "E_KV_VALUE"],
      ["KvSnapshotError", errors.KvSnapshotError, "E_KV_SNAPSHOT"],
      ["KvUnavailableError", errors.KvUnavailableError, "E_KV_UNAVAILABLE"],
    ] as const) {
      const thrown = new cls(`${name} message`);
      expect(thrown.code).toBe(code);
      expect(errors.errorNameOf(thrown)).toBe(name);
      const back = errors.rebuildRemoteError(new errors.RemoteError(errors.errorNameOf(thrown), thrown.message));
      expect(back).toBeInstanceOf(cls);
      expect(back.message).toBe(`${name} message`);
      expect(back.name).toBe(name);
    }
  });
});

describe("KvStore lookup", () => {
  test("lookup() finds the value's bytes in the arena, with its length and version; -1 when absent", () => {
    using s = KvStore.create({ memoryBytes: 1 << 20, evict: "lru" });
    expect(s.lookup(b("k"))).toBe(-1);
    expect([s.lookupBytes, s.lookupVersion]).toEqual([0, 0]);
    const v = s.put(b("k"), b("hello"));
    const off = s.lookup(b("k"));
    expect(off).toBeGreaterThan(s.layout.heapOffset);
    expect(s.lookupBytes).toBe(5);
    expect(s.lookupVersion).toBe(v);
    expect(new TextDecoder().decode(s.arena.subarray(off, off + s.lookupBytes))).toBe("hello");
    expect(s.stats().gets).toBe(2);
  });

  test("memoryBytes above 2 GiB is refused (arena offsets are int32)", () => {
    expect(() => KvStore.create({ memoryBytes: 2 ** 31 + 1 })).toThrow(/2 GiB/);
  });
});
