/**
 * Codecs turn a typed value into request/response bytes and back.
 *
 * - `raw`: bytes as they are (the default). Decoded values are views: valid as long as the
 *   request handle (server) or the response (client) they came from.
 * - `struct({...})`: a fixed little-endian layout, fields in declaration order, no padding:
 *   u8 u16 u32 i32 f64 → number, u64 i64 → bigint, `bytes(n)` → Uint8Array of exactly n.
 * - `msgpack<T>()`: any msgpack-encodable value, through `msgpackr`.
 *
 * Example:
 *   const Point = struct({ x: "f64", y: "f64", id: "u64", tag: bytes(4) });
 *   Point.decode(Point.encode({ x: 1, y: 2, id: 3n, tag: new Uint8Array(4) }));
 */

import { Packr } from "msgpackr";
import { HotpathError } from "../errors.ts";

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

export const raw: Codec<Uint8Array> = {
  encode: (v) => v,
  decode: (b) => b,
};

type ScalarType = "u8" | "u16" | "u32" | "i32" | "f64" | "u64" | "i64";
export interface BytesField {
  readonly bytes: number;
}
export type FieldType = ScalarType | BytesField;

export function bytes(n: number): BytesField {
  if (!Number.isInteger(n) || n < 0) throw new HotpathError("E_USAGE", `bytes(${n}): length must be a non-negative integer`);
  return { bytes: n };
}

type FieldValue<F> = F extends "u64" | "i64" ? bigint : F extends BytesField ? Uint8Array : number;
export type StructValue<L extends Record<string, FieldType>> = { [K in keyof L]: FieldValue<L[K]> };

const SCALAR_SIZE: Record<ScalarType, number> = { u8: 1, u16: 2, u32: 4, i32: 4, f64: 8, u64: 8, i64: 8 };

export interface StructCodec<L extends Record<string, FieldType>> extends Codec<StructValue<L>> {
  /** Encoded size in bytes. */
  readonly size: number;
  /** Field name → byte offset. */
  readonly offsets: Readonly<Record<keyof L, number>>;
}

export function struct<const L extends Record<string, FieldType>>(layout: L): StructCodec<L> {
  const fields = Object.entries(layout).map(([name, type]) => ({ name, type }));
  const offsets: Record<string, number> = {};
  let size = 0;
  for (const f of fields) {
    offsets[f.name] = size;
    size += typeof f.type === "string" ? SCALAR_SIZE[f.type] : f.type.bytes;
  }
  return {
    size,
    offsets: offsets as Record<keyof L, number>,
    encode(value) {
      const out = new Uint8Array(size);
      const dv = new DataView(out.buffer);
      const v = value as Record<string, unknown>;
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
          default: {
            const b = x as Uint8Array;
            if (!(b instanceof Uint8Array) || b.length !== f.type.bytes) {
              throw new DecodeError(`struct field "${f.name}": expected ${f.type.bytes} bytes`);
            }
            out.set(b, at);
          }
        }
      }
      return out;
    },
    decode(b) {
      if (b.length !== size) throw new DecodeError(`struct: ${b.length} bytes, layout is ${size}`);
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

export function msgpack<T>(): Codec<T> {
  return {
    encode: (v) => packr.pack(v),
    decode(b) {
      try {
        return packr.unpack(b) as T;
      } catch (e) {
        throw new DecodeError(`msgpack: ${e instanceof Error ? e.message : String(e)}`);
      }
    },
  };
}
