import { describe, expect, test } from "bun:test";
import {
  DecodeError,
  ProtocolError,
  RemoteError,
  UsageError,
  bytes,
  defineService,
  msgpack,
  struct,
  wire,
} from "../../src/index.ts";
import { allowedRemoteName } from "../../src/errors.ts";

describe("wire header", () => {
  test("is 24 bytes, little-endian, and round-trips every field", () => {
    const h = new Uint8Array(wire.WIRE_HEADER_BYTES + 3);
    wire.writeWireHeader(h, wire.KIND_REQUEST, 0xdeadbeef, 70000, 0xfffffffe, 3, 10);
    expect(wire.WIRE_HEADER_BYTES).toBe(24);
    expect(h[0]).toBe(wire.KIND_REQUEST);
    expect([...h.subarray(4, 8)]).toEqual([0xef, 0xbe, 0xad, 0xde]);
    expect(wire.wireMethod(h)).toBe(0xdeadbeef);
    expect(wire.wireCallSlot(h)).toBe(70000);
    expect(wire.wireCallGen(h)).toBe(0xfffffffe);
    expect(wire.wireAppHeaderLen(h)).toBe(3);
    expect(wire.checkWireHeader(h, 0, h.length, 10)).toBe(wire.KIND_REQUEST);
  });

  test("disagreeing lengths, unknown kinds, versions and reserved bits are ProtocolErrors", () => {
    const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
    wire.writeWireHeader(h, wire.KIND_RESPONSE, 1, 0, 1, 0, 5);
    expect(() => wire.checkWireHeader(h, 0, h.length, 4)).toThrow(ProtocolError);
    expect(() => wire.checkWireHeader(h, 0, 20, 5)).toThrow(ProtocolError);
    const withApp = new Uint8Array(wire.WIRE_HEADER_BYTES);
    wire.writeWireHeader(withApp, wire.KIND_RESPONSE, 1, 0, 1, 8, 0);
    expect(() => wire.checkWireHeader(withApp, 0, withApp.length, 0)).toThrow(/application header/);
    for (const [at, v] of [[0, 0], [0, wire.KIND_MAX + 1], [0, wire.KIND_FLAG_METADATA | wire.KIND_CANCEL], [0, wire.KIND_FLAG_METADATA | wire.KIND_STREAM_MSG], [0, 0xff], [1, 2], [20, 1]] as const) {
      const bad = h.slice();
      bad[at] = v;
      expect(() => wire.checkWireHeader(bad, 0, bad.length, 5)).toThrow(ProtocolError);
    }
    // The metadata flag is allowed on requests, responses, errors, one-way messages, stream starts and ends.
    for (const k of [wire.KIND_REQUEST, wire.KIND_RESPONSE, wire.KIND_ERROR, wire.KIND_ONEWAY, wire.KIND_STREAM_START, wire.KIND_STREAM_END]) {
      const ok = h.slice();
      ok[0] = k | wire.KIND_FLAG_METADATA;
      expect(wire.checkWireHeader(ok, 0, ok.length, 5)).toBe(k | wire.KIND_FLAG_METADATA);
    }
  });

  test("metadata at the start of a body: withMetadata() and metadataEnd() agree; a prefix that does not fit is a ProtocolError", () => {
    const md = new Uint8Array([1, 1, 3, 2, 0, 0x61, 0x62, 0x63, 0x78, 0x79]);
    const body = wire.withMetadata(md, new Uint8Array([9, 8, 7]));
    expect([...body]).toEqual([md.length, 0, ...md, 9, 8, 7]);
    expect(wire.metadataEnd(body)).toBe(2 + md.length);
    expect([...body.subarray(wire.metadataEnd(body))]).toEqual([9, 8, 7]);
    expect(wire.metadataEnd(wire.withMetadata(md, new Uint8Array(0)))).toBe(2 + md.length);
    expect(() => wire.metadataEnd(new Uint8Array([5]))).toThrow(ProtocolError);
    expect(() => wire.metadataEnd(new Uint8Array([5, 0, 1, 2]))).toThrow(/does not fit/);
  });

  test("error bodies round-trip and malformed ones are ProtocolErrors", () => {
    expect(wire.decodeErrorBody(wire.encodeErrorBody("TypeError", "x"))).toEqual({ name: "TypeError", message: "x" });
    expect(() => wire.decodeErrorBody(new Uint8Array([0xff, 0xfe]))).toThrow(ProtocolError);
    expect(() => wire.decodeErrorBody(new TextEncoder().encode('{"name":1}'))).toThrow(ProtocolError);
  });
});

describe("remote error names", () => {
  test("pass through a null-prototype allow-list", () => {
    expect(allowedRemoteName("TypeError")).toBe("TypeError");
    expect(allowedRemoteName("constructor")).toBe("Error");
    expect(allowedRemoteName("__proto__")).toBe("Error");
    expect(allowedRemoteName("toString")).toBe("Error");
    expect(allowedRemoteName("EvilError")).toBe("Error");
    const e = new RemoteError("hasOwnProperty", "m");
    expect(e.remoteName).toBe("Error");
    expect(e.code).toBe("E_REMOTE");
    expect(new RemoteError("UnknownMethodError", "m").code).toBe("E_UNKNOWN_METHOD");
  });
});

describe("codecs", () => {
  test("struct: fixed little-endian layout, every field type", () => {
    const S = struct({ a: "u8", b: "u16", c: "u32", d: "i32", e: "f64", f: "u64", g: "i64", h: bytes(3) });
    expect(S.size).toBe(1 + 2 + 4 + 4 + 8 + 8 + 8 + 3);
    expect(S.offsets.e).toBe(11);
    const v = { a: 255, b: 65535, c: 4294967295, d: -5, e: 1.5, f: (1n << 64n) - 1n, g: -(1n << 62n), h: new Uint8Array([1, 2, 3]) };
    const enc = S.encode(v);
    expect(enc.length).toBe(S.size);
    expect([...enc.subarray(1, 3)]).toEqual([0xff, 0xff]);
    expect(S.decode(enc)).toEqual(v);
    expect(() => S.decode(enc.subarray(1))).toThrow(DecodeError);
    // Encoding a value that does not fit is the caller's error (test/rpc/struct-validation.test.ts has the rest).
    expect(() => S.encode({ ...v, h: new Uint8Array(2) })).toThrow(UsageError);
  });

  test("msgpack round-trips values and rejects garbage", () => {
    const c = msgpack<{ a: number; b: string[]; c: Uint8Array }>();
    const v = { a: 1, b: ["x"], c: new Uint8Array([9]) };
    expect(c.decode(c.encode(v))).toEqual(v);
    expect(() => c.decode(new Uint8Array([0x92, 0x01]))).toThrow(DecodeError);
  });

  test("defineService rejects duplicate and invalid ids", () => {
    expect(() => defineService({ a: { id: 1 }, b: { id: 1 } })).toThrow(UsageError);
    expect(() => defineService({ a: { id: -1 } })).toThrow(UsageError);
    expect(() => defineService({ a: { id: 1.5 } })).toThrow(UsageError);
  });
});
