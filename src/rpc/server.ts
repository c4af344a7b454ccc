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
 * handle is consumed by reply() / replyError() / drop(). A second reply is a UsageError. A
 * reply that finds the transport full returns SEND_FULL and leaves the handle usable, so the
 * caller can retry after poll(); Ok and Closed consume it.
 *
 * Each accepted connection is a session. A malformed message aborts only that session with
 * ProtocolError; the server and its other sessions keep running. Cancel messages from the
 * client mark the matching handle `cancelled` (and abort its `signal`, for async handlers).
 *
 * Threading: a Server belongs to the thread that created it.
 */

import { EMPTY_BYTES } from "../bytes.ts";
import { HotpathError, ProtocolError, UsageError } from "../errors.ts";
import {
  SEND_CLOSED,
  SEND_FULL,
  SEND_OK,
  type Connection,
  type Listener,
  type RxMessage,
  type SendStatus,
} from "../transport/transport.ts";
import { MAX_WINDOW } from "./client.ts";
import { WaitList } from "../waitlist.ts";
import { Fifo } from "./fifo.ts";
import {
  KIND_CANCEL,
  KIND_ERROR,
  KIND_ONEWAY,
  KIND_REQUEST,
  KIND_RESPONSE,
  WIRE_HEADER_BYTES,
  checkMessage,
  encodeErrorBody,
  wireAppHeaderLen,
  wireCallGen,
  wireCallSlot,
  wireMethod,
  writeWireHeader,
} from "./wire.ts";

export class RequestHandle {
  private msg: RxMessage | null;
  private abortCtl: AbortController | null = null;
  /** True once the client cancelled this call (timeout or abort on its side). */
  cancelled = false;

  constructor(
    readonly session: ServerSession,
    readonly method: number,
    readonly callSlot: number,
    readonly callGen: number,
    readonly oneWay: boolean,
    msg: RxMessage,
  ) {
    this.msg = msg;
  }

  /** Request data: a view into transport memory, valid until the handle is consumed. */
  get data(): Uint8Array {
    if (this.msg === null) throw new UsageError("request handle already consumed");
    return this.msg.body;
  }

  /** The fixed application header (empty when the request had none); same lifetime as data. */
  get appHeader(): Uint8Array {
    if (this.msg === null) throw new UsageError("request handle already consumed");
    const { headBuf, headOffset } = this.msg;
    const len = wireAppHeaderLen(headBuf, headOffset);
    const at = headOffset + WIRE_HEADER_BYTES;
    return len === 0 ? EMPTY_BYTES : headBuf.subarray(at, at + len);
  }

  get consumed(): boolean {
    return this.msg === null;
  }

  /** Aborted when the client cancels. Created on first use. */
  get signal(): AbortSignal {
    if (this.abortCtl === null) {
      this.abortCtl = new AbortController();
      if (this.cancelled) this.abortCtl.abort();
    }
    return this.abortCtl.signal;
  }

  /** Sends the response and consumes the handle (see the module comment for SEND_FULL). */
  reply(data: Uint8Array): SendStatus {
    return this.respond(KIND_RESPONSE, data);
  }

  /** A writable response buffer in transport memory (a shm slot), or null when none is free now. */
  allocReply(lenBytes: number): Uint8Array | null {
    return this.session.conn.allocBuffer(lenBytes);
  }

  /** Gives back a buffer from allocReply() that will not be sent. */
  releaseReply(buffer: Uint8Array): void {
    this.session.conn.releaseBuffer(buffer);
  }

  /** reply() with a buffer from allocReply(): sent without a copy. */
  replyBuffer(buffer: Uint8Array): SendStatus {
    if (this.msg === null) throw new UsageError(`request handle for method ${this.method} already replied to`);
    if (this.oneWay) this.session.conn.releaseBuffer(buffer); // nobody to answer: give the memory back
    const status = this.oneWay ? SEND_OK : this.session.sendBuffer(this.method, this.callSlot, this.callGen, buffer);
    if (status !== SEND_FULL) this.finish();
    return status;
  }

  /** Sends an error response; the client's call rejects with RemoteError(name, message). */
  replyError(name: string, message: string): SendStatus {
    return this.respond(KIND_ERROR, encodeErrorBody(name, message));
  }

  /** Consumes the handle without a response (e.g. after a cancel). */
  drop(): void {
    if (this.msg === null) return;
    this.finish();
  }

  /** Called by the session when a cancel for this call arrives. */
  cancel(): void {
    this.cancelled = true;
    this.abortCtl?.abort();
  }

  private respond(kind: number, data: Uint8Array): SendStatus {
    if (this.msg === null) throw new UsageError(`request handle for method ${this.method} already replied to`);
    if (this.oneWay) {
      this.finish();
      return SEND_OK;
    }
    const status = this.session.send(kind, this.method, this.callSlot, this.callGen, data);
    if (status !== SEND_FULL) this.finish();
    return status;
  }

  private finish(): void {
    this.msg!.release();
    this.msg = null;
    this.session.forget(this);
  }
}

/** One accepted connection. */
export class ServerSession {
  /** Handles the application still holds, by client slot, so a cancel finds its call. */
  private readonly held: (RequestHandle | undefined)[] = [];
  private readonly headBuf = new Uint8Array(WIRE_HEADER_BYTES);

  constructor(
    readonly server: Server,
    readonly conn: Connection,
  ) {}

  send(kind: number, method: number, slot: number, gen: number, data: Uint8Array): SendStatus {
    writeWireHeader(this.headBuf, kind, method, slot, gen, 0, data.length);
    return this.conn.trySend(this.headBuf, data);
  }

  sendBuffer(method: number, slot: number, gen: number, buffer: Uint8Array): SendStatus {
    writeWireHeader(this.headBuf, KIND_RESPONSE, method, slot, gen, 0, buffer.length);
    return this.conn.trySendBuffer(this.headBuf, buffer);
  }

  forget(h: RequestHandle): void {
    if (!h.oneWay && this.held[h.callSlot] === h) this.held[h.callSlot] = undefined;
  }

  onMessage(msg: RxMessage): void {
    let kind: number;
    try {
      kind = checkMessage(msg);
      if (kind === KIND_RESPONSE || kind === KIND_ERROR) throw new ProtocolError(`rpc server: received a response (kind ${kind})`);
    } catch (e) {
      msg.release();
      if (!(e instanceof HotpathError)) throw e;
      this.conn.abort(e);
      return;
    }
    const hb = msg.headBuf;
    const ho = msg.headOffset;
    const slot = wireCallSlot(hb, ho);
    const gen = wireCallGen(hb, ho);
    if (kind !== KIND_ONEWAY && slot >= MAX_WINDOW) {
      msg.release();
      this.conn.abort(new ProtocolError(`rpc server: call slot ${slot} exceeds the largest window ${MAX_WINDOW}`));
      return;
    }
    if (kind === KIND_CANCEL) {
      msg.release();
      const h = this.held[slot];
      if (h !== undefined && h.callGen === gen) h.cancel();
      return;
    }
    const h = new RequestHandle(this, wireMethod(hb, ho), slot, gen, kind === KIND_ONEWAY, msg);
    if (kind === KIND_REQUEST) this.held[slot] = h;
    this.server.deliver(h);
  }
}

export interface ServerOptions {
  /**
   * Called for each request as it arrives (the convenient path installs one). Without it,
   * requests queue for recv().
   */
  onRequest?: (h: RequestHandle) => void;
  /** Called when a session ends; `error` is its ProtocolError / TransportClosedError, null on a clean close. */
  onSessionClose?: (session: ServerSession, error: HotpathError | null) => void;
}

export class Server implements Disposable {
  private readonly inbox = new Fifo<RequestHandle>();
  private readonly arrivals = new WaitList();
  private readonly listeners: Listener[] = [];
  readonly sessions = new Set<ServerSession>();
  private readonly onRequest: ((h: RequestHandle) => void) | undefined;
  private readonly onSessionClose: ServerOptions["onSessionClose"];

  constructor(opts: ServerOptions = {}) {
    this.onRequest = opts.onRequest;
    this.onSessionClose = opts.onSessionClose;
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
    conn.setReceiver({
      onMessage: (m) => s.onMessage(m),
      onClose: (e) => {
        this.sessions.delete(s);
        this.onSessionClose?.(s, e);
      },
    });
    return s;
  }

  deliver(h: RequestHandle): void {
    if (this.onRequest) return this.onRequest(h);
    this.inbox.push(h);
    this.arrivals.wake(true);
  }

  /** Makes progress on every session. Returns requests waiting for recv(). */
  poll(): number {
    for (const s of this.sessions) s.conn.poll();
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

  /** Stops listening and closes every session. Idempotent. */
  close(): void {
    for (const l of this.listeners.splice(0)) l.close(true);
    for (const s of this.sessions) s.conn.close();
    this.sessions.clear();
    this.arrivals.wake(false);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export { SEND_CLOSED, SEND_FULL, SEND_OK };
