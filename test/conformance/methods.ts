/** The test service every conformance peer serves, by method id. */

export const M_ECHO = 1;
/** Replies with the data after the delay (ms) given as the u32 in the first 4 bytes. */
export const M_DELAY_ECHO = 2;
/** Throws TypeError with the data (UTF-8) as its message. */
export const M_THROW = 3;
/** Holds requests until data[0] of them arrived, then replies to all in reverse order. */
export const M_REVERSE = 4;
/** Never replies by itself; counts the calls whose cancel reached the handler. */
export const M_WAIT_CANCEL = 5;
/** Replies with the u32 count of cancels seen by M_WAIT_CANCEL. */
export const M_CANCEL_COUNT = 6;
/** Replies with the application header's bytes. */
export const M_APP_HEADER = 7;
/** One-way: records the data. */
export const M_RECORD = 8;
/** Replies with the count (u32) and total bytes (u32) of M_RECORD messages seen. */
export const M_RECORD_COUNT = 9;
/** Closes the session the request came in on, without replying. */
export const M_CLOSE_SESSION = 10;
/** Replies with the request's data length as u32 and a checksum u32 (large message checks). */
export const M_DIGEST = 11;
/** Never replies and ignores cancels (a handler that hangs forever). */
export const M_NEVER = 12;
/** Misbehaves as data[0] says (one of the MISBEHAVE_* cases below). */
export const M_MISBEHAVE = 13;
/** Replies with the u32 count of reports the server's onError received. */
export const M_ERROR_COUNT = 14;
/** Holds the call until M_OPEN_GATE is called, then echoes (a slow handler with no clock in it). */
export const M_GATE = 15;
/** Releases every call held by M_GATE; replies with how many (u32). */
export const M_OPEN_GATE = 16;
/** Not served: unknown. */
export const M_UNKNOWN = 999;

export function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

export function readU32(b: Uint8Array, at = 0): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
}

/** A cheap checksum that notices reordered or altered bytes. */
export function checksum(b: Uint8Array): number {
  let h = 2166136261;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 16777619);
  return h >>> 0;
}

/** How M_MISBEHAVE misbehaves, by data[0]; each must reach the caller as a RemoteError. */
export const MISBEHAVE_CASES = [
  "throw a null-prototype object",
  "reject with a null-prototype object",
  "throw an Error whose name getter throws",
  "reject with an Error whose name getter throws",
  "return a string",
  "return a number",
  "return a plain object",
  "return an array",
  "resolve to a string",
  "throw an Error whose message getter throws",
  "return a Proxy whose traps throw",
  "resolve to a Proxy whose traps throw",
] as const;
