/**
 * UcxConnection: the Transport contract over one UCP endpoint (data path).
 *
 * Send: the head goes as the Active Message header, the body as AM data; UCX picks eager or
 * rendezvous. UCX reads both until the send completes, so trySend() copies them into buffers
 * the connection keeps until then; allocBuffer() + trySendBuffer() hand a buffer over without
 * that copy. Backpressure: while more than `maxInFlightBytes` (or `maxInFlightSends`) are not
 * yet completed, sends report Full.
 *
 * Receive: eager data is copied out of UCX's buffer during the AM callback (UCX reuses it);
 * rendezvous data is received (ucp_am_recv_data_nbx) straight into a buffer the transport
 * allocates and the message owns. Messages are delivered in arrival order, a rendezvous message
 * holding back those behind it until its data is in.
 *
 * Failure: UCX reports a dead or departed peer through the endpoint's error callback (its
 * connection manager notices the socket close even in UCP_ERR_HANDLING_MODE_NONE, which keeps
 * shared memory for same-host peers); every pending operation then fails with
 * TransportClosedError.
 */

import { HotpathError, ProtocolError, TransportClosedError, UsageError } from "../errors.ts";
import { UCP } from "../ffi/ucp-layout.ts";
import { copyOut, type UcpEndpoint } from "../ffi/ucp.ts";
import { SEND_CLOSED, SEND_FULL, SEND_OK, type Capabilities, type Connection, type Receiver, type RxMessage, type SendStatus, type WaitPolicy } from "../transport/transport.ts";
import { AM_DATA, AM_HELLO, AM_HELLO_ACK, type AmSink, type UcxRuntime } from "./runtime.ts";

/** The hello header: "HPUX" and the protocol version, little-endian. */
export const HELLO_BYTES = new Uint8Array([0x48, 0x50, 0x55, 0x58, 1, 0, 0, 0]);
import { LocalRegion, RemoteRegion } from "./rma.ts";

export type UcxWaitMode = "spin" | "async" | "adaptive";

class UcxRxMessage implements RxMessage {
  constructor(
    readonly headBuf: Uint8Array,
    readonly body: Uint8Array,
  ) {}
  get headOffset(): number {
    return 0;
  }
  get headLength(): number {
    return this.headBuf.length;
  }
  get bodyLength(): number {
    return this.body.length;
  }
  get head(): Uint8Array {
    return this.headBuf;
  }
  /** The bytes are JS memory the message owns: nothing to hand back. */
  release(): void {}
}


export interface UcxConnectionOptions {
  maxMessageBytes: number;
  maxHeadBytes: number;
  peer: string;
  maxInFlightBytes?: number;
  maxInFlightSends?: number;
  onClosed?: () => void;
}

export class UcxConnection implements Connection, AmSink {
  readonly transport = "ucx";
  readonly caps: Capabilities;
  readonly peer: string;
  closed = false;
  closeError: HotpathError | null = null;

  private receiver: Receiver | null = null;
  /** Arrived messages in order; null marks a rendezvous still receiving. */
  private readonly queue: Array<RxMessage | null> = [];
  private queueHead = 0;
  private mode: UcxWaitMode = "adaptive";
  private spinNs: number;
  private inFlightBytes = 0;
  private inFlightSends = 0;
  private readonly maxInFlightBytes: number;
  private readonly maxInFlightSends: number;
  private readonly regions = new Set<LocalRegion | RemoteRegion>();

  constructor(
    readonly rt: UcxRuntime,
    readonly ep: UcpEndpoint,
    private readonly opts: UcxConnectionOptions,
  ) {
    this.peer = opts.peer;
    this.spinNs = rt.spinNs;
    this.maxInFlightBytes = opts.maxInFlightBytes ?? 64 << 20;
    this.maxInFlightSends = opts.maxInFlightSends ?? 4096;
    this.caps = {
      maxInlineBytes: 0,
      maxMessageBytes: opts.maxMessageBytes,
      peerMaxMessageBytes: opts.maxMessageBytes,
      maxHeadBytes: opts.maxHeadBytes,
      zeroCopy: false,
      rma: true,
      sameHostOnly: false,
    };
    rt.sinks.set(ep.handle, this);
  }

  get wantsProgress(): boolean {
    return !this.closed && this.receiver !== null && this.mode !== "spin";
  }

  setReceiver(receiver: Receiver): void {
    this.receiver = receiver;
    if (this.closed) return receiver.onClose(this.closeError);
    this.deliver();
    if (this.wantsProgress) this.rt.schedule();
  }

  setWaitPolicy(policy: Partial<WaitPolicy & { mode: UcxWaitMode }>): void {
    if (policy.mode !== undefined) {
      if (!["spin", "async", "adaptive"].includes(policy.mode)) throw new UsageError(`ucx wait mode "${policy.mode}" is not spin, async or adaptive`);
      this.mode = policy.mode;
    }
    if (policy.spinNs !== undefined) {
      if (!(policy.spinNs >= 0)) throw new UsageError(`spinNs ${policy.spinNs} must be ≥ 0`);
      this.spinNs = policy.spinNs;
      this.rt.spinNs = policy.spinNs;
    }
    if (this.wantsProgress) this.rt.schedule();
  }

  // ---------------------------------------------------------------- send

  trySend(head: Uint8Array, body?: Uint8Array | null): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const bl = body ? body.length : 0;
    this.checkSize(head.length, bl);
    if (this.isFull(bl)) return SEND_FULL;
    return this.send(head.slice(), bl > 0 ? body!.slice() : null);
  }

  /** Heap memory the transport takes over in trySendBuffer (UCX reads it until the send completes). */
  allocBuffer(lenBytes: number): Uint8Array | null {
    if (this.closed) return null;
    if (!(lenBytes >= 0) || lenBytes > this.caps.maxMessageBytes) {
      throw new UsageError(`ucx allocBuffer: ${lenBytes} bytes is outside 0..${this.caps.maxMessageBytes}`);
    }
    return new Uint8Array(lenBytes);
  }

  trySendBuffer(head: Uint8Array, buffer: Uint8Array): SendStatus {
    if (this.closed) return SEND_CLOSED;
    this.checkSize(head.length, buffer.length);
    if (this.isFull(buffer.length)) return SEND_FULL;
    return this.send(head.slice(), buffer.length > 0 ? buffer : null);
  }

  /** Heap memory: nothing to give back. */
  releaseBuffer(_buffer: Uint8Array): void {}

  private checkSize(hl: number, bl: number): void {
    if (hl > this.caps.maxHeadBytes || bl > this.caps.maxMessageBytes) {
      throw new UsageError(`ucx send: head ${hl} bytes (max ${this.caps.maxHeadBytes}), body ${bl} bytes (max ${this.caps.maxMessageBytes})`);
    }
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
      if (status !== UCP.UCS_OK && status !== UCP.UCS_ERR_CANCELED && !this.closed) {
        this.fail(new TransportClosedError(`ucx connection to ${this.peer}: send failed (ucs_status ${status})`));
      } else if (this.inFlightSends === 0 || this.inFlightBytes < this.maxInFlightBytes / 2) {
        this.rt.waiters.wake(true);
      }
    });
    if (!this.closed && this.mode !== "spin") this.rt.sent();
    return SEND_OK;
  }

  // ---------------------------------------------------------------- receive

  /** @internal an AM for this endpoint (inside worker progress). */
  onAm(id: number, header: number, hlen: number, data: number, len: number, recvAttr: number): number {
    if (this.closed) return UCP.UCS_OK;
    if (id === AM_HELLO) {
      this.ep.amSend(AM_HELLO_ACK, HELLO_BYTES.slice(), null, () => {});
      this.onHello?.(this);
      this.onHello = null;
      return UCP.UCS_OK;
    }
    if (id === AM_HELLO_ACK) {
      this.helloAcked = true;
      return UCP.UCS_OK;
    }
    if (id !== AM_DATA) return UCP.UCS_OK;
    if (hlen > this.caps.maxHeadBytes || len > this.caps.maxMessageBytes) {
      this.abort(new ProtocolError(`ucx: message of ${hlen}+${len} bytes exceeds limits (head ${this.caps.maxHeadBytes}, body ${this.caps.maxMessageBytes})`));
      return UCP.UCS_OK;
    }
    const head = copyOut(header, hlen);
    if (recvAttr & UCP.UCP_AM_RECV_ATTR_FLAG_RNDV) {
      const at = this.queue.length;
      this.queue.push(null);
      const buf = new Uint8Array(len);
      this.rt.worker.amRecvData(data, buf, (status) => {
        if (status !== UCP.UCS_OK) {
          if (!this.closed) this.fail(new TransportClosedError(`ucx connection to ${this.peer}: rendezvous receive failed (ucs_status ${status})`));
          return;
        }
        this.queue[at] = new UcxRxMessage(head, buf);
        this.deliver();
      });
      return UCP.UCS_OK;
    }
    this.queue.push(new UcxRxMessage(head, copyOut(data, len)));
    this.deliver();
    return UCP.UCS_OK;
  }

  private deliver(): number {
    const r = this.receiver;
    if (r === null) return 0;
    let n = 0;
    while (this.queueHead < this.queue.length && !this.closed) {
      const m = this.queue[this.queueHead];
      if (m === null || m === undefined) break;
      this.queue[this.queueHead++] = null;
      r.onMessage(m);
      n++;
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    }
    return n;
  }

  poll(): number {
    if (this.closed) return 0;
    return this.rt.progress();
  }

  wait(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.mode === "spin") return Promise.resolve(this.rt.spin(timeoutMs * 1e6) > 0);
    if (this.rt.spin(this.spinNs) > 0) return Promise.resolve(true);
    const p = this.rt.waiters.wait(timeoutMs);
    this.rt.schedule();
    return p;
  }

  // ---------------------------------------------------------------- RMA

  /** Registers `lenBytes` of local memory the peer may read and write one-sided. */
  registerMemory(lenBytes: number): LocalRegion {
    if (this.closed) throw new TransportClosedError(`ucx connection to ${this.peer} is closed`);
    const r = new LocalRegion(this.rt, lenBytes);
    this.regions.add(r);
    return r;
  }

  /** Attaches to a region the peer registered (its `descriptor()` bytes, received over RPC). */
  attachRegion(descriptor: Uint8Array): RemoteRegion {
    if (this.closed) throw new TransportClosedError(`ucx connection to ${this.peer} is closed`);
    const r = new RemoteRegion(this, descriptor);
    this.regions.add(r);
    return r;
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
   * `force` false closes the endpoint gracefully, which tells the peer (its error callback
   * fires with UCS_ERR_CONNECTION_RESET); true drops it locally (the peer is already gone).
   */
  private finish(error: HotpathError | null, force: boolean): void {
    this.closed = true;
    this.closeError = error;
    this.rt.sinks.delete(this.ep.handle);
    this.rt.waiters.wake(false);
    this.receiver?.onClose(error);
    // Native teardown progresses the worker, which must not happen inside a UCX callback
    // (finish may run from the error callback or an AM handler): do it on a clean stack.
    queueMicrotask(() => {
      for (const r of this.regions) r.close();
      this.regions.clear();
      this.ep.close(force);
      this.opts.onClosed?.();
    });
  }

  /** @internal the listener's hook for the client's hello. */
  onHello: ((conn: UcxConnection) => void) | null = null;
  /** @internal set when the server acknowledged this (client) connection. */
  helloAcked = false;
}
