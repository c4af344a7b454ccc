/**
 * The stream benchmark's messages (bench/stream.bench.ts and peers/stream-server.ts): the ask a
 * client sends to start a stream (u32 count, u32 lenBytes, little-endian) and the bytes of
 * message i of a stream: a fixed base pattern with i stamped at three places, so a message out
 * of order, cut short, or with a wrong byte at a stamp is caught without comparing every byte:
 *
 *   offset 0..3          u32 i
 *   offset lenBytes>>1   (i * 131 + 7) & 0xff
 *   offset lenBytes-4..  u32 i ^ 0xa5a5a5a5
 *   every other byte     (offset * 7 + 3) & 0xff
 *
 *   const m = streamMessage(64 << 10); stampMessage(m, 5); checkMessage(m, 5, 64 << 10) === null
 */

/** The method id the hotpath stream peer serves its stream on. */
export const STREAM_METHOD = 5;
/** The gRPC server-streaming method's path (raw bytes, identity serializers). */
export const GRPC_STREAM_PATH = "/hotpath.bench.Stream/Feed";
/** Smallest message: the three stamps must not overlap. */
export const MIN_MESSAGE_BYTES = 9;
/**
 * Environment of a stream peer: HOTPATH_BENCH_CORRUPT_STREAM=N flips the first byte of the N-th
 * message (1 = the first) of every stream it sends, to show the byte check failing the row.
 */
export const CORRUPT_ENV = "HOTPATH_BENCH_CORRUPT_STREAM";

export function encodeAsk(count: number, lenBytes: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, count, true);
  v.setUint32(4, lenBytes, true);
  return b;
}

/** A peer's reading of an ask; throws on a malformed one (wrong length, message too small). */
export function decodeAsk(b: Uint8Array): { count: number; lenBytes: number } {
  if (b.length !== 8) throw new Error(`stream ask: ${b.length} bytes, expected 8`);
  const v = new DataView(b.buffer, b.byteOffset, 8);
  const ask = { count: v.getUint32(0, true), lenBytes: v.getUint32(4, true) };
  if (ask.lenBytes < MIN_MESSAGE_BYTES) throw new Error(`stream ask: messages of ${ask.lenBytes} bytes, at least ${MIN_MESSAGE_BYTES}`);
  return ask;
}

/** A fresh message buffer holding the base pattern (stamps not yet written). */
export function streamMessage(lenBytes: number): Uint8Array {
  const b = new Uint8Array(lenBytes);
  for (let k = 0; k < lenBytes; k++) b[k] = (k * 7 + 3) & 0xff;
  return b;
}

const u32At = (b: Uint8Array, at: number) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
  b[at + 2] = (v >>> 16) & 0xff;
  b[at + 3] = (v >>> 24) & 0xff;
}
const midByte = (i: number) => (i * 131 + 7) & 0xff;

/** Writes message i's stamps into `b` (a streamMessage buffer), in place. */
export function stampMessage(b: Uint8Array, i: number): void {
  putU32(b, 0, i);
  b[b.length >> 1] = midByte(i);
  putU32(b, b.length - 4, (i ^ 0xa5a5a5a5) >>> 0);
}

/** Null when `m` is message i of `lenBytes` bytes at its stamps, else what differs. Allocates nothing when it matches. */
export function checkMessage(m: Uint8Array, i: number, lenBytes: number): string | null {
  if (m.length !== lenBytes) return `message ${i} has ${m.length} bytes, expected ${lenBytes}`;
  const head = u32At(m, 0);
  if (head !== i) return `message ${i} carries index ${head} in bytes 0..3`;
  const mid = m[lenBytes >> 1]!;
  if (mid !== midByte(i)) return `message ${i} has byte ${mid} at offset ${lenBytes >> 1}, expected ${midByte(i)}`;
  const tail = u32At(m, lenBytes - 4);
  if (tail !== (i ^ 0xa5a5a5a5) >>> 0) return `message ${i} has ${tail} in its last 4 bytes, expected ${(i ^ 0xa5a5a5a5) >>> 0}`;
  return null;
}

/** The message number (1 = the first) the peer corrupts, or 0 (none), from its environment. */
export function corruptAt(): number {
  const n = Number(process.env[CORRUPT_ENV] ?? 0);
  return Number.isInteger(n) && n > 0 ? n : 0;
}
