/**
 * OutputBuffer (data path): the bytes one TCP connection has queued for its socket, bounded.
 *
 * Bytes are appended at `end` and written from `start`, straight from this buffer with
 * Bun's `socket.write(data, byteOffset, byteLength)` (no view per flush); a short write only
 * moves `start`, and the bytes still queued move to the front only when an append needs the
 * room behind them. The buffer holds at most `budgetBytes`, except one append larger than the
 * budget made while it was empty (one large frame); `claim()` returns -1 past the budget, which
 * the connection reports as Full. It starts small, doubles up to the budget and is kept there
 * (no allocation per busy tick); a buffer grown past the budget is let go once it drained.
 *
 * Example:
 *   const out = new OutputBuffer(4 << 20);
 *   const at = out.claim(n);              // -1: over budget (Full)
 *   if (at >= 0) { out.bytes.set(frame, at); out.commit(n) }
 *   const left = out.writeTo(socket);     // -1: the socket is gone; > 0: wait for drain
 *
 * Ownership: one per connection, on the connection's thread only; `bytes` is valid until the
 * next claim().
 */

import { EMPTY_BYTES, writeU32 } from "../bytes.ts";
import { FRAME_BODY_LEN_OFFSET, FRAME_HEAD_LEN_OFFSET, FRAME_PREFIX_BYTES } from "./frame.ts";

/** What the buffer writes to: Bun's socket.write with offset and length (returns bytes taken, or -1). */
export interface ByteSink {
  write(data: Uint8Array, byteOffset: number, byteLength: number): number;
}

/** First size of the buffer: one tick's replies at moderate load; it doubles from here. */
const INITIAL_OUT_BYTES = 64 << 10;

export class OutputBuffer {
  /** The buffer; queued bytes are bytes[start .. end). Replaced by claim() when it grows. */
  bytes: Uint8Array = EMPTY_BYTES;
  start = 0;
  end = 0;
  /** Calls to the sink's write so far (writeTo, writeDirect). */
  writes = 0;

  constructor(readonly budgetBytes: number) {}

  /** Bytes queued. */
  get length(): number {
    return this.end - this.start;
  }

  /**
   * Makes room for `n` more bytes and returns where they go in `bytes`, or -1 when bytes are
   * queued and `n` more would pass the budget. Nothing is queued until commit(n).
   */
  claim(n: number): number {
    const queued = this.end - this.start;
    if (queued > 0 && queued + n > this.budgetBytes) return -1;
    if (this.end + n <= this.bytes.length) return this.end;
    return this.room(n);
  }

  /**
   * claim() for one frame (frame.ts) with its prefix written: the frame's offset, or -1 (over
   * budget). The head goes at offset + FRAME_PREFIX_BYTES, the body after it; then commit().
   */
  claimFrame(headLen: number, bodyLen: number): number {
    const at = this.claim(FRAME_PREFIX_BYTES + headLen + bodyLen);
    if (at < 0) return -1;
    const b = this.bytes;
    writeU32(b, at + FRAME_HEAD_LEN_OFFSET, headLen);
    writeU32(b, at + FRAME_BODY_LEN_OFFSET, bodyLen);
    return at;
  }

  /** Queues the `n` bytes written at the offset claim() returned. */
  commit(n: number): void {
    this.end += n;
  }

  /** Appends `b` whole, past the budget if need be (handshake bytes, the rest of a direct write). */
  push(b: Uint8Array): void {
    const at = this.end + b.length <= this.bytes.length ? this.end : this.room(b.length);
    this.bytes.set(b, at);
    this.end = at + b.length;
  }

  /** Writes what the sink takes; returns the bytes still queued, or -1 when the sink refused (gone). */
  writeTo(sink: ByteSink): number {
    const len = this.end - this.start;
    if (len === 0) return 0;
    this.writes++;
    const w = sink.write(this.bytes, this.start, len);
    if (w < 0) return -1;
    if (w < len) {
      this.start += w;
      return len - w;
    }
    this.start = this.end = 0;
    // Only a buffer grown past the budget for one large frame is let go.
    if (this.bytes.length > this.budgetBytes) this.bytes = EMPTY_BYTES;
    return 0;
  }

  /**
   * With nothing queued: writes `start` then `body` straight from their memory (no copy into
   * this buffer); only what the sink did not take is copied in, so the caller may reuse its
   * body once this returns. Returns the bytes now queued, or -1 when the sink refused (gone).
   */
  writeDirect(sink: ByteSink, start: Uint8Array, body: Uint8Array): number {
    this.writes++;
    const w1 = sink.write(start, 0, start.length);
    if (w1 < 0) return -1;
    const w2 = w1 === start.length ? sink.write(body, 0, body.length) : 0;
    const restStart = start.subarray(w1);
    const restBody = body.subarray(Math.max(w2, 0));
    if (restStart.length + restBody.length === 0) return 0;
    this.push(restStart);
    this.push(restBody);
    return this.length;
  }

  /** Drops everything queued (the connection was cut). */
  clear(): void {
    this.start = this.end = 0;
    if (this.bytes.length > this.budgetBytes) this.bytes = EMPTY_BYTES;
  }

  /** Moves queued bytes to the front and grows (doubling, capped at the budget unless `n` needs more) so `n` more fit. */
  private room(n: number): number {
    const queued = this.end - this.start;
    const need = queued + n;
    if (need <= this.bytes.length) {
      this.bytes.copyWithin(0, this.start, this.end);
    } else {
      const cap = Math.max(need, this.budgetBytes);
      let size = Math.max(this.bytes.length, Math.min(INITIAL_OUT_BYTES, cap));
      while (size < need) size *= 2;
      const next = new Uint8Array(Math.min(size, cap));
      if (queued > 0) next.set(this.bytes.subarray(this.start, this.end));
      this.bytes = next;
    }
    this.start = 0;
    this.end = queued;
    return queued;
  }
}
