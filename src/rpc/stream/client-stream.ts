/**
 * The client's side of a stream (client.stream(): types.ts ClientStream). A stream holds one
 * slot of the client's window (a SlotOwner: client.openSlot / sendOn / releaseSlot) for its
 * whole life; its frames carry that call id. While the window is full it waits for a slot in
 * one line with the client's requests (first come, first served: SlotWaiter).
 *
 * Contract: STREAM_START goes first, with this side's receive window in its body and the
 * stream's metadata (callMetadata(): `hp-deadline-ms` when it has a deadline); the client may
 * then send STREAM_INITIAL_CREDIT before the server's first CREDIT. The stream ends cleanly at
 * the server's END (its metadata: `trailers`), fails at the server's ERROR (RemoteError or the
 * registered class; "CancelledError" / "TimeoutError" come back as those classes), at the
 * connection's close (TransportClosedError), at an oversized message (MessageTooLargeError),
 * at cancel() / the signal / an early iterator return() (CancelledError) or the deadline
 * (TimeoutError): the last four send CANCEL. The slot goes back when the stream finishes.
 * The client's thread.
 *
 * Example:
 *   const s = client.stream(M_CHAT, { timeoutMs: 5000 });
 *   await s.send(hello); s.end();
 *   for await (const m of s) use(m);
 */

import { CancelledError, HotpathError, ProtocolError, RemoteError, TimeoutError, TransportClosedError, UsageError, rebuildRemoteError } from "../../errors.ts";
import { SEND_CLOSED, SEND_FULL, SEND_OK, type Connection, type RxMessage, type SendStatus } from "../../contract/transport.ts";
import { Metadata, decodeMetadata } from "../metadata.ts";
import { callMetadata, type ClientInterceptor, type SlotOwner } from "../pending.ts";
import { checkMethod, checkTimeout, describeValue } from "../validate.ts";
import { KIND_ERROR, KIND_FLAG_METADATA, KIND_STREAM_CREDIT, KIND_STREAM_END, KIND_STREAM_MSG, KIND_STREAM_START, METADATA_LEN_BYTES, decodeErrorBody, metadataEnd, wireKind } from "../wire.ts";
import type { CallMeter } from "../meter.ts";
import { StreamBase } from "./base.ts";
import { STREAM_INITIAL_CREDIT, checkWindow, creditBody } from "./credit.ts";
import { RoomQueue } from "./room-queue.ts";
import { StreamTimer } from "./timer.ts";
import type { ClientStream, StreamCall, StreamOptions } from "./types.ts";
export type { ClientStream, StreamOptions } from "./types.ts";

/** What a stream needs of its client (Client implements it). */
export interface StreamHost {
  readonly conn: Connection;
  readonly closed: boolean;
  /** Where a finished stream is recorded as one call (ClientOptions.metrics), or null. */
  readonly meter: CallMeter | null;
  /** A slot now; -1: `owner` waits in line and slotReady() gets it; -2: closed. */
  openSlot(owner: SlotWaiter): number;
  sendOn(owner: SlotOwner, kind: number, slot: number, method: number, data: Uint8Array, md: Uint8Array | null, buffer?: boolean, lenBytes?: number): SendStatus;
  releaseSlot(owner: SlotOwner, slot: number, method: number, cancel: boolean): void;
  /** The line openSlot() put a waiting owner in: left() when it finishes there. */
  readonly waiting: { left(): void };
}

/** A stream waiting in the client's line for a slot (behind the requests and streams before it). */
export interface SlotWaiter extends SlotOwner {
  /** False once it finished while waiting: it leaves the line without a slot. */
  readonly wantsSlot: boolean;
  /** Its turn came: `slot` is its own now. */
  slotReady(slot: number): void;
}

/** One RoomQueue per client: its streams' blocked frames retry in the order they blocked. */
const roomQueues = new WeakMap<StreamHost, RoomQueue>();

/**
 * The error a stream's ERROR frame (name, message) stands for: CancelledError and TimeoutError
 * as themselves, a registered class as itself (registerError()), else RemoteError.
 */
export function streamError(name: string, message: string): Error {
  if (name === "CancelledError") return new CancelledError(message);
  if (name === "TimeoutError") return new TimeoutError(message);
  return rebuildRemoteError(new RemoteError(name, message));
}

export class ClientStreamImpl extends StreamBase implements ClientStream, SlotWaiter {
  readonly method: number;
  trailers: Metadata | null = null;
  private slot = -1;
  private readonly startBody: Uint8Array;
  private readonly startMd: Uint8Array | null;
  private readonly timeoutMs: number;
  private timer: StreamTimer | null = null;
  private readonly userSignal: AbortSignal | undefined;
  private startSent = false;
  private inLine = false; // waiting in the client's line for a slot
  private roomQueue: RoomQueue | null = null; // the client's (roomQueues), once looked up
  private readonly startMs = performance.now();
  private readonly onAbort = () => this.fail(new CancelledError(`stream for method ${this.method} aborted`, { cause: this.userSignal!.reason }), true);

  constructor(
    private readonly host: StreamHost,
    method: number,
    opts: StreamOptions | undefined,
  ) {
    const what = `client.stream for method ${method}`;
    checkMethod(method, "client.stream");
    if (opts !== undefined && (opts === null || typeof opts !== "object")) throw new UsageError(`${what}: options must be an object, got ${describeValue(opts)}`);
    const window = checkWindow(opts?.window, what);
    const signal = opts?.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new UsageError(`${what}: signal must be an AbortSignal, got ${describeValue(signal)}`);
    let timeoutMs = opts?.timeoutMs === undefined ? 0 : checkTimeout(opts.timeoutMs, what);
    let carried: { md: Uint8Array | null; timeoutMs: number } | null = null;
    let early: Error | null = null;
    try {
      carried = callMetadata(opts, timeoutMs, opts?.timeoutMs !== undefined, what);
    } catch (e) {
      if (!(e instanceof TimeoutError)) throw e; // UsageError: the caller's bug, thrown here
      early = e; // the parent's deadline has passed: a stream that failed at once
    }
    super(STREAM_INITIAL_CREDIT, window, window);
    this.method = method;
    this.startBody = creditBody(window.messages, window.bytes);
    this.startMd = carried?.md ?? null;
    this.timeoutMs = carried?.timeoutMs ?? timeoutMs;
    this.userSignal = signal;
    this.blocked = true; // START first
    if (early !== null) {
      this.fail(early, false);
      return;
    }
    if (signal?.aborted) {
      this.fail(new CancelledError(`stream for method ${method} aborted before it started`, { cause: signal.reason }), false);
      return;
    }
    signal?.addEventListener("abort", this.onAbort);
    if (this.timeoutMs > 0 && this.timeoutMs !== Infinity) {
      this.timer = new StreamTimer(this.startMs + this.timeoutMs, () => this.fail(new TimeoutError(`stream for method ${method} to ${host.conn.peer} timed out after ${Math.round(this.timeoutMs)} ms`), true));
    }
    this.open();
  }

  /** Takes a slot (or waits in the client's line for one) and sends START. */
  private open(): void {
    const slot = this.host.openSlot(this);
    if (slot === -2) return this.fail(new TransportClosedError(`rpc: connection to ${this.host.conn.peer} is closed`), false);
    if (slot >= 0) this.slotReady(slot);
    else if (slot === -1) this.inLine = true;
  }

  get wantsSlot(): boolean {
    return !this.finished;
  }

  slotReady(slot: number): void {
    this.inLine = false;
    this.slot = slot;
    this.kick();
  }

  protected get conn(): Connection {
    return this.host.conn;
  }

  protected rooms(): RoomQueue {
    if (this.roomQueue !== null) return this.roomQueue;
    let q = roomQueues.get(this.host);
    if (q === undefined) roomQueues.set(this.host, (q = new RoomQueue(this.host.conn)));
    return (this.roomQueue = q);
  }

  protected override flushControl(): SendStatus {
    if (this.slot < 0) return SEND_OK; // still waiting for a slot (blocked stays)
    const s = this.host.sendOn(this, KIND_STREAM_START, this.slot, this.method, this.startBody, this.startMd);
    if (s !== SEND_FULL) {
      this.blocked = false;
      this.startSent = s === SEND_OK;
    }
    return s;
  }

  protected sendFrame(kind: number, data: Uint8Array, md: Uint8Array | null): SendStatus {
    return this.slot < 0 ? SEND_CLOSED : this.host.sendOn(this, kind, this.slot, this.method, data, md);
  }

  protected sendBufferFrame(buffer: Uint8Array, lenBytes: number): SendStatus {
    return this.slot < 0 ? SEND_CLOSED : this.host.sendOn(this, KIND_STREAM_MSG, this.slot, this.method, buffer, null, true, lenBytes);
  }

  protected endSent(): void {}

  protected closedError(): HotpathError {
    return new TransportClosedError(`rpc: connection to ${this.host.conn.peer} is closed`);
  }

  protected onFinish(error: Error | null, tellPeer: boolean): void {
    this.timer?.clear();
    this.host.meter?.record(this.method, error, this.bytesIn, this.bytesOut, this.startMs);
    this.userSignal?.removeEventListener("abort", this.onAbort);
    if (this.inLine) this.host.waiting.left(); // its entry (and nothing else of it) stays until the line compacts
    if (this.slot < 0) return;
    // A stream the server knows of (START sent) and this side ended is cancelled there.
    this.host.releaseSlot(this, this.slot, this.method, tellPeer && this.startSent && !this.host.closed);
  }

  /** SlotOwner: a frame of this stream's call (the client checked its generation). */
  onFrame(kind: number, msg: RxMessage): void {
    try {
      if (kind === KIND_STREAM_MSG) return this.onMessage(msg);
      const flagged = (wireKind(msg.headBuf, msg.headOffset) & KIND_FLAG_METADATA) !== 0;
      const body = msg.body;
      if (kind === KIND_STREAM_CREDIT) {
        this.onCredit(body);
      } else if (kind === KIND_STREAM_END) {
        const end = flagged ? metadataEnd(body) : 0;
        this.trailers = flagged ? decodeMetadata(body.subarray(METADATA_LEN_BYTES, end)) : Metadata.EMPTY;
        this.peerEnded();
        this.finishOk();
      } else if (kind === KIND_ERROR) {
        const { name, message } = decodeErrorBody(flagged ? body.subarray(metadataEnd(body)) : body);
        this.fail(streamError(name, message), false, true); // what the server sent before reads first
      } else {
        throw new ProtocolError(`rpc client: a message of kind ${kind} for stream ${this.slot} (method ${this.method})`);
      }
      msg.release();
    } catch (e) {
      if (kind !== KIND_STREAM_MSG) msg.release();
      if (!(e instanceof HotpathError)) throw e;
      this.host.conn.abort(e); // the close fails this stream too
    }
  }

  /** SlotOwner: the connection closed (the slot is free already) or a message for it was too large. */
  onClose(error: HotpathError): void {
    this.fail(error, true);
  }
}

/** client.stream() past the interceptors. */
export type StreamOpener = (method: number, opts: StreamOptions | undefined) => ClientStream;

/**
 * client.stream() through ClientOptions.interceptors (their `stream` members, the first
 * outermost); `open` when none has one. Each gets the call (method, metadata, options) and
 * next(); what it returns is the caller's stream (it may wrap next()'s).
 */
export function streamChain(interceptors: readonly ClientInterceptor[] | undefined, open: StreamOpener): StreamOpener {
  const list = (interceptors ?? []).filter((ic) => typeof ic.stream === "function");
  if (list.length === 0) return open;
  let next = (call: StreamCall): ClientStream => open(call.method, { ...call.opts, metadata: call.metadata });
  for (let i = list.length - 1; i >= 0; i--) {
    const ic = list[i]!;
    const inner = next;
    next = (call) => ic.stream!(call, inner);
  }
  const outer = next;
  return (method, opts) => outer({ method, metadata: opts?.metadata === undefined ? Metadata.EMPTY : Metadata.from(opts.metadata), opts });
}
