/**
 * TcpConnection: the Transport contract over one Bun TCP socket (data path).
 *
 * Sends append a frame to one output buffer; the buffer is written once per tick (a microtask
 * scheduled by the first send of the tick, or at once at the end of a read's handling or in
 * poll()), so every frame queued in one synchronous run goes out in one write. A short write keeps the rest and waits for `drain`; while the buffer holds
 * more than `sendBufferBytes`, trySend returns Full. Reads are parsed by FrameParser and each
 * whole message is handed to the receiver inline, from the event loop.
 *
 * Ownership: the socket belongs to this object; close() ends it. Call from the thread that
 * created the connection only.
 */

import type { Socket } from "bun";
import { HotpathError, ProtocolError, TransportClosedError, UsageError } from "../errors.ts";
import {
  DEFAULT_MAX_HEAD_BYTES,
  SEND_CLOSED,
  SEND_FULL,
  SEND_OK,
  type Capabilities,
  type Connection,
  type Receiver,
  type RxMessage,
  type SendStatus,
  type WaitPolicy,
} from "../transport/transport.ts";
import { writeU32 } from "../bytes.ts";
import { WaitList } from "../waitlist.ts";
import { FRAME_PREFIX_BYTES, FrameParser, type TcpRxMessage } from "./frame.ts";

/** Output buffered before trySend reports Full: a few socket buffers' worth. */
export const DEFAULT_SEND_BUFFER_BYTES = 4 << 20;
/** Bodies at least this large go to the socket without a copy when nothing is queued ahead. */
const DIRECT_WRITE_BYTES = 64 << 10;
/** How long a closed connection keeps trying to hand queued output to a slow peer. */
const CLOSE_LINGER_MS = 5000;
/** Starting size of the output buffer; it grows by doubling for large messages. */
const INITIAL_OUT_BYTES = 64 << 10;

export interface TcpConnectionOptions {
  maxMessageBytes: number;
  sendBufferBytes?: number;
  peer: string;
}

export class TcpConnection implements Connection {
  readonly transport = "tcp";
  readonly caps: Capabilities;
  readonly peer: string;
  closed = false;
  closeError: HotpathError | null = null;

  private readonly socket: Socket<TcpConnection>;
  private readonly parser: FrameParser;
  private receiver: Receiver | null = null;
  /** Messages that arrived before setReceiver(). */
  private early: TcpRxMessage[] = [];
  private out = new Uint8Array(INITIAL_OUT_BYTES);
  private outLen = 0;
  private readonly sendBufferBytes: number;
  private flushScheduled = false;
  private awaitingDrain = false;
  private inData = false;
  /** close() with output still queued: the socket ends once it drained. */
  private lingering = false;
  private lingerTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  private readonly waiters = new WaitList();
  private readonly flushTask = () => {
    this.flushScheduled = false;
    this.flush();
  };

  constructor(socket: Socket<TcpConnection>, opts: TcpConnectionOptions) {
    this.socket = socket;
    this.peer = opts.peer;
    this.sendBufferBytes = opts.sendBufferBytes ?? DEFAULT_SEND_BUFFER_BYTES;
    this.caps = {
      maxInlineBytes: opts.maxMessageBytes,
      maxMessageBytes: opts.maxMessageBytes,
      peerMaxMessageBytes: opts.maxMessageBytes,
      maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
      zeroCopy: false,
      rma: false,
      sameHostOnly: false,
    };
    this.parser = new FrameParser(DEFAULT_MAX_HEAD_BYTES, opts.maxMessageBytes, (msg) => this.deliver(msg));
    socket.setNoDelay(true);
  }

  setReceiver(receiver: Receiver): void {
    this.receiver = receiver;
    const early = this.early;
    this.early = [];
    for (const msg of early) {
      if (this.closed) break;
      receiver.onMessage(msg);
    }
    if (this.closed) receiver.onClose(this.closeError);
  }

  trySend(head: Uint8Array, body?: Uint8Array | null): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const bodyLen = body ? body.length : 0;
    if (bodyLen > this.caps.maxMessageBytes || head.length > this.caps.maxHeadBytes) {
      throw new UsageError(
        `tcp send: message of ${head.length}+${bodyLen} bytes exceeds limits (head ${this.caps.maxHeadBytes}, body ${this.caps.maxMessageBytes})`,
      );
    }
    const frameLen = FRAME_PREFIX_BYTES + head.length + bodyLen;
    if (bodyLen >= DIRECT_WRITE_BYTES && this.outLen === 0 && !this.awaitingDrain) return this.writeDirect(head, body!);
    // A frame bigger than the whole budget still goes when the buffer is empty.
    if (this.outLen > 0 && this.outLen + frameLen > this.sendBufferBytes) return SEND_FULL;
    if (this.outLen + frameLen > this.out.length) this.grow(this.outLen + frameLen);
    const out = this.out;
    const at = this.outLen;
    writeU32(out, at, head.length);
    writeU32(out, at + 4, bodyLen);
    out.set(head, at + FRAME_PREFIX_BYTES);
    if (body && bodyLen > 0) out.set(body, at + FRAME_PREFIX_BYTES + head.length);
    this.outLen = at + frameLen;
    // Inside onData the read's handler flushes at its end; elsewhere a microtask does.
    if (!this.flushScheduled && !this.awaitingDrain && !this.inData) {
      this.flushScheduled = true;
      queueMicrotask(this.flushTask);
    }
    return SEND_OK;
  }

  /**
   * A large body with nothing queued ahead of it: hand it to the socket straight from the
   * caller's memory (no copy into the output buffer); only what the socket did not take is
   * copied (trySend's contract: the caller may reuse its buffer once this returns).
   */
  private writeDirect(head: Uint8Array, body: Uint8Array): SendStatus {
    const prefix = new Uint8Array(FRAME_PREFIX_BYTES + head.length);
    writeU32(prefix, 0, head.length);
    writeU32(prefix, 4, body.length);
    prefix.set(head, FRAME_PREFIX_BYTES);
    const w1 = this.socket.write(prefix);
    if (w1 < 0) {
      this.onSocketClosed();
      return SEND_CLOSED;
    }
    const w2 = w1 === prefix.length ? this.socket.write(body) : 0;
    const restPrefix = prefix.subarray(w1);
    const restBody = body.subarray(Math.max(w2, 0));
    if (restPrefix.length + restBody.length === 0) return SEND_OK;
    if (restPrefix.length + restBody.length > this.out.length) this.grow(restPrefix.length + restBody.length);
    this.out.set(restPrefix, 0);
    this.out.set(restBody, restPrefix.length);
    this.outLen = restPrefix.length + restBody.length;
    this.awaitingDrain = true;
    return SEND_OK;
  }

  /** TCP has no transport memory: a heap buffer, copied into the socket on send. */
  allocBuffer(lenBytes: number): Uint8Array | null {
    if (this.closed) return null;
    if (lenBytes < 0 || lenBytes > this.caps.maxMessageBytes) {
      throw new UsageError(`tcp allocBuffer: ${lenBytes} bytes is outside 0..${this.caps.maxMessageBytes}`);
    }
    return new Uint8Array(lenBytes);
  }

  trySendBuffer(head: Uint8Array, buffer: Uint8Array): SendStatus {
    return this.trySend(head, buffer);
  }

  /** Heap memory: nothing to give back. */
  releaseBuffer(_buffer: Uint8Array): void {}

  /** Messages arrive from the event loop; poll() pushes queued output now and delivers nothing. */
  poll(): number {
    if (this.outLen > 0 && !this.awaitingDrain && !this.closed) this.flush();
    return 0;
  }

  wait(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    return this.waiters.wait(timeoutMs);
  }

  /** The event loop parks TCP waits; there is nothing to spin on. */
  setWaitPolicy(_policy: Partial<WaitPolicy>): void {}

  /**
   * Closes this side. Output already queued still goes out: if the socket cannot take it all
   * now, the socket ends once it drained (at most CLOSE_LINGER_MS later, then it is cut).
   */
  close(): void {
    if (this.closed) return;
    if (this.outLen > 0 && !this.awaitingDrain) this.flush();
    this.finish(null);
    if (this.outLen === 0) {
      this.socket.end();
      return;
    }
    this.lingering = true;
    this.lingerTimer = setTimeout(() => this.socket.terminate(), CLOSE_LINGER_MS);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- called by the socket handlers in setup.ts ----

  onData(chunk: Uint8Array): void {
    if (this.closed) return;
    this.inData = true;
    try {
      this.parser.push(chunk);
    } catch (e) {
      // A malformed frame, or a receiver that threw: the stream's framing can no longer be
      // trusted, so the connection ends here (the peer sees it closed) instead of limping on.
      const err = e instanceof HotpathError ? e : new ProtocolError(`tcp connection to ${this.peer}: receiver failed: ${e instanceof Error ? e.message : String(e)}`);
      this.abort(err);
      return;
    } finally {
      this.inData = false;
    }
    // Replies produced while this read was parsed go out now, in one write with each other.
    if (this.outLen > 0 && !this.awaitingDrain) this.flush();
    this.wakeWaiters(true);
  }

  onDrain(): void {
    this.awaitingDrain = false;
    if (this.lingering) {
      this.flushOut();
      if (this.outLen === 0) {
        clearTimeout(this.lingerTimer);
        this.socket.end();
      }
      return;
    }
    if (this.outLen > 0) this.flush();
    if (!this.awaitingDrain) this.wakeWaiters(true);
  }

  onSocketClosed(cause?: unknown): void {
    clearTimeout(this.lingerTimer);
    if (this.closed) return;
    this.finish(new TransportClosedError(`tcp connection to ${this.peer} closed by the peer`, { cause }));
  }

  /** Aborts the connection at once (a protocol violation): no flush, socket terminated. */
  abort(error: HotpathError): void {
    if (this.closed) return;
    this.outLen = 0;
    this.finish(error);
    this.socket.terminate();
  }

  // ---- internals ----

  private deliver(msg: TcpRxMessage): boolean {
    if (this.receiver === null) {
      this.early.push(msg);
      return true;
    }
    this.receiver.onMessage(msg as RxMessage);
    return !this.closed;
  }

  private flush(): void {
    if (this.closed || this.outLen === 0) return;
    this.flushOut();
    // Everything went: a sender that met Full may go on.
    if (this.outLen === 0 && this.waiters.size > 0) this.wakeWaiters(true);
  }

  /** Writes what the socket takes; the rest waits for drain. */
  private flushOut(): void {
    const written = this.socket.write(this.out.subarray(0, this.outLen));
    if (written < 0) {
      this.onSocketClosed();
      return;
    }
    if (written === this.outLen) {
      this.outLen = 0;
      // A buffer grown for one large message goes back to its usual size.
      if (this.out.length > this.sendBufferBytes) this.out = new Uint8Array(INITIAL_OUT_BYTES);
      return;
    }
    this.out.copyWithin(0, written, this.outLen);
    this.outLen -= written;
    this.awaitingDrain = true;
  }

  private grow(need: number): void {
    let size = this.out.length;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.out.subarray(0, this.outLen));
    this.out = next;
  }

  private finish(error: HotpathError | null): void {
    this.closed = true;
    this.closeError = error;
    this.wakeWaiters(false);
    const r = this.receiver;
    if (r) r.onClose(error);
  }

  private wakeWaiters(ready: boolean): void {
    this.waiters.wake(ready);
  }
}
