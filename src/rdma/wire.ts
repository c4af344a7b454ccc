/**
 * The rdma transport header: 12 bytes at the start of every SEND payload (and of a large
 * message in the peer's landing zone), little-endian:
 *
 *   offset 0  u8  kind      DATA 1, CREDIT 2, ZONE_GRANT 3, ZONE_REQUEST 4, GOODBYE 5, LARGE 6
 *   offset 1  u8  flags     0 (reserved)
 *   offset 2  u16 credits   credits returned to the receiver of this message (piggybacked)
 *   offset 4  u32 headLen   the RPC head follows at HEADER_BYTES
 *   offset 8  u32 bodyLen   the body follows at HEADER_BYTES + headLen
 *
 * ZONE_GRANT's body is u64 addr | u32 rkey | u32 bytes (a landing zone the sender may write one
 * large message into); ZONE_REQUEST's body is u32 bytes (the zone size it needs). LARGE is the
 * header a WRITE_WITH_IMM puts at the start of the zone; its immediate is LARGE_IMM xor the
 * zone's generation (grants counted from 0, the hello's zone). Every kind consumes one receive
 * at the peer and one credit.
 *
 * Example:
 *   writeHeader(dv, 0, KIND_DATA, 3, head.length, body.length);
 *   if (headerKind(bytes, 0) === KIND_DATA) use(headerHeadLen(dv, 0), headerBodyLen(dv, 0));
 *
 * Thread: any (pure functions over the caller's memory).
 */

export const HEADER_BYTES = 12;
export const KIND_DATA = 1;
export const KIND_CREDIT = 2;
export const KIND_ZONE_GRANT = 3;
export const KIND_ZONE_REQUEST = 4;
export const KIND_GOODBYE = 5;
export const KIND_LARGE = 6;
/** "LARG": the immediate of a large message's WRITE_WITH_IMM, xor the zone generation. */
export const LARGE_IMM = 0x4c415247;
export const ZONE_GRANT_BODY_BYTES = 16;
export const ZONE_REQUEST_BODY_BYTES = 4;

export const HDR_KIND = 0;
export const HDR_FLAGS = 1;
export const HDR_CREDITS = 2;
export const HDR_HEAD_LEN = 4;
export const HDR_BODY_LEN = 8;

/** Writes a header at `at` of `dv`. */
export function writeHeader(dv: DataView, at: number, kind: number, credits: number, headLen: number, bodyLen: number): void {
  dv.setUint8(at + HDR_KIND, kind);
  dv.setUint8(at + HDR_FLAGS, 0);
  dv.setUint16(at + HDR_CREDITS, credits, true);
  dv.setUint32(at + HDR_HEAD_LEN, headLen, true);
  dv.setUint32(at + HDR_BODY_LEN, bodyLen, true);
}

/** The immediate of a large message written into a zone of generation `gen`. */
export function largeImm(gen: number): number {
  return (LARGE_IMM ^ gen) >>> 0;
}

/** A kind's name for error messages. */
export function kindName(kind: number): string {
  return ["?", "DATA", "CREDIT", "ZONE_GRANT", "ZONE_REQUEST", "GOODBYE", "LARGE"][kind] ?? `kind ${kind}`;
}
