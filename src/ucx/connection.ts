/**
 * UcxConnection: the Transport contract over one UCP endpoint (data path).
 *
 * Send: the head goes as the Active Message header, the body as AM data; UCX picks eager or
 * rendezvous. UCX reads both until the send completes. While nothing of the connection is in
 * flight, a send is first offered to UCX for completion inside the call, straight from the
 * caller's memory (UcpEndpoint.amSendNow: UCX's short messages); otherwise trySend() copies
 * head and body, up to STAGED_MAX_BYTES into a pooled staging buffer reused when the send
 * completes, above it into buffers kept until then; allocBuffer() + trySendBuffer() hand a
 * buffer over without a copy. No allocation per send on the first two paths. Backpressure:
 * while more than `maxInFlightBytes` (or `maxInFlightSends`) are not yet completed, sends
 * report Full. Limits: the handshake (hello.ts) tells each side what the other accepts; a body
 * above sendLimit(caps) or a head above the peer's maxHeadBytes is refused with UsageError
 * before anything is sent.
 *
 * Receive (rx.ts): one JSCallback per message (the AM handler), delivered straight to the
 * receiver when nothing waits before it. Eager bodies are copied into pooled messages (one
 * memcpy for head and body), or used in place when UCX lends its buffer (FLAG_DATA, 4 KiB and
 * more: the callback returns UCS_INPROGRESS while the receiver holds the message, release()
 * detaches the view and calls ucp_am_data_release; bounded per worker); rendezvous data is
 * received (ucp_am_recv_data_nbx) straight into a buffer the message owns. `caps.zeroCopy` is
 * true: bodies are transport memory, valid until release(). Closing the connection releases
 * what its receiver still holds of UCX's memory (those views read as empty). Messages are
 * delivered in arrival order, a rendezvous message holding back those behind it until its data
 * is in. A body above this side's maxMessageBytes whose head is within maxHeadBytes is skipped
 * (eager: never copied; rendezvous: never received, which completes the peer's send) and
 * reported, in order, to `Receiver.onOversized`; without that hook, or with an oversized head,
 * the connection aborts with ProtocolError. An exception thrown by the receiver closes the
 * connection with it.
 *
 * Handshake (handshake.ts): until it passed, nothing is delivered and nothing may be sent; a
 * message from the peer before then is a ProtocolError (the server refuses that endpoint).
 *
 * RMA: only a connection whose runtime has RMA (`ucx: { rma: true }`) offers it (`caps.rma`);
 * see rma.ts for what a registered region does and does not protect.
 *
 * Failure: UCX reports a dead or departed peer through the endpoint's error callback (its
 * connection manager notices the socket close even in UCP_ERR_HANDLING_MODE_NONE, which keeps
 * shared memory for same-host peers); in the worker-address wire-up, which has no connection
 * manager, the close of the connection's socket does (address-exchange.ts). Every pending
 * operation then fails with TransportClosedError.
 *
 * Threading: the thread that made the connection (its runtime's). Callbacks from UCX run
 * inside the worker's progress on that thread.
 */

import { describeThrown, HotpathError, ProtocolError, TransportClosedError, UsageError } from "../errors.ts";
import { UCP } from "../ffi/ucp-layout.ts";
import { copyOut, type UcpEndpoint } from "../ffi/ucp.ts";
import { bufferPrefix, oversizedSendMessage, sendLimit, SEND_CLOSED, SEND_FULL, SEND_OK, type Capabilities, type Connection, type Receiver, type SendStatus, type WaitPolicy } from "../contract/transport.ts";
import { MAX_HANDSHAKE_BYTES, type ClientHandshake, type ServerHandshake } from "./handshake.ts";
import type { Hello } from "./hello.ts";
import { LocalRegion, RemoteRegion } from "./rma.ts";
import { AM_DATA, DEFAULT_UCX_SPIN_NS, type AmSink, type UcxRuntime } from "./runtime.ts";
import { POOLED_BODY_BYTES, POOLED_HEAD_BYTES, type UcxRxMessage } from "./rx.ts";
import { IMMEDIATE_MAX_BYTES, type SendStage, STAGED_MAX_BYTES, StagePool } from "./tx.ts";

export type UcxWaitMode = "spin" | "async" | "adaptive";

/** A failed endpoint's requests still in flight this long after its close are given up: UCX completes what it can within a few progress rounds. */
const ABANDON_AFTER_MS = 2000;
/** A graceful close waits this long at most for the endpoint's requests to finish (a live peer acknowledges a rendezvous within a few round trips). */
const CLOSE_DRAIN_MS = 2000;
/**
 * Bytes of sends in flight before sends report Full: several 1 MiB rendezvous messages of
 * headroom at any latency. Also the most a failed connection's given-up sends can leave held
 * for UCX (UcpWorker `detached`).
 */
export const DEFAULT_UCX_MAX_IN_FLIGHT_BYTES = 64 << 20;
/** Sends in flight before Full: bounds the worker's request tables per connection. */
const DEFAULT_UCX_MAX_IN_FLIGHT_SENDS = 4096;
/** A message skipped for its size, waiting in the queue for its turn to be reported. */
class Oversized {
  constructor(
    readonly head: Uint8Array,
    readonly bodyLength: number,
  ) {}
}

export interface UcxConnectionOptions {
  maxMessageBytes: number;
  maxHeadBytes: number;
  peer: string;
  maxInFlightBytes?: number;
  maxInFlightSends?: number;
  onClosed?: () => void;
}

type MutableCaps = { -readonly [K in keyof Capabilities]: Capabilities[K] };

export class UcxConnection implements Connection, AmSink {
  readonly transport = "ucx";
  readonly caps: Capabilities;
  readonly peer: string;
  closed = false;
  closeError: HotpathError | null = null;

  private receiver: Receiver | null = null;
  /** Arrived messages in order; null marks a rendezvous still receiving. */
  private readonly queue: Array<UcxRxMessage | Oversized | null> = [];
  private queueHead = 0;
  private delivering = false;
  private mode: UcxWaitMode = "adaptive";
  private spinNs = DEFAULT_UCX_SPIN_NS;
  private inFlightBytes = 0;
  private inFlightSends = 0;
  private readonly maxInFlightBytes: number;
  private readonly maxInFlightSends: number;
  /** The largest head the peer accepts (its hello); until then this side's own limit. */
  private peerMaxHeadBytes: number;
  private readonly regions = new Set<LocalRegion | RemoteRegion>();

  constructor(
    readonly rt: UcxRuntime,
    readonly ep: UcpEndpoint,
    private readonly opts: UcxConnectionOptions,
  ) {
    this.peer = opts.peer;
    this.maxInFlightBytes = opts.maxInFlightBytes ?? DEFAULT_UCX_MAX_IN_FLIGHT_BYTES;
    this.maxInFlightSends = opts.maxInFlightSends ?? DEFAULT_UCX_MAX_IN_FLIGHT_SENDS;
    this.peerMaxHeadBytes = opts.maxHeadBytes;
    this.caps = {
      maxInlineBytes: 0,
      maxMessageBytes: opts.maxMessageBytes,
      peerMaxMessageBytes: opts.maxMessageBytes,
      maxHeadBytes: opts.maxHeadBytes,
      // Received bodies are views of transport memory (pooled buffers, UCX's own in place): the
      // layer above copies what it keeps past release(). allocBuffer's memory is sent as is.
      zeroCopy: true,
      rma: rt.rma,
      sameHostOnly: false,
    } satisfies MutableCaps;
    rt.sinks.set(ep.handle, this);
  }

  get wantsProgress(): boolean {
    return !this.closed && (this.receiver !== null || this.lingerTimer !== null) && this.mode !== "spin";
  }

  setReceiver(receiver: Receiver): void {
    this.receiver = receiver;
    if (this.closed) return receiver.onClose(this.closeError);
    this.deliver();
    if (this.wantsProgress) this.rt.schedule();
  }

  /** Throws UsageError for a policy ucx cannot follow (before anything is set up with it). */
  static checkWaitPolicy(policy: Partial<WaitPolicy & { mode: string }>): void {
    if (policy.mode !== undefined && !["spin", "async", "adaptive"].includes(policy.mode)) throw new UsageError(`ucx wait mode "${policy.mode}" is not spin, async or adaptive`);
    if (policy.spinNs !== undefined && !(policy.spinNs >= 0 && policy.spinNs <= Number.MAX_SAFE_INTEGER)) throw new UsageError(`ucx spinNs ${policy.spinNs} must be a number of nanoseconds ≥ 0`);
  }

  /** This connection's policy only (the runtime's other connections keep theirs). */
  setWaitPolicy(policy: Partial<WaitPolicy & { mode: UcxWaitMode }>): void {
    UcxConnection.checkWaitPolicy(policy);
    if (policy.mode !== undefined) this.mode = policy.mode;
    if (policy.spinNs !== undefined) this.spinNs = policy.spinNs;
    if (this.wantsProgress) this.rt.schedule();
  }

  /** This connection's wait policy. */
  get waitPolicy(): { mode: UcxWaitMode; spinNs: number } {
    return { mode: this.mode, spinNs: this.spinNs };
  }

  /**
   * True unless this connection's wait mode is "spin": in "async" / "adaptive" wait() spins at
   * most spinNs and then parks on the event loop (the runtime's pump and event fd), while in
   * "spin" it spins the thread for its whole timeout and the worker progresses only from
   * poll() / wait(). Follows setWaitPolicy(); read it on the connection's thread.
   */
  get waitsOnEventLoop(): boolean {
    return this.mode !== "spin";
  }

  // ---------------------------------------------------------------- handshake (setup.ts)

  /** @internal the handshake under way (handshake.ts); null once it passed or failed. */
  handshake: ServerHandshake | ClientHandshake | null = null;
  /** @internal the handshake passed: messages flow both ways. */
  established = false;
  /** Set while the connection waits for its peer to close after a refusal (lingerClose). */
  private lingerTimer: ReturnType<typeof setTimeout> | null = null;

  /** @internal the handshake passed: learn the peer's limits (its hello) and open the data path. */
  establish(h: Hello): void {
    (this.caps as MutableCaps).peerMaxMessageBytes = h.maxMessageBytes;
    this.peerMaxHeadBytes = h.maxHeadBytes;
    this.established = true;
    this.handshake = null;
    this.rt.waiters.wake(true); // a connect() sleeping until its handshake ends (setup.ts)
  }

  /** @internal sends a handshake message (hello.ts); UCX holds `bytes` until the send completes. */
  sendControl(id: number, bytes: Uint8Array): void {
    if (this.closed) return;
    this.ep.amSend(id, bytes, null, () => {});
    this.sent();
  }

  /**
   * @internal after a refusal this side sent: nothing more is delivered or handled, and the
   * endpoint closes when the peer closes it (its error callback) or after `ms`, so the peer
   * reads the refusal before it sees the disconnect. Idempotent.
   */
  lingerClose(ms: number): void {
    if (this.closed || this.lingerTimer !== null) return;
    this.handshake = null;
    this.lingerTimer = setTimeout(() => this.close(), ms);
    if (this.wantsProgress) this.rt.schedule();
  }

  // ---------------------------------------------------------------- send

  trySend(head: Uint8Array, body?: Uint8Array | null): SendStatus {
    if (this.closed || !this.established) return SEND_CLOSED;
    const bl = body ? body.length : 0;
    this.checkSize(head.length, bl);
    const now = this.trySendNow(head, bl > 0 ? body! : null, bl);
    if (now !== SEND_FULL) return now;
    if (this.isFull(bl)) return SEND_FULL;
    if (bl <= STAGED_MAX_BYTES && head.length <= POOLED_HEAD_BYTES) {
      const stage = this.stages.take(bl);
      stage.fill(head, bl > 0 ? body! : null, bl);
      this.inFlightBytes += stage.bytes;
      this.inFlightSends++;
      // The worker keeps the stage (and so its views) while the send is in flight.
      this.ep.amSend(AM_DATA, stage.head, stage.body, this.stageDone, stage);
      this.sent();
      return SEND_OK;
    }
    return this.send(head.slice(), bl > 0 ? body!.slice() : null);
  }

  private readonly stages = new StagePool();
  /** A staged send completed: its buffer goes back to the pool (bound once: no closure per send). */
  private readonly stageDone = (status: number, stage: SendStage): void => {
    this.inFlightBytes -= stage.bytes;
    this.inFlightSends--;
    this.stages.put(stage);
    this.afterSend(status);
  };

  /** Send bookkeeping after a completion (the byte and send counts already updated). */
  private afterSend(status: number): void {
    if (status !== UCP.UCS_OK && status !== UCP.UCS_ERR_CANCELED && !this.closed) {
      this.fail(new TransportClosedError(`ucx connection to ${this.peer}: send failed (ucs_status ${status})`));
    } else if (this.inFlightSends === 0 || this.inFlightBytes < this.maxInFlightBytes / 2) {
      this.rt.waiters.wake(true);
    }
  }

  /**
   * A send UCX completes inside the call (eager: it copies the bytes into its own buffers), from
   * the caller's memory, with no request. Only while nothing of this connection is in flight,
   * so it never overtakes an earlier send. SEND_FULL: UCX could not complete it at once (wire-up
   * under way, its queue busy, a rendezvous size): send it the tracked way.
   */
  private trySendNow(head: Uint8Array, body: Uint8Array | null, bl: number): SendStatus {
    if (this.inFlightSends > 0 || bl > IMMEDIATE_MAX_BYTES) return SEND_FULL;
    const rt = this.rt;
    const before = rt.delivered;
    const st = this.ep.amSendNow(AM_DATA, head, body);
    // A send to this very worker delivers inside the call, where no pump sees it: wake the waiters.
    if (rt.delivered !== before) rt.waiters.wake(true);
    if (st === UCP.UCS_OK) {
      this.sent();
      return SEND_OK;
    }
    if (st === UCP.UCS_ERR_NO_RESOURCE) return SEND_FULL;
    this.fail(new TransportClosedError(`ucx connection to ${this.peer}: send failed (ucs_status ${st})`));
    return SEND_CLOSED;
  }

  /** Heap memory the transport takes over in trySendBuffer (UCX reads it until the send completes). */
  allocBuffer(lenBytes: number): Uint8Array | null {
    if (this.closed || !this.established) return null;
    if (!(lenBytes >= 0) || !Number.isSafeInteger(lenBytes)) throw new UsageError(`ucx allocBuffer: ${lenBytes} is not a number of bytes (an integer ≥ 0)`);
    if (lenBytes > sendLimit(this.caps)) throw new UsageError(oversizedSendMessage("ucx", lenBytes, this.caps));
    return new Uint8Array(lenBytes);
  }

  trySendBuffer(head: Uint8Array, whole: Uint8Array, lenBytes: number = whole.length): SendStatus {
    if (this.closed || !this.established) return SEND_CLOSED;
    const buffer = bufferPrefix("ucx", whole, lenBytes);
    this.checkSize(head.length, buffer.length);
    const now = this.trySendNow(head, buffer.length > 0 ? buffer : null, buffer.length);
    if (now !== SEND_FULL) return now;
    if (this.isFull(buffer.length)) return SEND_FULL;
    return this.send(head.slice(), buffer.length > 0 ? buffer : null);
  }

  /** Heap memory: nothing to give back. */
  releaseBuffer(_buffer: Uint8Array): void {}

  private checkSize(hl: number, bl: number): void {
    if (bl > sendLimit(this.caps)) throw new UsageError(oversizedSendMessage("ucx", bl, this.caps));
    const maxHead = Math.min(this.caps.maxHeadBytes, this.peerMaxHeadBytes);
    if (hl > maxHead) throw new UsageError(`ucx send: head of ${hl} bytes exceeds the limit of ${maxHead} bytes (this side's maxHeadBytes ${this.caps.maxHeadBytes}, the peer's ${this.peerMaxHeadBytes})`);
  }

  private isFull(bl: number): boolean {
    return this.inFlightSends > 0 && (this.inFlightSends >= this.maxInFlightSends || this.inFlightBytes + bl > this.maxInFlightBytes);
  }

  private send(head: Uint8Array, body: Uint8Array | null): SendStatus {
    const bytes = head.length + (body ? body.length : 0);
    this.inFlightBytes += bytes;
    this.inFlightSends++;
    // The worker retains head and body until UCX is done with them.
    this.ep.amSend(AM_DATA, head, body, (status) => {
      this.inFlightBytes -= bytes;
      this.inFlightSends--;
      this.afterSend(status);
    });
    this.sent();
    return SEND_OK;
  }

  /** @internal an operation of this connection went to UCX: let the runtime progress it. */
  sent(): void {
    if (!this.closed && this.mode !== "spin") this.rt.sent(this.spinNs);
  }

  // ---------------------------------------------------------------- receive

  /** @internal an AM for this endpoint (inside worker progress). */
  onAm(id: number, header: number, hlen: number, data: number, len: number, recvAttr: number): number {
    if (this.closed || this.lingerTimer !== null) return UCP.UCS_OK; // a refused peer: dropped
    if (id === AM_DATA && this.established) return this.onData(header, hlen, data, len, recvAttr);
    const hs = this.handshake;
    if (hs !== null) {
      // Returning UCS_OK without receiving drops a rendezvous message's data too.
      hs.onAm(id, id === AM_DATA || hlen > MAX_HANDSHAKE_BYTES ? null : copyOut(header, hlen));
      return UCP.UCS_OK;
    }
    this.abort(new ProtocolError(`ucx connection to ${this.peer}: unexpected Active Message ${id} (${this.established ? "after" : "before"} the handshake)`));
    return UCP.UCS_OK;
  }

  private onData(header: number, hlen: number, data: number, len: number, recvAttr: number): number {
    if (hlen > this.caps.maxHeadBytes) {
      this.abort(new ProtocolError(`ucx connection to ${this.peer}: message head of ${hlen} bytes exceeds maxHeadBytes ${this.caps.maxHeadBytes}`));
      return UCP.UCS_OK;
    }
    if (len > this.caps.maxMessageBytes) {
      // Skipped: eager data is not copied, rendezvous data not received (returning UCS_OK
      // without ucp_am_recv_data_nbx drops it, and the sender's send completes).
      this.queue.push(new Oversized(copyOut(header, hlen), len));
      this.deliver();
      return UCP.UCS_OK;
    }
    const pool = this.rt.rx;
    const m = pool.take();
    const lend = pool.lends(recvAttr, len);
    if (!lend && header === data + len && len + hlen <= POOLED_BODY_BYTES && (recvAttr & UCP.UCP_AM_RECV_ATTR_FLAG_RNDV) === 0) {
      m.copyTogether(data, len, hlen); // the usual small message: one memcpy
    } else {
      m.setHead(header, hlen);
      if (recvAttr & UCP.UCP_AM_RECV_ATTR_FLAG_RNDV) return this.receiveRendezvous(m, data, len);
      if (lend) m.lendBody(data, len, this);
      else m.copyBody(data, len);
    }
    const r = this.receiver;
    if (r !== null && !this.delivering && this.queueHead === this.queue.length) {
      // Nothing waits before it: straight to the receiver, no queueing.
      this.delivering = true;
      try {
        this.deliverOne(r, m);
      } finally {
        this.delivering = false;
      }
    } else {
      this.queue.push(m);
      this.deliver();
    }
    // UCS_INPROGRESS keeps UCX's buffer for an in-place message the receiver still holds.
    return lend ? m.endCallback() : UCP.UCS_OK;
  }

  /**
   * A rendezvous message: its data is received into a buffer the message owns; it holds its
   * place in the queue meanwhile. Apart from onData, whose every call would otherwise pay for
   * this closure's scope.
   */
  private receiveRendezvous(m: UcxRxMessage, data: number, len: number): number {
    const at = this.queue.length;
    this.queue.push(null);
    const buf = new Uint8Array(len);
    this.rt.worker.amRecvData(data, buf, this.ep, (status) => {
      if (this.closed) return;
      if (status !== UCP.UCS_OK) {
        this.fail(new TransportClosedError(`ucx connection to ${this.peer}: rendezvous receive failed (ucs_status ${status})`));
        return;
      }
      m.ownBodyOf(buf);
      this.queue[at] = m;
      this.deliver();
    });
    return UCP.UCS_OK;
  }

  /** Hands one message to the receiver; an exception it throws closes the connection. Returns false then. */
  private deliverOne(r: Receiver, m: UcxRxMessage | Oversized): boolean {
    try {
      if (m instanceof Oversized) this.reportOversized(r, m);
      else r.onMessage(m);
      return true;
    } catch (e) {
      this.abort(e instanceof HotpathError ? e : new ProtocolError(`ucx connection to ${this.peer}: receiver failed: ${describeThrown(e, true)}`));
      return false;
    }
  }

  private deliver(): number {
    const r = this.receiver;
    // One delivery loop at a time: a receiver that polls from its callback gets what arrives
    // meanwhile from this loop, after it returns, never from a nested one.
    if (r === null || this.delivering) return 0;
    this.delivering = true;
    try {
      return this.deliverFrom(r);
    } finally {
      this.delivering = false;
    }
  }

  private deliverFrom(r: Receiver): number {
    let n = 0;
    while (this.queueHead < this.queue.length && !this.closed) {
      const m = this.queue[this.queueHead];
      if (m === null || m === undefined) break;
      this.queue[this.queueHead++] = null;
      if (!this.deliverOne(r, m)) break;
      n++;
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    }
    return n;
  }

  private reportOversized(r: Receiver, m: Oversized): void {
    if (r.onOversized === undefined) {
      this.abort(new ProtocolError(`ucx connection to ${this.peer}: message body of ${m.bodyLength} bytes exceeds maxMessageBytes ${this.caps.maxMessageBytes}`));
      return;
    }
    r.onOversized(m.head, m.bodyLength);
  }

  /** Progresses the worker (not from inside a UCX callback: there it returns 0). */
  poll(): number {
    if (this.closed) return 0;
    return this.rt.progress();
  }

  /**
   * Spins up to this connection's spinNs (spin mode: up to timeoutMs), then parks. Called from
   * inside a UCX callback (a layer above replying from its delivery callback), it resolves true
   * on a clean stack without touching the worker: the caller retries once UCX has returned.
   */
  wait(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.rt.insideUcx) return Promise.resolve(true);
    if (this.mode === "spin") {
      const n = this.rt.spin(timeoutMs * 1e6, () => this.closed);
      return Promise.resolve(n > 0 && !this.closed);
    }
    if (this.rt.spin(this.spinNs, () => this.closed) > 0 || this.closed) return Promise.resolve(!this.closed);
    const p = this.rt.waiters.wait(timeoutMs);
    this.rt.schedule();
    return p;
  }

  // ---------------------------------------------------------------- RMA

  /**
   * Registers `lenBytes` of local memory the peer may read and write one-sided, deregistered
   * when this connection closes (rma.ts). UsageError without RMA (`ucx: { rma: true }`).
   */
  registerMemory(lenBytes: number): LocalRegion {
    this.checkRma("registerMemory");
    const r = new LocalRegion(this.rt, lenBytes);
    this.regions.add(r);
    return r;
  }

  /** Attaches to a region the peer registered (its `descriptor()` bytes, received over RPC). UsageError without RMA. */
  attachRegion(descriptor: Uint8Array): RemoteRegion {
    this.checkRma("attachRegion");
    const r = new RemoteRegion(this, descriptor);
    this.regions.add(r);
    return r;
  }

  private checkRma(op: string): void {
    if (!this.rt.rma) throw new UsageError(`ucx ${op}: this connection has no RMA (connect / listen with ucx: { rma: true } to offer it)`);
    if (this.closed) throw new TransportClosedError(`ucx connection to ${this.peer} is closed`);
  }

  // ---------------------------------------------------------------- closing

  close(): void {
    if (this.closed) return;
    this.finish(null, false);
  }

  abort(error: HotpathError): void {
    if (this.closed) return;
    this.finish(error, false);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** @internal UCX reported the peer failed or left (error callback). */
  fail(error: HotpathError): void {
    if (this.closed) return;
    this.finish(error, true);
  }

  /**
   * Native teardown on a clean stack. A graceful close waits (on timers, progressing the
   * worker) until the endpoint's own requests are done, at most until `deadline`: UCX 1.13
   * aborts the process (ucp_ep.c "proto_reqs" assertion) when an endpoint is disconnected with
   * tracked requests, e.g. a rendezvous send still waiting for its acknowledgement.
   */
  private teardown(force: boolean, deadline: number): void {
    if (!force && this.rt.worker.requestsOf(this.ep) > 0 && performance.now() < deadline) {
      if (!this.rt.insideUcx) this.rt.progress();
      if (this.rt.worker.requestsOf(this.ep) > 0) {
        setTimeout(() => this.teardown(force, deadline), 1);
        return;
      }
    }
    for (const r of this.regions) r.close();
    this.regions.clear();
    this.ep.close(force);
    this.opts.onClosed?.();
    // The peer is gone: what UCX has not completed of this endpoint's requests by then, it
    // may never complete; their owners hear UCS_ERR_CANCELED, while the memory stays held
    // for UCX until it does (see UcpWorker.abandon).
    if (force) setTimeout(() => this.rt.worker.abandon(this.ep), ABANDON_AFTER_MS).unref();
  }

  /**
   * `force` false closes the endpoint gracefully, which tells the peer (its error callback
   * fires with UCS_ERR_CONNECTION_RESET); true drops it locally (the peer is already gone;
   * UCX completes the endpoint's requests with errors).
   */
  private finish(error: HotpathError | null, force: boolean): void {
    this.closed = true;
    this.closeError = error;
    this.handshake = null;
    if (this.lingerTimer !== null) clearTimeout(this.lingerTimer);
    this.lingerTimer = null;
    this.rt.sinks.delete(this.ep.handle);
    // Undelivered messages go; those lending UCX memory give it back (their views detach), as
    // do the in-place messages the receiver still holds (revoked: their objects stay with the
    // holder until it releases them): UCX's buffers never outlive the connection.
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const m = this.queue[i];
      if (m !== null && m !== undefined && !(m instanceof Oversized)) m.release();
    }
    this.queue.length = 0;
    this.queueHead = 0;
    this.rt.rx.revokeOwnedBy(this);
    // Native teardown must not run inside a UCX callback (finish may run from the error
    // callback or an AM handler): it goes on a clean stack, queued first so that it happens
    // whatever the receiver's onClose does.
    queueMicrotask(() => this.teardown(force, performance.now() + CLOSE_DRAIN_MS));
    this.rt.waiters.wake(false);
    try {
      this.receiver?.onClose(error);
    } catch (e) {
      // The receiver's own bug: it surfaces as an uncaught error, but on a clean stack, never
      // through UCX (finish may run inside a UCX callback).
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}
