/**
 * Little-endian integer access on a Uint8Array without a DataView per message (a DataView is
 * an allocation; these are a few byte operations the JIT inlines). Shared by the wire header
 * and the transports' framing.
 */

export function readU16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}

export function writeU16(b: Uint8Array, at: number, v: number): void {
  b[at] = v;
  b[at + 1] = v >>> 8;
}

export function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

export function writeU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v;
  b[at + 1] = v >>> 8;
  b[at + 2] = v >>> 16;
  b[at + 3] = v >>> 24;
}

export const EMPTY_BYTES: Uint8Array = new Uint8Array(0);

/**
 * A copy of `b` in a new, plain Uint8Array the caller owns. Not `b.slice()`: on a Node/Bun
 * `Buffer` (what tcp delivers, and what callers often pass) slice() is a view of the same
 * memory, so a "copy" would pin a whole read buffer or change when the caller reuses its own.
 */
export function copyBytes(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length);
  out.set(b);
  return out;
}
