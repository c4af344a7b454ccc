/**
 * Pieces of the client kept apart from client.ts: the state of one convenient-path request
 * (PendingRequest), the client's deadline queue (DeadlineQueue: one timer per client), the
 * cancels waiting for transport room (CancelQueue) and the argument checks every entry point shares.
 *
 * Contract: the checks throw UsageError naming the argument and its value; they allocate only
 * when they throw. Example: checkSizes(conn, 1000, data, undefined) throws when data is too big.
 * Threading: the client's thread.
 */

import { ProtocolError, TimeoutError, UsageError, type HotpathError } from "../errors.ts";
import { SEND_FULL, sendLimit, type Connection, type RxMessage, type SendStatus } from "../contract/transport.ts";
import { copyBytes, EMPTY_BYTES } from "../bytes.ts";
import { GOAWAY_HELLO_METHOD, KIND_CANCEL, KIND_ERROR, KIND_FLAG_METADATA, KIND_REQUEST, KIND_RESPONSE, KIND_STREAM_END, KIND_STREAM_MSG, WIRE_HEADER_BYTES, wireCallSlot, wireKind, withMetadata, writeWireHeader } from "./wire.ts";
import { checkBytes, checkMethod, checkTimeout, describeValue } from "./validate.ts";
import { MAX_DEADLINE_MS, Metadata, encodeMetadata, withRemainingDeadline, type MetadataInit } from "./metadata.ts";
import type { RpcMetrics } from "./metrics.ts";
import type { ClientStream, StreamCall } from "./stream/types.ts";

/**
 * One request() in flight or waiting for room: its promise, its place in the client's deadline
 * queue, and its abort hook. It is itself the signal's abort listener (handleEvent): no closure
 * per request.
 */
export class PendingRequest {
  slot = -1;
  done = false;
  /** When it times out (performance.now() ms) and its index in the DeadlineQueue's heap (-1: not queued). */
  deadline = Infinity;
  heapIndex = -1;
  listening = false; // registered as the signal's abort listener
  /** KIND_REQUEST, with KIND_FLAG_METADATA when `data` starts with metadata (wire.ts); who gets the response's. */
  kind = KIND_REQUEST;
  /** When request() took it (performance.now() ms), for the metrics of a call that fails before it is sent. */
  startMs = 0;
  onMetadata: ((md: Metadata) => void) | undefined = undefined;
  resolve!: (v: Uint8Array) => void;
  reject!: (e: Error) => void;
  constructor(
    readonly method: number,
    public data: Uint8Array,
    public appHeader: Uint8Array | undefined,
    readonly signal: AbortSignal | undefined,
    readonly timeoutMs: number,
    readonly onAbort: (p: PendingRequest) => void,
  ) {}

  /** The signal aborted (EventListener object): the client cancels this request. */
  handleEvent(): void {
    this.onAbort(this);
  }
}

/** Binds a new Promise to `p` (resolve / reject) without a closure per request: one shared executor. */
let binding: PendingRequest | null = null;
const bindExecutor = (resolve: (v: Uint8Array) => void, reject: (e: Error) => void) => {
  binding!.resolve = resolve;
  binding!.reject = reject;
};
export function promiseFor(p: PendingRequest): Promise<Uint8Array> {
  binding = p;
  const promise = new Promise<Uint8Array>(bindExecutor);
  binding = null;
  return promise;
}

/** A request's promise (promiseFor), with its deadline queued and its signal's abort listener added. */
export function armRequest(p: PendingRequest, deadlines: DeadlineQueue): Promise<Uint8Array> {
  const promise = promiseFor(p);
  if (p.timeoutMs > 0) deadlines.add(p, performance.now() + p.timeoutMs);
  if (p.signal) {
    p.listening = true;
    p.signal.addEventListener("abort", p);
  }
  return promise;
}

/**
 * Cancels of abandoned calls (timeout, abort) that wait for transport room, oldest first. A
 * cancelled call's slot is not reissued until its cancel went out (the server finds a call by
 * its slot), or the connection closed: `send` returns the cancel's status (SEND_CLOSED when
 * closed), `free` gives the slot back. flush() returns false when the transport is full (the
 * client retries when it has room). Threading: the client's thread; a flush() inside a send of
 * flush() (a transport that delivers re-entrantly) leaves the queue to the outer one.
 */
export class CancelQueue {
  private readonly items: number[] = []; // (slot, method) pairs from `head` on
  private head = 0;
  private flushing = false;

  constructor(
    private readonly send: (slot: number, method: number) => SendStatus,
    private readonly free: (slot: number) => void,
  ) {}

  get length(): number {
    return (this.items.length - this.head) >> 1;
  }

  /** Queues the cancel of the call in `slot` and sends what the transport takes; false when it is full. */
  push(slot: number, method: number): boolean {
    this.items.push(slot, method);
    return this.flush();
  }

  /** Sends queued cancels, oldest first, freeing each slot; false when the transport is full. */
  flush(): boolean {
    if (this.flushing) return true;
    this.flushing = true;
    try {
      const items = this.items;
      while (this.head < items.length) {
        const slot = items[this.head]!;
        if (this.send(slot, items[this.head + 1]!) === SEND_FULL) return false;
        this.head += 2;
        this.free(slot);
      }
      items.length = 0;
      this.head = 0;
      return true;
    } finally {
      this.flushing = false;
    }
  }
}

/** setTimeout's largest delay (a signed 32-bit ms count; a longer one fires at once); longer deadlines re-arm. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** A deadline this close (ms) counts as reached when the timer fires: timers may fire a little early. */
const DEADLINE_SLACK_MS = 1;

/**
 * The deadlines of one client's requests: a binary min-heap by deadline, armed with one timer
 * for the earliest, instead of a setTimeout per request (a Bun.serve front issues one request
 * per HTTP request, each with the default 30 s deadline, and almost all complete long before).
 * add() and remove() cost O(log n) in the requests queued and touch the timer only when the
 * earliest deadline moves earlier; the timer keeps the process alive only while a deadline is
 * queued (unref'd when empty), as a per-request timer did. A deadline past setTimeout's limit
 * fires early and re-arms. `onTimeout` runs from the timer, once per request past its deadline,
 * after the request left the queue. Threading: the client's thread.
 */
export class DeadlineQueue {
  private readonly heap: PendingRequest[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private armedAt = Infinity; // when the timer fires (performance.now() ms); Infinity: no timer
  private held = false; // the timer is ref'd (keeps the process alive)

  constructor(private readonly onTimeout: (p: PendingRequest) => void) {}

  get size(): number {
    return this.heap.length;
  }

  /** Queues `p` to time out at `at` (performance.now() ms). */
  add(p: PendingRequest, at: number): void {
    p.deadline = at;
    p.heapIndex = this.heap.length;
    this.heap.push(p);
    this.up(p.heapIndex);
    if (at < this.armedAt) this.arm(at);
    else if (!this.held) {
      this.held = true;
      this.timer!.ref();
    }
  }

  /** Takes `p` out (it settled); a no-op when it is not queued. */
  remove(p: PendingRequest): void {
    const i = p.heapIndex;
    if (i < 0) return;
    p.heapIndex = -1;
    const last = this.heap.pop()!;
    if (last !== p) {
      this.heap[i] = last;
      last.heapIndex = i;
      this.down(i);
      this.up(last.heapIndex);
    }
    if (this.heap.length === 0 && this.held) {
      this.held = false;
      this.timer?.unref();
    }
  }

  /** Stops the timer (the client closed: every request settled); a later add() arms a new one. */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedAt = Infinity;
    this.held = false;
  }

  private arm(at: number): void {
    clearTimeout(this.timer);
    this.armedAt = at;
    this.held = true;
    this.timer = setTimeout(this.fire, Math.min(Math.max(0, at - performance.now()), MAX_TIMER_MS));
  }

  private readonly fire = () => {
    this.timer = undefined;
    this.armedAt = Infinity;
    this.held = false;
    const now = performance.now();
    const heap = this.heap;
    while (heap.length > 0 && heap[0]!.deadline - now <= DEADLINE_SLACK_MS) {
      const p = heap[0]!;
      this.remove(p);
      this.onTimeout(p);
    }
    // onTimeout may have added a request (arming the timer for it): the earliest deadline decides.
    if (heap.length > 0 && heap[0]!.deadline < this.armedAt) this.arm(heap[0]!.deadline);
  };

  private up(i: number): void {
    const heap = this.heap;
    const p = heap[i]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const q = heap[parent]!;
      if (q.deadline <= p.deadline) break;
      heap[i] = q;
      q.heapIndex = i;
      i = parent;
    }
    heap[i] = p;
    p.heapIndex = i;
  }

  private down(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    const p = heap[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && heap[c + 1]!.deadline < heap[c]!.deadline) c++;
      const q = heap[c]!;
      if (q.deadline >= p.deadline) break;
      heap[i] = q;
      q.heapIndex = i;
      i = c;
    }
    heap[i] = p;
    p.heapIndex = i;
  }
}

/**
 * Tells the server this client understands GOAWAY (wire.ts: a CANCEL with generation 0 and
 * GOAWAY_HELLO_METHOD). Returns false when the transport is full (nothing sent). Own head
 * bytes: a send of the client may be under way on its header buffer. The client's thread.
 */
export function announceGoaway(conn: Connection): boolean {
  const head = new Uint8Array(WIRE_HEADER_BYTES);
  writeWireHeader(head, KIND_CANCEL, GOAWAY_HELLO_METHOD, 0, 0, 0, 0);
  return conn.trySend(head, EMPTY_BYTES) !== SEND_FULL;
}

/**
 * request()'s argument checks (UsageError: method, data, appHeader, signal, timeoutMs, parent,
 * metadata, sizes) and its PendingRequest: timeoutMs (0: none) is `defaultTimeoutMs` when the
 * options give none, cut to the parent's remaining deadline; the metadata is encoded, with
 * DEADLINE_KEY when the timeout was given or inherited. A parent whose deadline has passed is a
 * TimeoutError before anything is sent.
 */
export function checkRequest(conn: Connection, appHeaderLimit: number, defaultTimeoutMs: number, method: number, data: Uint8Array, opts: RequestOptions | undefined, onAbort: (p: PendingRequest) => void, sendDeadline = false): PendingRequest {
  checkArgs(method, data, opts?.appHeader, "client.request");
  const signal = opts?.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new UsageError(`client.request: signal must be an AbortSignal, got ${describeValue(signal)}`);
  let timeoutMs = opts?.timeoutMs === undefined ? defaultTimeoutMs : checkTimeout(opts.timeoutMs, "client.request");
  // The deadline travels when the client sends deadlines (ClientOptions.sendDeadline) or a parent's is passed on.
  const carry = callMetadata(opts, timeoutMs, sendDeadline, `client.request for method ${method}`);
  timeoutMs = carry.timeoutMs;
  const md = carry.md;
  const body = md === null ? data : withMetadata(md, data);
  checkSizes(conn, appHeaderLimit, body, opts?.appHeader);
  const p = new PendingRequest(method, body, opts?.appHeader, signal, timeoutMs, onAbort);
  if (md !== null) p.kind = KIND_REQUEST | KIND_FLAG_METADATA;
  const onMd = opts?.onResponseMetadata;
  if (onMd !== undefined && typeof onMd !== "function") throw new UsageError(`client.request: onResponseMetadata must be a function, got ${describeValue(onMd)}`);
  p.onMetadata = onMd;
  return p;
}

/**
 * The metadata a call sends (encoded, or null for none) and its timeout: `timeoutMs` cut to
 * `opts.parent`'s remaining deadline; DEADLINE_KEY carries the result on when the timeout was
 * `explicit` or the parent has a deadline. UsageError for bad metadata or a bad parent, TimeoutError when the
 * parent's deadline has passed. Shared by request() and streams.
 */
export function callMetadata(opts: { metadata?: MetadataInit | Metadata; parent?: { readonly deadline: number | undefined } } | undefined, timeoutMs: number, explicit: boolean, what: string): { md: Uint8Array | null; timeoutMs: number } {
  let md = opts?.metadata === undefined ? Metadata.EMPTY : Metadata.from(opts.metadata);
  const parent = opts?.parent;
  let inherited = false;
  if (parent !== undefined) {
    const deadline = parent === null || typeof parent !== "object" ? NaN : parent.deadline;
    if (deadline !== undefined) {
      if (typeof deadline !== "number" || Number.isNaN(deadline)) throw new UsageError(`${what}: parent must be a request handle or stream (with a numeric deadline), got ${describeValue(parent)}`);
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw new TimeoutError(`${what}: the parent call's deadline passed ${Math.round(-remaining)} ms ago; nothing was sent`);
      if (timeoutMs === 0 || timeoutMs === Infinity || remaining < timeoutMs) timeoutMs = remaining;
      // A parent's deadline always travels on (cut to this call's own timeout when that is shorter).
      inherited = true;
    }
  }
  if ((explicit || inherited) && timeoutMs > 0 && timeoutMs !== Infinity) {
    try {
      // Any length is a valid timeout: past what the key can say (~31,700 years) it travels as the most it can.
      md = withRemainingDeadline(md, Math.min(timeoutMs, MAX_DEADLINE_MS));
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      const why = inherited ? "the parent's deadline travels on" : "the call's timeoutMs travels (ClientOptions.sendDeadline)";
      throw new UsageError(`${what}: ${why} in the metadata, which has no room for it: ${e.message.replace(/^withRemainingDeadline: /, "")}`);
    }
  }
  return { md: md.size === 0 ? null : encodeMetadata(md), timeoutMs };
}

/** Calls a caller's onResponseMetadata; a throw is printed, never the client's. */
export function tellMetadata(onMetadata: (md: Metadata) => void, md: Metadata): void {
  try {
    onMetadata(md);
  } catch (e) {
    console.error("hotpath client: onResponseMetadata threw", e);
  }
}

/**
 * A received body as memory the caller owns: a copy out of transport memory (zeroCopy), a copy
 * of a small body rather than a pin of a whole read buffer, and always a plain Uint8Array (tcp
 * delivers Buffers). The message may be released after.
 */
export function ownedBody(conn: Connection, body: Uint8Array): Uint8Array {
  if (conn.caps.zeroCopy || body.byteLength * 2 < body.buffer.byteLength) return copyBytes(body);
  return body.constructor === Uint8Array ? body : new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
}

/**
 * The client slot an oversized message (skipped by the transport) is for, or -1 after aborting
 * the connection with ProtocolError when its head names no call a client has (too short, a kind
 * no server sends with a body, a slot past the window).
 */
export function oversizedSlot(conn: Connection, window: number, head: Uint8Array): number {
  const kind = head.length >= WIRE_HEADER_BYTES ? wireKind(head) & 0x7f : -1;
  const slot = kind < 0 ? -1 : wireCallSlot(head);
  if ((kind !== KIND_RESPONSE && kind !== KIND_ERROR && kind !== KIND_STREAM_MSG && kind !== KIND_STREAM_END) || slot >= window) {
    conn.abort(new ProtocolError(`rpc client: an oversized message (kind ${kind}, ${head.length}-byte head) for call slot ${slot}`));
    return -1;
  }
  return slot;
}

/**
 * What occupies a client slot besides a request: a stream (stream/). The client hands it the
 * slot's frames and its end; the owner gives the slot back with client.releaseSlot().
 */
export interface SlotOwner {
  /**
   * A frame for the slot's current generation: `kind` without the metadata flag (read it with
   * wireKind(msg.headBuf, msg.headOffset) & KIND_FLAG_METADATA); STREAM_MSG / CREDIT / END /
   * ERROR, or RESPONSE (a peer's mistake: the owner aborts). The owner releases `msg`.
   */
  onFrame(kind: number, msg: RxMessage): void;
  /**
   * The stream failed without a frame: the connection closed (the slot is already free), or a
   * message for it was too large for this side (the connection stays: release the slot with a cancel).
   */
  onClose(error: HotpathError): void;
}

/** A request queued for room keeps copies of its bytes: the caller may reuse its buffers once request() returned. */
export function keepCopies(p: PendingRequest): PendingRequest {
  p.data = copyBytes(p.data);
  if (p.appHeader) p.appHeader = copyBytes(p.appHeader);
  return p;
}

/** The request settled before it was sent: its copies (keepCopies()) go at once, though its entry may wait in the line a while. */
export function dropCopies(p: PendingRequest): void {
  p.data = EMPTY_BYTES;
  p.appHeader = undefined;
}

/** UsageError unless method is a u32, data a Uint8Array and appHeader (if given) one too. */
export function checkArgs(method: number, data: unknown, appHeader: unknown, what: string): void {
  checkMethod(method, what);
  checkBytes(data, what);
  if (appHeader !== undefined && !(appHeader instanceof Uint8Array)) throw new UsageError(`${what}: appHeader must be a Uint8Array, got ${describeValue(appHeader)}`);
}

/** UsageError when data exceeds the connection's send limit or appHeader `appHeaderLimit`. */
export function checkSizes(conn: Connection, appHeaderLimit: number, data: Uint8Array, appHeader: Uint8Array | undefined): void {
  const caps = conn.caps;
  if (data.length > sendLimit(caps)) {
    throw new UsageError(
      `rpc: ${data.length} bytes of data exceed the limit of ${sendLimit(caps)} bytes on ${conn.transport} (this side's maxMessageBytes ${caps.maxMessageBytes}, the peer's ${caps.peerMaxMessageBytes})`,
    );
  }
  if (appHeader && appHeader.length > appHeaderLimit) {
    throw new UsageError(`rpc: application header of ${appHeader.length} bytes exceeds ${appHeaderLimit} on ${conn.transport}`);
  }
}

// Client interceptors (interceptors.ts runs them).
/** One unary call as a client interceptor sees it. Replace fields by passing a new object to next(). */
export interface UnaryCall {
  readonly method: number;
  readonly data: Uint8Array;
  readonly metadata: Metadata;
  readonly opts: RequestOptions | undefined;
}

/** A unary call's outcome: the response bytes (the caller's) and the response's metadata. */
export interface UnaryResult {
  readonly data: Uint8Array;
  readonly metadata: Metadata;
}

export interface ClientInterceptor {
  unary?(call: UnaryCall, next: (call: UnaryCall) => Promise<UnaryResult>): Promise<UnaryResult>;
  /** Around client.stream(): may change the call, refuse it (throw), or wrap the stream next() returns. */
  stream?(call: StreamCall, next: (call: StreamCall) => ClientStream): ClientStream;
}

export interface ClientOptions {
  /** Calls in flight at most (slots; each open stream takes one). Default 256. */
  window?: number;
  /** Deadline for request() when the call gives none, in ms ≥ 0. Default 30000; 0 or Infinity means none. */
  timeoutMs?: number;
  /** Run around every request() and stream(), the first outermost (interceptors.ts). Never on the hot path (call()). */
  interceptors?: readonly ClientInterceptor[];
  /** Record calls, errors, bytes and latency per method (client.metrics()): true, or a registry to share. Default off. */
  metrics?: boolean | RpcMetrics;
  /**
   * Send each request's deadline to the server (`hp-deadline-ms`, about 20 bytes of metadata), so
   * its handler sees `h.deadline` and can pass what is left on (`parent: h`). Default false: a
   * request carries a deadline only when it has a parent with one.
   */
  sendDeadline?: boolean;
}

export interface RequestOptions {
  /**
   * Rejects with TimeoutError after this long (and tells the server to cancel): ms ≥ 0, any
   * length (long deadlines re-arm their timer; `hp-deadline-ms` carries at most MAX_DEADLINE_MS).
   * 0 or Infinity: no deadline.
   */
  timeoutMs?: number;
  /** Aborting rejects with CancelledError and sends a cancel to the server. */
  signal?: AbortSignal;
  /** Fixed application header sent apart from the data. */
  appHeader?: Uint8Array;
  /** Sent with the request (metadata.ts): UsageError (a rejected promise, nothing sent) when malformed or over the limits. */
  metadata?: MetadataInit | Metadata;
  /**
   * Gets the metadata of the response or error response (Metadata.EMPTY when it had none), once,
   * before the promise settles; not called when no response came (a timeout). Through client
   * interceptors: for what the chain settled with (unaryChain()). A throw of it is printed.
   */
  onResponseMetadata?: (md: Metadata) => void;
  /**
   * The call being served (a RequestHandle or server stream): this request's timeout is cut to
   * its remaining deadline, which travels on in `hp-deadline-ms`.
   */
  parent?: { readonly deadline: number | undefined };
}

/** Hot-path completion: `data` is valid only during the call; `error` is set for failed calls. */
export type OnResponse<U> = (userData: U, data: Uint8Array, error: HotpathError | null) => void;

