/**
 * The stream tests' shared pieces: method ids of the stream test service (stream-peer.ts),
 * message sizes (1 B .. 64 KiB, some past any transport's inline or slot size) and the byte
 * pattern each message carries, derived from (seed, index), so every byte is checked.
 */

export const M_ECHO = 1; // bidi: every message back
export const M_SOURCE = 2; // server stream: the first message [count u32, seed u32]; then count pattern messages; trailers {count}
export const M_SINK = 3; // client stream: [count, seed], then count pattern messages; answers [received u32, bad u32]
export const M_FLOOD = 4; // server stream: [size u32, id u32]: sends size-byte pattern messages (seed 0) until it fails; counts resolved sends as floodSent[id]
export const M_HOLD = 5; // never reads; waits for its signal
export const M_THROW = 6; // reads one message, then throws TypeError("refused: <n>")
export const M_SERVER_CANCEL = 7; // sends 3 messages, then cancels
export const M_WAIT = 8; // sends one message, then waits for its signal; a send after it must reject
export const M_STATS = 20; // unary: JSON { floodSent (by flood id), events, inFlight (server calls and streams, this one not counted), holdBuffered (bytes M_HOLD streams hold) }
export const M_UNARY_ECHO = 21; // unary echo

const SIZES = [1, 3, 17, 64, 200, 1000, 1500, 4096, 8192, 20000, 65536];

/** Size of message `i` of a stream with `seed`. */
export function sizeOf(seed: number, i: number): number {
  return SIZES[((i * 2654435761 + seed * 40503) >>> 0) % SIZES.length]!;
}

const byteAt = (seed: number, i: number, j: number) => (i * 31 + j * 7 + seed) & 255;

/** Message `i` of a stream with `seed` (`size` default sizeOf()). */
export function patternMessage(seed: number, i: number, size = sizeOf(seed, i)): Uint8Array {
  const m = new Uint8Array(size);
  for (let j = 0; j < size; j++) m[j] = byteAt(seed, i, j);
  return m;
}

/** True when `m` is exactly message `i` of `seed` (`size` default sizeOf()). */
export function isPattern(m: Uint8Array, seed: number, i: number, size = sizeOf(seed, i)): boolean {
  if (m.length !== size) return false;
  for (let j = 0; j < size; j++) if (m[j] !== byteAt(seed, i, j)) return false;
  return true;
}

export function u32s(...v: number[]): Uint8Array {
  const b = new Uint8Array(v.length * 4);
  const dv = new DataView(b.buffer);
  v.forEach((x, k) => dv.setUint32(k * 4, x, true));
  return b;
}

export function readU32s(b: Uint8Array): number[] {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: number[] = [];
  for (let k = 0; k + 4 <= b.length; k += 4) out.push(dv.getUint32(k, true));
  return out;
}
