/**
 * RPC server: a hot path (poll / recv / reply with request handles) and a convenient path
 * (`serve(url, handlers)`) over one engine.
 *
 * Hot path:
 *   const server = new Server();  server.attach(listener);
 *   server.poll();
 *   for (let h = server.recv(); h !== null; h = server.recv()) h.reply(process(h.data));
 *
 * A RequestHandle owns its request: `data` and `appHeader` are zero-copy views valid until the
 * handle is consumed by reply() / replyError() / drop(). A second reply is a UsageError. Handles
 * are pooled per session and reissued once consumed (handle.ts; ServerOptions.poolHandles,
 * default true; serve() pools none): keep none past its reply. A
 * reply that finds the transport full returns SEND_FULL and leaves the handle usable, so the
 * caller can retry after poll(); Ok and Closed consume it.
 *
 * A handle that will be answered later (after an await) should be detach()ed: its request is
 * copied out of transport memory (where the transport lends it: shm / inproc slots) and the
 * transport's slot and descriptor go back at once, so one slow handler never holds the ring
 * and stalls the calls behind it. `serve()` does this for every handler that does not finish
 * synchronously. Views of `data` taken before detach() are transport memory and must not be
 * used after it; read `data` again.
 *
 * respond() is the convenient reply: one that meets a full transport waits in the session's
 * backlog and is retried from a clean stack (never by waiting inside a delivery callback).
 *
 * Each accepted connection is a session. A malformed message aborts only that session with
 * ProtocolError; the server and its other sessions keep running. Cancel messages from the
 * client mark the matching handle `cancelled` (and abort its `signal`, for async handlers).
 *
 * drain(timeoutMs) is the graceful stop (drain.ts): no new connections, GOAWAY to clients
 * that understand it, calls in flight finish, everything closed by timeoutMs at the latest.
 *
 * Streams go to the session's SessionStreams (ServerOptions.streams; none: a STREAM_START gets
 * an UnknownMethodError). Metadata: the handle reads it (handle.ts). Metrics: ServerOptions.metrics.
 *
 * Threading: a Server belongs to the thread that created it.
 */

import { copyBytes, EMPTY_BYTES as EMPTY } from "../bytes.ts";
import { HotpathError, ProtocolError, TransportClosedError, UsageError, describeThrown } from "../errors.ts";
import { SEND_CLOSED, SEND_FULL, SEND_OK, type Connection, type Listener, type RxMessage, type SendStatus } from "../contract/transport.ts";
import { MAX_WINDOW } from "./client.ts";
import { WaitList } from "../contract/waitlist.ts";
import { Fifo } from "./fifo.ts";
import { RequestHandle as Handle, SKIPPED_REQUEST, type ErrorReply } from "./handle.ts";
import { RateLimitedLog, describeFailure, type ServerErrorContext } from "./report.ts";
import { Drain, type DrainResult } from "./drain.ts";
import { checkTimeout } from "./validate.ts";
import { metricsOption } from "./meter.ts";
import type { RpcMetrics, RpcMetricsSnapshot } from "./metrics.ts";
import {
  KIND_CANCEL, KIND_ERROR, KIND_GOAWAY, KIND_ONEWAY, KIND_REQUEST, KIND_RESPONSE, KIND_MASK, KIND_STREAM_START,
  KIND_STREAM_END, GOAWAY_HELLO_METHOD, WIRE_HEADER_BYTES, checkMessage, withMetadata, metadataEnd, KIND_FLAG_METADATA,
  wireCallGen, wireCallSlot, wireKind, wireMethod, wireWord0, writeWireHeader, WIRE_WORD_CALL_GEN, WIRE_WORD_CALL_SLOT,
  WIRE_WORD_METHOD,
} from "./wire.ts";

/** How long a backlogged reply waits for room before it looks again; spin / blocking connections: a timer (a wait would hold the thread). */
const REPLY_RETRY_WAIT_MS = 50, BLOCKING_RETRY_MS = 5;
/** Consumed handles a session keeps for reuse: a client's window rarely exceeds it, and idle memory stays small. */
const HANDLE_POOL_MAX = 1024;

export type { ServerErrorContext, ServerErrorSource } from "./report.ts";
export type { ErrorReply } from "./handle.ts";
export type { DrainResult } from "./drain.ts";

/** A request delivered to the application (handle.ts); its `session` is the ServerSession. */
export type RequestHandle = Handle<ServerSession>;
export const RequestHandle = Handle;

/**
 * A session's streams (stream/), made by ServerOptions.streams at its first stream frame.
 * onFrame gets every STREAM_START / MSG / CREDIT / END and every CANCEL matching no unary call
 * (`kind` without the metadata flag); it releases `msg`. closed(): the session ended (null: cleanly).
 */
export interface SessionStreams {
  onFrame(kind: number, slot: number, gen: number, method: number, msg: RxMessage): void;
  /** The transport skipped a stream frame larger than this side accepts: that stream fails (MessageTooLargeError). */
  onOversized(slot: number, gen: number, bodyLength: number): void;
  closed(error: HotpathError | null): void;
}

/** A convenient reply waiting in a session's backlog for room in the transport. */
interface QueuedReply {
  h: RequestHandle;
  data: Uint8Array | null;
  error: ErrorReply | null;
}

/** One accepted connection. */
export class ServerSession {
  /** Handles the application still holds, by client slot, so a cancel finds its call. */
  private readonly held: (RequestHandle | undefined)[] = [];
  private readonly headBuf = new Uint8Array(WIRE_HEADER_BYTES);
  /** The session's streams, made at the first stream frame (ServerOptions.streams). */
  private streams: SessionStreams | null = null;
  /** Consumed handles to issue again (see RequestHandle), at most HANDLE_POOL_MAX. */
  private readonly pool: RequestHandle[] = [];
  /** Convenient replies that met a full transport, oldest first (see respond()). */
  private readonly backlog = new Fifo<QueuedReply>();
  private flushScheduled = false;
  private readonly flushTask = () => {
    this.flushScheduled = false;
    this.flushBacklog();
    if (this.backlog.length > 0 && !this.conn.closed) {
      this.flushScheduled = true;
      // Where wait() would hold the thread (spin / blocking), a timer looks again instead and
      // the application's Server.poll() loop flushes too: one slow reader never freezes the loop.
      if (this.conn.waitsOnEventLoop) this.conn.wait(REPLY_RETRY_WAIT_MS).then(this.flushTask);
      else setTimeout(this.flushTask, BLOCKING_RETRY_MS);
    }
  };

  /** The transport takes the wire header as words (Connection.trySendWords). */
  private readonly sendsWords: boolean;
  /** Calls (not one-way) delivered or refused and not yet answered or dropped. */
  inFlight = 0;
  /** The client announced it understands GOAWAY (wire.ts); goawaySent once it got one. */
  knowsGoaway = false;
  private goawaySent = false;

  constructor(
    readonly server: Server,
    readonly conn: Connection,
  ) {
    this.sendsWords = typeof conn.trySendWords === "function";
  }

  /** Replies waiting for room in the transport. */
  get backlogLength(): number {
    return this.backlog.length;
  }

  /** See RequestHandle.respond(). */
  respond(h: RequestHandle, data: Uint8Array | null, error: ErrorReply | null): void {
    if (h.consumed) return;
    if (h.cancelled || this.conn.closed) return h.drop();
    // Behind replies already waiting: keep their order (the transport is full anyway).
    if (this.backlog.length === 0 && this.trySendReply(h, data, error) !== SEND_FULL) return;
    // The reply waits: it gets its own copy (the caller may reuse its buffer, and `data` may be
    // a view of the request itself, whose transport memory detach() hands back).
    const own = data === null ? null : copyBytes(data);
    if (own !== null) {
      h.charged += own.length;
      this.server.pendingBytes += own.length;
    }
    h.detach();
    this.queue(h, own, error);
  }

  /** Sends what the backlog holds, in order, until the transport is full again. */
  flushBacklog(): void {
    while (this.backlog.length > 0) {
      const q = this.backlog.peek()!;
      if (q.h.consumed || q.h.cancelled || this.conn.closed) q.h.drop();
      else if (this.trySendReply(q.h, q.data, q.error) === SEND_FULL) return;
      this.backlog.shift();
    }
    if (this.server.draining !== null) this.server.draining.check(this);
  }

  /** Sends GOAWAY once, if the client understands it; a full transport: the drain's next check (a call finishing) tries again. */
  sendGoaway(): void {
    if (!this.knowsGoaway || this.goawaySent || this.conn.closed) return;
    this.goawaySent = this.send(KIND_GOAWAY, 0, 0, 0, EMPTY) !== SEND_FULL;
  }

  private queue(h: RequestHandle, data: Uint8Array | null, error: ErrorReply | null): void {
    // A client has at most MAX_WINDOW calls outstanding: more replies waiting than that means
    // the peer sends requests without reading responses.
    if (this.backlog.length >= MAX_WINDOW) {
      h.drop();
      this.conn.abort(new ProtocolError(`rpc server: more than ${MAX_WINDOW} responses wait for ${this.conn.peer} to read them`));
      return;
    }
    this.backlog.push({ h, data, error });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // A clean stack: never wait inside the delivery callback that produced the reply.
      setImmediate(this.flushTask);
    }
  }

  private trySendReply(h: RequestHandle, data: Uint8Array | null, error: ErrorReply | null): SendStatus {
    try {
      return error === null ? h.reply(data!) : h.replyError(error.name, error.message);
    } catch (e) {
      // A reply the transport refuses (larger than the limits) becomes an error response: the
      // caller learns why, and the session goes on.
      if (error !== null || h.consumed) {
        h.drop();
        return SEND_CLOSED;
      }
      return this.trySendReply(h, null, { name: "Error", message: describeThrown(e) });
    }
  }

  /** Called when the connection ends: replies still waiting go with it, and its streams end. */
  closed(error: HotpathError | null = null): void {
    while (this.backlog.length > 0) this.backlog.shift()!.h.drop();
    this.streams?.closed(error);
  }

  /** A stream opened (stream/): a call in flight until streamEnded() (drain waits for it). */
  streamStarted(): void {
    this.inFlight++;
  }
  streamEnded(): void {
    this.inFlight--;
    if (this.server.draining !== null) this.server.draining.callDone(this);
  }

  /** A stream frame, or a CANCEL that matched no unary call: to the session's streams. */
  private streamFrame(kind: number, slot: number, gen: number, method: number, msg: RxMessage): void {
    if (this.streams === null) {
      const make = this.server.streamsFactory;
      if (make === undefined) {
        msg.release();
        // No streams here: a start is answered like a refused request (a full transport queues the
        // answer in the backlog), the rest are dropped as late.
        if (kind === KIND_STREAM_START) this.answer(method, slot, gen, "UnknownMethodError", `this server serves no streams (method ${method})`);
        return;
      }
      this.streams = make(this);
    }
    this.streams.onFrame(kind, slot, gen, method, msg);
  }

  /** The transport skipped a request larger than this side accepts: answer that call with an error. */
  onOversized(head: Uint8Array, bodyLength: number): void {
    const kind = head.length >= WIRE_HEADER_BYTES ? wireKind(head) & KIND_MASK : -1;
    if (kind === KIND_ONEWAY) return;
    if (kind >= KIND_STREAM_START && kind <= KIND_STREAM_END && this.streams !== null) return this.streams.onOversized(wireCallSlot(head), wireCallGen(head), bodyLength);
    const slot = kind === KIND_REQUEST ? wireCallSlot(head) : MAX_WINDOW;
    if (slot >= MAX_WINDOW) {
      this.conn.abort(new ProtocolError(`rpc server: an oversized message (kind ${kind}, ${head.length}-byte head) that is not a request`));
      return;
    }
    const method = wireMethod(head);
    const message = `request for method ${method} has ${bodyLength} bytes, more than this server's maxMessageBytes ${this.conn.caps.maxMessageBytes}`;
    this.answer(method, slot, wireCallGen(head), "MessageTooLargeError", message);
  }

  /**
   * Answers a call with an error at once, through a handle with no request bytes, so it goes
   * through respond(): a full transport queues it in the backlog like any reply instead of dropping it.
   */
  private answer(method: number, slot: number, gen: number, name: string, message: string): void {
    const h = new RequestHandle(this).issue(method, slot, gen, false, SKIPPED_REQUEST, false);
    this.held[slot] = h;
    this.inFlight++;
    h.respond(null, { name, message });
  }

  /** Sends a frame; `md`: encoded metadata to carry at the body's start (wire.ts), null for none. */
  send(kind: number, method: number, slot: number, gen: number, data: Uint8Array, md: Uint8Array | null = null): SendStatus {
    if (md !== null) {
      data = withMetadata(md, data);
      kind |= KIND_FLAG_METADATA;
    }
    // The header's six words go straight into the transport's descriptor where it takes them.
    if (this.sendsWords) return this.conn.trySendWords!(wireWord0(kind, 0), method, slot, gen, data.length, 0, data);
    writeWireHeader(this.headBuf, kind, method, slot, gen, 0, data.length);
    return this.conn.trySend(this.headBuf, data);
  }

  /** A frame (RESPONSE, or a stream's MSG) from a buffer of conn.allocBuffer(), its first lenBytes sent without a copy. */
  sendBuffer(method: number, slot: number, gen: number, buffer: Uint8Array, lenBytes: number, kind = KIND_RESPONSE): SendStatus {
    writeWireHeader(this.headBuf, kind, method, slot, gen, 0, lenBytes);
    return this.conn.trySendBuffer(this.headBuf, buffer, lenBytes);
  }

  /** @internal a consumed, poolable handle comes back. */
  recycle(h: RequestHandle): void {
    if (this.pool.length < HANDLE_POOL_MAX) this.pool.push(h);
  }

  /** A handle for a request just delivered: from the pool, or new. */
  private handleFor(method: number, slot: number, gen: number, oneWay: boolean, msg: RxMessage): RequestHandle {
    const h = this.pool.length > 0 ? this.pool.pop()! : new RequestHandle(this);
    return h.issue(method, slot, gen, oneWay, msg, this.server.poolHandles);
  }

  forget(h: RequestHandle): void {
    this.server.pendingBytes -= h.charged;
    h.charged = 0;
    if (h.oneWay) return;
    if (this.held[h.callSlot] === h) this.held[h.callSlot] = undefined;
    this.inFlight--;
    if (this.server.draining !== null) this.server.draining.callDone(this);
  }

  onMessage(msg: RxMessage): void {
    let kind: number;
    let mdEnd = 0; // where a request's data starts after its metadata (wire.ts); 0: none
    try {
      const raw = checkMessage(msg);
      kind = raw & KIND_MASK;
      if (kind === KIND_RESPONSE || kind === KIND_ERROR || kind === KIND_GOAWAY) throw new ProtocolError(`rpc server: received a server's message (kind ${kind})`);
      if (raw !== kind && (kind === KIND_REQUEST || kind === KIND_ONEWAY)) mdEnd = metadataEnd(msg.body);
    } catch (e) {
      msg.release();
      if (!(e instanceof HotpathError)) throw e;
      this.conn.abort(e);
      return;
    }
    const hb = msg.headBuf;
    const ho = msg.headOffset;
    const hw = msg.headWords;
    const wi = ho >> 2;
    const slot = hw !== undefined ? hw[wi + WIRE_WORD_CALL_SLOT]! >>> 0 : wireCallSlot(hb, ho);
    const gen = hw !== undefined ? hw[wi + WIRE_WORD_CALL_GEN]! >>> 0 : wireCallGen(hb, ho);
    if (kind !== KIND_ONEWAY && slot >= MAX_WINDOW) {
      msg.release();
      this.conn.abort(new ProtocolError(`rpc server: call slot ${slot} exceeds the largest window ${MAX_WINDOW}`));
      return;
    }
    if (kind >= KIND_STREAM_START && kind <= KIND_STREAM_END) {
      return this.streamFrame(kind, slot, gen, hw !== undefined ? hw[wi + WIRE_WORD_METHOD]! >>> 0 : wireMethod(hb, ho), msg);
    }
    if (kind === KIND_CANCEL) {
      if (gen !== 0 && this.held[slot]?.callGen !== gen && this.streams !== null) return this.streams.onFrame(KIND_CANCEL, slot, gen, wireMethod(hb, ho), msg);
      msg.release();
      if (gen === 0) {
        // Generation 0 is never issued: no cancel, but perhaps the client's GOAWAY announcement.
        if ((hw !== undefined ? hw[wi + WIRE_WORD_METHOD]! >>> 0 : wireMethod(hb, ho)) === GOAWAY_HELLO_METHOD) this.knowsGoaway = true;
        if (this.server.draining !== null) this.server.draining.adopt(this);
        return;
      }
      const h = this.held[slot];
      if (h !== undefined && h.callGen === gen) h.cancel();
      return;
    }
    const method = hw !== undefined ? hw[wi + WIRE_WORD_METHOD]! >>> 0 : wireMethod(hb, ho);
    const bytes = msg.bodyLength + msg.headLength;
    if (this.server.pendingBytes + bytes > this.server.maxPendingBytes) {
      // Requests not yet answered hold this much already: refuse this one rather than grow.
      msg.release();
      this.server.busyRefusals++;
      if (kind === KIND_ONEWAY) return;
      return this.answer(method, slot, gen, "ServerBusyError", `the server holds ${this.server.pendingBytes} bytes of requests not yet answered (maxPendingBytes ${this.server.maxPendingBytes}); try again later`);
    }
    const h = this.handleFor(method, slot, gen, kind === KIND_ONEWAY, msg);
    h.charged = bytes;
    this.server.pendingBytes += bytes;
    if (kind === KIND_REQUEST) {
      this.held[slot] = h;
      this.inFlight++;
    }
    // A peer's malformed metadata aborts the connection (handle.ts readMetadata()): nobody gets the request.
    if (mdEnd !== 0 && !h.readMetadata(mdEnd)) return h.drop();
    this.server.deliver(h);
  }
}

export interface ServerOptions {
  /** Called for each request as it arrives (the convenient path installs one). Without it, requests queue for recv(). */
  onRequest?: (h: RequestHandle) => void;
  /** Called when a session ends; `error` is its ProtocolError / TransportClosedError, null on a clean close. */
  onSessionClose?: (session: ServerSession, error: HotpathError | null) => void;
  /**
   * Sees every failure on the server side (src/rpc/report.ts has the contexts): a handler that
   * threw ("handler"), returned something that is not bytes ("return"), an onRequest that threw
   * ("onRequest"), a session that ended with an error other than the peer going away
   * ("session"), and, for serve(), a peer its listener refused ("refused"). Narrow on
   * `ctx.source`: `method` is null and `session` may be null for the last two. Default: one
   * line each to stderr, at most REPORT_LINES_PER_WINDOW a second, then a count of the rest.
   * Runs on the server's thread, inline; what it throws is printed and ignored.
   */
  onError?(error: unknown, context: ServerErrorContext): void;
  /**
   * Bytes of requests delivered but not yet answered (and of replies waiting for room), over
   * every session, beyond which a new request is answered at once with a ServerBusyError
   * (one-way messages are dropped): handlers that hold requests cannot grow the server without
   * bound. Each open stream reserves its whole receive window's bytes here from its START to its
   * end, so buffered stream messages stay within maxPendingBytes plus one message per stream.
   * Streams may reserve at most half of maxPendingBytes in all (requests keep the other half)
   * and one session's streams at most a quarter: a START past either, or past the limit itself,
   * gets ServerBusyError. Default 256 MiB.
   */
  maxPendingBytes?: number;
  /** Makes a session's streams at its first stream frame (serve() installs stream/'s); none: a STREAM_START gets UnknownMethodError. */
  streams?: (session: ServerSession) => SessionStreams;
  /** Record calls, errors, bytes and latency per method and transport (server.metrics()): true, or a registry to share. Default off. A one-way message records nothing, as on the client. */
  metrics?: boolean | RpcMetrics;
  /**
   * Reuse consumed request handles (the hot path allocates none; a handle kept past its reply
   * may then describe a later request: see RequestHandle). Default true; serve() sets false,
   * so a late use of a handle there is always a UsageError.
   */
  poolHandles?: boolean;
}

export const DEFAULT_MAX_PENDING_BYTES = 256 << 20;

export class Server implements Disposable {
  private readonly inbox = new Fifo<RequestHandle>();
  private readonly arrivals = new WaitList();
  private readonly listeners: Listener[] = [];
  readonly sessions = new Set<ServerSession>();
  /** The sessions again, as an array: poll() walks it without an iterator object. */
  private readonly sessionList: ServerSession[] = [];
  private readonly onRequest: ((h: RequestHandle) => void) | undefined;
  private readonly onSessionClose: ServerOptions["onSessionClose"];
  private readonly onError: ((error: unknown, context: ServerErrorContext) => void) | undefined;
  /** The default report (no onError): rate-limited lines to stderr. */
  private readonly log = new RateLimitedLog();
  /** Bytes counted against maxPendingBytes now. */
  pendingBytes = 0;
  /** Of pendingBytes, what open streams reserve (at most half of maxPendingBytes: stream/server-stream.ts). */
  streamBytes = 0;
  readonly maxPendingBytes: number;
  /** Requests refused (ServerBusyError) or one-way messages dropped because of maxPendingBytes. */
  busyRefusals = 0;
  /** ServerOptions.poolHandles. */
  readonly poolHandles: boolean;
  /** The drain in progress (drain()), or null. */
  draining: Drain | null = null;
  /** ServerOptions.streams. */
  readonly streamsFactory: ((session: ServerSession) => SessionStreams) | undefined;
  /** The registry calls are recorded in (ServerOptions.metrics), or null when off. */
  readonly metricsRegistry: RpcMetrics | null;

  constructor(opts: ServerOptions = {}) {
    this.poolHandles = opts.poolHandles ?? true;
    this.onRequest = opts.onRequest;
    this.onSessionClose = opts.onSessionClose;
    this.onError = opts.onError?.bind(opts);
    this.streamsFactory = opts.streams;
    this.metricsRegistry = metricsOption(opts.metrics, "server options");
    const max = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    if (typeof max !== "number" || !(max > 0)) throw new UsageError(`server: maxPendingBytes ${String(max)} must be a number > 0`);
    this.maxPendingBytes = max;
  }

  /** Metrics of the calls served so far (ServerOptions.metrics); UsageError when metrics are off. */
  metrics(): RpcMetricsSnapshot {
    if (this.metricsRegistry === null) throw new UsageError("server.metrics(): this server was made without metrics (ServerOptions.metrics)");
    return this.metricsRegistry.snapshot();
  }

  /** Reports one request's failure (see ServerOptions.onError). Never throws. */
  report(error: unknown, source: "handler" | "return" | "onRequest", h: RequestHandle): void {
    this.reportFailure(error, { source, method: h.method, session: h.session });
  }

  /**
   * Hands a failure to onError, or prints it (rate-limited) without one; a throwing onError
   * is itself printed the same way. Never throws. The server's thread only.
   */
  reportFailure(error: unknown, context: ServerErrorContext): void {
    try {
      if (this.onError) return this.onError(error, context);
      this.log.line(describeFailure(error, context));
    } catch (e) {
      this.log.line(`hotpath server: onError threw ${describeThrown(e, true)} (reporting ${context.source})`);
    }
  }

  /** Serves every connection the listener accepts. The server closes it on close(). */
  attach(listener: Listener): void {
    this.listeners.push(listener);
    listener.onConnection((conn) => this.addConnection(conn));
  }

  /** Serves one connection (accepted elsewhere, or a socketpair-like in-process link). */
  addConnection(conn: Connection): ServerSession {
    const s = new ServerSession(this, conn);
    this.sessions.add(s);
    this.sessionList.push(s);
    conn.setReceiver({
      onMessage: (m) => s.onMessage(m),
      onClose: (e) => {
        this.sessions.delete(s);
        this.dropSession(s);
        s.closed(e);
        // Requests of this session nobody received yet: nobody can answer them now, and each
        // holds transport memory (a segment, a UCX buffer) until dropped.
        if (this.inbox.length > 0) this.inbox.removeWhere((h) => h.session === s && (h.drop(), true));
        // The peer leaving (or a configured limit closing the session) is no failure.
        if (e !== null && !(e instanceof TransportClosedError)) this.reportFailure(e, { source: "session", method: null, session: s });
        this.onSessionClose?.(s, e);
        this.draining?.sessionClosed();
      },
      onOversized: (head, bodyLength) => s.onOversized(head, bodyLength),
    });
    if (this.draining !== null) this.draining.adopt(s);
    return s;
  }

  /** Swap-remove from sessionList (poll() walks it backwards, so a removal while it runs skips none). */
  private dropSession(s: ServerSession): void {
    const list = this.sessionList;
    const i = list.indexOf(s);
    if (i < 0) return;
    list[i] = list[list.length - 1]!;
    list.pop();
  }

  deliver(h: RequestHandle): void {
    if (this.onRequest) {
      try {
        this.onRequest(h);
      } catch (e) {
        // One request's failure is that call's error response, never the session's or the server's.
        this.report(e, "onRequest", h);
        h.respond(null, { name: "Error", message: `the server failed on this request: ${describeThrown(e)}` });
      }
      return;
    }
    this.inbox.push(h);
    this.arrivals.wake(true);
  }

  /** Makes progress on every session (and sends replies waiting for room). Returns requests waiting for recv(). */
  poll(): number {
    const list = this.sessionList;
    for (let i = list.length - 1; i >= 0; i--) {
      const s = list[i];
      if (s === undefined) continue; // removed while polling
      s.conn.poll();
      if (s.backlogLength > 0) s.flushBacklog();
    }
    return this.inbox.length;
  }

  /** The next request, or null. */
  recv(): RequestHandle | null {
    return this.inbox.shift() ?? null;
  }

  /**
   * Resolves true when a request waits for recv(), false after timeoutMs. Requests arrive from
   * the event loop (tcp, and shm / inproc / ucx in their default modes); connections in spin or
   * blocking mode bring them in only through poll(), so a loop over those calls poll().
   * One wait list for the whole server: waiting costs the same with one session or many.
   */
  wait(timeoutMs: number): Promise<boolean> {
    if (this.inbox.length > 0) return Promise.resolve(true);
    this.poll();
    if (this.inbox.length > 0) return Promise.resolve(true);
    return this.arrivals.wait(timeoutMs);
  }

  /**
   * Graceful drain (drain.ts): stops listening, sends GOAWAY to every session whose client
   * understands it, keeps serving requests, and resolves once every session has closed, or
   * after timeoutMs (ms >= 0), when the rest is closed and its calls are cut. A second call
   * returns the same drain. The server's thread.
   */
  drain(timeoutMs: number): Promise<DrainResult> {
    if (this.draining !== null) return this.draining.done;
    try {
      checkTimeout(timeoutMs, "server.drain");
    } catch (e) {
      return Promise.reject(e);
    }
    for (const l of this.listeners.splice(0)) l.close(false); // stop accepting; the sessions drain
    this.draining = new Drain(this, timeoutMs);
    return this.draining.done;
  }

  /** Stops listening and closes every session (and prints the count of report lines left out). Idempotent. */
  close(): void {
    for (const l of this.listeners.splice(0)) l.close(true);
    for (const s of this.sessions) s.conn.close();
    while (this.inbox.length > 0) this.inbox.shift()!.drop(); // unreceived requests give their memory back
    this.sessions.clear();
    this.sessionList.length = 0;
    this.arrivals.wake(false);
    this.log.flush();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export { SEND_CLOSED, SEND_FULL, SEND_OK };
