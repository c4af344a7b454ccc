/**
 * The kv wire protocol: RPC method ids and the binary bodies of every request and response
 * (little-endian; no msgpack on the data path), plus the seams through which one-sided access
 * (rma-server.ts, one-sided.ts) plugs into the server and the client.
 *
 *   GET     req: key                                     resp: u8 found, u64 version, value
 *   PUT     req: u32 keyLen, key, value                  resp: u64 version
 *   DEL     req: key                                     resp: u8 deleted
 *   CAS     req: u64 expected, u32 keyLen, key, value    resp: u8 ok, u64 version
 *   MGET    req: u32 count, count x (u32 keyLen, key)    resp: count x (u8 found, u64 version, u32 valueLen, value)
 *   HELLO   req: empty                                   resp: see encodeHello()
 *   STATS   req: empty                                   resp: UTF-8 JSON
 *   SAVE    req: empty                                   resp: empty
 *   COMMIT  req: u32 keyLen, key, u32 valueLen, u32 crc  resp: u64 version
 *   WRITE_BUFFER req: empty                              resp: u32 descLen, desc, u32 bytes (descLen 0: none)
 *
 * Contract: every decoder validates every length against the bytes it was given and throws
 * ProtocolError naming the message, the field and the values (a hostile peer gets an error
 * reply, never a crash or an allocation of a length it merely claims). Decoded keys and values
 * are views of the body they came from (valid as long as it is). u64 fields carry JS numbers
 * below 2^53 (a larger one is a ProtocolError).
 *
 *   const body = encodePut(key, value);          // client
 *   const { key, value } = decodePut(h.data);    // server, views of h.data
 *
 * Threading: the codecs are pure functions (any thread); the seams say where they run.
 */

import { readU32, writeU32 } from "../bytes.ts";
import { ProtocolError, UsageError } from "../errors.ts";
import type { Client } from "../rpc/client.ts";
import type { Connection } from "../contract/transport.ts";
import type { UcxConnection } from "../ucx/connection.ts";
import type { KvValue } from "./store.ts";

export const KV_HELLO = 0x4b560001;
export const KV_GET = 0x4b560002;
export const KV_PUT = 0x4b560003;
export const KV_DEL = 0x4b560004;
export const KV_CAS = 0x4b560005;
export const KV_MGET = 0x4b560006;
export const KV_STATS = 0x4b560007;
export const KV_SAVE = 0x4b560008;
export const KV_COMMIT = 0x4b560009;
/** The connection's RMA write buffer, asked for on its first large put (see encodeWriteBuffer). */
export const KV_WRITE_BUFFER = 0x4b56000a;

export const KV_PROTOCOL_VERSION = 1;
/** HELLO flags. */
export const HELLO_ONE_SIDED = 1;
export const HELLO_WRITE_BUFFER = 2;
/** The arena header copy at the end of HELLO (layout.ts's header). */
export const ARENA_HEADER_BYTES = 64;

/** Bytes a response adds around one value: GET 9, MGET 13 (u8 found, u64 version, u32 len). */
export const GET_RESPONSE_OVERHEAD = 9;
export const MGET_ENTRY_OVERHEAD = 13;
/** The most a request body adds to key + value (CAS: u64 expected + u32 keyLen). */
export const REQUEST_OVERHEAD = 12;
/** The most an MGET may ask for at once: bounds the response table a server builds. */
export const MAX_MGET_KEYS = 1 << 16;

const TWO_32 = 0x1_0000_0000;
/** The high word of a u64 below 2^53. */
const MAX_HIGH_WORD = 0x1f_ffff;

/** A version (or any u64 below 2^53) at `at`: two u32 words. */
export function readU64(b: Uint8Array, at: number, what: string): number {
  const hi = readU32(b, at + 4);
  if (hi > MAX_HIGH_WORD) throw new ProtocolError(`${what}: u64 at byte ${at} is ${hi} * 2^32 + ..., above 2^53`);
  return hi * TWO_32 + readU32(b, at);
}

export function writeU64(b: Uint8Array, at: number, v: number): void {
  writeU32(b, at, v >>> 0);
  writeU32(b, at + 4, Math.floor(v / TWO_32));
}

function need(body: Uint8Array, bytes: number, what: string, field: string): void {
  if (body.length < bytes) throw new ProtocolError(`${what}: ${body.length} bytes, too short for ${field} (needs ${bytes})`);
}

function exact(body: Uint8Array, bytes: number, what: string): void {
  if (body.length !== bytes) throw new ProtocolError(`${what}: ${body.length} bytes, expected exactly ${bytes}`);
}

function checkU64Arg(v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new UsageError(`${what} ${String(v)} must be an integer in 0..2^53-1`);
}

// ---- requests ----

/** PUT body: u32 keyLen, key, value (a new buffer the caller owns). */
export function encodePut(key: Uint8Array, value: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + key.length + value.length);
  writePut(out, key, value);
  return out;
}

/** Writes a PUT body into `out` (at least 4 + key + value bytes); returns its length. */
export function writePut(out: Uint8Array, key: Uint8Array, value: Uint8Array): number {
  writeU32(out, 0, key.length);
  out.set(key, 4);
  out.set(value, 4 + key.length);
  return 4 + key.length + value.length;
}

export interface KeyValue {
  key: Uint8Array;
  value: Uint8Array;
}

/** A PUT body's key and value (views of `body`). */
export function decodePut(body: Uint8Array): KeyValue {
  const keyLen = putKeyLength(body);
  return { key: body.subarray(4, 4 + keyLen), value: body.subarray(4 + keyLen) };
}

/** A PUT body's keyLen, checked against the body (ProtocolError): the key is body[4, 4 + keyLen), the value the rest. No object made (the server's hot path). */
export function putKeyLength(body: Uint8Array): number {
  need(body, 4, "kv PUT request", "its u32 keyLen");
  const keyLen = readU32(body, 0);
  if (keyLen > body.length - 4) throw new ProtocolError(`kv PUT request: keyLen ${keyLen} exceeds the ${body.length - 4} bytes after it`);
  return keyLen;
}

/** CAS body: u64 expected, u32 keyLen, key, value. */
export function encodeCas(expectedVersion: number, key: Uint8Array, value: Uint8Array): Uint8Array {
  checkU64Arg(expectedVersion, "kv cas: expectedVersion");
  const out = new Uint8Array(12 + key.length + value.length);
  writeU64(out, 0, expectedVersion);
  writeU32(out, 8, key.length);
  out.set(key, 12);
  out.set(value, 12 + key.length);
  return out;
}

export interface CasRequest extends KeyValue {
  expected: number;
}

export function decodeCas(body: Uint8Array): CasRequest {
  need(body, 12, "kv CAS request", "its u64 expected and u32 keyLen");
  const expected = readU64(body, 0, "kv CAS request expected version");
  const keyLen = readU32(body, 8);
  if (keyLen > body.length - 12) throw new ProtocolError(`kv CAS request: keyLen ${keyLen} exceeds the ${body.length - 12} bytes after it`);
  return { expected, key: body.subarray(12, 12 + keyLen), value: body.subarray(12 + keyLen) };
}

/** MGET body: u32 count, then count x (u32 keyLen, key). UsageError above MAX_MGET_KEYS keys. */
export function encodeMget(keys: Uint8Array[]): Uint8Array {
  if (keys.length > MAX_MGET_KEYS) throw new UsageError(`kv mget: ${keys.length} keys for one server, at most ${MAX_MGET_KEYS}`);
  let n = 4;
  for (const k of keys) n += 4 + k.length;
  const out = new Uint8Array(n);
  writeU32(out, 0, keys.length);
  let at = 4;
  for (const k of keys) {
    writeU32(out, at, k.length);
    out.set(k, at + 4);
    at += 4 + k.length;
  }
  return out;
}

/** An MGET body's keys (views of `body`). */
export function decodeMget(body: Uint8Array): Uint8Array[] {
  need(body, 4, "kv MGET request", "its u32 count");
  const count = readU32(body, 0);
  if (count > MAX_MGET_KEYS) throw new ProtocolError(`kv MGET request: count ${count} exceeds the limit of ${MAX_MGET_KEYS}`);
  // Each key takes at least its 4-byte length: a count the body cannot hold is refused before any table is made.
  if (count * 4 > body.length - 4) throw new ProtocolError(`kv MGET request: count ${count} needs at least ${count * 4} bytes, the body has ${body.length - 4}`);
  const keys: Uint8Array[] = new Array(count);
  let at = 4;
  for (let i = 0; i < count; i++) {
    if (at + 4 > body.length) throw new ProtocolError(`kv MGET request: key ${i} of ${count}: no room for its u32 keyLen at byte ${at} of ${body.length}`);
    const len = readU32(body, at);
    if (len > body.length - at - 4) throw new ProtocolError(`kv MGET request: key ${i} of ${count}: keyLen ${len} exceeds the ${body.length - at - 4} bytes left`);
    keys[i] = body.subarray(at + 4, at + 4 + len);
    at += 4 + len;
  }
  if (at !== body.length) throw new ProtocolError(`kv MGET request: ${body.length - at} bytes after the last of ${count} keys`);
  return keys;
}

/** COMMIT body: u32 keyLen, key, u32 valueLen, u32 crc32 of the value. */
export function encodeCommit(key: Uint8Array, valueLen: number, crc: number): Uint8Array {
  const out = new Uint8Array(12 + key.length);
  writeU32(out, 0, key.length);
  out.set(key, 4);
  writeU32(out, 4 + key.length, valueLen);
  writeU32(out, 8 + key.length, crc >>> 0);
  return out;
}

export interface CommitRequest {
  key: Uint8Array;
  valueLen: number;
  crc: number;
}

export function decodeCommit(body: Uint8Array): CommitRequest {
  need(body, 4, "kv COMMIT request", "its u32 keyLen");
  const keyLen = readU32(body, 0);
  if (keyLen > body.length - 4) throw new ProtocolError(`kv COMMIT request: keyLen ${keyLen} exceeds the ${body.length - 4} bytes after it`);
  exact(body, 12 + keyLen, `kv COMMIT request with keyLen ${keyLen}`);
  return { key: body.subarray(4, 4 + keyLen), valueLen: readU32(body, 4 + keyLen), crc: readU32(body, 8 + keyLen) };
}

/** Requests whose body must be empty (HELLO, STATS, SAVE). */
export function checkEmpty(body: Uint8Array, what: string): void {
  if (body.length !== 0) throw new ProtocolError(`kv ${what} request: ${body.length} bytes, expected none`);
}

// ---- responses ----

/** Writes a GET response (u8 found, u64 version, value) into `out`; returns its length. */
export function writeGetResponse(out: Uint8Array, found: boolean, version: number, value: Uint8Array | null): number {
  out[0] = found ? 1 : 0;
  writeU64(out, 1, version);
  if (value !== null) out.set(value, GET_RESPONSE_OVERHEAD);
  return GET_RESPONSE_OVERHEAD + (value === null ? 0 : value.length);
}

function flag(b: number, what: string): boolean {
  if (b > 1) throw new ProtocolError(`${what}: flag byte ${b}, expected 0 or 1`);
  return b === 1;
}

/** A GET response: null when absent, else the value (a view of `body`) and version. */
export function decodeGetResponse(body: Uint8Array): KvValue | null {
  need(body, GET_RESPONSE_OVERHEAD, "kv GET response", "u8 found and u64 version");
  const found = flag(body[0]!, "kv GET response");
  const version = readU64(body, 1, "kv GET response version");
  if (!found) {
    if (body.length !== GET_RESPONSE_OVERHEAD || version !== 0) throw new ProtocolError(`kv GET response: not found, yet version ${version} and ${body.length - GET_RESPONSE_OVERHEAD} value bytes`);
    return null;
  }
  return { value: body.subarray(GET_RESPONSE_OVERHEAD), version };
}

export function encodeVersion(version: number): Uint8Array {
  const out = new Uint8Array(8);
  writeU64(out, 0, version);
  return out;
}

/** A PUT / COMMIT response: the new version. */
export function decodeVersion(body: Uint8Array, what = "kv PUT response"): number {
  exact(body, 8, what);
  return readU64(body, 0, what);
}

export function decodeDelResponse(body: Uint8Array): boolean {
  exact(body, 1, "kv DEL response");
  return flag(body[0]!, "kv DEL response");
}

export function encodeCasResponse(ok: boolean, version: number): Uint8Array {
  const out = new Uint8Array(9);
  out[0] = ok ? 1 : 0;
  writeU64(out, 1, version);
  return out;
}

export function decodeCasResponse(body: Uint8Array): { ok: boolean; version: number } {
  exact(body, 9, "kv CAS response");
  return { ok: flag(body[0]!, "kv CAS response"), version: readU64(body, 1, "kv CAS response version") };
}

/** The MGET response's length for these results (values null: absent). */
export function mgetResponseBytes(values: ReadonlyArray<Uint8Array | null>): number {
  let n = 0;
  for (const v of values) n += MGET_ENTRY_OVERHEAD + (v === null ? 0 : v.length);
  return n;
}

/** Writes one MGET entry at `at`; returns the offset after it. */
export function writeMgetEntry(out: Uint8Array, at: number, value: Uint8Array | null, version: number): number {
  out[at] = value === null ? 0 : 1;
  writeU64(out, at + 1, value === null ? 0 : version);
  const len = value === null ? 0 : value.length;
  writeU32(out, at + 9, len);
  if (value !== null) out.set(value, at + MGET_ENTRY_OVERHEAD);
  return at + MGET_ENTRY_OVERHEAD + len;
}

/** An MGET response of `count` entries; values are copies when `copy`, else views of `body`. */
export function decodeMgetResponse(body: Uint8Array, count: number, copy: boolean): Array<KvValue | null> {
  const out: Array<KvValue | null> = new Array(count);
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + MGET_ENTRY_OVERHEAD > body.length) throw new ProtocolError(`kv MGET response: entry ${i} of ${count} starts at byte ${at}, the body has ${body.length}`);
    const found = flag(body[at]!, `kv MGET response entry ${i}`);
    const version = readU64(body, at + 1, `kv MGET response entry ${i} version`);
    const len = readU32(body, at + 9);
    if (len > body.length - at - MGET_ENTRY_OVERHEAD) throw new ProtocolError(`kv MGET response: entry ${i} of ${count} claims ${len} value bytes, ${body.length - at - MGET_ENTRY_OVERHEAD} left`);
    if (!found && (len !== 0 || version !== 0)) throw new ProtocolError(`kv MGET response: entry ${i} not found, yet version ${version} and ${len} value bytes`);
    const v = body.subarray(at + MGET_ENTRY_OVERHEAD, at + MGET_ENTRY_OVERHEAD + len);
    out[i] = found ? { value: copy ? v.slice() : v, version } : null;
    at += MGET_ENTRY_OVERHEAD + len;
  }
  if (at !== body.length) throw new ProtocolError(`kv MGET response: ${body.length - at} bytes after the last of ${count} entries`);
  return out;
}

// ---- HELLO ----

/** What a server says about itself at connect (and after every reconnect). */
export interface KvHello {
  protocolVersion: number;
  maxKeyBytes: number;
  maxValueBytes: number;
  /** HELLO_ONE_SIDED | HELLO_WRITE_BUFFER. */
  flags: number;
  /** RemoteRegion descriptor of the whole arena (empty unless HELLO_ONE_SIDED). */
  arenaDesc: Uint8Array;
  /** RemoteRegion descriptor of this connection's write buffer (empty unless HELLO_WRITE_BUFFER). */
  writeBufDesc: Uint8Array;
  writeBufBytes: number;
  /** The arena's 64-byte header (layout.ts), so a client knows the layout without an RMA read. */
  arenaHeader: Uint8Array;
}

/**
 * HELLO response: u32 protocolVersion, u32 maxKeyBytes, u32 maxValueBytes, u32 flags,
 * u32 arenaDescLen, arenaDesc, u32 writeBufDescLen, writeBufDesc, u32 writeBufBytes,
 * 64-byte arena header.
 */
export function encodeHello(h: KvHello): Uint8Array {
  if (h.arenaHeader.length !== ARENA_HEADER_BYTES) throw new UsageError(`kv HELLO: arena header of ${h.arenaHeader.length} bytes, expected ${ARENA_HEADER_BYTES}`);
  const out = new Uint8Array(28 + h.arenaDesc.length + h.writeBufDesc.length + ARENA_HEADER_BYTES);
  writeU32(out, 0, h.protocolVersion);
  writeU32(out, 4, h.maxKeyBytes);
  writeU32(out, 8, h.maxValueBytes);
  writeU32(out, 12, h.flags);
  writeU32(out, 16, h.arenaDesc.length);
  out.set(h.arenaDesc, 20);
  let at = 20 + h.arenaDesc.length;
  writeU32(out, at, h.writeBufDesc.length);
  out.set(h.writeBufDesc, at + 4);
  at += 4 + h.writeBufDesc.length;
  writeU32(out, at, h.writeBufBytes);
  out.set(h.arenaHeader, at + 4);
  return out;
}

/** A HELLO response (descriptors and header copied: the caller keeps them past the message). */
export function decodeHello(body: Uint8Array): KvHello {
  const what = "kv HELLO response";
  need(body, 20, what, "its fixed fields");
  const protocolVersion = readU32(body, 0);
  if (protocolVersion !== KV_PROTOCOL_VERSION) throw new ProtocolError(`${what}: protocol version ${protocolVersion}, this client speaks ${KV_PROTOCOL_VERSION}`);
  const arenaLen = readU32(body, 16);
  if (arenaLen > body.length - 20) throw new ProtocolError(`${what}: arenaDescLen ${arenaLen} exceeds the ${body.length - 20} bytes after it`);
  let at = 20 + arenaLen;
  need(body, at + 4, what, "its writeBufDescLen");
  const wbLen = readU32(body, at);
  if (wbLen > body.length - at - 4) throw new ProtocolError(`${what}: writeBufDescLen ${wbLen} exceeds the ${body.length - at - 4} bytes after it`);
  const wbAt = at + 4;
  at = wbAt + wbLen;
  exact(body, at + 4 + ARENA_HEADER_BYTES, `${what} with descriptors of ${arenaLen} and ${wbLen} bytes`);
  return {
    protocolVersion,
    maxKeyBytes: readU32(body, 4),
    maxValueBytes: readU32(body, 8),
    flags: readU32(body, 12),
    arenaDesc: body.slice(20, 20 + arenaLen),
    writeBufDesc: body.slice(wbAt, wbAt + wbLen),
    writeBufBytes: readU32(body, at),
    arenaHeader: body.slice(at + 4, at + 4 + ARENA_HEADER_BYTES),
  };
}

// ---- WRITE_BUFFER ----

/**
 * WRITE_BUFFER response: u32 descLen, the connection's write-buffer descriptor (RemoteRegion),
 * u32 bytes. descLen 0 (and bytes 0): none (not offered, or the server's cap on write-buffer
 * bytes is reached: large puts go by KV_PUT). HELLO_WRITE_BUFFER with an empty writeBufDesc
 * in HELLO means "a buffer of writeBufBytes may be asked for with WRITE_BUFFER".
 */
export function encodeWriteBuffer(desc: Uint8Array, bytes: number): Uint8Array {
  const out = new Uint8Array(8 + desc.length);
  writeU32(out, 0, desc.length);
  out.set(desc, 4);
  writeU32(out, 4 + desc.length, bytes);
  return out;
}

/** A WRITE_BUFFER response (the descriptor copied). */
export function decodeWriteBuffer(body: Uint8Array): { desc: Uint8Array; bytes: number } {
  const what = "kv WRITE_BUFFER response";
  need(body, 4, what, "its u32 descLen");
  const len = readU32(body, 0);
  exact(body, 8 + Math.min(len, body.length), `${what} with a descriptor of ${len} bytes`);
  return { desc: body.slice(4, 4 + len), bytes: readU32(body, 4 + len) };
}

// ---- seams for one-sided access (RMA implements them) ----

/** What HELLO offers on one connection beyond the RPC operations. */
export interface KvHelloOffer {
  /** RemoteRegion descriptor of the whole arena; empty: no one-sided reads. */
  arenaDesc: Uint8Array;
  /** RemoteRegion descriptor of this connection's write buffer; empty: none, or (writeBufBytes > 0) one to ask for with WRITE_BUFFER. */
  writeBufDesc: Uint8Array;
  writeBufBytes: number;
}

/**
 * The server side of one-sided access (rma-server.ts), given to kvServe through
 * `KvServerHooks.rma`. All calls run on the server's thread, inline in request delivery.
 */
export interface KvRmaServer {
  /** HELLO arrived on `conn` (a ucx connection with caps.rma): what to offer it, null for nothing. */
  onHello(conn: Connection): KvHelloOffer | null;
  /**
   * COMMIT arrived on `conn`: the value is at offset 0 of the write buffer this connection was
   * offered. Returns the new version (store.put); throws typed errors (KvFullError, ...), or
   * ProtocolError for a crc / length that does not match.
   */
  onCommit(conn: Connection, req: CommitRequest): number;
  /** WRITE_BUFFER arrived on `conn`: its write buffer (made on the first ask, within the server's cap), or null for none. */
  onWriteBuffer?(conn: Connection): { desc: Uint8Array; bytes: number } | null;
  /** Counters for STATS (its `oneSided` field). */
  stats?(): object;
  /** `conn` closed: free what onHello / onWriteBuffer made for it. */
  onConnectionClose?(conn: Connection): void;
  /** The server is closing (before the arena is freed). */
  close?(): void;
}

/**
 * One server as a KvClient sees it (client.ts keeps one per URL; one-sided.ts reads it).
 * `hello`, `rpc` and `ucx` describe the current connection: when the pool reconnects they are
 * replaced together (and `rma` is reset to null), so state kept in `rma` never outlives the
 * connection it was made for. The client's thread only.
 */
export interface KvServerConn {
  readonly url: string;
  /** The current connection's HELLO; null until it arrived, and while not connected. */
  readonly hello: KvHello | null;
  /** The current connection's rpc Client (null while not connected). */
  readonly rpc: Client<number> | null;
  /** The current connection when it is ucx with caps.rma (rpc.conn), else null. */
  readonly ucx: UcxConnection | null;
  /** State one-sided.ts keeps for this connection (attached regions); null on a fresh one. */
  rma: unknown;
  /** The client's per-call deadline in ms (KvClientOptions.timeoutMs): every one-sided step honours it. */
  readonly timeoutMs: number;
}

/**
 * The client side of one-sided access (one-sided.ts), used by client.ts when `oneSided` is
 * "auto" and the connection's HELLO offers it. Both run on the client's thread.
 */
export interface KvOneSidedClient {
  /** GET by RMA reads (verify.ts); undefined: could not settle it one-sided, so client.ts sends KV_GET. The value is the caller's own copy. */
  oneSidedGet(conn: KvServerConn, key: Uint8Array): Promise<KvValue | null | undefined>;
  /** PUT by an RMA put into the write buffer, then KV_COMMIT; resolves with the new version. */
  largePut(conn: KvServerConn, key: Uint8Array, value: Uint8Array): Promise<number>;
}
