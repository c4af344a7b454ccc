/**
 * Codecs turn a typed value into request/response bytes and back.
 *
 * - `raw`: bytes as they are (the default). Decoded values are views: valid as long as the
 *   request handle (server) or the response (client) they came from.
 * - `struct({...})`: a fixed little-endian layout, fields in declaration order, no padding:
 *   u8 u16 u32 i32 f64 → number, u64 i64 → bigint, `bytes(n)` → Uint8Array of exactly n.
 *   encode() checks every value first: one its field cannot hold exactly (out of range, not an
 *   integer, a bigint for a number field or back, a string, missing) is a UsageError naming the
 *   field and the value, never a truncated byte. f64 takes any number (NaN and ±Infinity are
 *   f64 values). decode() of a buffer that is not exactly `size` bytes is a DecodeError.
 * - `msgpack<T>()`: any msgpack-encodable value, through `msgpackr`; a value it cannot encode
 *   is a UsageError.
 *
 * Encode errors are the caller's (UsageError); decode errors are the peer's bytes (DecodeError).
 * Codecs keep no state between calls: any thread may use one.
 *
 * Example:
 *   const Point = struct({ x: "f64", y: "f64", id: "u64", tag: bytes(4) });
 *   Point.decode(Point.encode({ x: 1, y: 2, id: 3n, tag: new Uint8Array(4) }));
 */

import { Packr } from "msgpackr";
import { HotpathError, UsageError, describeThrown } from "../errors.ts";
import { describeValue } from "./validate.ts";

export interface Codec<T> {
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

/** A request or response that does not match its codec. Reaches the caller as RemoteError("DecodeError"). */
export class DecodeError extends HotpathError {
  constructor(message: string) {
    super("E_DECODE", message);
  }
}
// Named after its class: a bundler may rename the binding (code splitting does; see errors.ts).
Object.defineProperty(DecodeError, "name", { value: "DecodeError" });

export const raw: Codec<Uint8Array> = {
  encode: (v) => v,
  decode: (b) => b,
};

type ScalarType = "u8" | "u16" | "u32" | "i32" | "f64" | "u64" | "i64";
export interface BytesField {
  readonly bytes: number;
}
export type FieldType = ScalarType | BytesField;

/** A fixed-length bytes field of a struct: exactly `n` bytes (UsageError unless n is an integer ≥ 0). */
export function bytes(n: number): BytesField {
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`bytes(${String(n)}): length must be an integer ≥ 0`);
  return { bytes: n };
}

type FieldValue<F> = F extends "u64" | "i64" ? bigint : F extends BytesField ? Uint8Array : number;
export type StructValue<L extends Record<string, FieldType>> = { [K in keyof L]: FieldValue<L[K]> };

const SCALAR_SIZE: Record<ScalarType, number> = { u8: 1, u16: 2, u32: 4, i32: 4, f64: 8, u64: 8, i64: 8 };
/** Inclusive ranges of the integer fields. */
const INT_RANGE: Record<"u8" | "u16" | "u32" | "i32", readonly [number, number]> = {
  u8: [0, 0xff],
  u16: [0, 0xffff],
  u32: [0, 0xffffffff],
  i32: [-0x80000000, 0x7fffffff],
};
const BIGINT_RANGE: Record<"u64" | "i64", readonly [bigint, bigint]> = {
  u64: [0n, (1n << 64n) - 1n],
  i64: [-(1n << 63n), (1n << 63n) - 1n],
};

export interface StructCodec<L extends Record<string, FieldType>> extends Codec<StructValue<L>> {
  /** Encoded size in bytes. */
  readonly size: number;
  /** Field name → byte offset. */
  readonly offsets: Readonly<Record<keyof L, number>>;
}

/** A value as an error message shows it: numbers and bigints as written, strings quoted, else its type. */
function shown(x: unknown): string {
  if (typeof x === "number") return Object.is(x, -0) ? "-0" : String(x);
  if (typeof x === "bigint") return `${x}n`;
  if (typeof x === "string") return JSON.stringify(x.length > 40 ? x.slice(0, 40) + "…" : x);
  if (x === undefined) return "undefined";
  if (x instanceof Uint8Array) return `a Uint8Array of ${x.length} bytes`;
  return describeValue(x);
}

/** UsageError unless `x` is a value field `f` holds exactly. */
function checkField(name: string, type: FieldType, x: unknown): void {
  const bad = (why: string) => new UsageError(`struct field "${name}" (${typeof type === "string" ? type : `bytes(${type.bytes})`}): ${shown(x)} ${why}`);
  switch (type) {
    case "u8":
    case "u16":
    case "u32":
    case "i32": {
      const [lo, hi] = INT_RANGE[type];
      if (typeof x !== "number") throw bad(`is not a number (an integer in ${lo}..${hi})`);
      if (!Number.isInteger(x)) throw bad(`is not an integer (${lo}..${hi})`);
      if (x < lo || x > hi) throw bad(`is out of range ${lo}..${hi}`);
      return;
    }
    case "f64":
      if (typeof x !== "number") throw bad("is not a number");
      return;
    case "u64":
    case "i64": {
      const [lo, hi] = BIGINT_RANGE[type];
      if (typeof x !== "bigint") throw bad(`is not a bigint (${type} fields take bigints in ${lo}..${hi})`);
      if (x < lo || x > hi) throw bad(`is out of range ${lo}..${hi}`);
      return;
    }
    default:
      if (!(x instanceof Uint8Array)) throw bad(`is not a Uint8Array of ${type.bytes} bytes`);
      if (x.length !== type.bytes) throw bad(`has the wrong length: the field is exactly ${type.bytes} bytes`);
  }
}

/** A fixed-layout codec (see the module comment). UsageError for a field type it does not know. */
export function struct<const L extends Record<string, FieldType>>(layout: L): StructCodec<L> {
  const fields = Object.entries(layout).map(([name, type]) => ({ name, type }));
  const offsets: Record<string, number> = Object.create(null);
  let size = 0;
  for (const f of fields) {
    // Decoded values are plain objects: a field by this name would set their prototype.
    if (f.name === "__proto__") throw new UsageError('struct: a field cannot be named "__proto__"');
    const t = f.type as unknown;
    const known = typeof t === "string" ? Object.hasOwn(SCALAR_SIZE, t) : t !== null && typeof t === "object" && Number.isSafeInteger((t as BytesField).bytes) && (t as BytesField).bytes >= 0;
    if (!known) {
      throw new UsageError(`struct field "${f.name}": type ${typeof t === "string" ? JSON.stringify(t) : describeValue(t)} is not one of ${Object.keys(SCALAR_SIZE).join(" ")} or bytes(n)`);
    }
    offsets[f.name] = size;
    size += typeof f.type === "string" ? SCALAR_SIZE[f.type] : f.type.bytes;
  }
  return {
    size,
    offsets: offsets as Record<keyof L, number>,
    encode(value) {
      if (value === null || typeof value !== "object") throw new UsageError(`struct encode: the value is ${describeValue(value)}, not an object with the layout's fields`);
      const v = value as Record<string, unknown>;
      // Every field is checked before anything is written: a bad value never yields bytes.
      for (const f of fields) checkField(f.name, f.type, v[f.name]);
      const out = new Uint8Array(size);
      const dv = new DataView(out.buffer);
      for (const f of fields) {
        const at = offsets[f.name]!;
        const x = v[f.name];
        switch (f.type) {
          case "u8": dv.setUint8(at, x as number); break;
          case "u16": dv.setUint16(at, x as number, true); break;
          case "u32": dv.setUint32(at, x as number, true); break;
          case "i32": dv.setInt32(at, x as number, true); break;
          case "f64": dv.setFloat64(at, x as number, true); break;
          case "u64": dv.setBigUint64(at, x as bigint, true); break;
          case "i64": dv.setBigInt64(at, x as bigint, true); break;
          default: out.set(x as Uint8Array, at);
        }
      }
      return out;
    },
    decode(b) {
      if (!(b instanceof Uint8Array)) throw new DecodeError(`struct decode: ${describeValue(b)}, not a Uint8Array`);
      if (b.length !== size) throw new DecodeError(`struct decode: ${b.length} bytes, the layout is exactly ${size}`);
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const v: Record<string, unknown> = {};
      for (const f of fields) {
        const at = offsets[f.name]!;
        switch (f.type) {
          case "u8": v[f.name] = dv.getUint8(at); break;
          case "u16": v[f.name] = dv.getUint16(at, true); break;
          case "u32": v[f.name] = dv.getUint32(at, true); break;
          case "i32": v[f.name] = dv.getInt32(at, true); break;
          case "f64": v[f.name] = dv.getFloat64(at, true); break;
          case "u64": v[f.name] = dv.getBigUint64(at, true); break;
          case "i64": v[f.name] = dv.getBigInt64(at, true); break;
          default: v[f.name] = b.slice(at, at + f.type.bytes);
        }
      }
      return v as StructValue<L>;
    },
  };
}

const packr = new Packr({ useRecords: false, moreTypes: false });

/** A msgpack codec for `T` (see the module comment). */
export function msgpack<T>(): Codec<T> {
  return {
    encode(v) {
      try {
        return packr.pack(v);
      } catch (e) {
        throw new UsageError(`msgpack encode: ${describeThrown(e)}`);
      }
    },
    decode(b) {
      try {
        return packr.unpack(b) as T;
      } catch (e) {
        throw new DecodeError(`msgpack: ${e instanceof Error ? e.message : String(e)}`);
      }
    },
  };
}
