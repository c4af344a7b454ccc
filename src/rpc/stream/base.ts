/**
 * StreamBase: what a client stream and a server stream share (types.ts RpcStream): the
 * receive queue and its readers, the sends waiting for credit or transport room, credit
 * accounting (credit.ts), the end, cancellation, `closed` and `signal`. Subclasses say how a
 * frame goes out (sendFrame / sendBufferFrame / flushControl) and what finishing means
 * (onFinish).
 *
 * Contract: received messages are copied out of transport memory on arrival (the transport's
 * message is released at once), so a slow reader holds at most one window (+1 message) of its
 * own memory and no transport slot; credit goes back to the peer as the reader takes messages.
 * send() resolves once its message went to the transport (in order, after every earlier
 * send, and behind the connection's streams already waiting for room: FIFO per connection);
 * trySend() is the hot path (SEND_FULL without credit or room). A stream finishes once:
 * cleanly (finishOk) or with an error (fail): readers and waiting sends reject with it,
 * `signal` aborts and `closed` rejects. The owner's thread.
 *
 * Example: class MyStream extends StreamBase { protected sendFrame(...) { ... } ... }
 */

import { copyBytes } from "../../bytes.ts";
import { CancelledError, HotpathError, ProtocolError, UsageError } from "../../errors.ts";
import { SEND_CLOSED, SEND_FULL, SEND_OK, sendLimit, type Connection, type RxMessage, type SendStatus } from "../../contract/transport.ts";
import { Fifo } from "../fifo.ts";
import { Metadata, encodeMetadata, type MetadataInit } from "../metadata.ts";
import { ownedBody } from "../pending.ts";
import { KIND_STREAM_CREDIT, KIND_STREAM_END, KIND_STREAM_MSG } from "../wire.ts";
import { Credit, creditBody, readCredit } from "./credit.ts";
import type { RoomMember, RoomQueue } from "./room-queue.ts";
import type { RpcStream, StreamWindow } from "./types.ts";

interface Reader {
  resolve(m: Uint8Array | null): void;
  reject(e: Error): void;
}
interface WaitingSend {
  data: Uint8Array;
  resolve(): void;
  reject(e: Error): void;
}

const RESOLVED: Promise<void> = Promise.resolve();
const toResult = (m: Uint8Array | null): IteratorResult<Uint8Array> => (m === null ? { done: true, value: undefined } : { done: false, value: m });
const ignore = () => {};

export abstract class StreamBase implements RpcStream, RoomMember {
  abstract readonly method: number;
  readonly closed: Promise<void>;
  queued = false;
  protected readonly credit: Credit;
  /** The stream's error once it failed; null while open or after a clean end. */
  protected error: Error | null = null;
  /** Finished (cleanly or not): no more frames of it are taken. */
  protected finished = false;
  /** end() was called: no new sends. */
  protected sendEnded = false;
  /** The peer's END arrived: read() gives null once the queue is empty. */
  protected recvEnded = false;
  /** This side stopped reading (discardInput()): messages are dropped as they come, their credit granted back. */
  private discarding = false;
  /** Control frames (the client's START, the server's final ERROR) must go before anything else. */
  protected blocked = false;
  private readonly abortCtl = new AbortController();
  private closedResolve!: () => void;
  private closedReject!: (e: Error) => void;
  private readonly inbox = new Fifo<Uint8Array>(16);
  private inboxBytes = 0;
  private readonly readers = new Fifo<Reader>(4);
  private readonly sends = new Fifo<WaitingSend>(4);
  private endQueued = false;
  private endMd: Uint8Array | null = null;
  private owedMessages = 0;
  private owedBytes = 0;
  private pumping = false;
  private again = false;
  /** Bytes of the messages sent and received so far (metrics). */
  bytesOut = 0;
  bytesIn = 0;

  constructor(sendCredit: StreamWindow, initial: StreamWindow, window: StreamWindow) {
    this.credit = new Credit(sendCredit, initial, window);
    this.closed = new Promise<void>((resolve, reject) => {
      this.closedResolve = resolve;
      this.closedReject = reject;
    });
    this.closed.catch(ignore); // a stream nobody awaits must not be an unhandled rejection
  }

  protected abstract get conn(): Connection;
  protected abstract rooms(): RoomQueue;
  /** Sends one frame of the stream (MSG, CREDIT, END); `md` encoded metadata or null. */
  protected abstract sendFrame(kind: number, data: Uint8Array, md: Uint8Array | null): SendStatus;
  /** A STREAM_MSG from a buffer of allocBuffer(), its first lenBytes without a copy. */
  protected abstract sendBufferFrame(buffer: Uint8Array, lenBytes: number): SendStatus;
  /** Sends what must go first while `blocked` (clear it when done); SEND_FULL to retry later. */
  protected flushControl(): SendStatus {
    this.blocked = false;
    return SEND_OK;
  }
  /** Our END went out (client: half-closed; server: finished). */
  protected abstract endSent(): void;
  /** The stream finished: `error` null for a clean end; `tellPeer`: this side ended it (cancel, deadline, handler error). */
  protected abstract onFinish(error: Error | null, tellPeer: boolean): void;
  /** The error for a send on a connection that is gone. */
  protected abstract closedError(): HotpathError;

  get signal(): AbortSignal {
    return this.abortCtl.signal;
  }

  get sendCredit(): StreamWindow {
    return { messages: this.credit.sendMessages, bytes: this.credit.sendBytes };
  }

  /** Bytes of received messages waiting for read() (at most one window + one message). */
  get bufferedBytes(): number {
    return this.inboxBytes;
  }

  // ---- sending ----

  send(data: Uint8Array): Promise<void> {
    try {
      this.checkSend(data, "send");
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.sends.length === 0 && !this.queued && !this.blocked && this.credit.canSend() && !this.rooms().busy) {
      const status = this.sendFrame(KIND_STREAM_MSG, data, null);
      if (status === SEND_OK) {
        this.spent(data.length);
        return RESOLVED;
      }
      if (status === SEND_CLOSED) return Promise.reject(this.error ?? this.closedError());
    }
    return new Promise<void>((resolve, reject) => {
      this.sends.push({ data: copyBytes(data), resolve, reject });
      this.kick();
    });
  }

  trySend(data: Uint8Array): SendStatus {
    if (this.finished || this.sendEnded) return SEND_CLOSED;
    if (this.sends.length > 0 || this.queued || this.blocked || !this.credit.canSend() || this.rooms().busy) return SEND_FULL;
    this.checkSend(data, "trySend");
    const status = this.sendFrame(KIND_STREAM_MSG, data, null);
    if (status === SEND_OK) this.spent(data.length);
    return status;
  }

  allocBuffer(lenBytes: number): Uint8Array | null {
    return this.conn.allocBuffer(lenBytes);
  }

  trySendBuffer(buffer: Uint8Array, lenBytes: number = buffer.length): SendStatus {
    if (this.finished || this.sendEnded) {
      this.conn.releaseBuffer(buffer); // Closed: the buffer is taken back, as the transport would
      return SEND_CLOSED;
    }
    if (this.sends.length > 0 || this.queued || this.blocked || !this.credit.canSend() || this.rooms().busy) return SEND_FULL;
    const status = this.sendBufferFrame(buffer, lenBytes);
    if (status === SEND_OK) this.spent(lenBytes);
    return status;
  }

  end(metadata?: MetadataInit | Metadata): void {
    if (this.finished || this.sendEnded) return;
    const md = metadata === undefined ? Metadata.EMPTY : Metadata.from(metadata); // UsageError before anything changes
    this.sendEnded = true;
    this.endQueued = true;
    this.endMd = md.size === 0 ? null : encodeMetadata(md);
    this.kick();
  }

  cancel(reason?: unknown): void {
    if (this.finished) return;
    this.fail(new CancelledError(`stream for method ${this.method} cancelled`, reason === undefined ? undefined : { cause: reason }), true);
  }

  private spent(lenBytes: number): void {
    this.credit.spent(lenBytes);
    this.bytesOut += lenBytes;
  }

  private checkSend(data: Uint8Array, what: string): void {
    if (!(data instanceof Uint8Array)) throw new UsageError(`stream.${what}: data must be a Uint8Array, got ${typeof data}`);
    if (this.error !== null) throw this.error;
    if (this.finished || this.sendEnded) throw new UsageError(`stream.${what} for method ${this.method}: the stream ${this.finished ? "has finished" : "was ended (end())"}`);
    const limit = sendLimit(this.conn.caps);
    if (data.length > limit) throw new UsageError(`stream.${what}: ${data.length} bytes exceed the limit of ${limit} bytes on ${this.conn.transport}`);
  }

  /** Sends now, or waits in the connection's room queue behind the streams already there. */
  protected kick(): void {
    if (this.queued) return;
    const rooms = this.rooms();
    if (rooms.busy || !this.pump()) rooms.wait(this);
  }

  /** RoomMember: sends control frames, owed credit, waiting messages and the END; false when the transport is full. */
  pump(): boolean {
    if (this.pumping) {
      this.again = true; // re-entered from inside a send (a transport that delivers there)
      return true;
    }
    this.pumping = true;
    try {
      let ok: boolean;
      do {
        this.again = false;
        ok = this.pumpOnce();
      } while (ok && this.again);
      return ok;
    } finally {
      this.pumping = false;
    }
  }

  private pumpOnce(): boolean {
    if (this.blocked) {
      const s = this.flushControl();
      if (s === SEND_FULL) return false;
      if (this.blocked || this.finished) return true;
    }
    if (this.finished) return true;
    if (this.owedMessages > 0 || this.owedBytes > 0) {
      const s = this.sendFrame(KIND_STREAM_CREDIT, creditBody(this.owedMessages, this.owedBytes), null);
      if (s === SEND_FULL) return false;
      if (s === SEND_CLOSED) return true; // the close ends the stream
      this.owedMessages = 0;
      this.owedBytes = 0;
    }
    while (this.sends.length > 0 && this.credit.canSend() && !this.finished) {
      const w = this.sends.peek()!;
      const s = this.sendFrame(KIND_STREAM_MSG, w.data, null);
      if (s === SEND_FULL) return false;
      if (s === SEND_CLOSED) return true;
      this.sends.shift();
      this.spent(w.data.length);
      w.resolve();
    }
    if (this.endQueued && this.sends.length === 0 && !this.finished) {
      const s = this.sendFrame(KIND_STREAM_END, new Uint8Array(0), this.endMd);
      if (s === SEND_FULL) return false;
      this.endQueued = false;
      if (s === SEND_OK) this.endSent();
    }
    return true;
  }

  // ---- receiving ----

  read(): Promise<Uint8Array | null> {
    if (this.inbox.length > 0) return Promise.resolve(this.take());
    if (this.error !== null) return Promise.reject(this.error);
    if (this.recvEnded || this.finished || this.discarding) return Promise.resolve(null);
    return new Promise<Uint8Array | null>((resolve, reject) => this.readers.push({ resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      // A queued message resolves at once (one promise, not read()'s and a then()'s).
      next: () => (this.inbox.length > 0 ? Promise.resolve({ done: false, value: this.take() }) : this.read().then(toResult)),
      return: (value?: unknown) => {
        // Leaving before the end (break, a throw in the loop body): returnedEarly() says what that means.
        if (!this.finished && !(this.recvEnded && this.inbox.length === 0)) this.returnedEarly();
        return Promise.resolve({ done: true, value: value as undefined });
      },
    } as AsyncIterator<Uint8Array>;
  }

  /** The iterator was returned before the peer's END (break in for await): by default the stream is abandoned (cancel). */
  protected returnedEarly(): void {
    this.cancel("the stream's iterator was returned early");
  }

  /**
   * Stops reading: what is queued and what arrives later is dropped, its credit granted back
   * as if read (so the peer's sends complete); read() gives null. Sending and end() go on.
   */
  protected discardInput(): void {
    this.discarding = true;
    while (this.inbox.length > 0) this.take();
    while (this.readers.length > 0) this.readers.shift()!.resolve(null);
  }

  private take(): Uint8Array {
    const m = this.inbox.shift()!;
    this.inboxBytes -= m.length;
    this.consumed(m.length);
    return m;
  }

  private consumed(lenBytes: number): void {
    if (this.finished || this.recvEnded || !this.credit.consumed(lenBytes)) return;
    this.owedMessages += this.credit.grantMessages;
    this.owedBytes += this.credit.grantBytes;
    this.kick();
  }

  /** Grants the receive window past what the peer may send at the start (credit.ts openWindow). */
  protected openWindow(): void {
    if (!this.credit.openWindow()) return;
    this.owedMessages += this.credit.grantMessages;
    this.owedBytes += this.credit.grantBytes;
  }

  /** A STREAM_MSG: checked against the peer's credit, copied, released. ProtocolError (msg released) for a peer past its credit or its END. */
  protected onMessage(msg: RxMessage): void {
    if (this.finished) return msg.release();
    const len = msg.bodyLength;
    try {
      if (this.recvEnded) throw new ProtocolError(`rpc stream: a message for method ${this.method} after the peer's END`);
      this.credit.received(len);
    } catch (e) {
      msg.release();
      throw e;
    }
    this.bytesIn += len;
    if (this.discarding) {
      msg.release();
      return this.consumed(len);
    }
    const own = ownedBody(this.conn, msg.body);
    msg.release();
    if (this.readers.length > 0) {
      this.consumed(len);
      this.readers.shift()!.resolve(own);
      return;
    }
    this.inbox.push(own);
    this.inboxBytes += len;
  }

  /** A STREAM_CREDIT body. ProtocolError when malformed. */
  protected onCredit(body: Uint8Array): void {
    const { messages, bytes } = readCredit(body, 0, "CREDIT");
    if (this.finished) return;
    this.credit.granted(messages, bytes);
    if (this.sends.length > 0 || this.endQueued) this.kick();
  }

  /** The peer's END: read() gives null once the queue is empty. */
  protected peerEnded(): void {
    this.recvEnded = true;
    while (this.readers.length > 0) this.readers.shift()!.resolve(null);
  }

  /** Finished cleanly: waiting sends reject (UsageError: the stream is over), readers get what is queued, then null. */
  protected finishOk(): void {
    if (this.finished) return;
    this.finished = true;
    this.recvEnded = true;
    const over = new UsageError(`stream for method ${this.method}: the stream finished before this message was sent`);
    while (this.sends.length > 0) this.sends.shift()!.reject(over);
    while (this.readers.length > 0) this.readers.shift()!.resolve(null);
    try {
      this.onFinish(null, false);
    } finally {
      this.closedResolve();
    }
  }

  /**
   * Finished with `error`: every reader and waiting send rejects, `signal` aborts. Queued
   * messages go, unless `keepQueued` (the peer's ERROR: what it sent before still reads first).
   */
  fail(error: Error, tellPeer: boolean, keepQueued = false): void {
    if (this.finished) return;
    this.finished = true;
    this.error = error;
    if (!keepQueued) {
      while (this.inbox.length > 0) this.inbox.shift();
      this.inboxBytes = 0;
    }
    while (this.sends.length > 0) this.sends.shift()!.reject(error);
    while (this.readers.length > 0) this.readers.shift()!.reject(error);
    this.endQueued = false;
    try {
      this.onFinish(error, tellPeer);
    } finally {
      // Settled whatever onFinish met (a frame the transport refused): nobody waits forever.
      this.closedReject(error);
      this.abortCtl.abort(error);
    }
  }
}
