/**
 * RequestHandle: one request delivered to the server's application, and how it is answered
 * (see server.ts for the hot path it serves). Handles are pooled per session; the session
 * side of a handle is what HandleSession names (server.ts's ServerSession implements it).
 *
 * Example: const h = server.recv(); if (h !== null) h.reply(h.data);
 * Threading: the thread that owns the server.
 */

import { copyBytes, EMPTY_BYTES } from "../bytes.ts";
import { UsageError } from "../errors.ts";
import { SEND_FULL, SEND_OK, type Connection, type RxMessage, type SendStatus } from "../contract/transport.ts";
import { describeValue } from "./validate.ts";
import { KIND_ERROR, KIND_RESPONSE, WIRE_HEADER_BYTES, encodeErrorBody, wireAppHeaderLen } from "./wire.ts";

/** An error response: the caller's request rejects with RemoteError(name, message). */
export interface ErrorReply {
  name: string;
  message: string;
}

/** What a handle needs of its session (ServerSession). */
export interface HandleSession {
  readonly conn: Connection;
  respond(h: RequestHandle<any>, data: Uint8Array | null, error: ErrorReply | null): void;
  send(kind: number, method: number, slot: number, gen: number, data: Uint8Array): SendStatus;
  sendBuffer(method: number, slot: number, gen: number, buffer: Uint8Array, lenBytes: number): SendStatus;
  /** The handle is consumed: its bookkeeping goes. */
  forget(h: RequestHandle<any>): void;
  /** A consumed, poolable handle comes back for reuse. */
  recycle(h: RequestHandle<any>): void;
}

/** The request of a handle made for a message the transport skipped (onOversized): no bytes. */
export const SKIPPED_REQUEST: RxMessage = {
  head: EMPTY_BYTES,
  body: EMPTY_BYTES,
  headBuf: new Uint8Array(WIRE_HEADER_BYTES),
  headOffset: 0,
  headLength: 0,
  bodyLength: 0,
  release() {},
};

/**
 * A request delivered to the application. On the hot path (Server.recv() / onRequest of a
 * `new Server()`, ServerOptions.poolHandles, default true) handles are pooled per session:
 * once consumed (reply / replyError / replyBuffer / drop) a handle goes back to its session and
 * may be issued again for a later request, so the hot path allocates none. Any use of a
 * consumed handle is a UsageError while it waits in the pool; once reissued it describes the
 * new request (`generation` counts its issues), so code that keeps a pooled handle past its
 * reply could answer another request: keep none. A handle that is meant to outlive its
 * delivery calls detach() (or takes `signal`): such a handle is never pooled again, so a late
 * use of it is always a UsageError. serve() does not pool (its handlers are application code
 * that may keep `h`): there every late use is a UsageError. Same thread as the server.
 */
export class RequestHandle<S extends HandleSession = HandleSession> {
  private msg: RxMessage | null = null;
  /** After detach(): the request's own copies; the transport message is released. */
  private ownData: Uint8Array | null = null;
  private ownAppHeader: Uint8Array | null = null;
  private done = true;
  private abortCtl: AbortController | null = null;
  /** Goes back to the session's pool when consumed (false once detached or its signal was taken). */
  private poolable = false;
  private methodId = 0;
  private slotOfCall = 0;
  private genOfCall = 0;
  private isOneWay = false;
  /** True once the client cancelled this call (timeout or abort on its side). */
  cancelled = false;
  /** @internal bytes this handle counts against the server's maxPendingBytes. */
  charged = 0;
  /** How many times this handle object was issued (a pooled handle is reissued for later requests). */
  generation = 0;
  /** @internal where the request's data starts in its body, after its metadata (wire.ts); 0: no metadata. */
  mdEnd = 0;

  constructor(readonly session: S) {}

  /** @internal (re)issues the handle for a request; `pooled`: may go back to the pool when consumed. */
  issue(method: number, callSlot: number, callGen: number, oneWay: boolean, msg: RxMessage, pooled: boolean): this {
    this.methodId = method;
    this.slotOfCall = callSlot;
    this.genOfCall = callGen;
    this.isOneWay = oneWay;
    this.msg = msg;
    this.done = false;
    this.poolable = pooled;
    this.cancelled = false;
    this.abortCtl = null;
    this.charged = 0;
    this.mdEnd = 0;
    this.generation++;
    return this;
  }

  get method(): number {
    return this.methodId;
  }
  /** The client's call slot (with callGen, the call id). */
  get callSlot(): number {
    return this.slotOfCall;
  }
  get callGen(): number {
    return this.genOfCall;
  }
  /** A one-way message: replies are accepted and dropped. */
  get oneWay(): boolean {
    return this.isOneWay;
  }

  /** Request data: a view into transport memory (or the detached copy), valid until the handle is consumed. */
  get data(): Uint8Array {
    if (this.done) throw new UsageError("request handle already consumed");
    if (this.msg === null) return this.ownData!;
    return this.mdEnd === 0 ? this.msg.body : this.msg.body.subarray(this.mdEnd);
  }

  /** The fixed application header (empty when the request had none); same lifetime as data. */
  get appHeader(): Uint8Array {
    if (this.done) throw new UsageError("request handle already consumed");
    if (this.msg === null) return this.ownAppHeader!;
    const { headBuf, headOffset } = this.msg;
    const len = wireAppHeaderLen(headBuf, headOffset);
    const at = headOffset + WIRE_HEADER_BYTES;
    return len === 0 ? EMPTY_BYTES : headBuf.subarray(at, at + len);
  }

  get consumed(): boolean {
    return this.done;
  }

  /** True once the request lives in its own memory (detach()), not the transport's. */
  get detached(): boolean {
    return !this.done && this.msg === null;
  }

  /**
   * Moves the request out of transport memory and gives the transport its slot back, so the
   * handle may be kept (answered later) without holding the receive ring. Copies only where
   * the transport lends its memory (zeroCopy); elsewhere the message's bytes are already its
   * own. Idempotent; the main thread that owns the server only.
   */
  detach(): void {
    const msg = this.msg;
    if (msg === null) return;
    this.poolable = false; // kept past its delivery: never reissued, so a late use stays a UsageError
    const copy = this.session.conn.caps.zeroCopy;
    const body = this.mdEnd === 0 ? msg.body : msg.body.subarray(this.mdEnd);
    this.ownData = copy && body.length > 0 ? copyBytes(body) : body;
    const { headBuf, headOffset } = msg;
    const len = wireAppHeaderLen(headBuf, headOffset);
    const at = headOffset + WIRE_HEADER_BYTES;
    this.ownAppHeader = len === 0 ? EMPTY_BYTES : headBuf.slice(at, at + len);
    this.msg = null;
    msg.release();
  }

  /** Aborted when the client cancels. Created on first use. */
  get signal(): AbortSignal {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already consumed: its signal is gone with it`);
    this.poolable = false; // the signal outlives the call: the handle is not reissued
    if (this.abortCtl === null) {
      this.abortCtl = new AbortController();
      if (this.cancelled) this.abortCtl.abort();
    }
    return this.abortCtl.signal;
  }

  /** Sends the response and consumes the handle (see the module comment for SEND_FULL). */
  reply(data: Uint8Array): SendStatus {
    if (!(data instanceof Uint8Array)) throw new UsageError(`reply to method ${this.method}: data must be a Uint8Array, got ${describeValue(data)}`);
    return this.send(KIND_RESPONSE, data);
  }

  /**
   * The convenient reply (what serve() uses): sends `data` or `error` now, or, when the
   * transport is full, keeps it in the session's backlog and sends it once there is room, in
   * order. A cancelled or already consumed handle is dropped. `data` is copied before it
   * returns (it may be a view of the request itself). Never waits, never throws for transport
   * conditions; a reply the transport refuses (too large) becomes an error response.
   */
  respond(data: Uint8Array | null, error: ErrorReply | null = null): void {
    this.session.respond(this, data, error);
  }

  /** A writable response buffer in transport memory (a shm slot), or null when none is free now. */
  allocReply(lenBytes: number): Uint8Array | null {
    return this.session.conn.allocBuffer(lenBytes);
  }

  /** Gives back a buffer from allocReply() that will not be sent. */
  releaseReply(buffer: Uint8Array): void {
    this.session.conn.releaseBuffer(buffer);
  }

  /** reply() with a buffer from allocReply() (the view it returned), its first `lenBytes` (default: all) sent without a copy. */
  replyBuffer(buffer: Uint8Array, lenBytes: number = buffer.length): SendStatus {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already replied to`);
    if (this.oneWay) this.session.conn.releaseBuffer(buffer); // nobody to answer: give the memory back
    const status = this.oneWay ? SEND_OK : this.session.sendBuffer(this.method, this.callSlot, this.callGen, buffer, lenBytes);
    if (status !== SEND_FULL) this.finish();
    return status;
  }

  /** Sends an error response; the client's call rejects with RemoteError(name, message). */
  replyError(name: string, message: string): SendStatus {
    return this.send(KIND_ERROR, encodeErrorBody(name, message));
  }

  /** Consumes the handle without a response (e.g. after a cancel). */
  drop(): void {
    if (this.done) return;
    this.finish();
  }

  /** Called by the session when a cancel for this call arrives. */
  cancel(): void {
    this.cancelled = true;
    this.abortCtl?.abort();
  }

  private send(kind: number, data: Uint8Array): SendStatus {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already replied to`);
    if (this.oneWay) {
      this.finish();
      return SEND_OK;
    }
    const status = this.session.send(kind, this.method, this.callSlot, this.callGen, data);
    if (status !== SEND_FULL) this.finish();
    return status;
  }

  private finish(): void {
    this.done = true;
    const msg = this.msg;
    this.msg = null;
    this.ownData = null;
    this.ownAppHeader = null;
    if (msg !== null) msg.release();
    this.session.forget(this);
    if (this.poolable) this.session.recycle(this);
  }
}
