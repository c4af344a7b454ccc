/**
 * Per-call metadata: a small, bounded set of key/value pairs (string or binary values) that a
 * request, its response and a stream's start and end can carry: auth tokens per call, trace
 * context (`traceparent`), the remaining deadline passed on to the next hop (`hp-deadline-ms`).
 * This module is the codec; request() sends it (RequestOptions.metadata, pending.ts), handles
 * read it (RequestHandle.metadata, handle.ts), streams carry it with their START and END.
 *
 * Contract:
 * - Keys: lowercase ASCII letters, digits, '.', '_' and '-', 1..MAX_METADATA_KEY_BYTES bytes, no
 *   duplicates. Keys are compared as given: Metadata.from() never lowercases, so "Auth" is a
 *   UsageError, not "auth".
 * - String values: any UTF-8 text without control characters: no C0 control (U+0000..U+001F),
 *   no DEL (U+007F), no C1 control (U+0080..U+009F), no lone surrogate (it has no UTF-8 form).
 *   Tab and newline are control characters too. Binary values: any bytes.
 * - At most MAX_METADATA_ENTRIES entries and MAX_METADATA_BYTES encoded bytes. Metadata.from()
 *   throws UsageError for a caller's bad metadata (before anything is sent); decodeMetadata()
 *   throws ProtocolError for a peer's malformed bytes (the peer sent it).
 * - A Metadata never changes once built: binary values are copied in, and copied out again.
 *
 * Encoding (little-endian):
 *
 *   offset  size  field
 *   0       u8    version          METADATA_VERSION
 *   1       u8    count            entries that follow (≤ MAX_METADATA_ENTRIES)
 *   2       -     entries, each:
 *                   u8   keyLen     1..MAX_METADATA_KEY_BYTES
 *                   u16  valueWord  bit 15: binary value; bits 0..14: value length
 *                   keyLen bytes    key (ASCII)
 *                   n bytes         value (UTF-8 text, or the binary bytes)
 *
 * Example:
 *   const md = Metadata.from({ authorization: "Bearer t0k", "trace-bin": new Uint8Array([1, 2]) });
 *   const bytes = encodeMetadata(md);             // a new array of encodedLength(md) bytes
 *   decodeMetadata(bytes).get("authorization");   // "Bearer t0k"
 *   remainingDeadline(withRemainingDeadline(md, 250)); // 250
 */

import { readU16, writeU16 } from "../bytes.ts";
import { ProtocolError, UsageError } from "../errors.ts";
import { MAX_APP_HEADER_BYTES } from "./wire.ts";

export type MetadataValue = string | Uint8Array;
export type MetadataInit = Record<string, MetadataValue> | Iterable<readonly [string, MetadataValue]>;

/** First byte of every encoding; a decoder refuses any other, so the layout can evolve. */
export const METADATA_VERSION = 1;
/** Per call metadata is a handful of headers (auth, trace, deadline), not a payload: 32 is gRPC-like headroom. */
export const MAX_METADATA_ENTRIES = 32;
/** Keys are short names; 64 bytes holds any sensible one and keeps the u8 key length far from its limit. */
export const MAX_METADATA_KEY_BYTES = 64;
/** Metadata is to share the RPC head with an application header: 768 leaves 256 of MAX_APP_HEADER_BYTES (1024) for that header. */
export const MAX_METADATA_BYTES = 768;
/** Bytes before the first entry: version and count. */
export const METADATA_PREFIX_BYTES = 2;
/** Bytes of each entry before its key: keyLen (u8) and valueWord (u16). */
export const METADATA_ENTRY_HEADER_BYTES = 3;
/** Bit of valueWord that marks a binary value; the bits below it hold the value length. */
export const METADATA_BINARY_FLAG = 0x8000;
const VALUE_LEN_MASK = METADATA_BINARY_FLAG - 1;

// Constants that depend on each other, asserted together.
if (MAX_METADATA_BYTES + 256 > MAX_APP_HEADER_BYTES) throw new Error("metadata limit leaves under 256 bytes of the app header");
if (MAX_METADATA_BYTES > VALUE_LEN_MASK) throw new Error("metadata limit exceeds what a value length can say");
if (MAX_METADATA_ENTRIES > 0xff || MAX_METADATA_KEY_BYTES > 0xff) throw new Error("metadata count or key limit exceeds a u8");

/** The key whose value is the caller's remaining deadline, in whole milliseconds (decimal ASCII). */
export const DEADLINE_KEY = "hp-deadline-ms";
/** The W3C Trace Context key (https://www.w3.org/TR/trace-context/#traceparent-header). */
export const TRACEPARENT_KEY = "traceparent";

/** Largest deadline carried: 15 decimal digits (about 31,700 years), below 2^53 so it is exact. */
export const MAX_DEADLINE_MS = 999_999_999_999_999;
const DEADLINE_VALUE = /^(?:0|[1-9][0-9]{0,14})$/;
const KEY_CHARS = /^[a-z0-9._-]+$/;
/** Control characters (C0, DEL, C1) and lone surrogates: what a string value may not hold. */
const BAD_TEXT = /[\p{Cc}\p{Cs}]/u;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

const encoder = new TextEncoder();
// ignoreBOM: a value that starts with U+FEFF keeps it (the default would strip it on decode).
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

interface Entry {
  readonly key: string;
  /** The string value, or undefined for a binary one. */
  readonly text: string | undefined;
  /** The value's bytes (UTF-8 of `text`, or the binary value); never handed out, never changed. */
  readonly bytes: Uint8Array;
}

const BUILD: unique symbol = Symbol("Metadata.build");
// Module-internal access to a Metadata's entries and constructor, set in its static block.
let entriesOf: (md: Metadata) => readonly Entry[];
let makeMetadata: (list: Entry[], encodedLength: number) => Metadata;

const entrySize = (keyLen: number, valueLen: number): number => METADATA_ENTRY_HEADER_BYTES + keyLen + valueLen;
const quote = (s: string): string => JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);

/**
 * Why `value` is not a valid W3C traceparent (version 00), or undefined when it is: `00-`, a
 * 32-digit lowercase hex trace id not all zero, `-`, a 16-digit lowercase hex parent id not all
 * zero, `-`, 2 lowercase hex flag digits, and nothing after. Other versions are refused.
 */
function traceparentProblem(value: string): string | undefined {
  const m = TRACEPARENT.exec(value);
  if (m === null) return "not of the form 00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>";
  if (/^0+$/.test(m[1]!)) return "its trace id is all zero";
  if (/^0+$/.test(m[2]!)) return "its parent id is all zero";
  return undefined;
}

/** True when `value` is a valid W3C traceparent, version 00 (see TRACEPARENT_KEY). Pure; any thread. */
export function isValidTraceparent(value: string): boolean {
  return typeof value === "string" && traceparentProblem(value) === undefined;
}

/** Why a key is not one; undefined when it is. */
function keyProblem(key: string): string | undefined {
  if (key.length === 0) return "is empty";
  if (key.length > MAX_METADATA_KEY_BYTES) return `is ${key.length} bytes, over MAX_METADATA_KEY_BYTES (${MAX_METADATA_KEY_BYTES})`;
  if (!KEY_CHARS.test(key)) {
    const lower = key.toLowerCase();
    const hint = lower !== key && KEY_CHARS.test(lower) ? `; keys must already be lowercase (nothing lowercases them): pass ${quote(lower)}` : "";
    return `has characters other than lowercase ASCII letters, digits, '.', '_' and '-'${hint}`;
  }
  return undefined;
}

/**
 * An immutable set of metadata entries in insertion order. Build one with Metadata.from() (or
 * decodeMetadata() for received bytes). Values handed out are the caller's: getBinary() and
 * entries() return copies, so nothing a caller does to them changes this Metadata. Immutable, so
 * any number of calls may share one; each thread builds its own (it is not transferable).
 */
export class Metadata implements Iterable<[string, MetadataValue]> {
  /** No entries: 2 encoded bytes. */
  static readonly EMPTY: Metadata = new Metadata(BUILD, [], METADATA_PREFIX_BYTES);

  readonly #list: readonly Entry[];
  readonly #byKey: Map<string, Entry>;
  /** Bytes encodeMetadata() writes for this metadata. */
  readonly encodedLength: number;

  static {
    entriesOf = (md) => md.#list;
    makeMetadata = (list, len) => new Metadata(BUILD, list, len);
  }

  private constructor(token: typeof BUILD, list: Entry[], encodedLength: number) {
    if (token !== BUILD) throw new UsageError("Metadata: build one with Metadata.from()");
    this.#list = Object.freeze(list);
    this.#byKey = new Map(list.map((e) => [e.key, e]));
    this.encodedLength = encodedLength;
    Object.freeze(this);
  }

  /**
   * Validates `init` and builds a Metadata (`init` itself is not kept: binary values are
   * copied). UsageError, naming the key and the rule, for a key that is not lowercase
   * `[a-z0-9._-]` of 1..64 bytes, a duplicate key, a value that is neither a string nor a
   * Uint8Array, a string value with a control character or lone surrogate, a `traceparent` that
   * is not a valid W3C traceparent, an `hp-deadline-ms` that is not decimal milliseconds (see
   * withRemainingDeadline); and, naming the limit, for more than MAX_METADATA_ENTRIES entries or
   * more than MAX_METADATA_BYTES encoded bytes. An iterable is read no further than one entry
   * past the count limit. A Metadata passed in is returned as it is. Any thread.
   */
  static from(init: MetadataInit | Metadata): Metadata {
    if (init instanceof Metadata) return init;
    if (init === null || typeof init !== "object") throw new UsageError(`Metadata.from: expected an object or an iterable of [key, value] pairs, got ${init === null ? "null" : typeof init}`);
    const pairs: Iterable<readonly [string, MetadataValue]> = Symbol.iterator in init ? (init as Iterable<readonly [string, MetadataValue]>) : Object.entries(init);
    const list: Entry[] = [];
    const seen = new Set<string>();
    let total = METADATA_PREFIX_BYTES;
    for (const pair of pairs) {
      if (list.length === MAX_METADATA_ENTRIES) throw new UsageError(`metadata: more than MAX_METADATA_ENTRIES (${MAX_METADATA_ENTRIES}) entries`);
      if (!Array.isArray(pair) || pair.length !== 2) throw new UsageError(`metadata: entry ${list.length} is not a [key, value] pair`);
      const [key, value] = pair as [unknown, unknown];
      if (typeof key !== "string") throw new UsageError(`metadata: entry ${list.length} has a ${typeof key} key, expected a string`);
      const bad = keyProblem(key);
      if (bad !== undefined) throw new UsageError(`metadata key ${quote(key)} ${bad}`);
      if (seen.has(key)) throw new UsageError(`metadata key ${quote(key)} appears twice`);
      seen.add(key);
      let entry: Entry;
      if (typeof value === "string") {
        if (BAD_TEXT.test(value)) throw new UsageError(`metadata key ${quote(key)}: a string value may not hold control characters (U+0000..U+001F, U+007F..U+009F) or lone surrogates; send it as binary`);
        entry = { key, text: value, bytes: encoder.encode(value) };
      } else if (value instanceof Uint8Array) {
        const copy = new Uint8Array(value.length);
        copy.set(value);
        entry = { key, text: undefined, bytes: copy };
      } else {
        throw new UsageError(`metadata key ${quote(key)}: value is ${value === null ? "null" : typeof value}, expected a string or a Uint8Array`);
      }
      if (key === TRACEPARENT_KEY) {
        const why = entry.text === undefined ? "is binary, expected a string" : traceparentProblem(entry.text);
        if (why !== undefined) throw new UsageError(`metadata key "${TRACEPARENT_KEY}": ${quote(entry.text ?? "(binary)")} ${why}`);
      }
      if (key === DEADLINE_KEY && (entry.text === undefined || !DEADLINE_VALUE.test(entry.text))) {
        throw new UsageError(`metadata key "${DEADLINE_KEY}": expected whole milliseconds in decimal (0..${MAX_DEADLINE_MS}), got ${entry.text === undefined ? "a binary value" : quote(entry.text)}; use withRemainingDeadline()`);
      }
      total += entrySize(key.length, entry.bytes.length);
      if (total > MAX_METADATA_BYTES) throw new UsageError(`metadata key ${quote(key)} brings the encoded size to ${total} bytes, over MAX_METADATA_BYTES (${MAX_METADATA_BYTES})`);
      list.push(entry);
    }
    return list.length === 0 ? Metadata.EMPTY : makeMetadata(list, total);
  }

  /** Entries held. */
  get size(): number {
    return this.#list.length;
  }

  /** True when `key` has a value (string or binary). */
  has(key: string): boolean {
    return this.#byKey.has(key);
  }

  /** The string value of `key`; undefined when it is absent or its value is binary (use getBinary). */
  get(key: string): string | undefined {
    return this.#byKey.get(key)?.text;
  }

  /** A copy (the caller's) of the binary value of `key`; undefined when it is absent or its value is a string (use get). */
  getBinary(key: string): Uint8Array | undefined {
    const e = this.#byKey.get(key);
    return e === undefined || e.text !== undefined ? undefined : e.bytes.slice();
  }

  /** Every entry in insertion order, as a new array the caller owns (binary values copied). */
  entries(): Array<[string, MetadataValue]> {
    return this.#list.map((e) => [e.key, e.text ?? e.bytes.slice()]);
  }

  [Symbol.iterator](): Iterator<[string, MetadataValue]> {
    return this.entries()[Symbol.iterator]();
  }
}

/** Bytes encodeMetadata() writes for `md` (2 for no entries, at most MAX_METADATA_BYTES). */
export function encodedLength(md: Metadata): number {
  return md.encodedLength;
}

/**
 * Writes `md` in the layout above. With no target, returns a new array of exactly
 * encodedLength(md) bytes, the caller's. With a target, writes at `target[offset ..)` and
 * returns the bytes written, allocating nothing; UsageError, before writing a byte, when the
 * target has less room than encodedLength(md) or offset is not an integer inside it. The caller
 * owns the target; nothing keeps it. Any thread.
 */
export function encodeMetadata(md: Metadata): Uint8Array<ArrayBuffer>;
export function encodeMetadata(md: Metadata, target: Uint8Array, offset?: number): number;
export function encodeMetadata(md: Metadata, target?: Uint8Array, offset = 0): Uint8Array | number {
  if (!(md instanceof Metadata)) throw new UsageError("encodeMetadata: expected a Metadata (build one with Metadata.from())");
  const len = md.encodedLength;
  if (target === undefined) {
    const out = new Uint8Array(len);
    writeEntries(md, out, 0);
    return out;
  }
  if (!(target instanceof Uint8Array)) throw new UsageError("encodeMetadata: target must be a Uint8Array");
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > target.length) {
    throw new UsageError(`encodeMetadata: offset ${String(offset)} is not an integer in 0..${target.length}`);
  }
  if (target.length - offset < len) throw new UsageError(`encodeMetadata: needs ${len} bytes, target has ${target.length - offset} from offset ${offset}`);
  writeEntries(md, target, offset);
  return len;
}

function writeEntries(md: Metadata, out: Uint8Array, at: number): void {
  const list = entriesOf(md);
  out[at] = METADATA_VERSION;
  out[at + 1] = list.length;
  let p = at + METADATA_PREFIX_BYTES;
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    const key = e.key;
    const value = e.bytes;
    out[p] = key.length;
    writeU16(out, p + 1, value.length | (e.text === undefined ? METADATA_BINARY_FLAG : 0));
    p += METADATA_ENTRY_HEADER_BYTES;
    for (let k = 0; k < key.length; k++) out[p + k] = key.charCodeAt(k);
    p += key.length;
    out.set(value, p);
    p += value.length;
  }
}

const isKeyByte = (c: number): boolean => (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x5f || c === 0x2d;

/**
 * Reads metadata a peer sent (all of `bytes`, nothing before or after it). ProtocolError for
 * every malformed input: more than MAX_METADATA_BYTES, truncated, an unknown version, a count
 * over MAX_METADATA_ENTRIES, a key or value length past the end, a key length of 0 or over
 * MAX_METADATA_KEY_BYTES, a key byte outside `[a-z0-9._-]`, a duplicate key, a string value that
 * is not UTF-8 or holds a control character, bytes after the last entry. Every length is checked
 * against the bytes present before anything is read or allocated for it. The result owns its
 * values (copied), so `bytes` may be reused at once. Well-known keys are not judged here: read
 * them with remainingDeadline() and traceparent(). Any thread.
 */
export function decodeMetadata(bytes: Uint8Array): Metadata {
  const n = bytes.length;
  if (n > MAX_METADATA_BYTES) throw new ProtocolError(`metadata: ${n} bytes, over MAX_METADATA_BYTES (${MAX_METADATA_BYTES})`);
  if (n < METADATA_PREFIX_BYTES) throw new ProtocolError(`metadata: truncated: ${n} bytes, the version and count take ${METADATA_PREFIX_BYTES}`);
  const version = bytes[0]!;
  if (version !== METADATA_VERSION) throw new ProtocolError(`metadata: unknown version ${version}, expected ${METADATA_VERSION}`);
  const count = bytes[1]!;
  if (count > MAX_METADATA_ENTRIES) throw new ProtocolError(`metadata: count ${count} is over MAX_METADATA_ENTRIES (${MAX_METADATA_ENTRIES})`);
  const list: Entry[] = [];
  const seen = new Set<string>();
  let p = METADATA_PREFIX_BYTES;
  for (let i = 0; i < count; i++) {
    if (n - p < METADATA_ENTRY_HEADER_BYTES) throw new ProtocolError(`metadata: truncated: entry ${i} of ${count} needs ${METADATA_ENTRY_HEADER_BYTES} header bytes at offset ${p}, ${n - p} left`);
    const keyLen = bytes[p]!;
    const word = readU16(bytes, p + 1);
    const valueLen = word & VALUE_LEN_MASK;
    p += METADATA_ENTRY_HEADER_BYTES;
    if (keyLen === 0 || keyLen > MAX_METADATA_KEY_BYTES) throw new ProtocolError(`metadata: entry ${i} has a key length of ${keyLen}, expected 1..${MAX_METADATA_KEY_BYTES}`);
    if (n - p < keyLen) throw new ProtocolError(`metadata: entry ${i}'s key length ${keyLen} runs past the end (${n - p} bytes left)`);
    let key = "";
    for (let k = 0; k < keyLen; k++) {
      const c = bytes[p + k]!;
      if (!isKeyByte(c)) throw new ProtocolError(`metadata: entry ${i}'s key has byte 0x${c.toString(16).padStart(2, "0")} at ${k}, outside [a-z0-9._-]`);
      key += String.fromCharCode(c);
    }
    p += keyLen;
    if (seen.has(key)) throw new ProtocolError(`metadata: key ${quote(key)} appears twice`);
    seen.add(key);
    if (n - p < valueLen) throw new ProtocolError(`metadata: key ${quote(key)}'s value length ${valueLen} runs past the end (${n - p} bytes left)`);
    const raw = bytes.subarray(p, p + valueLen);
    p += valueLen;
    if ((word & METADATA_BINARY_FLAG) !== 0) {
      const copy = new Uint8Array(valueLen);
      copy.set(raw);
      list.push({ key, text: undefined, bytes: copy });
      continue;
    }
    let text: string;
    try {
      text = decoder.decode(raw);
    } catch {
      throw new ProtocolError(`metadata: key ${quote(key)}'s string value is not UTF-8`);
    }
    if (BAD_TEXT.test(text)) throw new ProtocolError(`metadata: key ${quote(key)}'s string value holds a control character`);
    const copy = new Uint8Array(valueLen);
    copy.set(raw);
    list.push({ key, text, bytes: copy });
  }
  if (p !== n) throw new ProtocolError(`metadata: ${n - p} bytes after the last of ${count} entries`);
  return list.length === 0 ? Metadata.EMPTY : makeMetadata(list, n);
}

/**
 * `md` with DEADLINE_KEY set to `remainingMs` (replacing one already there, in its place; else
 * appended), for a server that calls another server and passes on what is left of its own
 * deadline. `md` is the metadata to send, not necessarily the incoming one (an auth token is per
 * hop). The value is whole milliseconds, rounded down (the next hop never waits longer than the
 * caller); a deadline already past travels as 0. The other entries are copied as they are, not
 * judged again: a peer's metadata (decodeMetadata() accepts an invalid traceparent, as W3C asks)
 * may be forwarded with a deadline. UsageError for a remainingMs that is not a number, is NaN or
 * over MAX_DEADLINE_MS (omit the key for no deadline), or when the deadline entry breaks a limit
 * (the message names it and the size of the rest). Returns a new Metadata; `md` is unchanged. Any thread.
 */
export function withRemainingDeadline(md: Metadata, remainingMs: number): Metadata {
  if (!(md instanceof Metadata)) throw new UsageError("withRemainingDeadline: expected a Metadata (Metadata.EMPTY for none)");
  if (typeof remainingMs !== "number" || Number.isNaN(remainingMs) || remainingMs > MAX_DEADLINE_MS) {
    throw new UsageError(`withRemainingDeadline: remainingMs ${String(remainingMs)} is not a number up to MAX_DEADLINE_MS (${MAX_DEADLINE_MS}); omit the deadline for none`);
  }
  const value = String(Math.floor(Math.max(0, remainingMs)));
  const entry: Entry = { key: DEADLINE_KEY, text: value, bytes: encoder.encode(value) };
  const old = entriesOf(md);
  const at = old.findIndex((e) => e.key === DEADLINE_KEY);
  if (at < 0 && old.length === MAX_METADATA_ENTRIES) {
    throw new UsageError(`withRemainingDeadline: the metadata already has MAX_METADATA_ENTRIES (${MAX_METADATA_ENTRIES}) entries: no room for "${DEADLINE_KEY}" (the call's deadline)`);
  }
  const list = old.slice();
  let total = md.encodedLength + entrySize(DEADLINE_KEY.length, entry.bytes.length);
  if (at < 0) list.push(entry);
  else {
    total -= entrySize(DEADLINE_KEY.length, old[at]!.bytes.length);
    list[at] = entry;
  }
  if (total > MAX_METADATA_BYTES) {
    const rest = at < 0 ? md.encodedLength : md.encodedLength - entrySize(DEADLINE_KEY.length, old[at]!.bytes.length);
    throw new UsageError(
      `withRemainingDeadline: "${DEADLINE_KEY}" (the call's deadline, ${entrySize(DEADLINE_KEY.length, entry.bytes.length)} bytes) brings the metadata to ${total} bytes, over MAX_METADATA_BYTES (${MAX_METADATA_BYTES}): the other entries take ${rest}`,
    );
  }
  return makeMetadata(list, total);
}

/**
 * The remaining deadline a caller sent under DEADLINE_KEY, in whole milliseconds (≥ 0), or
 * undefined when it sent none. ProtocolError when the value is binary or not decimal
 * milliseconds in 0..MAX_DEADLINE_MS (a decoded Metadata is not checked for it; the peer sent
 * it). Any thread.
 */
export function remainingDeadline(md: Metadata): number | undefined {
  if (!md.has(DEADLINE_KEY)) return undefined;
  const v = md.get(DEADLINE_KEY);
  if (v === undefined) throw new ProtocolError(`metadata: "${DEADLINE_KEY}" is binary, expected decimal milliseconds`);
  if (!DEADLINE_VALUE.test(v)) throw new ProtocolError(`metadata: "${DEADLINE_KEY}" is ${quote(v)}, expected decimal milliseconds in 0..${MAX_DEADLINE_MS}`);
  return Number(v);
}

/**
 * The traceparent the peer sent, when it is a valid W3C traceparent (version 00); undefined when
 * absent, binary or invalid. Per W3C Trace Context a receiver ignores an invalid traceparent
 * (and starts a new trace) rather than failing the call, so decodeMetadata() does not judge it.
 */
export function traceparent(md: Metadata): string | undefined {
  const v = md.get(TRACEPARENT_KEY);
  return v !== undefined && traceparentProblem(v) === undefined ? v : undefined;
}
