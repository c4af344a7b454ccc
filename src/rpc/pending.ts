/**
 * Pieces of the client kept apart from client.ts: the state of one convenient-path request
 * (PendingRequest), the client's deadline queue (DeadlineQueue: one timer per client), the
 * cancels waiting for transport room (CancelQueue) and the argument checks every entry point shares.
 *
 * Contract: the checks throw UsageError naming the argument and its value; they allocate only
 * when they throw. Example: checkSizes(conn, 1000, data, undefined) throws when data is too big.
 * Threading: the client's thread.
 */

import { UsageError, type HotpathError } from "../errors.ts";
import { SEND_FULL, sendLimit, type Connection, type RxMessage, type SendStatus } from "../contract/transport.ts";
import { copyBytes, EMPTY_BYTES } from "../bytes.ts";
import { GOAWAY_HELLO_METHOD, KIND_CANCEL, WIRE_HEADER_BYTES, writeWireHeader } from "./wire.ts";
import { checkBytes, checkMethod, checkTimeout, describeValue } from "./validate.ts";

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

/** setTimeout's largest delay (a signed 32-bit ms count); longer deadlines re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;
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
 * request()'s argument checks (UsageError: method, data, appHeader, signal, timeoutMs, sizes);
 * returns the call's deadline in ms (0: none), `defaultTimeoutMs` when the options give none.
 */
export function checkRequest(conn: Connection, appHeaderLimit: number, defaultTimeoutMs: number, method: number, data: Uint8Array, opts: RequestOptions | undefined): number {
  checkArgs(method, data, opts?.appHeader, "client.request");
  const signal = opts?.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new UsageError(`client.request: signal must be an AbortSignal, got ${describeValue(signal)}`);
  const timeoutMs = opts?.timeoutMs === undefined ? defaultTimeoutMs : checkTimeout(opts.timeoutMs, "client.request");
  checkSizes(conn, appHeaderLimit, data, opts?.appHeader);
  return timeoutMs;
}

/** A request queued for room keeps copies of its bytes: the caller may reuse its buffers once request() returned. */
export function keepCopies(p: PendingRequest): PendingRequest {
  p.data = copyBytes(p.data);
  if (p.appHeader) p.appHeader = copyBytes(p.appHeader);
  return p;
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

export interface ClientOptions {
  /** Calls in flight at most (slots). Default 256. */
  window?: number;
  /** Deadline for request() when the call gives none, in ms ≥ 0. Default 30000; 0 or Infinity means none. */
  timeoutMs?: number;
}

export interface RequestOptions {
  /**
   * Rejects with TimeoutError after this long (and tells the server to cancel): ms ≥ 0, any
   * length (long deadlines re-arm their timer). 0 or Infinity: no deadline.
   */
  timeoutMs?: number;
  /** Aborting rejects with CancelledError and sends a cancel to the server. */
  signal?: AbortSignal;
  /** Fixed application header sent apart from the data. */
  appHeader?: Uint8Array;
}

/** Hot-path completion: `data` is valid only during the call; `error` is set for failed calls. */
export type OnResponse<U> = (userData: U, data: Uint8Array, error: HotpathError | null) => void;


/**
 * At close, the responses that arrived but wait in the client's completion queue (`msgs`, a ring
 * of `msgs.length` from `head`, `count` long) give their views back to the transport (a ring slot,
 * a read buffer, a receive slot: the connection may go away before the next poll(), or never see
 * one) and wait as owned copies instead, which that poll() still delivers. Cold path: allocates.
 */
export function ownQueued(msgs: (RxMessage | null)[], head: number, count: number): void {
  for (let k = 0, i = head; k < count; k++, i = i + 1 === msgs.length ? 0 : i + 1) {
    const msg = msgs[i];
    if (msg == null || msg instanceof OwnedMessage) continue;
    msgs[i] = new OwnedMessage(copyBytes(msg.body));
    msg.release();
  }
}

/** A response body the client owns (ownQueued): release() does nothing. */
class OwnedMessage implements RxMessage {
  readonly head = EMPTY_BYTES;
  readonly headBuf = EMPTY_BYTES;
  readonly headOffset = 0;
  readonly headLength = 0;
  constructor(readonly body: Uint8Array) {}
  get bodyLength(): number {
    return this.body.length;
  }
  release(): void {}
}
