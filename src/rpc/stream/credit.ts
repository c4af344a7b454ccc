/**
 * Stream flow control (wire.ts: STREAM_START's window, STREAM_CREDIT): the credit one side of
 * a stream may send under, and the receive window it grants its peer.
 *
 * Contract: a sender may send while it has messages credit > 0 and bytes credit > 0; bytes may
 * go negative by one message (a message larger than the window still goes, alone). The
 * receiver mirrors the peer's credit (received() throws ProtocolError for a message past it)
 * and grants credit back as its consumer takes messages (consumed()), batched: once half a
 * window was consumed, what was consumed is granted again. A slow consumer therefore holds at
 * most one window (+1 message) of bytes. Plain numbers, no allocation. The owner's thread.
 *
 * Example:
 *   const c = new Credit(STREAM_INITIAL_CREDIT, DEFAULT_STREAM_WINDOW);
 *   if (c.canSend()) { send(m); c.spent(m.length); }
 *   c.received(len); ... if (c.consumed(len)) sendCredit(c.grantMessages, c.grantBytes);
 */

import { readU32, writeU32 } from "../../bytes.ts";
import { ProtocolError, UsageError } from "../../errors.ts";
import type { StreamWindow } from "./types.ts";

/** The server's receive window at STREAM_START, before any CREDIT: what a client may send at once (protocol constant). */
export const STREAM_INITIAL_CREDIT: StreamWindow = Object.freeze({ messages: 16, bytes: 256 << 10 });
/**
 * A stream side's receive window unless its options say otherwise. The bytes bound memory; the
 * messages are set so small messages are not held back by them: with 64, a stream of 32-byte
 * messages waited for a credit round trip every 32 messages and ran at about half the rate
 * (bench/stream.bench.ts, shm and ucx over tcp).
 */
export const DEFAULT_STREAM_WINDOW: StreamWindow = Object.freeze({ messages: 1024, bytes: 1 << 20 });
/** Bytes of a STREAM_START or STREAM_CREDIT body: u32 messages, u32 bytes. */
export const CREDIT_BODY_BYTES = 8;
/** Window bounds: u32 on the wire, and at least one message. */
const MAX_WINDOW_VALUE = 0xffffffff;

/** A window from options, checked (UsageError naming the field). */
export function checkWindow(w: StreamWindow | undefined, what: string): StreamWindow {
  if (w === undefined) return DEFAULT_STREAM_WINDOW;
  if (w === null || typeof w !== "object") throw new UsageError(`${what}: window must be { messages, bytes }, got ${String(w)}`);
  for (const k of ["messages", "bytes"] as const) {
    const v = w[k];
    if (!Number.isInteger(v) || v < 1 || v > MAX_WINDOW_VALUE) throw new UsageError(`${what}: window.${k} ${String(v)} must be an integer in 1..${MAX_WINDOW_VALUE}`);
  }
  return { messages: w.messages, bytes: w.bytes };
}

/** An 8-byte credit body (START's window, a CREDIT grant). */
export function creditBody(messages: number, bytes: number): Uint8Array {
  const b = new Uint8Array(CREDIT_BODY_BYTES);
  writeU32(b, 0, messages);
  writeU32(b, 4, bytes);
  return b;
}

/** Reads an 8-byte credit body at `b[at..]`; ProtocolError when its length is wrong. */
export function readCredit(b: Uint8Array, at: number, what: string): { messages: number; bytes: number } {
  if (b.length - at !== CREDIT_BODY_BYTES) throw new ProtocolError(`rpc stream: ${what} body of ${b.length - at} bytes, expected ${CREDIT_BODY_BYTES}`);
  return { messages: readU32(b, at), bytes: readU32(b, at + 4) };
}

export class Credit {
  /** What this side may still send (bytes may be negative by one message). */
  sendMessages: number;
  sendBytes: number;
  /** The peer's credit as this side counts it: what it may still send before a grant. */
  private recvMessages: number;
  private recvBytes: number;
  /** Consumed since the last grant. */
  private takenMessages = 0;
  private takenBytes = 0;
  /** The grant consumed() decided on (valid when it returned true). */
  grantMessages = 0;
  grantBytes = 0;

  /**
   * `send`: the credit this side starts with (the peer's window); `initial`: what the peer may
   * send before any grant; `window`: this side's receive window (≥ initial, the rest granted
   * by the owner at once: extraMessages / extraBytes).
   */
  constructor(send: StreamWindow, initial: StreamWindow, readonly window: StreamWindow) {
    this.sendMessages = send.messages;
    this.sendBytes = send.bytes;
    this.recvMessages = initial.messages;
    this.recvBytes = initial.bytes;
  }

  canSend(): boolean {
    return this.sendMessages > 0 && this.sendBytes > 0;
  }

  spent(lenBytes: number): void {
    this.sendMessages--;
    this.sendBytes -= lenBytes;
  }

  /** The peer granted more (a CREDIT frame). ProtocolError when it overflows what a window can be. */
  granted(messages: number, bytes: number): void {
    this.sendMessages += messages;
    this.sendBytes += bytes;
    if (this.sendMessages > MAX_WINDOW_VALUE * 2 || this.sendBytes > MAX_WINDOW_VALUE * 2) {
      throw new ProtocolError(`rpc stream: the peer granted credit past any window (${this.sendMessages} messages, ${this.sendBytes} bytes)`);
    }
  }

  /** Credit the receive side adds at once to reach its window (granted by the owner): the window past `initial`. */
  openWindow(): boolean {
    this.grantMessages = Math.max(0, this.window.messages - this.recvMessages);
    this.grantBytes = Math.max(0, this.window.bytes - this.recvBytes);
    this.recvMessages += this.grantMessages;
    this.recvBytes += this.grantBytes;
    return this.grantMessages > 0 || this.grantBytes > 0;
  }

  /** A message of `lenBytes` arrived: ProtocolError when the peer had no credit for it. */
  received(lenBytes: number): void {
    if (this.recvMessages <= 0 || this.recvBytes <= 0) {
      throw new ProtocolError(`rpc stream: the peer sent a ${lenBytes}-byte message past its credit (${this.recvMessages} messages, ${this.recvBytes} bytes left)`);
    }
    this.recvMessages--;
    this.recvBytes -= lenBytes;
  }

  /** The consumer took a message: true when a grant is due (grantMessages / grantBytes, already counted). */
  consumed(lenBytes: number): boolean {
    this.takenMessages++;
    this.takenBytes += lenBytes;
    if (this.takenMessages * 2 < this.window.messages && this.takenBytes * 2 < this.window.bytes) return false;
    this.grantMessages = this.takenMessages;
    // A grant travels as a u32 (a message is smaller than that anyway: sendLimit).
    this.grantBytes = Math.min(this.takenBytes, MAX_WINDOW_VALUE);
    this.recvMessages += this.grantMessages;
    this.recvBytes += this.grantBytes;
    this.takenMessages = 0;
    this.takenBytes = 0;
    return true;
  }
}
