/**
 * TCP framing (data path). One frame per message:
 *
 *   offset 0  u32 LE  headLen   (≤ maxHeadBytes)
 *   offset 4  u32 LE  bodyLen   (≤ maxMessageBytes)
 *   offset 8  head bytes, then body bytes
 *
 * `FrameParser` turns the chunks a socket reads into whole messages: every complete frame of a
 * chunk is delivered before it returns, frames wholly inside one chunk are views into that
 * chunk (Bun hands each read a fresh buffer, so nothing is overwritten while a view is held),
 * and a frame split across reads is assembled into a buffer that grows with the bytes that
 * actually arrived (1 MiB to start, then at most twice what arrived, never past the frame's
 * size), after its lengths passed the limits: a claimed length, however large, costs at most
 * 1 MiB until its bytes really come.
 */

import { EMPTY_BYTES as EMPTY, readU32 } from "../bytes.ts";
import { ProtocolError } from "../errors.ts";
import type { RxMessage } from "../transport/transport.ts";

export const FRAME_HEAD_LEN_OFFSET = 0;
export const FRAME_BODY_LEN_OFFSET = 4;
export const FRAME_PREFIX_BYTES = 8;
/**
 * First allocation for a frame split across reads (capped at the frame's size); beyond it the
 * buffer doubles as bytes arrive. 1 MiB: typical large messages need no regrowth, and a
 * hostile claim costs at most this much per connection.
 */
const ASSEMBLY_MIN_BYTES = 1 << 20;

/**
 * A received TCP message: head and body lie back to back in `headBuf` (the read chunk, or the
 * buffer a split frame was assembled in). Views are made on first use only. The bytes are heap
 * memory nobody reuses, so release() only marks the message.
 */
export class TcpRxMessage implements RxMessage {
  released = false;
  private bodyView: Uint8Array | null = null;
  constructor(
    readonly headBuf: Uint8Array,
    readonly headOffset: number,
    readonly headLength: number,
    readonly bodyLength: number,
  ) {}
  get head(): Uint8Array {
    return this.headBuf.subarray(this.headOffset, this.headOffset + this.headLength);
  }
  get body(): Uint8Array {
    if (this.bodyView === null) {
      const at = this.headOffset + this.headLength;
      this.bodyView = this.bodyLength === 0 ? EMPTY : this.headBuf.subarray(at, at + this.bodyLength);
    }
    return this.bodyView;
  }
  release(): void {
    this.released = true;
  }
}

export class FrameParser {
  /** Prefix bytes of a frame whose prefix was split across reads. */
  private readonly prefix = new Uint8Array(FRAME_PREFIX_BYTES);
  private prefixFill = 0;
  /** The frame being assembled across reads (head + body), or null. */
  private frame: Uint8Array | null = null;
  private frameLen = 0;
  private frameHeadLen = 0;
  private frameFill = 0;

  constructor(
    private readonly maxHeadBytes: number,
    private readonly maxBodyBytes: number,
    /** Receives each whole message; returns false to stop parsing (the connection closed). */
    private readonly deliver: (msg: TcpRxMessage) => boolean,
  ) {}

  /** Bytes held for a frame not yet complete (for tests and accounting). */
  get pendingBytes(): number {
    return this.prefixFill + (this.frame ? this.frame.length : 0);
  }

  /** Parses one chunk. Throws ProtocolError on a frame that breaks the limits. */
  push(chunk: Uint8Array): void {
    let p = 0;
    const n = chunk.length;
    if (this.prefixFill > 0 || this.frame !== null) {
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
      this.check(headLen, bodyLen);
      const start = p + FRAME_PREFIX_BYTES;
      const end = start + headLen + bodyLen;
      if (end > n) {
        this.beginFrame(headLen, bodyLen, chunk.subarray(start, n));
        return;
      }
      const msg = new TcpRxMessage(chunk, start, headLen, bodyLen);
      p = end;
      if (!this.deliver(msg)) return;
    }
  }

  private check(headLen: number, bodyLen: number): void {
    if (headLen > this.maxHeadBytes) {
      throw new ProtocolError(`tcp frame: head of ${headLen} bytes exceeds maxHeadBytes ${this.maxHeadBytes}`);
    }
    if (bodyLen > this.maxBodyBytes) {
      throw new ProtocolError(`tcp frame: body of ${bodyLen} bytes exceeds maxMessageBytes ${this.maxBodyBytes}`);
    }
  }

  private beginFrame(headLen: number, bodyLen: number, first: Uint8Array): void {
    this.frameLen = headLen + bodyLen;
    this.frameHeadLen = headLen;
    this.frame = new Uint8Array(Math.min(this.frameLen, Math.max(ASSEMBLY_MIN_BYTES, 2 * first.length)));
    this.frame.set(first, 0);
    this.frameFill = first.length;
  }

  /** Feeds a chunk to a split prefix or frame; returns where whole-frame parsing resumes, or -1. */
  private continuePartial(chunk: Uint8Array): number {
    let p = 0;
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
      this.check(headLen, bodyLen);
      if (headLen + bodyLen === 0) {
        return this.deliver(new TcpRxMessage(EMPTY, 0, 0, 0)) ? p : -1;
      }
      this.beginFrame(headLen, bodyLen, EMPTY);
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
    const h = this.frameHeadLen;
    const msg = new TcpRxMessage(frame, 0, h, this.frameLen - h);
    return this.deliver(msg) ? p : -1;
  }
}
