/**
 * The TCP hello (control path): the first 16 bytes each side writes on a new connection, before
 * any frame. Both sides send theirs at once and check the peer's; no message is sent or
 * delivered before the peer's hello arrived and passed.
 *
 *   offset 0   u32 LE  magic            HELLO_MAGIC ("hptc"; as a frame's head length it is far
 *                                         above any maxHeadBytes, so a peer without hellos aborts)
 *   offset 4   u16 LE  version          TCP_PROTOCOL_VERSION; both sides must speak the same one
 *   offset 6   u16 LE  status           HELLO_OK, or HELLO_BUSY (the listener is at its
 *                                         connection limit and closes after this hello)
 *   offset 8   u32 LE  maxMessageBytes  the largest body this side accepts
 *   offset 12  u32 LE  maxHeadBytes     the largest head this side accepts
 *
 * Example:
 *   socket.write(encodeHello(HELLO_OK, 1 << 20, 4096));
 *   const h = decodeHello(first16Bytes);   // { error } or the peer's limits
 */

import { readU16, readU32, writeU16, writeU32 } from "../bytes.ts";

export const HELLO_MAGIC_OFFSET = 0;
export const HELLO_VERSION_OFFSET = 4;
export const HELLO_STATUS_OFFSET = 6;
export const HELLO_MAX_MESSAGE_OFFSET = 8;
export const HELLO_MAX_HEAD_OFFSET = 12;
export const HELLO_BYTES = 16;

/** "hptc" in ASCII, read little-endian. */
export const HELLO_MAGIC = 0x63747068;
export const TCP_PROTOCOL_VERSION = 1;
export const HELLO_OK = 0;
export const HELLO_BUSY = 1;

export interface PeerHello {
  readonly status: number;
  readonly maxMessageBytes: number;
  readonly maxHeadBytes: number;
}

/** A fresh 16-byte hello. */
export function encodeHello(status: number, maxMessageBytes: number, maxHeadBytes: number): Uint8Array {
  const b = new Uint8Array(HELLO_BYTES);
  writeU32(b, HELLO_MAGIC_OFFSET, HELLO_MAGIC);
  writeU16(b, HELLO_VERSION_OFFSET, TCP_PROTOCOL_VERSION);
  writeU16(b, HELLO_STATUS_OFFSET, status);
  writeU32(b, HELLO_MAX_MESSAGE_OFFSET, maxMessageBytes);
  writeU32(b, HELLO_MAX_HEAD_OFFSET, maxHeadBytes);
  return b;
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
}

/**
 * Checks the peer's hello (exactly HELLO_BYTES bytes): its limits, or `error` saying what is
 * wrong with it (another protocol, another version, a refusal), phrased to follow "the peer ".
 */
export function decodeHello(b: Uint8Array): PeerHello | { error: string } {
  const magic = readU32(b, HELLO_MAGIC_OFFSET);
  if (magic !== HELLO_MAGIC) {
    return { error: `does not speak the hotpath tcp protocol (its first bytes are ${hex(b.subarray(0, 8))}, not the hello magic "hptc")` };
  }
  const version = readU16(b, HELLO_VERSION_OFFSET);
  if (version !== TCP_PROTOCOL_VERSION) {
    return { error: `speaks hotpath tcp protocol version ${version}, this side speaks version ${TCP_PROTOCOL_VERSION}` };
  }
  const status = readU16(b, HELLO_STATUS_OFFSET);
  if (status === HELLO_BUSY) return { error: "refused the connection: the listener is at its connection limit" };
  if (status !== HELLO_OK) return { error: `sent a hello with unknown status ${status}` };
  return { status, maxMessageBytes: readU32(b, HELLO_MAX_MESSAGE_OFFSET), maxHeadBytes: readU32(b, HELLO_MAX_HEAD_OFFSET) };
}
