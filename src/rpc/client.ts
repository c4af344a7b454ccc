/**
 * RPC client: two APIs over one engine and one fixed slot table (the in-flight window).
 *
 * Hot path, allocation-free on the client side:
 *   client.onResponse = (userData, data, error) => { ... };   // data valid during the callback only
 *   if (client.call(METHOD_ECHO, bytes, userData) === SEND_FULL) { client.poll(); ... }
 *   client.poll();      // delivers completions, invoking onResponse inline
 *   await client.wait(10) // event-driven transports: lets responses arrive
 *
 * Convenient:
 *   const reply = await client.request(METHOD_ECHO, bytes, { timeoutMs: 100, signal });
 *
 * Every call gets a call id = (slot, generation). A response is matched only to the slot's
 * current generation while the call is outstanding; a late response (after a timeout or
 * cancellation) or a duplicate is dropped and counted in `lateResponses`; a response for a
 * call id never issued aborts the connection with ProtocolError. Closing either side fails
 * every outstanding call: promises reject, hot-path calls complete with the error.
 *
 * GOAWAY (a draining server, wire.ts): `draining` turns true, `onGoaway` runs, calls go on
 * as usual, and once none is in flight the client closes the connection (later calls fail
 * with TransportClosedError): a pool moves new calls elsewhere from onGoaway.
 *
 * Also: per-call metadata and deadlines passed on (RequestOptions: pending.ts), interceptors
 * around request() (ClientOptions.interceptors: interceptors.ts; the hot path never sees them),
 * metrics (ClientOptions.metrics, client.metrics(): meter.ts) and streams, each in a slot of
 * the same window (stream/: a SlotOwner gets the slot's frames).
 *
 * Threading: a Client belongs to the thread that created it.
 */

import { EMPTY_BYTES } from "../bytes.ts";
import { CancelledError, HotpathError, MessageTooLargeError, ProtocolError, RemoteError, TimeoutError, TransportClosedError, UsageError, rebuildRemoteError } from "../errors.ts";
import { SEND_CLOSED, SEND_FULL, SEND_OK, sendLimit, type Connection, type RxMessage, type SendStatus } from "../contract/transport.ts";
import { KIND_CANCEL, KIND_ERROR, KIND_FLAG_METADATA, KIND_GOAWAY, KIND_MASK, KIND_ONEWAY, KIND_REQUEST, KIND_RESPONSE, KIND_STREAM_END, KIND_STREAM_MSG, MAX_APP_HEADER_BYTES, WIRE_HEADER_BYTES } from "./wire.ts";
import { checkMessage, wireCallGen, wireCallSlot, wireWord0, withMetadata, writeWireHeader, WIRE_WORD_CALL_GEN, WIRE_WORD_CALL_SLOT } from "./wire.ts";
import { checkTimeout } from "./validate.ts";
import { announceGoaway, CancelQueue, checkArgs, checkRequest, checkSizes, DeadlineQueue, armRequest, dropCopies, keepCopies, tellMetadata, oversizedSlot, ownedBody, PendingRequest, type SlotOwner } from "./pending.ts";
import { RoomRetry } from "./room.ts";
import { CompletionRing } from "./completions.ts";
import { remoteErrorOf, settleRequest, splitResponse, SlotTable, WaitLine, SLOT_CALLBACK, SLOT_CANCELLING, SLOT_DONE, SLOT_FREE, SLOT_PROMISE, SLOT_STREAM } from "./slots.ts";
import { ClientStreamImpl, streamChain, type ClientStream, type SlotWaiter, type StreamOpener, type StreamOptions } from "./stream/client-stream.ts";
import { CallMeter, metricsOption } from "./meter.ts";
import type { RpcMetricsSnapshot } from "./metrics.ts";
import { Metadata } from "./metadata.ts";
import { unaryChain, type UnaryChain } from "./interceptors.ts";
export type { ClientOptions, OnResponse, RequestOptions, SlotOwner } from "./pending.ts";
import type { ClientOptions, OnResponse, RequestOptions } from "./pending.ts";
export { DEFAULT_WINDOW, MAX_WINDOW } from "./slots.ts";
import { DEFAULT_WINDOW } from "./slots.ts";
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** How long a request blocked by a full transport waits (event-loop modes) or sleeps (spin / blocking: a timer) before it looks again. */
const FULL_RETRY_WAIT_MS = 10;

const REQUEST_WORD0 = wireWord0(KIND_REQUEST, 0); // a request's first header word, no app header

export class Client<U = unknown> extends SlotTable<U> implements Disposable {
  readonly conn: Connection;
  /** Invoked inline by poll() for every hot-path call that completed. */
  onResponse: OnResponse<U> | null = null;
  /** Responses dropped because their call had already timed out, been cancelled or completed. */
  lateResponses = 0;
  /** Runs once on GOAWAY, inline in message delivery (do not block); a throw is printed (console.error). */
  onGoaway: ((client: Client<U>) => void) | null = null;
  private goaway = false;
  private announced = false; // the GOAWAY announcement went out (announce())

  private readonly defaultTimeoutMs: number;
  private readonly sendDeadline: boolean; // ClientOptions.sendDeadline
  // Completion ring for hot-path calls: at most one entry per slot, so `window` entries suffice.
  private readonly ready: CompletionRing;
  /** poll() is in conn.poll() with nothing queued; directDelivered counts completeNow() calls. */
  private direct = false;
  private directDelivered = 0;
  private directThrew = false; // and directError: what onResponse threw inside conn.poll()
  private directError: unknown;
  /** @internal requests and streams waiting for a slot or room, in the order they came (one line for both; a stream that finishes in it calls left()). */
  readonly waiting = new WaitLine<PendingRequest | SlotWaiter>((p) => (p instanceof PendingRequest ? !p.done : p.wantsSlot));
  /** request() deadlines: one timer for the client, not one per request (pending.ts). */
  private readonly deadlines = new DeadlineQueue((p) => this.abandon(p, new TimeoutError(`request for method ${p.method} to ${this.conn.peer} timed out after ${p.timeoutMs} ms`)));
  private readonly aborted = (p: PendingRequest) => this.abandon(p, new CancelledError(`request for method ${p.method} aborted`, { cause: p.signal!.reason }));
  private readonly cancels = new CancelQueue(
    (slot, method) => (this.closeErr !== null ? SEND_CLOSED : this.sendFrame(KIND_CANCEL, method, slot, this.gen[slot]!, EMPTY_BYTES)),
    (slot) => this.freeSlot(slot),
  );
  private readonly room: RoomRetry;
  readonly meter: CallMeter | null; // @internal: ClientOptions.metrics (streams record through it too)
  private readonly chain: UnaryChain | null;
  private readonly opener: StreamOpener; // stream() through the interceptors' `stream` members
  private readonly headBuf = new Uint8Array(WIRE_HEADER_BYTES + MAX_APP_HEADER_BYTES);
  private readonly head24 = this.headBuf.subarray(0, WIRE_HEADER_BYTES);
  private closeErr: HotpathError | null = null;
  private readonly appHeaderLimit: number;
  private readonly sendsWords: boolean; // the transport takes the header as words (trySendWords)

  constructor(conn: Connection, opts: ClientOptions = {}) {
    super(opts.window ?? DEFAULT_WINDOW);
    const window = this.window;
    this.conn = conn;
    this.defaultTimeoutMs = checkTimeout(opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, "client options");
    this.sendDeadline = opts.sendDeadline === true;
    this.appHeaderLimit = Math.min(MAX_APP_HEADER_BYTES, conn.caps.maxHeadBytes - WIRE_HEADER_BYTES);
    this.sendsWords = typeof conn.trySendWords === "function";
    this.ready = new CompletionRing(window);
    this.room = new RoomRetry(conn, () => this.pump(), FULL_RETRY_WAIT_MS, FULL_RETRY_WAIT_MS);
    const metrics = metricsOption(opts.metrics, "client options");
    this.meter = metrics === null ? null : new CallMeter(metrics, conn.transport, window);
    this.chain = opts.interceptors === undefined || opts.interceptors.length === 0 ? null : unaryChain(opts.interceptors, (m, d, o) => this.start(m, d, o));
    this.opener = streamChain(opts.interceptors, (m, o) => new ClientStreamImpl(this, m, o));
    conn.setReceiver({
      onMessage: (m) => this.onMessage(m),
      onClose: (e) => this.onClose(e),
      onOversized: (head, bodyLength) => this.onOversized(head, bodyLength),
    });
  }

  /** True once the server sent GOAWAY: it is draining and will close this connection. */
  get draining(): boolean {
    return this.goaway;
  }

  get closed(): boolean {
    return this.closeErr !== null;
  }

  /**
   * Hot path: sends a request and remembers `userData` in a slot. Returns SEND_OK, SEND_FULL
   * (window or transport full: poll and retry) or SEND_CLOSED. Never allocates, never throws
   * for transport conditions; throws UsageError for caller bugs (no onResponse, oversized data).
   * `data` is copied (or, for a buffer from conn.allocBuffer, handed over) before it returns.
   */
  call(method: number, data: Uint8Array, userData: U, appHeader?: Uint8Array): SendStatus {
    if (method >>> 0 !== method || !(data instanceof Uint8Array)) checkArgs(method, data, appHeader, "client.call");
    if (data.length > sendLimit(this.conn.caps) || (appHeader !== undefined && appHeader.length > this.appHeaderLimit)) {
      checkSizes(this.conn, this.appHeaderLimit, data, appHeader); // throws UsageError before a slot is taken
    }
    const slot = this.callSlot();
    if (slot < 0) return slot === -1 ? SEND_FULL : SEND_CLOSED;
    this.issue(slot, userData, method, data.length);
    if (appHeader === undefined && this.sendsWords) {
      // The header's six words go straight into the transport's descriptor (no head bytes built).
      return this.called(slot, this.conn.trySendWords!(REQUEST_WORD0, method, slot, this.gen[slot]!, data.length, 0, data));
    }
    return this.called(slot, this.sendFrame(KIND_REQUEST, method, slot, this.gen[slot]!, data, appHeader));
  }

  /** A writable buffer in transport memory (a shm slab slot; heap on tcp) for callBuffer(), or null when none is free; the caller owns it until callBuffer() returns Ok. */
  allocBuffer(lenBytes: number): Uint8Array | null {
    return this.conn.allocBuffer(lenBytes);
  }

  /** Gives back a buffer from allocBuffer() that will not be sent (e.g. after Full). */
  releaseBuffer(buffer: Uint8Array): void {
    this.conn.releaseBuffer(buffer);
  }

  /**
   * call() with a buffer from allocBuffer() (the view it returned), of which the first `lenBytes`
   * (default: all) go without a copy. Ok: the transport owns it; Full: the caller keeps it.
   */
  callBuffer(method: number, buffer: Uint8Array, userData: U, lenBytes: number = buffer.length): SendStatus {
    if (method >>> 0 !== method || !(buffer instanceof Uint8Array)) checkArgs(method, buffer, undefined, "client.callBuffer");
    const slot = this.callSlot();
    if (slot < 0) return slot === -1 ? SEND_FULL : SEND_CLOSED;
    writeWireHeader(this.headBuf, KIND_REQUEST, method >>> 0, slot, this.gen[slot]!, 0, lenBytes);
    this.issue(slot, userData, method, lenBytes);
    let status: SendStatus;
    try {
      status = this.conn.trySendBuffer(this.head24, buffer, lenBytes);
    } catch (e) {
      if (this.state[slot] === SLOT_CALLBACK) this.freeSlot(slot); // a refused buffer takes no slot
      throw e;
    }
    return this.called(slot, status);
  }

  /** A slot for a hot-path call: its index, -1 when the window is full, -2 when closed. */
  private callSlot(): number {
    if (this.onResponse === null) throw new UsageError("client.call: set client.onResponse before the first call");
    if (this.closeErr !== null) return -2;
    return this.allocSlot();
  }

  /** Marks a hot-path call outstanding before its request is sent: a transport may deliver the response (or the close) inside the send (UCX's self transport does). */
  private issue(slot: number, userData: U, method: number, lenBytes: number): void {
    this.state[slot] = SLOT_CALLBACK;
    this.userData[slot] = userData;
    if (this.meter !== null) this.meter.start(slot, method, lenBytes);
  }

  /** After the send: gives the slot back when nothing was sent (Full, or Closed before it). */
  private called(slot: number, status: SendStatus): SendStatus {
    if (status === SEND_OK) return SEND_OK;
    if (this.state[slot] === SLOT_CALLBACK) {
      this.freeSlot(slot);
      return status;
    }
    // Already completed inside the send (the close's error is queued for poll()).
    return SEND_OK;
  }

  /** One-way message: no slot, no response. Same statuses as call(). */
  send(method: number, data: Uint8Array, appHeader?: Uint8Array): SendStatus {
    if (method >>> 0 !== method || !(data instanceof Uint8Array)) checkArgs(method, data, appHeader, "client.send");
    if (this.closeErr !== null) return SEND_CLOSED;
    return this.sendFrame(KIND_ONEWAY, method, 0, 0, data, appHeader);
  }

  /** Pushes queued sends and delivers completed hot-path calls to onResponse. Returns how many. */
  poll(): number {
    // With nothing queued, responses delivered inside conn.poll() go to onResponse at once (completeNow;
    // a throw is rethrown once the transport's delivery returns). Only over the segment transports
    // (trySendWords), whose delivery is a plain JS loop: ucx's is inside its worker's progress.
    const before = this.directDelivered;
    if (this.ready.length === 0 && this.sendsWords) this.direct = true;
    try {
      this.conn.poll();
    } finally {
      this.direct = false;
    }
    if (this.directThrew) {
      const e = this.directError;
      this.directThrew = false;
      this.directError = undefined;
      throw e;
    }
    // Requests and cancels waiting for room go out from here too (spin / blocking modes have no other driver).
    if ((this.waiting.length > 0 || this.cancels.length > 0) && this.closeErr === null) this.pump();
    let n = this.directDelivered - before;
    while (this.ready.length > 0) {
      const slot = this.ready.shift();
      const msg = this.ready.msg;
      const err = this.ready.err;
      const ud = this.userData[slot] as U;
      this.freeSlot(slot);
      try {
        this.onResponse!(ud, msg === null ? EMPTY_BYTES : msg.body, err);
      } finally {
        if (msg !== null) msg.release();
      }
      n++;
    }
    return n;
  }

  /** Resolves true when completions are ready or input may have arrived, false after timeoutMs. */
  wait(timeoutMs: number): Promise<boolean> {
    if (this.ready.length > 0 || this.closeErr !== null) return Promise.resolve(this.ready.length > 0);
    return this.conn.wait(timeoutMs);
  }

  /**
   * Convenient path: resolves with the response data (the caller owns it), or rejects with
   * TimeoutError, CancelledError, RemoteError (or the application's own class for a name
   * registered with registerError()), ProtocolError or TransportClosedError. When the window or
   * the transport is full it waits for room, within the deadline.
   */
  request(method: number, data: Uint8Array = EMPTY_BYTES, opts?: RequestOptions): Promise<Uint8Array> {
    return this.chain === null ? this.start(method, data, opts) : this.chain(method, data, opts);
  }

  /** A stream on `method` (stream/client-stream.ts): messages both ways under per-stream credit, in one slot of the window. UsageError for bad options. */
  stream(method: number, opts?: StreamOptions): ClientStream {
    return this.opener(method, opts);
  }

  /** Metrics of the calls made so far (ClientOptions.metrics); UsageError when metrics are off. */
  metrics(): RpcMetricsSnapshot {
    if (this.meter === null) throw new UsageError("client.metrics(): this client was made without metrics (ClientOptions.metrics)");
    return this.meter.metrics.snapshot();
  }

  /** request() past the interceptors. */
  private start(method: number, data: Uint8Array, opts: RequestOptions | undefined): Promise<Uint8Array> {
    let p: PendingRequest;
    try {
      // No closure per request: one executor binds the promise, `p` is the signal's listener, and
      // the client's deadline queue times it out (pending.ts). Metadata is encoded and checked here.
      p = checkRequest(this.conn, this.appHeaderLimit, this.defaultTimeoutMs, method, data, opts, this.aborted, this.sendDeadline);
    } catch (e) {
      return Promise.reject(e);
    }
    const signal = opts?.signal;
    if (this.closeErr !== null) return Promise.reject(this.closeErr); // after the close: no call, counted nowhere (as call()'s SEND_CLOSED)
    if (signal?.aborted) {
      const e = new CancelledError(`request for method ${method} aborted before it was sent`, { cause: signal.reason });
      this.meter?.record(method, e, 0, 0, performance.now()); // counted like the other calls that fail unsent
      return Promise.reject(e);
    }
    if (this.meter !== null) p.startMs = performance.now();
    const promise = armRequest(p, this.deadlines); // its promise, its deadline, its abort listener
    try {
      if (this.waiting.length > 0 || !this.tryStart(p)) {
        if (this.closeErr !== null) this.settle(p, null, this.closeErr);
        else this.waiting.push(keepCopies(p)); // queued for later: its own copy of the bytes
      }
    } catch (e) {
      this.settle(p, null, e as Error);
    }
    return promise;
  }

  close(): void {
    this.conn.close();
    if (this.closeErr === null) this.onClose(null);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- engine ----

  /** `md`: encoded metadata for the body's start (wire.ts), null for none. */
  private sendFrame(kind: number, method: number, slot: number, gen: number, data: Uint8Array, appHeader?: Uint8Array, md: Uint8Array | null = null): SendStatus {
    if (md !== null) {
      data = withMetadata(md, data);
      kind |= KIND_FLAG_METADATA;
    }
    const appLen = appHeader ? appHeader.length : 0;
    if (appLen > this.appHeaderLimit || data.length > sendLimit(this.conn.caps)) checkSizes(this.conn, this.appHeaderLimit, data, appHeader);
    writeWireHeader(this.headBuf, kind, method >>> 0, slot, gen, appLen, data.length);
    let head = this.head24;
    if (appLen > 0) {
      this.headBuf.set(appHeader!, WIRE_HEADER_BYTES);
      head = this.headBuf.subarray(0, WIRE_HEADER_BYTES + appLen);
    }
    return this.conn.trySend(head, data);
  }

  // ---- slots for streams (stream/) ----

  /** @internal a slot for `owner` (a stream), or -1: it waits in line behind those waiting already (slotReady() later), -2: closed. */
  openSlot(owner: SlotWaiter): number {
    if (this.closeErr !== null) return -2;
    const slot = this.waiting.length > 0 ? -1 : this.streamSlot(owner);
    if (slot < 0) this.waiting.push(owner);
    return slot;
  }

  /**
   * @internal sends a frame of `kind` for `owner`'s stream in `slot` (its current generation);
   * `md`: encoded metadata or null; `buffer`: `data` is a buffer of allocBuffer(), its first
   * lenBytes sent without a copy (STREAM_MSG). SEND_CLOSED once the slot is no longer owner's.
   */
  sendOn(owner: SlotOwner, kind: number, slot: number, method: number, data: Uint8Array, md: Uint8Array | null, buffer = false, lenBytes = data.length): SendStatus {
    if (this.closeErr !== null || this.state[slot] !== SLOT_STREAM || this.owners[slot] !== owner) return SEND_CLOSED;
    if (!buffer) return this.sendFrame(kind, method, slot, this.gen[slot]!, data, undefined, md);
    writeWireHeader(this.headBuf, KIND_STREAM_MSG, method >>> 0, slot, this.gen[slot]!, 0, lenBytes);
    return this.conn.trySendBuffer(this.head24, data, lenBytes);
  }

  /** @internal `owner`'s stream in `slot` is over; `cancel`: tell the server first (the slot waits for the cancel to go out). No-op once the slot is not owner's. */
  releaseSlot(owner: SlotOwner, slot: number, method: number, cancel: boolean): void {
    if (this.state[slot] !== SLOT_STREAM || this.owners[slot] !== owner) return;
    this.owners[slot] = undefined;
    if (!cancel || this.closeErr !== null) return this.freeSlot(slot);
    this.state[slot] = SLOT_CANCELLING;
    if (!this.cancels.push(slot, method)) this.room.later();
  }

  private freeSlot(slot: number): void {
    this.state[slot] = SLOT_FREE;
    this.userData[slot] = undefined;
    this.pending[slot] = undefined;
    this.freeSlots[this.freeTop++] = slot;
    if (this.waiting.length > 0) this.room.soon();
    else if (this.goaway && this.freeTop === this.window) queueMicrotask(this.closeIfIdle);
  }

  private onGoawayMessage(): void {
    if (this.goaway) return;
    this.goaway = true;
    queueMicrotask(this.closeIfIdle); // checked on a clean stack, after this delivery
    try {
      this.onGoaway?.(this);
    } catch (e) {
      console.error("hotpath client: onGoaway threw", e);
    }
  }

  /** After GOAWAY: closes the connection once no call is in flight, waiting or undelivered. */
  private readonly closeIfIdle = () => {
    if (this.closeErr !== null || this.freeTop !== this.window || this.waiting.length > 0 || this.ready.length > 0) return;
    this.conn.close();
    if (this.closeErr === null) this.onClose(new TransportClosedError(`rpc: connection to ${this.conn.peer} closed after the server sent GOAWAY (it is draining)`));
  };

  /** Sends a waiting request if a slot and transport room are there. */
  private tryStart(p: PendingRequest): boolean {
    const slot = this.allocSlot();
    if (slot < 0) return false;
    // Outstanding before the send: the response (or a close) may arrive inside it.
    this.state[slot] = SLOT_PROMISE;
    this.pending[slot] = p;
    p.slot = slot;
    if (this.meter !== null) this.meter.start(slot, p.method, p.data.length);
    const status = p.appHeader === undefined && this.sendsWords
      ? this.conn.trySendWords!(p.kind === KIND_REQUEST ? REQUEST_WORD0 : wireWord0(p.kind, 0), p.method, slot, this.gen[slot]!, p.data.length, 0, p.data)
      : this.sendFrame(p.kind, p.method, slot, this.gen[slot]!, p.data, p.appHeader);
    if (status === SEND_OK || p.done) return true;
    p.slot = -1;
    this.state[slot] = SLOT_FREE;
    this.pending[slot] = undefined;
    this.freeSlots[this.freeTop++] = slot;
    if (status === SEND_CLOSED) {
      this.settle(p, null, this.closeErr ?? new TransportClosedError(`rpc: connection to ${this.conn.peer} is closed`));
      return true;
    }
    this.room.later(); // transport full: retry from a clean stack once it may have room (room.ts)
    return false;
  }

  private pump(): void {
    if (this.cancels.length > 0 && !this.cancels.flush()) return this.room.later();
    while (this.waiting.length > 0) {
      const p = this.waiting.peek()!;
      if (p instanceof PendingRequest ? !p.done && !this.tryStart(p) : p.wantsSlot && this.freeTop === 0) return;
      this.waiting.shiftIf(p);
      if (!(p instanceof PendingRequest) && p.wantsSlot) p.slotReady(this.streamSlot(p)); // a stream's turn: a slot is free
    }
  }

  /** Timeout or abort: reject, tell the server (a cancel meeting a full transport waits for room), then free the slot; a late response, even inside the cancel's send, is dropped and counted. One waiting in line leaves it. */
  private abandon(p: PendingRequest, error: HotpathError): void {
    if (p.done) return;
    const slot = p.slot;
    if (slot >= 0 && this.pending[slot] === p) {
      this.state[slot] = SLOT_CANCELLING;
      this.pending[slot] = undefined;
      if (this.meter !== null) this.meter.end(slot, 0, error);
      this.settle(p, null, error);
      if (!this.cancels.push(slot, p.method)) this.room.later();
      return;
    }
    this.settle(p, null, error);
    dropCopies(p); // it waited in line: its copies go now, the entry at the line's next compaction
    this.waiting.left();
  }

  private settle(p: PendingRequest, value: Uint8Array | null, error: Error | null): void {
    // A request that failed before it was sent (waiting for a slot or room, or refused) counts too.
    if (error !== null && p.slot < 0 && this.meter !== null && !p.done) this.meter.record(p.method, error, 0, 0, p.startMs);
    settleRequest(p, this.deadlines, value, error);
  }

  private onMessage(msg: RxMessage): void {
    let kind: number;
    let raw: number; // the kind byte, with KIND_FLAG_METADATA
    try {
      raw = checkMessage(msg);
      kind = raw & KIND_MASK;
      if (kind === KIND_GOAWAY) {
        msg.release();
        return this.onGoawayMessage();
      }
      if (kind !== KIND_RESPONSE && kind !== KIND_ERROR && (kind < KIND_STREAM_MSG || kind > KIND_STREAM_END)) {
        throw new ProtocolError(`rpc client: received message kind ${kind}, expected a response or a stream frame`);
      }
    } catch (e) {
      return this.protocolAbort(e, msg);
    }
    // At the first response (never taking room a first call needs); a full transport: the next one retries.
    if (!this.announced) this.announced = announceGoaway(this.conn);
    const hw = msg.headWords;
    const slot = hw !== undefined ? hw[(msg.headOffset >> 2) + WIRE_WORD_CALL_SLOT]! >>> 0 : wireCallSlot(msg.headBuf, msg.headOffset);
    const gen = hw !== undefined ? hw[(msg.headOffset >> 2) + WIRE_WORD_CALL_GEN]! >>> 0 : wireCallGen(msg.headBuf, msg.headOffset);
    if (slot >= this.window || gen === 0) {
      return this.protocolAbort(new ProtocolError(`rpc client: response for call ${slot}/${gen}, which was never issued (window ${this.window})`), msg);
    }
    const state = this.state[slot]!;
    const cur = this.gen[slot]!;
    if (gen !== cur || (state !== SLOT_CALLBACK && state !== SLOT_PROMISE && state !== SLOT_STREAM)) {
      // Older generation or already finished: a late or duplicated response. A newer one was never issued.
      if (((cur - gen) >>> 0) >= 0x80000000 || cur === 0) {
        return this.protocolAbort(new ProtocolError(`rpc client: response for call ${slot}/${gen}, which was never issued`), msg);
      }
      this.lateResponses++;
      msg.release();
      return;
    }
    if (state === SLOT_STREAM) return this.owners[slot]!.onFrame(kind, msg); // the stream checks the kind
    if (kind !== KIND_RESPONSE && kind !== KIND_ERROR) return this.protocolAbort(new ProtocolError(`rpc client: a stream frame (kind ${kind}) for call ${slot}/${gen}, which is not a stream`), msg);
    const p = state === SLOT_PROMISE ? this.pending[slot]! : undefined;
    const bytesIn = msg.bodyLength; // the wire body, metadata included (as the server counts it)
    let md: Metadata | null = null; // for p.onMetadata, told once the call has settled
    if (raw !== kind) {
      try {
        ({ msg, md } = splitResponse(msg, p?.onMetadata !== undefined)); // the call gets the data after the metadata (a copy)
      } catch (e) {
        return this.protocolAbort(e, msg);
      }
    }
    let error: HotpathError | null;
    try {
      error = kind === KIND_ERROR ? remoteErrorOf(msg.body) : null;
    } catch (e) {
      return this.protocolAbort(e, msg);
    }
    if (state === SLOT_CALLBACK) {
      if (this.direct && error === null) return this.completeNow(slot, msg, bytesIn);
      if (this.meter !== null) this.meter.end(slot, bytesIn, error);
      this.state[slot] = SLOT_DONE;
      this.enqueueCompletion(slot, error === null ? msg : null, error);
      if (error !== null) msg.release();
      return;
    }
    if (this.meter !== null) this.meter.end(slot, bytesIn, error);
    this.freeSlot(slot);
    // A registered application error class comes back as itself (registerError()).
    const out = error !== null ? null : ownedBody(this.conn, msg.body); // memory the caller owns (pending.ts)
    msg.release();
    this.settle(p!, out, error === null ? null : rebuildRemoteError(error as RemoteError));
    // After the settle: a callback that aborts the call's signal or closes the client finds it done.
    if (p!.onMetadata !== undefined) tellMetadata(p!.onMetadata, md ?? Metadata.EMPTY);
  }

  /**
   * The transport skipped a response larger than this side accepts: fail that call (if it is
   * outstanding) with MessageTooLargeError and keep the connection; other calls are unaffected.
   */
  private onOversized(head: Uint8Array, bodyLength: number): void {
    const slot = oversizedSlot(this.conn, this.window, head); // aborts the connection for a head that names no call
    if (slot < 0) return;
    const state = this.state[slot]!;
    if (wireCallGen(head) !== this.gen[slot] || (state !== SLOT_CALLBACK && state !== SLOT_PROMISE && state !== SLOT_STREAM)) {
      this.lateResponses++;
      return;
    }
    const error = new MessageTooLargeError(
      `rpc client: a message for call ${slot}/${wireCallGen(head)} has ${bodyLength} bytes, more than this side's maxMessageBytes ${this.conn.caps.maxMessageBytes}; it was skipped`,
    );
    if (state === SLOT_STREAM) return this.owners[slot]!.onClose(error); // the stream fails; it releases its slot
    if (this.meter !== null) this.meter.end(slot, 0, error);
    if (state === SLOT_CALLBACK) {
      this.state[slot] = SLOT_DONE;
      this.enqueueCompletion(slot, null, error);
      return;
    }
    const p = this.pending[slot]!;
    this.freeSlot(slot);
    this.settle(p, null, error);
  }

  /** Inside poll(), nothing queued: onResponse now, as poll()'s loop would. */
  private completeNow(slot: number, msg: RxMessage, bytesIn: number): void {
    if (this.meter !== null) this.meter.end(slot, bytesIn, null);
    const ud = this.userData[slot] as U;
    this.freeSlot(slot);
    this.directDelivered++;
    try {
      this.onResponse!(ud, msg.body, null);
    } catch (e) {
      this.direct = false; // later responses queue; poll() rethrows this
      this.directThrew = true;
      this.directError = e;
    } finally {
      msg.release();
    }
  }

  private enqueueCompletion(slot: number, msg: RxMessage | null, error: HotpathError | null): void {
    this.ready.push(slot, msg, error);
    this.direct = false; // anything queued goes first: later responses queue behind it (arrival order)
  }

  private protocolAbort(e: unknown, msg: RxMessage): void {
    msg.release();
    if (!(e instanceof HotpathError)) throw e;
    this.conn.abort(e);
  }

  private onClose(error: HotpathError | null): void {
    if (this.closeErr !== null) return;
    const err = error ?? new TransportClosedError(`rpc: connection to ${this.conn.peer} closed locally`);
    this.closeErr = err;
    this.ready.ownQueued(); // their views go back now; copies wait for poll()
    for (let slot = 0; slot < this.window; slot++) {
      const state = this.state[slot];
      if ((state === SLOT_PROMISE || state === SLOT_CALLBACK) && this.meter !== null) this.meter.end(slot, 0, err);
      if (state === SLOT_PROMISE) {
        const p = this.pending[slot]!;
        this.freeSlot(slot);
        this.settle(p, null, err);
      } else if (state === SLOT_CALLBACK) {
        this.state[slot] = SLOT_DONE;
        this.enqueueCompletion(slot, null, err);
      } else if (state === SLOT_STREAM) {
        const owner = this.owners[slot]!;
        this.owners[slot] = undefined;
        this.freeSlot(slot);
        owner.onClose(err);
      }
    }
    for (const p of this.waiting.takeAll()) p instanceof PendingRequest ? this.settle(p, null, err) : p.onClose(err);
    this.cancels.flush(); // closed: frees the slots of cancels that waited for room
    this.deadlines.clear(); // every request settled: no timer left holding this client
  }
}
