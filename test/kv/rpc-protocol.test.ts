/**
 * The kv wire protocol (src/kv/protocol.ts): every body round-trips, and every decoder refuses
 * a truncated or lying body with a ProtocolError that names what is wrong. Rendezvous hashing
 * (src/kv/hash.ts): keys spread over the servers, and adding a server moves only its share.
 */
import { describe, expect, test } from "bun:test";
import { ProtocolError, UsageError } from "../../src/errors.ts";
import * as p from "../../src/kv/protocol.ts";
import { Rendezvous, routingUrl, urlSeed, weight } from "../../src/kv/hash.ts";

const enc = new TextEncoder();
const b = (s: string) => enc.encode(s);

function refuses(fn: () => unknown, pattern: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ProtocolError);
  expect((err as Error).message).toMatch(pattern);
}

describe("kv protocol", () => {
  test("method ids are the spec's", () => {
    expect([p.KV_HELLO, p.KV_GET, p.KV_PUT, p.KV_DEL, p.KV_CAS, p.KV_MGET, p.KV_STATS, p.KV_SAVE, p.KV_COMMIT]).toEqual([
      0x4b560001, 0x4b560002, 0x4b560003, 0x4b560004, 0x4b560005, 0x4b560006, 0x4b560007, 0x4b560008, 0x4b560009,
    ]);
  });

  test("u64 fields: two little-endian words, values up to 2^53 - 1; above refused", () => {
    const out = new Uint8Array(8);
    for (const v of [0, 1, 0xffffffff, 0x1_0000_0000, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) {
      p.writeU64(out, 0, v);
      expect(new DataView(out.buffer).getBigUint64(0, true)).toBe(BigInt(v));
      expect(p.readU64(out, 0, "t")).toBe(v);
    }
    new DataView(out.buffer).setBigUint64(0, 2n ** 53n, true);
    refuses(() => p.readU64(out, 0, "kv test"), /above 2\^53/);
  });

  test("PUT round trip (binary key, empty value) and lying keyLen", () => {
    const key = new Uint8Array([0, 255, 7]);
    const value = new Uint8Array(1000).map((_, i) => i);
    const body = p.encodePut(key, value);
    expect(new DataView(body.buffer).getUint32(0, true)).toBe(3);
    const d = p.decodePut(body);
    expect([...d.key]).toEqual([...key]);
    expect([...d.value]).toEqual([...value]);
    expect(p.decodePut(p.encodePut(key, new Uint8Array(0))).value.length).toBe(0);
    refuses(() => p.decodePut(new Uint8Array(3)), /kv PUT request: 3 bytes, too short/);
    const lie = p.encodePut(key, value);
    new DataView(lie.buffer).setUint32(0, 0xffffffff, true);
    refuses(() => p.decodePut(lie), /keyLen 4294967295 exceeds the 1003 bytes/);
  });

  test("CAS round trip and truncations", () => {
    const body = p.encodeCas(2 ** 33 + 5, b("k"), b("value"));
    const d = p.decodeCas(body);
    expect(d.expected).toBe(2 ** 33 + 5);
    expect(new TextDecoder().decode(d.key)).toBe("k");
    expect(new TextDecoder().decode(d.value)).toBe("value");
    refuses(() => p.decodeCas(body.subarray(0, 11)), /kv CAS request: 11 bytes, too short/);
    refuses(() => p.decodeCas(body.subarray(0, 12)), /keyLen 1 exceeds the 0 bytes/);
    expect(() => p.encodeCas(-1, b("k"), b("v"))).toThrow(UsageError);
  });

  test("MGET request round trip; lying counts and lengths refused without allocating them", () => {
    const keys = [b("a"), new Uint8Array(0), new Uint8Array([1, 2, 3, 4, 5])];
    const d = p.decodeMget(p.encodeMget(keys));
    expect(d.map((k) => [...k])).toEqual(keys.map((k) => [...k]));
    const huge = new Uint8Array(8);
    new DataView(huge.buffer).setUint32(0, 0xffffffff, true);
    refuses(() => p.decodeMget(huge), /count 4294967295 exceeds the limit/);
    new DataView(huge.buffer).setUint32(0, 1000, true);
    refuses(() => p.decodeMget(huge), /count 1000 needs at least 4000 bytes/);
    const body = p.encodeMget(keys);
    refuses(() => p.decodeMget(body.subarray(0, body.length - 1)), /key 2 of 3: keyLen 5 exceeds the 4 bytes left/);
    const extra = new Uint8Array(body.length + 2);
    extra.set(body);
    refuses(() => p.decodeMget(extra), /2 bytes after the last of 3 keys/);
    refuses(() => p.decodeMget(new Uint8Array(2)), /too short for its u32 count/);
  });

  test("COMMIT round trip and wrong lengths", () => {
    const body = p.encodeCommit(b("big"), 1 << 20, 0xdeadbeef);
    expect(p.decodeCommit(body)).toEqual({ key: b("big"), valueLen: 1 << 20, crc: 0xdeadbeef });
    refuses(() => p.decodeCommit(body.subarray(0, body.length - 1)), /expected exactly 15/);
  });

  test("GET response: found, absent, and inconsistent bodies", () => {
    const out = new Uint8Array(64);
    let n = p.writeGetResponse(out, true, 17, b("hello"));
    expect(n).toBe(14);
    const got = p.decodeGetResponse(out.subarray(0, n))!;
    expect(got.version).toBe(17);
    expect(new TextDecoder().decode(got.value)).toBe("hello");
    n = p.writeGetResponse(out, false, 0, null);
    expect(p.decodeGetResponse(out.subarray(0, n))).toBeNull();
    refuses(() => p.decodeGetResponse(out.subarray(0, 8)), /kv GET response: 8 bytes, too short/);
    out[0] = 2;
    refuses(() => p.decodeGetResponse(out.subarray(0, 9)), /flag byte 2/);
    p.writeGetResponse(out, false, 5, null);
    refuses(() => p.decodeGetResponse(out.subarray(0, 9)), /not found, yet version 5/);
  });

  test("PUT / DEL / CAS responses", () => {
    expect(p.decodeVersion(p.encodeVersion(2 ** 45))).toBe(2 ** 45);
    refuses(() => p.decodeVersion(new Uint8Array(9)), /kv PUT response: 9 bytes, expected exactly 8/);
    expect(p.decodeDelResponse(new Uint8Array([1]))).toBe(true);
    expect(p.decodeDelResponse(new Uint8Array([0]))).toBe(false);
    refuses(() => p.decodeDelResponse(new Uint8Array(0)), /kv DEL response: 0 bytes/);
    expect(p.decodeCasResponse(p.encodeCasResponse(false, 9))).toEqual({ ok: false, version: 9 });
    expect(p.decodeCasResponse(p.encodeCasResponse(true, 10))).toEqual({ ok: true, version: 10 });
    refuses(() => p.decodeCasResponse(new Uint8Array(8)), /kv CAS response: 8 bytes, expected exactly 9/);
  });

  test("MGET response: entries in order, copies when asked, lies refused", () => {
    const values = [b("one"), null, new Uint8Array(0)];
    const out = new Uint8Array(p.mgetResponseBytes(values));
    let at = 0;
    at = p.writeMgetEntry(out, at, values[0]!, 3);
    at = p.writeMgetEntry(out, at, null, 0);
    at = p.writeMgetEntry(out, at, values[2]!, 4);
    expect(at).toBe(out.length);
    const d = p.decodeMgetResponse(out, 3, true);
    expect(d[0]!.version).toBe(3);
    expect(new TextDecoder().decode(d[0]!.value)).toBe("one");
    expect(d[0]!.value.buffer).not.toBe(out.buffer);
    expect(d[1]).toBeNull();
    expect(d[2]).toEqual({ value: new Uint8Array(0), version: 4 });
    refuses(() => p.decodeMgetResponse(out, 4, false), /entry 3 of 4 starts at byte/);
    refuses(() => p.decodeMgetResponse(out, 2, false), /bytes after the last of 2 entries/);
    const lie = out.slice();
    new DataView(lie.buffer).setUint32(9, 1000, true);
    refuses(() => p.decodeMgetResponse(lie, 3, false), /entry 0 of 3 claims 1000 value bytes/);
  });

  test("HELLO round trip with and without descriptors; bad version and lengths refused", () => {
    const header = new Uint8Array(64).fill(9);
    const h: p.KvHello = { protocolVersion: 1, maxKeyBytes: 1024, maxValueBytes: 1 << 20, flags: 3, arenaDesc: new Uint8Array([1, 2, 3]), writeBufDesc: new Uint8Array([4, 5]), writeBufBytes: 1 << 20, arenaHeader: header };
    const body = p.encodeHello(h);
    expect(p.decodeHello(body)).toEqual(h);
    const bare = { ...h, flags: 0, arenaDesc: new Uint8Array(0), writeBufDesc: new Uint8Array(0), writeBufBytes: 0 };
    expect(p.decodeHello(p.encodeHello(bare))).toEqual(bare);
    refuses(() => p.decodeHello(body.subarray(0, body.length - 1)), /kv HELLO response with descriptors of 3 and 2 bytes: .* expected exactly/);
    const v2 = body.slice();
    v2[0] = 2;
    refuses(() => p.decodeHello(v2), /protocol version 2, this client speaks 1/);
    const lie = body.slice();
    new DataView(lie.buffer).setUint32(16, 1 << 30, true);
    refuses(() => p.decodeHello(lie), /arenaDescLen 1073741824 exceeds/);
    refuses(() => p.decodeHello(new Uint8Array(5)), /too short/);
  });

  test("empty-body requests refuse bytes", () => {
    p.checkEmpty(new Uint8Array(0), "STATS");
    refuses(() => p.checkEmpty(new Uint8Array(1), "STATS"), /kv STATS request: 1 bytes, expected none/);
  });
});

describe("rendezvous hashing", () => {
  const urls = ["tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000", "tcp://10.0.0.3:7000"];
  const keys = Array.from({ length: 30_000 }, (_, i) => b(`key-${i}`));

  test("the owner maximizes murmur32v3(key, urlSeed(url)); ties go to the first URL", () => {
    const r = new Rendezvous(urls);
    for (const k of keys.slice(0, 200)) {
      const ws = urls.map((u) => Bun.hash.murmur32v3(k, Bun.hash.murmur32v3(enc.encode(u), 0)) >>> 0);
      expect(r.owner(k)).toBe(ws.indexOf(Math.max(...ws)));
    }
    expect(urlSeed(urls[0]!)).toBe(Bun.hash.murmur32v3(enc.encode(urls[0]!), 0) >>> 0);
    expect(weight(keys[0]!, 7)).toBe(Bun.hash.murmur32v3(keys[0]!, 7) >>> 0);
    // Same URL twice is refused, one URL owns everything.
    expect(() => new Rendezvous([urls[0]!, urls[0]!])).toThrow(UsageError);
    expect(() => new Rendezvous([])).toThrow(UsageError);
    expect(new Rendezvous([urls[1]!]).owner(keys[5]!)).toBe(0);
  });

  test("scheme and host case do not change routing; other spellings (localhost, a shm name's case) stay distinct", () => {
    const upper = ["TCP://10.0.0.1:7000", "tcp://10.0.0.2:7000", "Tcp://10.0.0.3:7000"];
    const a = new Rendezvous(urls);
    const u = new Rendezvous(upper);
    for (const k of keys.slice(0, 2000)) expect(u.owner(k)).toBe(a.owner(k));
    expect(urlSeed("TCP://127.0.0.1:7000")).toBe(urlSeed("tcp://127.0.0.1:7000"));
    expect(routingUrl("UCX://Node-A.Example:7000/x?Y=1")).toBe("ucx://node-a.example:7000/x?Y=1");
    expect(routingUrl("tcp://[FE80::1]:7000")).toBe("tcp://[fe80::1]:7000");
    expect(routingUrl("SHM://KvOne")).toBe("shm://KvOne");
    expect(routingUrl("not a url")).toBe("not a url");
    // Different strings a user chose are different servers to routing.
    expect(urlSeed("tcp://localhost:7000")).not.toBe(urlSeed("tcp://127.0.0.1:7000"));
    expect(urlSeed("shm://kv1")).not.toBe(urlSeed("shm://KV1"));
    // One server in two cases is the same server listed twice.
    expect(() => new Rendezvous(["tcp://10.0.0.1:7000", "TCP://10.0.0.1:7000"])).toThrow(UsageError);
  });

  test("keys spread evenly over 3 servers", () => {
    const r = new Rendezvous(urls);
    const counts = [0, 0, 0];
    for (const k of keys) counts[r.owner(k)]!++;
    for (const c of counts) expect(Math.abs(c - keys.length / 3)).toBeLessThan(keys.length * 0.03);
  });

  test("adding a fourth server moves only the keys it now owns (about 1/4)", () => {
    const r3 = new Rendezvous(urls);
    const r4 = new Rendezvous([...urls, "tcp://10.0.0.4:7000"]);
    let moved = 0;
    for (const k of keys) {
      const before = r3.owner(k);
      const after = r4.owner(k);
      if (after !== before) {
        moved++;
        expect(after).toBe(3); // a key only ever moves to the new server
      }
    }
    expect(Math.abs(moved / keys.length - 0.25)).toBeLessThan(0.03);
  });
});
