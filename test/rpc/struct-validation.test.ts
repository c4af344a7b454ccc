/**
 * struct() checks every value against its field's type before it writes a byte (issue 10): a
 * value out of range, of the wrong type (bigint for a number field and back, strings, NaN for
 * an integer), a non-integer or a missing field is a UsageError naming the field and the value,
 * never a silently truncated byte (u8 300 used to become 44). Decoding a buffer of the wrong
 * length is a DecodeError naming both lengths.
 */

import { describe, expect, test } from "bun:test";
import { DecodeError, UsageError, bytes, struct } from "../../src/index.ts";

const S = struct({ a: "u8", b: "u16", c: "u32", d: "i32", e: "f64", f: "u64", g: "i64", h: bytes(3) });
const good = { a: 1, b: 2, c: 3, d: -4, e: 0.5, f: 6n, g: -7n, h: new Uint8Array([1, 2, 3]) };

function refused(field: keyof typeof good, value: unknown): UsageError {
  let err: unknown = null;
  try {
    S.encode({ ...good, [field]: value } as typeof good);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UsageError);
  return err as UsageError;
}

describe("struct encode refuses what its field cannot hold", () => {
  const cases: Array<[keyof typeof good, unknown, string]> = [
    ["a", 300, "300"],
    ["a", 256, "256"],
    ["a", -1, "-1"],
    ["a", 1.5, "1.5"],
    ["a", NaN, "NaN"],
    ["a", Infinity, "Infinity"],
    ["a", "7", '"7"'],
    ["a", 7n, "7n"],
    ["a", undefined, "undefined"],
    ["a", null, "null"],
    ["b", 65536, "65536"],
    ["b", -1, "-1"],
    ["c", 2 ** 32, "4294967296"],
    ["c", -1, "-1"],
    ["c", 3n, "3n"],
    ["d", 2 ** 31, "2147483648"],
    ["d", -(2 ** 31) - 1, "-2147483649"],
    ["d", 0.25, "0.25"],
    ["e", "1.5", '"1.5"'],
    ["e", 1n, "1n"],
    ["f", 6, "6"],
    ["f", -1n, "-1n"],
    ["f", 1n << 64n, "18446744073709551616n"],
    ["f", "6", '"6"'],
    ["g", 1n << 63n, "9223372036854775808n"],
    ["g", -(1n << 63n) - 1n, "-9223372036854775809n"],
    ["g", 7, "7"],
    ["h", new Uint8Array(2), "2 bytes"],
    ["h", [1, 2, 3], "an array"],
    ["h", "abc", '"abc"'],
  ];
  for (const [field, value, shown] of cases) {
    test(`${field} = ${typeof value === "bigint" ? `${value}n` : typeof value === "string" ? JSON.stringify(value) : Array.isArray(value) ? "[1,2,3]" : String(value)}`, () => {
      const e = refused(field, value);
      expect(e.message).toContain(`field "${field}"`);
      expect(e.message).toContain(shown);
    });
  }

  test("u8 300 no longer becomes 44", () => {
    expect(() => struct({ x: "u8" }).encode({ x: 300 })).toThrow(/field "x" \(u8\): 300 is out of range 0\.\.255/);
  });

  test("a value that is not an object is refused", () => {
    expect(() => S.encode(null as never)).toThrow(UsageError);
    expect(() => S.encode(5 as never)).toThrow(UsageError);
  });

  test("every boundary value that fits round-trips", () => {
    const lo = { a: 0, b: 0, c: 0, d: -(2 ** 31), e: -Number.MAX_VALUE, f: 0n, g: -(1n << 63n), h: new Uint8Array(3) };
    const hi = { a: 255, b: 65535, c: 2 ** 32 - 1, d: 2 ** 31 - 1, e: Infinity, f: (1n << 64n) - 1n, g: (1n << 63n) - 1n, h: new Uint8Array([9, 9, 9]) };
    expect(S.decode(S.encode(lo))).toEqual(lo);
    expect(S.decode(S.encode(hi))).toEqual(hi);
    // -0 keeps its sign in an f64; NaN is an f64 value too and round-trips.
    const z = struct({ x: "f64", i: "i32" });
    expect(Object.is(z.decode(z.encode({ x: -0, i: -0 })).x, -0)).toBe(true);
    expect(Number.isNaN(z.decode(z.encode({ x: NaN, i: 0 })).x)).toBe(true);
  });
});

describe("struct decode and layout", () => {
  test("a short or long buffer is a DecodeError naming both lengths", () => {
    const enc = S.encode(good);
    for (const b of [enc.subarray(1), new Uint8Array(0), new Uint8Array(S.size + 1)]) {
      let err: unknown = null;
      try {
        S.decode(b);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DecodeError);
      expect((err as Error).message).toContain(`${b.length} bytes`);
      expect((err as Error).message).toContain(String(S.size));
    }
  });

  test("decoded bytes fields are copies the caller owns", () => {
    const enc = S.encode(good);
    const v = S.decode(enc);
    enc.fill(0);
    expect([...v.h]).toEqual([1, 2, 3]);
  });

  test("bytes(n) and struct() refuse a bad layout with UsageError", () => {
    expect(() => bytes(-1)).toThrow(UsageError);
    expect(() => bytes(1.5)).toThrow(UsageError);
    expect(() => struct({ x: "u128" as never })).toThrow(UsageError);
    expect(() => struct(JSON.parse('{"__proto__": "u8"}'))).toThrow(UsageError);
  });
});
