/**
 * The TCP hello (control path): the first HELLO_BYTES each side writes on a new connection (over
 * TLS: the first bytes inside the TLS session), before any frame. Both sides send theirs at once
 * and check the peer's; handshake.ts runs the exchange, including the authentication messages
 * that follow the hellos when a token is in play.
 *
 *   offset 0   u32 LE  magic            HELLO_MAGIC ("hptc"; as a frame's head length it is far
 *                                         above any maxHeadBytes, so a peer without hellos aborts)
 *   offset 4   u16 LE  version          TCP_PROTOCOL_VERSION; both sides must speak the same one
 *   offset 6   u16 LE  status           HELLO_OK, or HELLO_BUSY (the listener is at its
 *                                         connection limit and closes after this hello)
 *   offset 8   u32 LE  maxMessageBytes  the largest body this side accepts
 *   offset 12  u32 LE  maxHeadBytes     the largest head this side accepts
 *   offset 16  u32 LE  flags            HELLO_AUTH_REQUIRED (listener: only token holders are
 *                                         admitted), HELLO_AUTH_OFFERED (client: it holds a token
 *                                         and will prove it); other bits are sent as 0, ignored
 *   offset 20  32 B    nonce            fresh random bytes when this side has a token (the
 *                                         listener's nonce is the challenge), else zeros
 *
 * The first 8 bytes (magic, version, status) keep their place in every version, so a peer of
 * another version is told so from them alone, whatever length its own hello has. There is no
 * message window field: tcp has no window of its own (its backpressure is the socket's and
 * sendBufferBytes), and the RPC window is the caller's choice on each side.
 *
 * Example:
 *   socket.write(encodeHello(HELLO_OK, 1 << 20, 4096, HELLO_AUTH_REQUIRED, nonce));
 *   const h = decodeHello(firstHelloBytes);   // { error } or the peer's limits, flags, nonce
 */

import { readU16, readU32, writeU16, writeU32 } from "../bytes.ts";
import { NONCE_BYTES } from "../contract/auth.ts";

export const HELLO_MAGIC_OFFSET = 0;
export const HELLO_VERSION_OFFSET = 4;
export const HELLO_STATUS_OFFSET = 6;
export const HELLO_MAX_MESSAGE_OFFSET = 8;
export const HELLO_MAX_HEAD_OFFSET = 12;
export const HELLO_FLAGS_OFFSET = 16;
export const HELLO_NONCE_OFFSET = 20;
export const HELLO_BYTES = HELLO_NONCE_OFFSET + NONCE_BYTES;
/** Magic, version and status: the part every version shares. */
export const HELLO_PREFIX_BYTES = 8;

/** "hptc" in ASCII, read little-endian. */
export const HELLO_MAGIC = 0x63747068;
/** 2: flags and a nonce for authentication (version 1 was the first 16 bytes alone). */
export const TCP_PROTOCOL_VERSION = 2;
export const HELLO_OK = 0;
export const HELLO_BUSY = 1;

export const HELLO_AUTH_REQUIRED = 1;
export const HELLO_AUTH_OFFERED = 2;

export interface PeerHello {
  readonly status: number;
  readonly maxMessageBytes: number;
  readonly maxHeadBytes: number;
  readonly flags: number;
  /** A view into the bytes decodeHello was given. */
  readonly nonce: Uint8Array;
}

/** A fresh hello (the caller owns it); `nonce` (NONCE_BYTES) defaults to zeros. Pure: any thread. */
export function encodeHello(status: number, maxMessageBytes: number, maxHeadBytes: number, flags = 0, nonce?: Uint8Array): Uint8Array {
  const b = new Uint8Array(HELLO_BYTES);
  writeU32(b, HELLO_MAGIC_OFFSET, HELLO_MAGIC);
  writeU16(b, HELLO_VERSION_OFFSET, TCP_PROTOCOL_VERSION);
  writeU16(b, HELLO_STATUS_OFFSET, status);
  writeU32(b, HELLO_MAX_MESSAGE_OFFSET, maxMessageBytes);
  writeU32(b, HELLO_MAX_HEAD_OFFSET, maxHeadBytes);
  writeU32(b, HELLO_FLAGS_OFFSET, flags);
  if (nonce) b.set(nonce, HELLO_NONCE_OFFSET);
  return b;
}

/**
 * Checks the first HELLO_PREFIX_BYTES of the peer's hello (magic already matched): null when
 * they pass, else what is wrong (another version, a refusal), phrased to follow "the peer ".
 * Reads `b` only; any thread.
 */
export function checkHelloPrefix(b: Uint8Array): string | null {
  const version = readU16(b, HELLO_VERSION_OFFSET);
  if (version !== TCP_PROTOCOL_VERSION) {
    return `speaks hotpath tcp protocol version ${version}, this side speaks version ${TCP_PROTOCOL_VERSION}`;
  }
  const status = readU16(b, HELLO_STATUS_OFFSET);
  if (status === HELLO_BUSY) return "refused the connection: the listener is at its connection limit";
  if (status !== HELLO_OK) return `sent a hello with unknown status ${status}`;
  return null;
}

/** The peer's whole hello (HELLO_BYTES, prefix checked): its limits, flags and a nonce view into `b` (copy it to keep it). */
export function decodeHello(b: Uint8Array): PeerHello {
  return {
    status: readU16(b, HELLO_STATUS_OFFSET),
    maxMessageBytes: readU32(b, HELLO_MAX_MESSAGE_OFFSET),
    maxHeadBytes: readU32(b, HELLO_MAX_HEAD_OFFSET),
    flags: readU32(b, HELLO_FLAGS_OFFSET),
    nonce: b.subarray(HELLO_NONCE_OFFSET, HELLO_NONCE_OFFSET + NONCE_BYTES),
  };
}

/** Bytes a quote shows: an HTTP status line or a banner fits, and the message stays one line. */
const QUOTE_BYTES = 64;
/** Below this share of printable bytes a quote is hex: text with a stray byte still reads as text. */
const TEXT_SHARE = 0.75;

/**
 * What a peer that is not hotpath sent, for an error message: printable ASCII quoted with
 * control characters escaped ('HTTP/1.1 400 Bad Request\r\n…'), hex where it is binary, and a
 * note when it is a TLS record (a TLS peer on a plain connection). At most QUOTE_BYTES shown.
 * Reads `b` only; any thread.
 */
export function describeForeignBytes(b: Uint8Array): string {
  const shown = b.subarray(0, QUOTE_BYTES);
  const more = b.length > QUOTE_BYTES ? "…" : "";
  if (b.length >= 3 && (b[0] === 0x16 || b[0] === 0x15) && b[1] === 0x03 && b[2]! <= 0x04) {
    return `a TLS ${b[0] === 0x16 ? "handshake" : "alert"} record (${hex(shown.subarray(0, 8))}…)`;
  }
  let printable = 0;
  for (const x of shown) if ((x >= 0x20 && x < 0x7f) || x === 0x0a || x === 0x0d || x === 0x09) printable++;
  if (printable < shown.length * TEXT_SHARE) return `${b.length} binary bytes (${hex(shown.subarray(0, 16))}${b.length > 16 ? " …" : ""})`;
  let s = "";
  for (const x of shown) {
    if (x === 0x0a) s += "\\n";
    else if (x === 0x0d) s += "\\r";
    else if (x === 0x09) s += "\\t";
    else if (x === 0x27 || x === 0x5c) s += "\\" + String.fromCharCode(x);
    else if (x >= 0x20 && x < 0x7f) s += String.fromCharCode(x);
    else s += `\\x${x.toString(16).padStart(2, "0")}`;
  }
  return `'${s}${more}'`;
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
}
