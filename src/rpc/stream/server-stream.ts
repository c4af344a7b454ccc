/**
 * The server's side of streams: a session's SessionStreams (ServerOptions.streams; serve()
 * installs sessionStreams()) and one ServerStreamImpl (types.ts ServerStream) per stream the
 * client started, by its call slot.
 *
 * Contract: a STREAM_START for a method with a stream handler starts it (its metadata, its
 * deadline from `hp-deadline-ms`, the client's receive window as this side's send credit);
 * for any other method it is answered with ERROR UnknownMethodError. The handler's successful
 * return sends END (unless it ended already), a throw sends ERROR (the thrown error's name and
 * message; reported as a "handler" failure). The client's CANCEL, the deadline and the
 * session's close abort `s.signal` and reject s.read() / s.send(); the deadline also sends
 * ERROR TimeoutError. Each open stream counts as a call in flight (session.streamStarted /
 * streamEnded: drain waits for it). Frames of unknown or finished streams are dropped; a
 * second START on a live slot and a peer past its credit abort the session (ProtocolError).
 * The server's thread.
 *
 * Example:
 *   serve(url, { 5: streamHandler(async (s) => { for await (const m of s) await s.send(m); }) });
 */

import { CancelledError, MessageTooLargeError, ProtocolError, TimeoutError, TransportClosedError, UsageError, type HotpathError } from "../../errors.ts";
import { SEND_CLOSED, SEND_FULL, sendLimit, type Connection, type RxMessage, type SendStatus } from "../../contract/transport.ts";
import { errorBody, errorReplyOf } from "../handle.ts";
import { Metadata, decodeMetadata, remainingDeadline } from "../metadata.ts";
import { errorCodeName } from "../metrics.ts";
import type { RequestHandle, ServerSession, SessionStreams } from "../server.ts";
import { KIND_CANCEL, KIND_ERROR, KIND_FLAG_METADATA, KIND_STREAM_CREDIT, KIND_STREAM_END, KIND_STREAM_MSG, KIND_STREAM_START, METADATA_LEN_BYTES, encodeErrorBody, metadataEnd, wireKind } from "../wire.ts";
import { StreamBase } from "./base.ts";
import { DEFAULT_STREAM_WINDOW, STREAM_INITIAL_CREDIT, checkWindow, readCredit } from "./credit.ts";
import { RoomQueue } from "./room-queue.ts";
import { StreamTimer } from "./timer.ts";
import { MAX_WINDOW } from "../slots.ts";
import type { ServerStream, StreamWindow } from "./types.ts";

/** A stream handler: runs once per stream; resolving ends the stream OK, throwing fails it. */
export type StreamHandlerFn = (s: ServerStream) => Promise<void> | void;

const STREAM_HANDLER = Symbol("hotpath.streamHandler");

/**
 * Marks `fn` as a stream handler for serve()'s handler table: a STREAM_START for its method
 * runs it; a unary request to that method is answered with UnknownMethodError. Typed as a raw
 * handler so it sits in the same table.
 */
export function streamHandler(fn: StreamHandlerFn): (h: RequestHandle) => void {
  if (typeof fn !== "function") throw new UsageError(`streamHandler: takes a function (s: ServerStream) => Promise<void> | void, got ${typeof fn}`);
  (fn as unknown as Record<symbol, boolean>)[STREAM_HANDLER] = true;
  return fn as unknown as (h: RequestHandle) => void;
}

/** True for a function marked by streamHandler(). */
export function isStreamHandler(fn: unknown): fn is StreamHandlerFn {
  return typeof fn === "function" && (fn as unknown as Record<symbol, boolean>)[STREAM_HANDLER] === true;
}

export interface SessionStreamsOptions {
  /** The receive window of each stream (default DEFAULT_STREAM_WINDOW; at least STREAM_INITIAL_CREDIT). */
  window?: StreamWindow;
}


export class ServerStreamImpl extends StreamBase implements ServerStream {
  readonly deadline: number | undefined;
  /** The ERROR frame still to send (the stream failed on this side), or null. */
  private finalError: Uint8Array | null = null;
  private timer: StreamTimer | null = null;
  private readonly startMs = performance.now();

  constructor(
    private readonly owner: SessionStreamsImpl,
    readonly session: ServerSession,
    readonly method: number,
    readonly slot: number,
    readonly gen: number,
    readonly metadata: Metadata,
    sendCredit: StreamWindow,
    window: StreamWindow,
    remaining: number | undefined, // ms to the deadline (`hp-deadline-ms`, checked by the caller), undefined for none
  ) {
    super(sendCredit, STREAM_INITIAL_CREDIT, window);
    this.deadline = remaining === undefined ? undefined : this.startMs + remaining;
    if (this.deadline !== undefined) {
      this.timer = new StreamTimer(this.deadline, () => this.fail(new TimeoutError(`stream for method ${method} passed its deadline of ${remaining} ms`), true));
    }
    this.openWindow(); // the window past STREAM_INITIAL_CREDIT, granted at once
    this.kick();
  }

  get peer(): string {
    return this.session.conn.peer;
  }
  get transport(): string {
    return this.session.conn.transport;
  }
  protected get conn(): Connection {
    return this.session.conn;
  }
  protected rooms(): RoomQueue {
    return this.owner.rooms;
  }

  protected sendFrame(kind: number, data: Uint8Array, md: Uint8Array | null): SendStatus {
    return this.session.send(kind, this.method, this.slot, this.gen, data, md);
  }

  protected sendBufferFrame(buffer: Uint8Array, lenBytes: number): SendStatus {
    return this.session.sendBuffer(this.method, this.slot, this.gen, buffer, lenBytes, KIND_STREAM_MSG);
  }

  protected override flushControl(): SendStatus {
    if (this.finalError === null) return super.flushControl();
    let s: SendStatus;
    try {
      s = this.session.send(KIND_ERROR, this.method, this.slot, this.gen, this.finalError);
    } catch {
      s = SEND_CLOSED; // refused by the transport (errorBody() keeps it within the limit): nothing more to send
    }
    if (s !== SEND_FULL) {
      this.finalError = null;
      this.blocked = false;
    }
    return s;
  }

  /** The server's END is final: the stream is over. */
  protected endSent(): void {
    this.finishOk();
  }

  protected closedError(): HotpathError {
    return new TransportClosedError(`rpc: the session with ${this.session.conn.peer} is closed`);
  }

  /** Server side: leaving the loop early only stops reading (the handler may still send and end). */
  protected override returnedEarly(): void {
    this.discardInput();
  }

  protected onFinish(error: Error | null, tellPeer: boolean): void {
    this.timer?.clear();
    this.owner.finished(this);
    const metrics = this.session.server.metricsRegistry;
    if (metrics !== null) {
      const ns = (performance.now() - this.startMs) * 1e6;
      metrics.record(this.transport, this.method, error === null ? null : errorCodeName(error), this.bytesIn, this.bytesOut, ns > 0 ? ns : 0);
    }
    if (!tellPeer || error === null || this.session.conn.closed) return;
    const { name, message } = errorReplyOf(error);
    this.finalError = errorBody(name, message, sendLimit(this.session.conn.caps));
    this.blocked = true;
    this.kick();
  }

  /** The handler returned: END, unless the stream ended already. */
  handlerDone(): void {
    if (!this.finished && !this.sendEnded) this.end();
  }

  /**
   * The handler threw: reported (unless it rethrew the stream's own error: cancel, deadline,
   * session gone), then ERROR with its name and message unless the stream is over already.
   */
  handlerFailed(e: unknown): void {
    if (e !== this.error) this.session.server.reportFailure(e, { source: "handler", method: this.method, session: this.session });
    if (this.finished) return;
    const { name, message } = errorReplyOf(e);
    const err = new Error(message);
    err.name = name;
    this.fail(err, true);
  }

  /** A frame for this stream (its generation checked). ProtocolError when malformed. */
  onFrame(kind: number, msg: RxMessage): void {
    if (kind === KIND_STREAM_MSG) return this.onMessage(msg);
    try {
      if (kind === KIND_STREAM_CREDIT) this.onCredit(msg.body);
      else if (kind === KIND_STREAM_END) this.peerEnded(); // the client half-closed (its metadata, if any, is ignored)
      else if (kind === KIND_CANCEL) this.fail(new CancelledError(`the client cancelled the stream for method ${this.method}`), false);
      else throw new ProtocolError(`rpc server: a second STREAM_START on live stream ${this.slot} (method ${this.method})`);
    } finally {
      msg.release();
    }
  }
}

/** A session's streams by call slot (SessionStreams). */
export class SessionStreamsImpl implements SessionStreams {
  private readonly live = new Map<number, ServerStreamImpl>();
  /** STREAM_STARTs refused (unknown method, busy) whose ERROR waits for room, by slot: at most one each. */
  private readonly answers = new Map<number, RefusalAnswer>();
  /** Refusals in the room queue (cancelled ones too, until their turn): past MAX_WINDOW the peer does not read. */
  private answersQueued = 0;
  readonly rooms: RoomQueue;

  constructor(
    private readonly session: ServerSession,
    private readonly lookup: (method: number) => StreamHandlerFn | string,
    private readonly window: StreamWindow,
  ) {
    this.rooms = new RoomQueue(session.conn);
  }

  /** Streams open now. */
  get size(): number {
    return this.live.size;
  }

  onFrame(kind: number, slot: number, gen: number, method: number, msg: RxMessage): void {
    try {
      if (kind === KIND_STREAM_START) return this.start(slot, gen, method, msg);
      const s = this.live.get(slot);
      if (s === undefined || s.gen !== gen) {
        if (kind === KIND_CANCEL && this.answers.get(slot)?.gen === gen) this.answers.get(slot)!.cancelled = true; // the client gave up on its answer
        return msg.release(); // unknown or finished: dropped
      }
      s.onFrame(kind, msg);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.session.conn.abort(e);
    }
  }

  private start(slot: number, gen: number, method: number, msg: RxMessage): void {
    let md = Metadata.EMPTY;
    let credit: { messages: number; bytes: number };
    let remaining: number | undefined;
    try {
      if (this.live.has(slot)) throw new ProtocolError(`rpc server: STREAM_START for call ${slot}/${gen} while stream ${slot} is live`);
      const waiting = this.answers.get(slot);
      if (waiting !== undefined && !waiting.cancelled) throw new ProtocolError(`rpc server: STREAM_START for call ${slot}/${gen} while the answer to call ${slot}/${waiting.gen} waits to be read`);
      const body = msg.body;
      let at = 0;
      if ((wireKind(msg.headBuf, msg.headOffset) & KIND_FLAG_METADATA) !== 0) {
        at = metadataEnd(body);
        md = decodeMetadata(body.subarray(METADATA_LEN_BYTES, at));
        remaining = remainingDeadline(md); // a malformed one: ProtocolError, before anything is reserved
      }
      credit = readCredit(body, at, "STREAM_START");
      if (credit.messages === 0 || credit.bytes === 0) throw new ProtocolError(`rpc server: STREAM_START with an empty window (${credit.messages} messages, ${credit.bytes} bytes)`);
    } finally {
      msg.release();
    }
    const fn = this.lookup(method);
    if (typeof fn === "string") return this.refuse(method, slot, gen, "UnknownMethodError", fn);
    // A stream may make this side hold its whole receive window: reserved against maxPendingBytes,
    // streams at most half of it (requests keep the rest) and one session's at most a quarter.
    const server = this.session.server;
    const w = this.window.bytes;
    const max = server.maxPendingBytes;
    const full =
      server.pendingBytes + w > max ? `the server holds ${server.pendingBytes} bytes of requests and stream windows (maxPendingBytes ${max})`
      : server.streamBytes + w > max / 2 ? `open streams reserve ${server.streamBytes} bytes, and streams may reserve at most half of maxPendingBytes ${max}`
      : (this.live.size + 1) * w > max / 4 ? `this session's ${this.live.size} streams reserve ${this.live.size * w} bytes, and one session's streams may reserve at most a quarter of maxPendingBytes ${max}`
      : null;
    if (full !== null) {
      server.busyRefusals++;
      return this.refuse(method, slot, gen, "ServerBusyError", `${full}; a stream would reserve ${w} more; try again later`);
    }
    server.pendingBytes += w;
    server.streamBytes += w;
    const s = new ServerStreamImpl(this, this.session, method, slot, gen, md, credit, this.window, remaining);
    this.live.set(slot, s);
    this.session.streamStarted();
    let out: unknown;
    try {
      out = fn(s);
    } catch (e) {
      return s.handlerFailed(e);
    }
    Promise.resolve(out).then(
      () => s.handlerDone(),
      (e) => s.handlerFailed(e),
    );
  }

  /** Nothing starts: the ERROR waits for room like any frame (the client waits for it), at most one per slot. */
  private refuse(method: number, slot: number, gen: number, name: string, message: string): void {
    const body = encodeErrorBody(name, message);
    const answer: RefusalAnswer = {
      queued: false,
      gen,
      cancelled: false,
      pump: () => {
        if (!answer.cancelled && !this.session.conn.closed && this.session.send(KIND_ERROR, method, slot, gen, body) === SEND_FULL) return false;
        if (this.answers.get(slot) === answer) this.answers.delete(slot);
        if (answer.queued) this.answersQueued--;
        return true;
      },
    };
    if (!this.rooms.busy && answer.pump()) return;
    if (this.answersQueued >= MAX_WINDOW) {
      this.session.conn.abort(new ProtocolError(`rpc server: more than ${MAX_WINDOW} stream refusals wait for ${this.session.conn.peer} to read them`));
      return;
    }
    this.answers.set(slot, answer);
    this.answersQueued++;
    this.rooms.wait(answer);
  }

  /** @internal a stream finished: it leaves the table (later frames for it are dropped) and gives its reservation back. */
  finished(s: ServerStreamImpl): void {
    if (this.live.get(s.slot) !== s) return;
    this.live.delete(s.slot);
    this.session.server.pendingBytes -= this.window.bytes;
    this.session.server.streamBytes -= this.window.bytes;
    this.session.streamEnded();
  }

  onOversized(slot: number, gen: number, bodyLength: number): void {
    const s = this.live.get(slot);
    if (s === undefined || s.gen !== gen) return;
    s.fail(new MessageTooLargeError(`rpc server: a stream message of ${bodyLength} bytes for method ${s.method} exceeds this server's maxMessageBytes ${this.session.conn.caps.maxMessageBytes}`), true);
  }

  closed(error: HotpathError | null): void {
    const err = error ?? new TransportClosedError(`rpc: the session with ${this.session.conn.peer} closed`);
    for (const s of [...this.live.values()]) s.fail(err, false);
  }
}

/** A refused STREAM_START's answer waiting in the room queue. */
interface RefusalAnswer {
  queued: boolean;
  readonly gen: number;
  /** The client cancelled that call: the answer goes unsent. */
  cancelled: boolean;
  pump(): boolean;
}

/**
 * ServerOptions.streams for a table of stream handlers: `lookup(method)` gives the handler, or
 * the message of the UnknownMethodError a STREAM_START for it gets.
 */
export function sessionStreams(lookup: (method: number) => StreamHandlerFn | string, opts: SessionStreamsOptions = {}): (session: ServerSession) => SessionStreams {
  const w = checkWindow(opts.window ?? DEFAULT_STREAM_WINDOW, "server stream options");
  const window = { messages: Math.max(w.messages, STREAM_INITIAL_CREDIT.messages), bytes: Math.max(w.bytes, STREAM_INITIAL_CREDIT.bytes) };
  return (session) => new SessionStreamsImpl(session, lookup, window);
}
