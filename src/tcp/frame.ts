/**
 * TCP framing (data path). One frame per message, after the hello (hello.ts):
 *
 *   offset 0  u32 LE  headLen   (≤ maxHeadBytes)
 *   offset 4  u32 LE  bodyLen   (≤ maxMessageBytes, or skipped: see below)
 *   offset 8  head bytes, then body bytes
 *
 * `FrameParser` turns the chunks a socket reads into whole messages: every complete frame of a
 * chunk is delivered before it returns, frames wholly inside one chunk are parsed in place and
 * their bodies are views into that chunk, or copies when small (Bun hands each read a fresh
 * buffer, so nothing is overwritten while a view is held),
 * and a frame split across reads is assembled into one buffer after its lengths passed the
 * limits. Message objects are reused: a released TcpRxMessage carries a later frame. Without a reserve hook that buffer grows with the bytes that actually arrived (1 MiB
 * to start, then at most twice what arrived, never past the frame's size), so a claimed
 * length, however large, costs at most 1 MiB until its bytes really come.
 *
 * Before a split frame is assembled the parser asks `hooks.reserve(frameLen)`; false stalls it
 * (the chunks not yet parsed are kept, nothing else is allocated) until `resume()`; true gives
 * the frame its whole buffer at once (the reservation accounts for it, and the pages of a large
 * buffer cost memory only as the bytes that arrive are written into them). A frame whose
 * head is within maxHeadBytes but whose body is over maxMessageBytes is skippable when
 * `hooks.canSkip()` says so: its head is read whole (at most maxHeadBytes), handed to
 * `hooks.onOversized`, and its body bytes are discarded as they arrive, never buffered. Any
 * other frame over the limits throws ProtocolError: the stream cannot be trusted past it.
 *
 * Example:
 *   const p = new FrameParser(4096, 1 << 20, (m) => { use(m); m.release(); return true });
 *   socket.data = (chunk) => p.push(chunk);
 */

import { EMPTY_BYTES as EMPTY, readU32, writeU32 } from "../bytes.ts";
import { ProtocolError } from "../errors.ts";
import type { RxMessage } from "../contract/transport.ts";

export const FRAME_HEAD_LEN_OFFSET = 0;
export const FRAME_BODY_LEN_OFFSET = 4;
export const FRAME_PREFIX_BYTES = 8;
/** A frame's prefix and head in a new buffer (its body goes apart). Any thread. */
export function encodeFrameStart(head: Uint8Array, bodyLen: number): Uint8Array {
  const b = new Uint8Array(FRAME_PREFIX_BYTES + head.length);
  writeU32(b, FRAME_HEAD_LEN_OFFSET, head.length);
  writeU32(b, FRAME_BODY_LEN_OFFSET, bodyLen);
  b.set(head, FRAME_PREFIX_BYTES);
  return b;
}

/** Stores six 32-bit words little-endian at `b[at .. at + 24)` (a head given as words). Any thread. */
export function writeWords(b: Uint8Array, at: number, h0: number, h1: number, h2: number, h3: number, h4: number, h5: number): void {
  writeU32(b, at, h0);
  writeU32(b, at + 4, h1);
  writeU32(b, at + 8, h2);
  writeU32(b, at + 12, h3);
  writeU32(b, at + 16, h4);
  writeU32(b, at + 20, h5);
}

/**
 * First allocation for a frame split across reads (capped at the frame's size); beyond it the
 * buffer doubles as bytes arrive. 1 MiB: typical large messages need no regrowth, and a
 * hostile claim costs at most this much per connection.
 */
const ASSEMBLY_MIN_BYTES = 1 << 20;

/** Who learns that a received message was released (the connection counts what is in flight). */
export interface RxOwner {
  onRxReleased(): void;
}

/**
 * Released messages kept for reuse per parser: the default client window (256) of replies
 * held at once finds a free object; beyond it messages are allocated and dropped on release.
 */
const RX_POOL_MAX = 256;
/**
 * Bodies up to this size are handed out as copies, larger ones as views of the read: in JSC a
 * view of a small read first moves the read into an ArrayBuffer of its own, which costs more
 * than copying a small body (most of all when a read holds one message); a copy's cost grows
 * with its size, a view's does not (bench/rpc.bench.ts prints both, by size and messages per read).
 */
export const COPY_BODY_MAX_BYTES = 128;

/**
 * A received TCP message: head and body lie back to back in `headBuf` (the read chunk, or the
 * buffer a split frame was assembled in). The body is made on first use only: a copy up to
 * COPY_BODY_MAX_BYTES, else a view. The bytes are heap memory nobody reuses, so a body (copy
 * or view) stays valid after release(); the message
 * object itself is not: release() hands it back to its parser, which reuses it for a later
 * message (so a message must not be touched after release(); releasing twice in a row is
 * harmless).
 */
export class TcpRxMessage implements RxMessage {
  released = false;
  private bodyView: Uint8Array | null = null;
  constructor(
    public headBuf: Uint8Array,
    public headOffset: number,
    public headLength: number,
    public bodyLength: number,
    private readonly owner: RxOwner | null = null,
    private readonly pool: TcpRxMessage[] | null = null,
  ) {}
  get head(): Uint8Array {
    return this.headBuf.subarray(this.headOffset, this.headOffset + this.headLength);
  }
  get body(): Uint8Array {
    if (this.bodyView === null) {
      const at = this.headOffset + this.headLength;
      const len = this.bodyLength;
      this.bodyView = len === 0 ? EMPTY : len <= COPY_BODY_MAX_BYTES ? this.headBuf.slice(at, at + len) : this.headBuf.subarray(at, at + len);
    }
    return this.bodyView;
  }
  release(): void {
    if (this.released) return;
    this.released = true;
    // Let go of the read chunk at once: a pooled object must not keep its memory alive.
    this.headBuf = EMPTY;
    this.bodyView = null;
    this.headOffset = this.headLength = this.bodyLength = 0;
    const pool = this.pool;
    if (pool !== null && pool.length < RX_POOL_MAX) pool.push(this);
    this.owner?.onRxReleased();
  }
  /** @internal The parser reuses a released message for the frame at `headBuf[headOffset ..)`. */
  reuse(headBuf: Uint8Array, headOffset: number, headLength: number, bodyLength: number): this {
    this.headBuf = headBuf;
    this.headOffset = headOffset;
    this.headLength = headLength;
    this.bodyLength = bodyLength;
    this.released = false;
    return this;
  }
}

/** What the connection decides for the parser (every hook is optional; see the module comment). */
export interface FrameHooks {
  /** Owner of delivered messages (told when each is released). */
  owner?: RxOwner;
  /** May a split frame of `frameLen` bytes be assembled now? false: stall until resume(). */
  reserve?(frameLen: number): boolean;
  /** A frame that reserve() admitted is complete (or dropped): its memory is no longer held. */
  unreserve?(frameLen: number): void;
  /** May a frame whose body is over maxMessageBytes be skipped? Absent or false: ProtocolError. */
  canSkip?(): boolean;
  /** A skipped frame's head (a view valid during the call) and its body's claimed length. false: stop. */
  onOversized?(head: Uint8Array, bodyLen: number): boolean;
}

export class FrameParser {
  /** Prefix bytes of a frame whose prefix was split across reads. */
  private readonly prefix = new Uint8Array(FRAME_PREFIX_BYTES);
  private prefixFill = 0;
  /** The frame being assembled across reads (head + body, or only the head of a skipped frame). */
  private frame: Uint8Array | null = null;
  private frameLen = 0;
  private frameHeadLen = 0;
  private frameFill = 0;
  /** Body bytes to discard after the head being assembled (a skipped frame), else -1. */
  private skipAfter = -1;
  /** Body bytes of a skipped frame still to discard. */
  private skipLeft = 0;
  /** A split frame waiting for reserve(): its lengths, and the chunks after its prefix. */
  private waitHead = -1;
  private waitBody = 0;
  private stalled: Uint8Array[] = [];
  /** Frames delivered or skipped so far (the connection tells idle from busy by it). */
  completed = 0;
  /** A delivery said stop (the connection closed): nothing more is parsed. */
  private halted = false;
  /** Released messages, reused for the next frames (see TcpRxMessage). */
  private readonly free: TcpRxMessage[] = [];

  constructor(
    private readonly maxHeadBytes: number,
    private readonly maxBodyBytes: number,
    /** Receives each whole message; returns false to stop parsing (the connection closed). */
    private readonly deliver: (msg: TcpRxMessage) => boolean,
    private readonly hooks: FrameHooks = {},
  ) {}

  /** Bytes held for a frame not yet complete (for tests and accounting). */
  get pendingBytes(): number {
    let n = this.prefixFill + (this.frame ? this.frame.length : 0);
    for (const c of this.stalled) n += c.length;
    return n;
  }

  /** True while a frame has begun arriving and is not complete (or waits for its reservation). */
  get partial(): boolean {
    return this.prefixFill > 0 || this.frame !== null || this.skipLeft > 0 || this.waitHead >= 0;
  }

  /** True while a split frame waits for reserve() to admit it. */
  get stalledForReserve(): boolean {
    return this.waitHead >= 0;
  }

  /** Parses one chunk. Throws ProtocolError on a frame that breaks the limits. */
  push(chunk: Uint8Array): void {
    if (this.halted) return;
    if (this.waitHead >= 0) {
      this.stalled.push(chunk);
      return;
    }
    let p = 0;
    const n = chunk.length;
    if (this.prefixFill > 0 || this.frame !== null || this.skipLeft > 0) {
      p = this.continuePartial(chunk);
      if (p < 0) return;
    }
    while (p < n) {
      if (n - p < FRAME_PREFIX_BYTES) {
        this.prefix.set(chunk.subarray(p, n), 0);
        this.prefixFill = n - p;
        return;
      }
      const headLen = readU32(chunk, p);
      const bodyLen = readU32(chunk, p + FRAME_BODY_LEN_OFFSET);
      const start = p + FRAME_PREFIX_BYTES;
      if (this.oversized(headLen, bodyLen)) {
        p = this.beginSkip(headLen, bodyLen, chunk, start);
        if (p < 0) return;
        continue;
      }
      const end = start + headLen + bodyLen;
      if (end > n) {
        this.beginFrame(headLen, bodyLen, chunk.subarray(start, n));
        return;
      }
      const msg = this.message(chunk, start, headLen, bodyLen);
      p = end;
      this.completed++;
      if (!this.deliver(msg)) return this.halt();
    }
  }

  /** Goes on after reserve() refused: asks again and, when admitted, parses what was kept. */
  resume(): void {
    if (this.waitHead < 0) return;
    const headLen = this.waitHead;
    const bodyLen = this.waitBody;
    const chunks = this.stalled;
    this.waitHead = -1;
    this.stalled = [];
    this.beginFrame(headLen, bodyLen, EMPTY);
    // Chunks go back through push() in order; one that stalls again keeps the rest queued.
    for (const c of chunks) this.push(c);
  }

  /** Checks a prefix's lengths: false for a normal frame, true for a skippable one; throws otherwise. */
  private oversized(headLen: number, bodyLen: number): boolean {
    if (headLen > this.maxHeadBytes) {
      throw new ProtocolError(`tcp frame: head of ${headLen} bytes exceeds maxHeadBytes ${this.maxHeadBytes}`);
    }
    if (bodyLen <= this.maxBodyBytes) return false;
    if (this.hooks.canSkip?.() === true) return true;
    throw new ProtocolError(`tcp frame: body of ${bodyLen} bytes exceeds maxMessageBytes ${this.maxBodyBytes}`);
  }

  /**
   * Starts skipping a frame whose head begins at `at` of `chunk`: delivers its head if whole and
   * discards what body the chunk holds. Returns where parsing resumes in the chunk, or -1.
   */
  private beginSkip(headLen: number, bodyLen: number, chunk: Uint8Array, at: number): number {
    const n = chunk.length;
    if (at + headLen > n) {
      this.frame = new Uint8Array(headLen);
      this.frame.set(chunk.subarray(at, n), 0);
      this.frameFill = n - at;
      this.frameLen = headLen;
      this.frameHeadLen = headLen;
      this.skipAfter = bodyLen;
      return -1;
    }
    if (!this.skipped(chunk.subarray(at, at + headLen), bodyLen)) return -1;
    return this.discard(chunk, at + headLen);
  }

  /** Reports a skipped frame; the body is then discarded. Returns false to stop. */
  private skipped(head: Uint8Array, bodyLen: number): boolean {
    this.skipLeft = bodyLen;
    this.completed++;
    if (!this.hooks.onOversized || this.hooks.onOversized(head, bodyLen)) return true;
    this.halt();
    return false;
  }

  /** Discards skipped body bytes from `p`; returns where parsing resumes, or -1 (chunk used up). */
  private discard(chunk: Uint8Array, p: number): number {
    const take = Math.min(this.skipLeft, chunk.length - p);
    this.skipLeft -= take;
    p += take;
    return this.skipLeft > 0 ? -1 : p;
  }

  private beginFrame(headLen: number, bodyLen: number, first: Uint8Array): void {
    const frameLen = headLen + bodyLen;
    if (this.hooks.reserve && !this.hooks.reserve(frameLen)) {
      this.waitHead = headLen;
      this.waitBody = bodyLen;
      if (first.length > 0) this.stalled.push(first);
      return;
    }
    this.frameLen = frameLen;
    this.frameHeadLen = headLen;
    this.skipAfter = -1;
    // Admitted by reserve(): the whole buffer at once, so growing leaves no garbage copies
    // behind (pages nothing has written yet cost no memory). Otherwise it grows with the bytes.
    const size = this.hooks.reserve ? frameLen : Math.min(frameLen, Math.max(ASSEMBLY_MIN_BYTES, 2 * first.length));
    this.frame = new Uint8Array(size);
    this.frame.set(first, 0);
    this.frameFill = first.length;
  }

  /** Feeds a chunk to a split prefix, frame or skip; returns where whole-frame parsing resumes, or -1. */
  private continuePartial(chunk: Uint8Array): number {
    let p = 0;
    if (this.skipLeft > 0) return this.discard(chunk, 0);
    if (this.frame === null) {
      const need = FRAME_PREFIX_BYTES - this.prefixFill;
      if (chunk.length < need) {
        this.prefix.set(chunk, this.prefixFill);
        this.prefixFill += chunk.length;
        return -1;
      }
      this.prefix.set(chunk.subarray(0, need), this.prefixFill);
      this.prefixFill = 0;
      p = need;
      const headLen = readU32(this.prefix, 0);
      const bodyLen = readU32(this.prefix, FRAME_BODY_LEN_OFFSET);
      if (this.oversized(headLen, bodyLen)) return this.beginSkip(headLen, bodyLen, chunk, p);
      if (headLen + bodyLen === 0) {
        this.completed++;
        if (this.deliver(this.message(EMPTY, 0, 0, 0))) return p;
        this.halt();
        return -1;
      }
      this.beginFrame(headLen, bodyLen, EMPTY);
      if (this.waitHead >= 0) {
        if (p < chunk.length) this.stalled.push(chunk.subarray(p));
        return -1;
      }
    }
    const take = Math.min(this.frameLen - this.frameFill, chunk.length - p);
    if (this.frameFill + take > this.frame!.length) {
      const grown = new Uint8Array(Math.min(this.frameLen, Math.max(2 * this.frame!.length, this.frameFill + take)));
      grown.set(this.frame!.subarray(0, this.frameFill));
      this.frame = grown;
    }
    const frame = this.frame!;
    frame.set(chunk.subarray(p, p + take), this.frameFill);
    this.frameFill += take;
    p += take;
    if (this.frameFill < this.frameLen) return -1;
    this.frame = null;
    if (this.skipAfter >= 0) {
      const bodyLen = this.skipAfter;
      this.skipAfter = -1;
      if (!this.skipped(frame, bodyLen)) return -1;
      return this.discard(chunk, p);
    }
    this.hooks.unreserve?.(this.frameLen);
    const h = this.frameHeadLen;
    const msg = this.message(frame, 0, h, this.frameLen - h);
    this.completed++;
    if (this.deliver(msg)) return p;
    this.halt();
    return -1;
  }

  /** A message for the frame at `buf[at ..)`: a released one reused, else a new one. */
  private message(buf: Uint8Array, at: number, headLen: number, bodyLen: number): TcpRxMessage {
    const m = this.free.pop();
    if (m !== undefined) return m.reuse(buf, at, headLen, bodyLen);
    return new TcpRxMessage(buf, at, headLen, bodyLen, this.hooks.owner ?? null, this.free);
  }

  private halt(): void {
    this.halted = true;
  }
}
