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
 * Threading: a Client belongs to the thread that created it.
 */

import { copyBytes, EMPTY_BYTES } from "../bytes.ts";
import { CancelledError, HotpathError, MessageTooLargeError, ProtocolError, RemoteError, TimeoutError, TransportClosedError, UsageError, rebuildRemoteError } from "../errors.ts";
import { SEND_CLOSED, SEND_FULL, SEND_OK, sendLimit, type Connection, type RxMessage, type SendStatus } from "../contract/transport.ts";
import { KIND_CANCEL, KIND_ERROR, KIND_GOAWAY, KIND_ONEWAY, KIND_REQUEST, KIND_RESPONSE, MAX_APP_HEADER_BYTES, WIRE_HEADER_BYTES } from "./wire.ts";
import { checkMessage, decodeErrorBody, wireCallGen, wireCallSlot, wireKind, wireWord0, writeWireHeader, WIRE_WORD_CALL_GEN, WIRE_WORD_CALL_SLOT } from "./wire.ts";
import { checkTimeout } from "./validate.ts";
import { announceGoaway, CancelQueue, checkArgs, checkRequest, checkSizes, DeadlineQueue, keepCopies, ownQueued, PendingRequest, promiseFor } from "./pending.ts";
export type { ClientOptions, OnResponse, RequestOptions } from "./pending.ts";
import type { ClientOptions, OnResponse, RequestOptions } from "./pending.ts";
export const DEFAULT_WINDOW = 256;
/** Slot indexes travel as u32, but the server indexes per-slot state by them: keep it modest. */
export const MAX_WINDOW = 1 << 16;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** How long a request blocked by a full transport waits (event-loop modes) or sleeps (spin / blocking: a timer) before it looks again. */
const FULL_RETRY_WAIT_MS = 10;

const REQUEST_WORD0 = wireWord0(KIND_REQUEST, 0); // a request's first header word, no app header

const SLOT_FREE = 0;
const SLOT_CALLBACK = 1;
const SLOT_PROMISE = 2;
const SLOT_DONE = 3; // completed, waiting in the completion queue for poll()
const SLOT_CANCELLING = 4; // abandoned (timeout, abort): not reissued until its cancel went out (CancelQueue)

export class Client<U = unknown> implements Disposable {
  readonly conn: Connection;
  readonly window: number;
  /** Invoked inline by poll() for every hot-path call that completed. */
  onResponse: OnResponse<U> | null = null;
  /** Responses dropped because their call had already timed out, been cancelled or completed. */
  lateResponses = 0;
  /** Runs once on GOAWAY, inline in message delivery (do not block); a throw is printed (console.error). */
  onGoaway: ((client: Client<U>) => void) | null = null;
  private goaway = false;
  private announced = false; // the GOAWAY announcement went out (announce())

  private readonly defaultTimeoutMs: number;
  private readonly gen: Uint32Array;
  private readonly state: Uint8Array;
  private readonly userData: (U | undefined)[];
  private readonly pending: (PendingRequest | undefined)[];
  private readonly freeSlots: Int32Array;
  private freeTop: number;
  // Completion ring for hot-path calls: at most one entry per slot, so `window` entries suffice.
  private readonly compSlot: Int32Array;
  private readonly compMsg: (RxMessage | null)[];
  private readonly compErr: (HotpathError | null)[];
  private compHead = 0;
  private compCount = 0;
  /** poll() is in conn.poll() with nothing queued; directDelivered counts completeNow() calls. */
  private direct = false;
  private directDelivered = 0;
  private directThrew = false; // and directError: what onResponse threw inside conn.poll()
  private directError: unknown;
  private readonly waiting: PendingRequest[] = [];
  /** request() deadlines: one timer for the client, not one per request (pending.ts). */
  private readonly deadlines = new DeadlineQueue((p) => this.abandon(p, new TimeoutError(`request for method ${p.method} to ${this.conn.peer} timed out after ${p.timeoutMs} ms`)));
  private readonly aborted = (p: PendingRequest) => this.abandon(p, new CancelledError(`request for method ${p.method} aborted`, { cause: p.signal!.reason }));
  private readonly cancels = new CancelQueue(
    (slot, method) => (this.closeErr !== null ? SEND_CLOSED : this.sendFrame(KIND_CANCEL, method, slot, this.gen[slot]!, EMPTY_BYTES)),
    (slot) => this.freeSlot(slot),
  );
  private pumpScheduled = false;
  private readonly headBuf = new Uint8Array(WIRE_HEADER_BYTES + MAX_APP_HEADER_BYTES);
  private readonly head24 = this.headBuf.subarray(0, WIRE_HEADER_BYTES);
  private closeErr: HotpathError | null = null;
  private readonly appHeaderLimit: number;
  private readonly sendsWords: boolean; // the transport takes the header as words (trySendWords)

  constructor(conn: Connection, opts: ClientOptions = {}) {
    const window = opts.window ?? DEFAULT_WINDOW;
    if (!Number.isInteger(window) || window < 1 || window > MAX_WINDOW) throw new UsageError(`client window ${window} must be an integer in 1..${MAX_WINDOW}`);
    this.conn = conn;
    this.window = window;
    this.defaultTimeoutMs = checkTimeout(opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, "client options");
    this.appHeaderLimit = Math.min(MAX_APP_HEADER_BYTES, conn.caps.maxHeadBytes - WIRE_HEADER_BYTES);
    this.sendsWords = typeof conn.trySendWords === "function";
    this.gen = new Uint32Array(window);
    this.state = new Uint8Array(window);
    this.userData = new Array(window).fill(undefined);
    this.pending = new Array(window).fill(undefined);
    this.freeSlots = new Int32Array(window);
    for (let i = 0; i < window; i++) this.freeSlots[i] = window - 1 - i;
    this.freeTop = window;
    this.compSlot = new Int32Array(window);
    this.compMsg = new Array(window).fill(null);
    this.compErr = new Array(window).fill(null);
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

  /** Calls in flight (sent, not yet delivered; abandoned ones until their cancel went out). */
  get inFlight(): number {
    return this.window - this.freeTop;
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
    this.issue(slot, userData);
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
    this.issue(slot, userData);
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

  /**
   * Marks a hot-path call outstanding before its request is sent: a transport may deliver the
   * response (or the connection's close) inside the send itself (UCX's self transport does).
   */
  private issue(slot: number, userData: U): void {
    this.state[slot] = SLOT_CALLBACK;
    this.userData[slot] = userData;
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
    if (this.compCount === 0 && this.sendsWords) this.direct = true;
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
    while (this.compCount > 0) {
      const i = this.compHead;
      const slot = this.compSlot[i]!;
      const msg = this.compMsg[i]!;
      const err = this.compErr[i]!;
      this.compMsg[i] = null;
      this.compErr[i] = null;
      this.compHead = i + 1 === this.window ? 0 : i + 1;
      this.compCount--;
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
    if (this.compCount > 0 || this.closeErr !== null) return Promise.resolve(this.compCount > 0);
    return this.conn.wait(timeoutMs);
  }

  /**
   * Convenient path: resolves with the response data (the caller owns it), or rejects with
   * TimeoutError, CancelledError, RemoteError (or the application's own class for a name
   * registered with registerError()), ProtocolError or TransportClosedError. When the window or
   * the transport is full it waits for room, within the deadline.
   */
  request(method: number, data: Uint8Array = EMPTY_BYTES, opts?: RequestOptions): Promise<Uint8Array> {
    const signal = opts?.signal;
    if (signal?.aborted) {
      return Promise.reject(new CancelledError(`request for method ${method} aborted before it was sent`, { cause: signal.reason }));
    }
    const appHeader = opts?.appHeader;
    let timeoutMs: number;
    try {
      timeoutMs = checkRequest(this.conn, this.appHeaderLimit, this.defaultTimeoutMs, method, data, opts);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.closeErr !== null) return Promise.reject(this.closeErr);
    // No closure per request: one executor binds the promise, `p` is the signal's listener, and
    // the client's deadline queue times it out (pending.ts).
    const p = new PendingRequest(method, data, appHeader, signal, timeoutMs, this.aborted);
    const promise = promiseFor(p);
    if (timeoutMs > 0) this.deadlines.add(p, performance.now() + timeoutMs);
    if (signal) {
      p.listening = true;
      signal.addEventListener("abort", p);
    }
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

  private sendFrame(kind: number, method: number, slot: number, gen: number, data: Uint8Array, appHeader?: Uint8Array): SendStatus {
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

  private allocSlot(): number {
    if (this.freeTop === 0) return -1;
    const slot = this.freeSlots[--this.freeTop]!;
    // Generations start at 1; 0 is never issued, so a response with generation 0 is bogus.
    this.gen[slot] = (this.gen[slot]! + 1) >>> 0 || 1;
    return slot;
  }

  private freeSlot(slot: number): void {
    this.state[slot] = SLOT_FREE;
    this.userData[slot] = undefined;
    this.pending[slot] = undefined;
    this.freeSlots[this.freeTop++] = slot;
    if (this.waiting.length > 0) this.schedulePump();
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
    if (this.closeErr !== null || this.freeTop !== this.window || this.waiting.length > 0 || this.compCount > 0) return;
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
    const status = p.appHeader === undefined && this.sendsWords
      ? this.conn.trySendWords!(REQUEST_WORD0, p.method, slot, this.gen[slot]!, p.data.length, 0, p.data)
      : this.sendFrame(KIND_REQUEST, p.method, slot, this.gen[slot]!, p.data, p.appHeader);
    if (status === SEND_OK || p.done) return true;
    p.slot = -1;
    this.state[slot] = SLOT_FREE;
    this.pending[slot] = undefined;
    this.freeSlots[this.freeTop++] = slot;
    if (status === SEND_CLOSED) {
      this.settle(p, null, this.closeErr ?? new TransportClosedError(`rpc: connection to ${this.conn.peer} is closed`));
      return true;
    }
    this.retryWhenRoom();
    return false;
  }

  /**
   * Transport full: retry once it drains or input arrives, from a clean stack (some transports
   * deliver or close inside wait()). Where wait() would hold the thread (spin / blocking), a
   * timer retries, and the application's own poll() loop sends too: the event loop never freezes.
   */
  private retryWhenRoom(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    if (this.conn.waitsOnEventLoop) queueMicrotask(this.waitThenPump);
    else setTimeout(this.retryPump, FULL_RETRY_WAIT_MS);
  }

  private readonly retryPump = () => {
    this.pumpScheduled = false;
    this.pump();
  };

  private readonly waitThenPump = () => {
    this.conn.wait(FULL_RETRY_WAIT_MS).then(this.retryPump);
  };

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(this.retryPump);
  }

  private pump(): void {
    if (this.cancels.length > 0 && !this.cancels.flush()) return this.retryWhenRoom();
    while (this.waiting.length > 0) {
      const p = this.waiting[0]!;
      if (!p.done && !this.tryStart(p)) return;
      this.waiting.shift();
    }
  }

  /**
   * Timeout or abort: reject, tell the server (a cancel that meets a full transport waits for
   * room), then free the slot; a late response, even inside the cancel's send, is dropped and counted.
   */
  private abandon(p: PendingRequest, error: HotpathError): void {
    if (p.done) return;
    const slot = p.slot;
    if (slot >= 0 && this.pending[slot] === p) {
      this.state[slot] = SLOT_CANCELLING;
      this.pending[slot] = undefined;
      this.settle(p, null, error);
      if (!this.cancels.push(slot, p.method)) this.retryWhenRoom();
      return;
    }
    this.settle(p, null, error);
  }

  private settle(p: PendingRequest, value: Uint8Array | null, error: Error | null): void {
    if (p.done) return;
    p.done = true;
    if (p.heapIndex >= 0) this.deadlines.remove(p);
    if (p.listening) p.signal!.removeEventListener("abort", p);
    if (error) p.reject(error);
    else p.resolve(value!);
  }

  private onMessage(msg: RxMessage): void {
    let kind: number;
    try {
      kind = checkMessage(msg);
      if (kind === KIND_GOAWAY) {
        msg.release();
        return this.onGoawayMessage();
      }
      if (kind !== KIND_RESPONSE && kind !== KIND_ERROR) throw new ProtocolError(`rpc client: received message kind ${kind}, expected a response`);
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
    if (gen !== cur || (state !== SLOT_CALLBACK && state !== SLOT_PROMISE)) {
      // Older generation or already finished: a late or duplicated response. A newer one was never issued.
      if (((cur - gen) >>> 0) >= 0x80000000 || cur === 0) {
        return this.protocolAbort(new ProtocolError(`rpc client: response for call ${slot}/${gen}, which was never issued`), msg);
      }
      this.lateResponses++;
      msg.release();
      return;
    }
    let error: HotpathError | null = null;
    if (kind === KIND_ERROR) {
      try {
        const { name, message } = decodeErrorBody(msg.body);
        error = new RemoteError(name, message);
      } catch (e) {
        return this.protocolAbort(e, msg);
      }
    }
    if (state === SLOT_CALLBACK) {
      if (this.direct && error === null) return this.completeNow(slot, msg);
      this.state[slot] = SLOT_DONE;
      this.enqueueCompletion(slot, error === null ? msg : null, error);
      if (error !== null) msg.release();
      return;
    }
    const p = this.pending[slot]!;
    this.freeSlot(slot);
    if (error !== null) {
      msg.release();
      // A registered application error class comes back as itself (registerError()).
      this.settle(p, null, rebuildRemoteError(error as RemoteError));
      return;
    }
    const body = msg.body;
    // Hand out memory the caller owns: copy out of transport memory, and copy small bodies
    // rather than pin a whole read buffer; always a plain Uint8Array (tcp delivers Buffers).
    const out =
      this.conn.caps.zeroCopy || body.byteLength * 2 < body.buffer.byteLength ? copyBytes(body) : body.constructor === Uint8Array ? body : new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    msg.release();
    this.settle(p, out, null);
  }

  /**
   * The transport skipped a response larger than this side accepts: fail that call (if it is
   * outstanding) with MessageTooLargeError and keep the connection; other calls are unaffected.
   */
  private onOversized(head: Uint8Array, bodyLength: number): void {
    if (head.length < WIRE_HEADER_BYTES) {
      this.conn.abort(new ProtocolError(`rpc client: an oversized message with a ${head.length}-byte head`));
      return;
    }
    const kind = wireKind(head);
    const slot = wireCallSlot(head);
    const gen = wireCallGen(head);
    if ((kind !== KIND_RESPONSE && kind !== KIND_ERROR) || slot >= this.window) {
      this.conn.abort(new ProtocolError(`rpc client: an oversized message of kind ${kind} for call ${slot}/${gen}`));
      return;
    }
    const state = this.state[slot]!;
    if (gen !== this.gen[slot] || (state !== SLOT_CALLBACK && state !== SLOT_PROMISE)) {
      this.lateResponses++;
      return;
    }
    const error = new MessageTooLargeError(
      `rpc client: the response for call ${slot}/${gen} has ${bodyLength} bytes, more than this side's maxMessageBytes ${this.conn.caps.maxMessageBytes}; it was skipped`,
    );
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
  private completeNow(slot: number, msg: RxMessage): void {
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
    let i = this.compHead + this.compCount;
    if (i >= this.window) i -= this.window;
    this.compSlot[i] = slot;
    this.compMsg[i] = msg;
    this.compErr[i] = error;
    this.compCount++;
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
    ownQueued(this.compMsg, this.compHead, this.compCount); // their views go back now; copies wait for poll()
    for (let slot = 0; slot < this.window; slot++) {
      const state = this.state[slot];
      if (state === SLOT_PROMISE) {
        const p = this.pending[slot]!;
        this.freeSlot(slot);
        this.settle(p, null, err);
      } else if (state === SLOT_CALLBACK) {
        this.state[slot] = SLOT_DONE;
        this.enqueueCompletion(slot, null, err);
      }
    }
    for (const p of this.waiting.splice(0)) this.settle(p, null, err);
    this.cancels.flush(); // closed: frees the slots of cancels that waited for room
    this.deadlines.clear(); // every request settled: no timer left holding this client
  }
}
