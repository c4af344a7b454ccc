/**
 * RequestHandle: one request delivered to the server's application, and how it is answered
 * (see server.ts for the hot path it serves). Handles are pooled per session; the session
 * side of a handle is what HandleSession names (server.ts's ServerSession implements it).
 *
 * Besides the request's bytes a handle carries its metadata (`metadata`, read once at
 * delivery; a peer's malformed metadata aborts its connection with ProtocolError and never
 * reaches a handler), its deadline (`deadline`, from `hp-deadline-ms`), the response metadata
 * to send (setResponseMetadata()), and, when the server records metrics, one record per
 * consumed handle (method, outcome, bytes, latency from delivery to reply; a one-way message is
 * no call and records nothing, as on the client). None of it costs the hot path anything: a
 * request without metadata reads none, and metrics off records none.
 *
 * Example: const h = server.recv(); if (h !== null) { h.setResponseMetadata({ served: "yes" }); h.reply(h.data); }
 * Threading: the thread that owns the server.
 */

import { copyBytes, EMPTY_BYTES } from "../bytes.ts";
import { HotpathError, ProtocolError, TimeoutError, UsageError, describeThrown, errorNameOf } from "../errors.ts";
import { DecodeError } from "./codec.ts";
import { SEND_FULL, SEND_OK, sendLimit, type Connection, type RxMessage, type SendStatus } from "../contract/transport.ts";
import { describeValue } from "./validate.ts";
import { KIND_ERROR, KIND_RESPONSE, METADATA_LEN_BYTES, WIRE_HEADER_BYTES, encodeErrorBody, wireAppHeaderLen } from "./wire.ts";
import { Metadata, decodeMetadata, encodeMetadata, remainingDeadline, type MetadataInit } from "./metadata.ts";
import { MAX_TIMER_MS } from "./pending.ts";
import type { RpcMetrics } from "./metrics.ts";

/** An error response: the caller's request rejects with RemoteError(name, message). */
export interface ErrorReply {
  name: string;
  message: string;
}

/**
 * What an error response (or a stream's ERROR) carries for a thrown value: its name (see
 * errorNameOf(); "DecodeError" for a request that did not decode) and message. Never throws.
 */
export function errorReplyOf(e: unknown): ErrorReply {
  let name: string;
  try {
    name = e instanceof DecodeError ? "DecodeError" : errorNameOf(e);
  } catch {
    name = "Error";
  }
  return { name, message: describeThrown(e) };
}

/** The most characters of an error's name an ERROR body carries (the rest is cut): a name is a class name, not a payload. */
export const MAX_ERROR_NAME_CHARS = 256;

/**
 * An ERROR body (wire.ts) within `limitBytes`: the name cut to MAX_ERROR_NAME_CHARS, a message
 * too long for the transport cut (and saying so). Used by error responses and streams' ERROR.
 */
export function errorBody(name: string, message: string, limitBytes: number): Uint8Array {
  if (name.length > MAX_ERROR_NAME_CHARS) name = name.slice(0, MAX_ERROR_NAME_CHARS);
  let body = encodeErrorBody(name, message);
  let keep = message.length;
  // Cut in proportion to what the encoding costs per character (escapes, UTF-8), until it fits.
  while (body.length > limitBytes && keep > 0) {
    keep = Math.max(0, Math.floor((keep * (limitBytes - 256)) / body.length));
    body = encodeErrorBody(name, `${message.slice(0, keep)}... (${message.length} characters, cut to fit the transport)`);
  }
  return body;
}

/** What a handle needs of its session (ServerSession). */
export interface HandleSession {
  readonly conn: Connection;
  /** Where consumed handles record their call (null: metrics off). */
  readonly server: { readonly metricsRegistry: RpcMetrics | null };
  respond(h: RequestHandle<any>, data: Uint8Array | null, error: ErrorReply | null): void;
  /** `md`: encoded metadata carried at the body's start (wire.ts), null for none. */
  send(kind: number, method: number, slot: number, gen: number, data: Uint8Array, md?: Uint8Array | null): SendStatus;
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
  /** Aborts the signal when the deadline passes (only once someone took the signal). */
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** Goes back to the session's pool when consumed (false once detached or its signal was taken). */
  private poolable = false;
  private methodId = 0;
  private slotOfCall = 0;
  private genOfCall = 0;
  private isOneWay = false;
  /** Where the data starts in the body (after the metadata); 0: the request has none. */
  private dataAt = 0;
  /** The request's metadata (null: none), its deadline (performance.now() ms), and the response's (encoded). */
  private md: Metadata | null = null;
  private deadlineAt: number | undefined = undefined;
  private replyMd: Uint8Array | null = null;
  /** Metrics (the server's registry on): when it was delivered, what came in and went out, how it ended. */
  private startMs = 0;
  private bytesIn = 0;
  private bytesOut = 0;
  private outcome: string | null = null;
  /** True once the client cancelled this call (timeout or abort on its side), or its deadline passed with the signal taken. */
  cancelled = false;
  private expired = false;
  /** @internal bytes this handle counts against the server's maxPendingBytes. */
  charged = 0;
  /** How many times this handle object was issued (a pooled handle is reissued for later requests). */
  generation = 0;

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
    this.expired = false;
    this.abortCtl = null;
    this.charged = 0;
    this.dataAt = 0;
    this.md = null;
    this.deadlineAt = undefined;
    this.replyMd = null;
    this.generation++;
    if (this.session.server.metricsRegistry !== null) {
      this.startMs = performance.now();
      this.bytesIn = msg.bodyLength;
      this.bytesOut = 0;
      this.outcome = null;
    }
    return this;
  }

  /**
   * @internal decodes the request's metadata (body[2 .. end)) and its deadline. A peer's
   * malformed metadata is a ProtocolError: the connection is aborted, the handle marked
   * cancelled (a reply is dropped), and false returned. Cold path: only requests with metadata.
   */
  readMetadata(end: number): boolean {
    this.dataAt = end;
    const msg = this.msg;
    if (msg === null) return true;
    let md: Metadata;
    let remainingMs: number | undefined;
    try {
      md = decodeMetadata(msg.body.subarray(METADATA_LEN_BYTES, end));
      remainingMs = remainingDeadline(md);
    } catch (e) {
      if (!(e instanceof HotpathError)) throw e;
      this.cancelled = true;
      this.md = Metadata.EMPTY;
      this.session.conn.abort(new ProtocolError(`rpc server: the request for method ${this.methodId} from ${this.session.conn.peer} has malformed metadata: ${e.message}`));
      return false;
    }
    this.md = md;
    this.deadlineAt = remainingMs === undefined ? undefined : performance.now() + remainingMs;
    return true;
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
    return this.dataAt === 0 ? this.msg.body : this.msg.body.subarray(this.dataAt);
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

  /** The request's metadata (Metadata.EMPTY when it had none); immutable, kept across detach(), the caller may keep it. */
  get metadata(): Metadata {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already consumed`);
    return this.md ?? Metadata.EMPTY;
  }

  /**
   * When the caller's deadline passes (performance.now() ms: arrival + the `hp-deadline-ms` it
   * sent), or undefined when it sent none. Pass the handle as `parent` to a request this
   * handler makes and that request inherits what is left (RequestOptions.parent).
   */
  get deadline(): number | undefined {
    return this.deadlineAt;
  }

  /**
   * Metadata for the response (or error response) of this call, sent by reply(), replyError(),
   * replyBuffer() or respond() (a later call replaces it). UsageError for bad metadata (see
   * Metadata.from) or after the reply; nothing is sent then.
   */
  setResponseMetadata(md: MetadataInit | Metadata): void {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already replied to: its response metadata is too late`);
    const m = Metadata.from(md);
    this.replyMd = m.size === 0 ? null : encodeMetadata(m);
  }

  /** @internal an interceptor changed the request: the handler sees `data` and `md` (the handle is detached). */
  replaceRequest(data: Uint8Array, md: Metadata): void {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already consumed`);
    this.detach();
    this.ownData = data;
    this.md = md;
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
    const body = this.dataAt === 0 ? msg.body : msg.body.subarray(this.dataAt);
    this.ownData = copy && body.length > 0 ? copyBytes(body) : body;
    const { headBuf, headOffset } = msg;
    const len = wireAppHeaderLen(headBuf, headOffset);
    const at = headOffset + WIRE_HEADER_BYTES;
    this.ownAppHeader = len === 0 ? EMPTY_BYTES : headBuf.slice(at, at + len);
    this.msg = null;
    msg.release();
  }

  /**
   * Aborted when the client cancels (reason: an AbortError), or when the call's deadline passes
   * (reason: a TimeoutError; the timer exists only once the signal was taken): the call then
   * counts as cancelled, so respond() drops its reply, as after the client's cancel (the client
   * times out by itself). Created on first use.
   */
  get signal(): AbortSignal {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already consumed: its signal is gone with it`);
    this.poolable = false; // the signal outlives the call: the handle is not reissued
    if (this.abortCtl === null) {
      const ctl = new AbortController();
      this.abortCtl = ctl;
      if (this.cancelled) ctl.abort();
      else if (this.deadlineAt !== undefined) {
        const at = this.deadlineAt;
        // Timers may fire a little early: look again until the deadline has really passed, so
        // a handler that sees the abort finds no time left (a request with it as parent fails).
        const late = () => {
          const leftMs = at - performance.now();
          // A delay past setTimeout's limit would fire at once: wait the most it allows, then look again.
          if (leftMs > 0) this.deadlineTimer = setTimeout(late, Math.min(Math.ceil(leftMs), MAX_TIMER_MS));
          else {
            // As the client's own cancel at its timeout would: respond() drops the reply (the
            // client has given up: it times out by itself), the signal says why.
            this.deadlineTimer = undefined;
            this.expired = true;
            this.cancelled = true;
            ctl.abort(new TimeoutError(`the deadline of the call to method ${this.method} passed`));
          }
        };
        late();
      }
    }
    return this.abortCtl.signal;
  }

  /** Sends the response and consumes the handle (see the module comment for SEND_FULL). */
  reply(data: Uint8Array): SendStatus {
    if (!(data instanceof Uint8Array)) throw new UsageError(`reply to method ${this.method}: data must be a Uint8Array, got ${describeValue(data)}`);
    return this.send(KIND_RESPONSE, data, null);
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

  /**
   * reply() with a buffer from allocReply() (the view it returned), its first `lenBytes`
   * (default: all) sent without a copy. With response metadata set, the bytes are copied behind
   * it instead (the metadata goes first in the body) and the buffer goes back once sent.
   */
  replyBuffer(buffer: Uint8Array, lenBytes: number = buffer.length): SendStatus {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already replied to`);
    if (this.oneWay) this.session.conn.releaseBuffer(buffer); // nobody to answer: give the memory back
    if (!this.oneWay && this.replyMd !== null) {
      const status = this.send(KIND_RESPONSE, buffer.subarray(0, lenBytes), null);
      if (status !== SEND_FULL) this.session.conn.releaseBuffer(buffer);
      return status;
    }
    const status = this.oneWay ? SEND_OK : this.session.sendBuffer(this.method, this.callSlot, this.callGen, buffer, lenBytes);
    if (status !== SEND_FULL) {
      if (!this.oneWay) this.bytesOut = lenBytes; // a one-way sends nothing
      this.finish();
    }
    return status;
  }

  /**
   * Sends an error response; the client's call rejects with RemoteError(name, message). A name
   * past MAX_ERROR_NAME_CHARS and a message past the transport's limit are cut (errorBody()).
   */
  replyError(name: string, message: string): SendStatus {
    const md = this.replyMd;
    const limit = sendLimit(this.session.conn.caps) - (md === null ? 0 : METADATA_LEN_BYTES + md.length);
    return this.send(KIND_ERROR, errorBody(name, message, limit), name.slice(0, MAX_ERROR_NAME_CHARS));
  }

  /** Consumes the handle without a response (e.g. after a cancel). */
  drop(): void {
    if (this.done) return;
    if (!this.isOneWay) this.outcome = this.expired ? "TimeoutError" : this.cancelled ? "CancelledError" : "Dropped";
    this.finish();
  }

  /** Called by the session when a cancel for this call arrives. */
  cancel(): void {
    this.cancelled = true;
    this.abortCtl?.abort();
  }

  /** `errorName`: the error response's name (metrics), null for a response. */
  private send(kind: number, data: Uint8Array, errorName: string | null): SendStatus {
    if (this.done) throw new UsageError(`request handle for method ${this.method} already replied to`);
    if (this.oneWay) {
      this.finish();
      return SEND_OK;
    }
    const md = this.replyMd;
    const status = this.session.send(kind, this.method, this.callSlot, this.callGen, data, md);
    if (status !== SEND_FULL) {
      this.outcome = errorName;
      this.bytesOut = md === null ? data.length : METADATA_LEN_BYTES + md.length + data.length;
      this.finish();
    }
    return status;
  }

  private finish(): void {
    this.done = true;
    const msg = this.msg;
    this.msg = null;
    this.ownData = null;
    this.ownAppHeader = null;
    if (this.deadlineTimer !== undefined) {
      clearTimeout(this.deadlineTimer);
      this.deadlineTimer = undefined;
    }
    if (msg !== null) msg.release();
    // A one-way message is no call (the client records none: it gets no answer), so none is recorded.
    const metrics = this.isOneWay ? null : this.session.server.metricsRegistry;
    if (metrics !== null) {
      const ms = performance.now() - this.startMs;
      metrics.record(this.session.conn.transport, this.methodId, this.outcome, this.bytesIn, this.bytesOut, ms > 0 ? ms * 1e6 : 0);
    }
    this.session.forget(this);
    if (this.poolable) this.session.recycle(this);
  }
}
