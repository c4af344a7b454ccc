/**
 * The RPC wire header: one layout for every transport, fixed size, little-endian. It travels
 * as the start of a message's head; the optional application header follows it in the head;
 * the bulk data is the message body.
 *
 *   offset  size  field
 *   0       u8    kind          REQUEST .. STREAM_END (bits 0..6) | KIND_FLAG_METADATA (bit 7)
 *   1       u8    version       WIRE_VERSION
 *   2       u16   appHeaderLen  bytes of application header after this header
 *   4       u32   methodId      (echoed in responses)
 *   8       u32   callSlot      client slot index   } call id: a late or duplicated response
 *   12      u32   callGen       slot generation     } can never complete a different call
 *   16      u32   dataLen       body bytes (must equal the body the transport delivered)
 *   20      u32   reserved      0
 *   24      -     WIRE_HEADER_BYTES
 *
 * ERROR bodies are UTF-8 JSON `{"name": string, "message": string}`.
 *
 * Metadata (metadata.ts) rides at the start of the body, only when the kind byte has
 * KIND_FLAG_METADATA, so a call without it pays nothing. The body, not the head: a head must
 * fit the transport's descriptor (48 bytes on shm and inproc), metadata may take 768.
 *
 *   body offset  size  field
 *   0            u16   mdLen       bytes of encoded metadata that follow
 *   2            -     metadata    mdLen bytes (encodeMetadata())
 *   2 + mdLen    -     the message's data (dataLen counts the whole body)
 *
 * The flag is allowed on REQUEST, ONEWAY, RESPONSE, ERROR, STREAM_START and STREAM_END.
 *
 * Streams (stream/): a call id that stays open. STREAM_START (client -> server; body: u32
 * credit messages, u32 credit bytes, the client's receive window), STREAM_MSG either way (body:
 * one message), STREAM_CREDIT either way (body: u32 messages, u32 bytes granted on top),
 * STREAM_END either way (client: half-close; server: the stream finished, final), ERROR
 * (server: the stream failed, final) and CANCEL (client: abandoned).
 *
 * GOAWAY (server -> client, no call: method, slot and gen are 0, no body) says the server is
 * draining: calls in flight are still answered, new ones belong on another connection. A
 * client from before GOAWAY treats an unknown kind as a ProtocolError and would close, so the
 * server sends GOAWAY only to a session whose client announced it understands it: a CANCEL
 * with call generation 0 (never issued, so every server, old ones included, ignores it as a
 * cancel) and method GOAWAY_HELLO_METHOD, sent once its first response arrived.
 *
 * WIRE_VERSION stays 1. Stream frames go only to a peer that started a stream, and a server's
 * response carries metadata only when its handler set some (setResponseMetadata): a client of
 * the first round would take such a response as a ProtocolError (unknown kind) and close, so a
 * service that answers older clients must not set response metadata.
 */

import { readU16, readU32, writeU16, writeU32 } from "../bytes.ts";
import { ProtocolError } from "../errors.ts";

export const KIND_REQUEST = 1;
export const KIND_RESPONSE = 2;
export const KIND_ERROR = 3;
export const KIND_CANCEL = 4;
export const KIND_ONEWAY = 5;
export const KIND_GOAWAY = 6;
export const KIND_STREAM_START = 7;
export const KIND_STREAM_MSG = 8;
export const KIND_STREAM_CREDIT = 9;
export const KIND_STREAM_END = 10;
/** The largest kind this version knows. */
export const KIND_MAX = KIND_STREAM_END;
/** The kind byte's low bits are the kind; bit 7 says the app-header region starts with metadata. */
export const KIND_MASK = 0x7f;
export const KIND_FLAG_METADATA = 0x80;
/** Kinds that may carry metadata (bit per kind). */
const METADATA_KINDS = (1 << KIND_REQUEST) | (1 << KIND_ONEWAY) | (1 << KIND_RESPONSE) | (1 << KIND_ERROR) | (1 << KIND_STREAM_START) | (1 << KIND_STREAM_END);
/** Bytes of the metadata length prefix. */
export const METADATA_LEN_BYTES = 2;
/** Method id of the CANCEL (generation 0) by which a client announces it understands GOAWAY ("GOAW"). */
export const GOAWAY_HELLO_METHOD = 0x474f4157;

export const WIRE_VERSION = 1;

export const WIRE_KIND_OFFSET = 0;
export const WIRE_VERSION_OFFSET = WIRE_KIND_OFFSET + 1;
export const WIRE_APP_HEADER_LEN_OFFSET = WIRE_VERSION_OFFSET + 1;
export const WIRE_METHOD_OFFSET = WIRE_APP_HEADER_LEN_OFFSET + 2;
export const WIRE_CALL_SLOT_OFFSET = WIRE_METHOD_OFFSET + 4;
export const WIRE_CALL_GEN_OFFSET = WIRE_CALL_SLOT_OFFSET + 4;
export const WIRE_DATA_LEN_OFFSET = WIRE_CALL_GEN_OFFSET + 4;
export const WIRE_RESERVED_OFFSET = WIRE_DATA_LEN_OFFSET + 4;
export const WIRE_HEADER_BYTES = WIRE_RESERVED_OFFSET + 4;

/** The application header must fit the u16 field and the transports' smallest head limit. */
export const MAX_APP_HEADER_BYTES = 1024;

if (WIRE_HEADER_BYTES !== 24) throw new Error(`wire header layout drifted: ${WIRE_HEADER_BYTES} bytes`);

/** Writes a wire header at the start of `head`. */
export function writeWireHeader(
  head: Uint8Array,
  kind: number,
  methodId: number,
  callSlot: number,
  callGen: number,
  appHeaderLen: number,
  dataLen: number,
): void {
  head[WIRE_KIND_OFFSET] = kind;
  head[WIRE_VERSION_OFFSET] = WIRE_VERSION;
  writeU16(head, WIRE_APP_HEADER_LEN_OFFSET, appHeaderLen);
  writeU32(head, WIRE_METHOD_OFFSET, methodId);
  writeU32(head, WIRE_CALL_SLOT_OFFSET, callSlot);
  writeU32(head, WIRE_CALL_GEN_OFFSET, callGen);
  writeU32(head, WIRE_DATA_LEN_OFFSET, dataLen);
  writeU32(head, WIRE_RESERVED_OFFSET, 0);
}

/**
 * The header's first word as a little-endian u32 (kind, version, appHeaderLen): with methodId,
 * callSlot, callGen, dataLen and reserved 0 it gives the six words a transport's trySendWords()
 * writes straight into its descriptor, so the hot path builds no header bytes.
 */
export const wireWord0 = (kind: number, appHeaderLen: number): number => kind | (WIRE_VERSION << 8) | (appHeaderLen << 16);

/** Word indexes of the fields in a header read as six u32 words (RxMessage.headWords). */
export const WIRE_WORD_METHOD = WIRE_METHOD_OFFSET >> 2;
export const WIRE_WORD_CALL_SLOT = WIRE_CALL_SLOT_OFFSET >> 2;
export const WIRE_WORD_CALL_GEN = WIRE_CALL_GEN_OFFSET >> 2;
export const WIRE_WORD_DATA_LEN = WIRE_DATA_LEN_OFFSET >> 2;
export const WIRE_WORD_RESERVED = WIRE_RESERVED_OFFSET >> 2;

/**
 * checkWireHeader() with a few word loads, for a head whose bytes are `words[at .. at + 6)`
 * (RxMessage.headWords, `at` = headOffset / 4): each word is read once. Returns the kind; a
 * head that fails any check goes to checkWireHeader() on the same bytes, which throws the
 * ProtocolError naming the field.
 */
export function checkWireWords(words: Int32Array, at: number, bytes: Uint8Array, headLen: number, bodyLen: number): number {
  if (headLen >= WIRE_HEADER_BYTES) {
    const w0 = words[at]!;
    const kind = w0 & 0xff;
    if (
      ((w0 >>> 8) & 0xff) === WIRE_VERSION &&
      kind >= KIND_REQUEST &&
      kind <= KIND_MAX &&
      headLen === WIRE_HEADER_BYTES + (w0 >>> 16) &&
      words[at + WIRE_WORD_DATA_LEN] === bodyLen &&
      words[at + WIRE_WORD_RESERVED] === 0
    ) {
      return kind;
    }
  }
  return checkWireHeader(bytes, at << 2, headLen, bodyLen);
}

// Field readers take the buffer and the header's offset in it (`at`), so a received head is
// read in place (RxMessage.headBuf / headOffset) without a view per message.
export const wireKind = (b: Uint8Array, at = 0): number => b[at + WIRE_KIND_OFFSET]!;
export const wireMethod = (b: Uint8Array, at = 0): number => readU32(b, at + WIRE_METHOD_OFFSET);
export const wireCallSlot = (b: Uint8Array, at = 0): number => readU32(b, at + WIRE_CALL_SLOT_OFFSET);
export const wireCallGen = (b: Uint8Array, at = 0): number => readU32(b, at + WIRE_CALL_GEN_OFFSET);
export const wireAppHeaderLen = (b: Uint8Array, at = 0): number => readU16(b, at + WIRE_APP_HEADER_LEN_OFFSET);

/**
 * Checks a received message's head (at `b[at .. at + headLen)`) against its own fields and the
 * body length the transport delivered. Returns the kind; throws ProtocolError when the lengths
 * disagree or a field is out of range.
 */
export function checkWireHeader(b: Uint8Array, at: number, headLen: number, bodyLen: number): number {
  if (headLen < WIRE_HEADER_BYTES) {
    throw new ProtocolError(`rpc: head of ${headLen} bytes is shorter than the ${WIRE_HEADER_BYTES}-byte wire header`);
  }
  const kind = b[at + WIRE_KIND_OFFSET]!;
  const base = kind & KIND_MASK;
  if (base < KIND_REQUEST || base > KIND_MAX) throw new ProtocolError(`rpc: unknown message kind ${base}`);
  if (kind !== base && ((METADATA_KINDS >>> base) & 1) === 0) throw new ProtocolError(`rpc: message kind ${base} may not carry metadata`);
  const version = b[at + WIRE_VERSION_OFFSET]!;
  if (version !== WIRE_VERSION) throw new ProtocolError(`rpc: wire version ${version}, expected ${WIRE_VERSION}`);
  const appLen = readU16(b, at + WIRE_APP_HEADER_LEN_OFFSET);
  if (headLen !== WIRE_HEADER_BYTES + appLen) {
    throw new ProtocolError(`rpc: header says ${appLen} bytes of application header, head has ${headLen - WIRE_HEADER_BYTES}`);
  }
  const dataLen = readU32(b, at + WIRE_DATA_LEN_OFFSET);
  if (dataLen !== bodyLen) throw new ProtocolError(`rpc: header says ${dataLen} data bytes, message has ${bodyLen}`);
  if (readU32(b, at + WIRE_RESERVED_OFFSET) !== 0) throw new ProtocolError("rpc: reserved header field is not zero");
  return kind;
}

/**
 * Where the data starts in the body of a message whose kind has KIND_FLAG_METADATA: 2 + the
 * metadata's length (the metadata is body[2 .. dataAt)). ProtocolError when the prefix does not fit.
 */
export function metadataEnd(body: Uint8Array): number {
  if (body.length < METADATA_LEN_BYTES) throw new ProtocolError(`rpc: a metadata flag on a ${body.length}-byte body (no room for its length)`);
  const end = METADATA_LEN_BYTES + readU16(body, 0);
  if (end > body.length) throw new ProtocolError(`rpc: metadata of ${end - METADATA_LEN_BYTES} bytes does not fit the ${body.length}-byte body`);
  return end;
}

/** A body of encoded metadata `md` and then `data` (a new array: the sender's copy). */
export function withMetadata(md: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(METADATA_LEN_BYTES + md.length + data.length);
  writeU16(out, 0, md.length);
  out.set(md, METADATA_LEN_BYTES);
  out.set(data, METADATA_LEN_BYTES + md.length);
  return out;
}

/** checkWireHeader() for a received message (word-wise where the transport gives headWords). */
export function checkMessage(msg: { headBuf: Uint8Array; headWords?: Int32Array; headOffset: number; headLength: number; bodyLength: number }): number {
  const w = msg.headWords;
  if (w !== undefined) return checkWireWords(w, msg.headOffset >> 2, msg.headBuf, msg.headLength, msg.bodyLength);
  return checkWireHeader(msg.headBuf, msg.headOffset, msg.headLength, msg.bodyLength);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export function encodeErrorBody(name: string, message: string): Uint8Array {
  return encoder.encode(JSON.stringify({ name, message }));
}

export function decodeErrorBody(body: Uint8Array): { name: string; message: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(body));
  } catch {
    throw new ProtocolError("rpc: error response body is not UTF-8 JSON");
  }
  const p = parsed as { name?: unknown; message?: unknown } | null;
  if (p === null || typeof p !== "object" || typeof p.name !== "string" || typeof p.message !== "string") {
    throw new ProtocolError("rpc: error response body lacks string name and message");
  }
  return { name: p.name, message: p.message };
}
