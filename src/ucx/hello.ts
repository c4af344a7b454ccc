/**
 * The ucx handshake messages: the client's HELLO and the server's HELLO_ACK, both sent as the
 * Active Message header, same layout, little-endian. Each side states the limits it accepts,
 * so a sender refuses what its peer would not take (contract item 6):
 *
 *   0   magic "HPUX"
 *   4   u32 version (HELLO_VERSION)
 *   8   u64 maxMessageBytes (largest body this side accepts; below 2^53)
 *   16  u32 maxHeadBytes (largest head this side accepts)
 *   20  u32 flags (HELLO_FLAG_PEER_ERRORS: the client's endpoint uses UCP_ERR_HANDLING_MODE_PEER)
 *   24  end
 *
 * Example:
 *   ep.amSend(AM_HELLO, encodeHello({ maxMessageBytes, maxHeadBytes, flags: 0 }), null, done);
 *   const hello = decodeHello(copyOut(header, hlen)); // null: not a hello of this version
 */

export const HELLO_VERSION = 2;
export const HELLO_BYTES = 24;
export const HELLO_FLAG_PEER_ERRORS = 1;
const MAGIC = 0x58555048; // "HPUX" read as a little-endian u32

export interface Hello {
  maxMessageBytes: number;
  maxHeadBytes: number;
  flags: number;
}

/** A new buffer holding `h`; the caller hands it to the send, which owns it from then on. */
export function encodeHello(h: Hello): Uint8Array {
  const b = new Uint8Array(HELLO_BYTES);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, HELLO_VERSION, true);
  dv.setBigUint64(8, BigInt(h.maxMessageBytes), true);
  dv.setUint32(16, h.maxHeadBytes, true);
  dv.setUint32(20, h.flags, true);
  return b;
}

/** The hello in `b`, or null when `b` is not a well-formed hello of this version. */
export function decodeHello(b: Uint8Array): Hello | null {
  if (b.length !== HELLO_BYTES) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(0, true) !== MAGIC || dv.getUint32(4, true) !== HELLO_VERSION) return null;
  const maxMessageBytes = dv.getBigUint64(8, true);
  if (maxMessageBytes > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return { maxMessageBytes: Number(maxMessageBytes), maxHeadBytes: dv.getUint32(16, true), flags: dv.getUint32(20, true) };
}
