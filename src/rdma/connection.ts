/**
 * RdmaConnection: the Transport contract over one RC QP (data path).
 *
 * Send: a message whose 12-byte header (wire.ts) + head + body fits the peer's receive slot is
 * one SEND: inline (IBV_SEND_INLINE) when it fits the QP's inline limit, else copied into this
 * connection's registered send slab (tx.ts), or, from allocBuffer memory, head from the slab
 * and body from the buffer as two SGEs (zero-copy). Larger messages go by WRITE_WITH_IMM into
 * the peer's landing zone (zones.ts): at once when this side holds a big enough grant, else
 * after a ZONE_REQUEST and the grant it brings; one large message is staged or in flight per
 * direction, and every send after a staged one reports Full until it is posted (order).
 * Flow control (credits.ts): a send needs a credit (a receive the peer reserved for us) and a
 * send-queue slot (signal.ts: one signaled send every batch; a slot's memory is reused only
 * after a later signaled completion); without either trySend reports Full, never an RNR.
 * Credits come back piggybacked in every header and in CREDIT messages. trySendWords() takes
 * the RPC wire header as six words (copied like any head). A wait() after a Full send returns at
 * once when completions came in between (the room may be back).
 *
 * Receive: SRQ completions (runtime.ts) name the QP; a message is delivered as a view of its
 * slab slot (or the zone) until release(), which re-posts the slot and owes the peer its credit
 * (the zone: grants it again); slot messages carry headWords over the slab. A malformed header (bad kind, lengths that disagree with the
 * completion, credits the peer could not have, a large write without a grant) aborts with
 * ProtocolError. A body above maxMessageBytes with a whole head within maxHeadBytes is skipped
 * and reported to Receiver.onOversized (abort without that hook). A receiver that throws
 * closes the connection with its error.
 *
 * Waiting (WaitPolicy.mode): "spin" wait() polls for its whole timeout; "blocking" spins spinNs
 * then parks the thread in poll() on the completion channel; "async" / "adaptive" (the default)
 * deliver from the event loop through the runtime's fd waiter, and after a send spin for the
 * answer: "async" spinNs every time, "adaptive" only while that recently paid (AdaptiveIdle).
 *
 * Close: close() / abort() send GOODBYE (when a credit is left) and destroy the QP once it
 * completed (or after CLOSE_DRAIN_MS); the peer closes with TransportClosedError. A large
 * message trySend accepted but still staged (no grant yet) goes first: close() waits up to
 * CLOSE_DRAIN_MS for it to be posted (sends report Closed meanwhile), else onClose reports it
 * lost (TransportClosedError). peerGone() (setup saw the socket or rdma_cm go) and QP errors
 * close at once. The QP is retired (runtime.ts retireQp: ERR, its last receives polled, then
 * destroyed), MRs are deregistered and `onClosed` runs. Views the receiver still holds stay
 * readable, and their slots stay reserved (the runtime admits no connection against them) until
 * they are released.
 *
 * Example (setup made `ep` and exchanged hellos):
 *   const conn = ep.open(peerHello, "rdma://10.0.0.2:7471", { mode: "adaptive" }, onClosed);
 *   conn.setReceiver({ onMessage(m) { use(m.head, m.body); m.release() }, onClose(e) {} });
 *   while (conn.trySend(head, body) === SEND_FULL) await conn.wait(10);
 *
 * Threading: the runtime's thread only.
 */

import { describeThrown, HotpathError, ProtocolError, TransportClosedError, UsageError } from "../errors.ts";
import { IBV } from "../ffi/ibverbs.ts";
import { SEND_OK, type Connection, type Receiver, type WaitPolicy } from "../contract/transport.ts";
import { pollReadable } from "../ffi/libc.ts";
import { RdmaDataPath } from "./data-path.ts";
import { idleStrategyFor } from "../segment/idle.ts";
import type { RdmaSink } from "./runtime.ts";
import { Oversized, RdmaRxMessage, ZONE_SLOT, type RxOwner } from "./rx.ts";
import { HEADER_BYTES, HDR_BODY_LEN, HDR_CREDITS, HDR_HEAD_LEN, HDR_KIND, KIND_CREDIT, KIND_DATA, KIND_GOODBYE, KIND_LARGE, KIND_ZONE_GRANT, KIND_ZONE_REQUEST, kindName, largeImm, ZONE_GRANT_BODY_BYTES, ZONE_REQUEST_BODY_BYTES } from "./wire.ts";

/** Spin after a send for the answer (as ucx): about three same-host round trips. */

export { DEFAULT_RDMA_SPIN_NS, type EndpointParts, type PeerParams } from "./data-path.ts";

/** A graceful close waits this long at most for its GOODBYE to complete before the QP is destroyed. */
const CLOSE_DRAIN_MS = 1000;
/** A blocking wait parks at most this long per poll(): a close is noticed between slices. */
const BLOCK_SLICE_MS = 20;

export class RdmaConnection extends RdmaDataPath implements Connection, RdmaSink, RxOwner {
  /** Slab slots held by delivered messages not yet released. */
  private heldSlots = 0;
  private givenBack = false;
  /** teardown's retireQp destroyed the QP. */
  private qpGone = false;

  get waitsOnEventLoop(): boolean {
    return this.mode === "async" || this.mode === "adaptive";
  }

  /** Times the landing zone was re-registered larger for the peer's requests. */
  get zoneGrown(): number {
    return this.zone.grown;
  }

  /** Flow-control state (tests and debugging): credits, owed, held, send-queue slots free, the large stage, the grant, the zone. */
  debugState(): Record<string, unknown> {
    const z = this.zone;
    return {
      credits: this.fc.credits, owed: this.fc.owed, held: this.fc.held, sqFree: this.sig.free, stage: this.stage.state, requested: this.stage.requested,
      grant: this.grant === null ? null : { bytes: this.grant.bytes, gen: this.grant.gen }, zone: { bytes: z.bytes, gen: z.gen, granted: z.granted, held: z.held, requested: z.requested },
      queued: this.queue.length - this.queueHead, closed: this.closed, closing: this.closing, sendSlabBytes: this.slab.mr.lenBytes, heldSlots: this.heldSlots,
    };
  }

  setReceiver(receiver: Receiver): void {
    this.receiver = receiver;
    if (this.closed) return receiver.onClose(this.closeError);
    this.deliver();
    if (this.wantsEvents) this.rt.schedule();
  }

  setWaitPolicy(policy: Partial<WaitPolicy>): void {
    const m = policy.mode as string | undefined;
    if (m !== undefined && !["spin", "blocking", "async", "adaptive"].includes(m)) throw new UsageError(`rdma wait mode "${m}" is not spin, blocking, async or adaptive`);
    if (policy.spinNs !== undefined && !(policy.spinNs >= 0 && policy.spinNs <= Number.MAX_SAFE_INTEGER)) throw new UsageError(`rdma spinNs ${policy.spinNs} must be a number of nanoseconds ≥ 0`);
    if (policy.mode !== undefined) this.mode = policy.mode;
    if (policy.spinNs !== undefined) this.spinNs = policy.spinNs;
    this.idle = idleStrategyFor(this.mode, this.spinNs);
    if (this.wantsEvents) this.rt.schedule();
  }


  onRecvCompletion(slot: number, status: number, byteLen: number, opcode: number, imm: number, _wcFlags: number): void {
    this.activity++;
    if (slot < 0) return this.fail(this.recvErrorFor(status));
    if (this.closed) return this.rt.releaseSlot(slot);
    try {
      if (opcode === IBV.IBV_WC_RECV_RDMA_WITH_IMM) this.onLarge(slot, byteLen, imm);
      else this.onSend(slot, byteLen);
    } catch (e) {
      this.abort(e instanceof ProtocolError ? new ProtocolError(`rdma connection to ${this.peer}: ${e.message}`) : e instanceof HotpathError ? e : new ProtocolError(`rdma connection to ${this.peer}: ${describeThrown(e, true)}`));
    }
    if (!this.closed) this.flushPending();
  }

  /** A received control message's slot goes back at once; its credit is owed. */
  private releaseNow(slot: number): void {
    this.rt.releaseSlot(slot);
    this.fc.onRelease();
  }

  private onSend(slot: number, byteLen: number): void {
    const dv = this.slabDv;
    const at = slot * this.rt.slab.slotBytes;
    if (byteLen < HEADER_BYTES) {
      this.rt.releaseSlot(slot);
      throw new ProtocolError(`a message of ${byteLen} bytes (a header has ${HEADER_BYTES})`);
    }
    const kind = dv.getUint8(at + HDR_KIND);
    const hl = dv.getUint32(at + HDR_HEAD_LEN, true);
    const bl = dv.getUint32(at + HDR_BODY_LEN, true);
    if (HEADER_BYTES + hl + bl !== byteLen) {
      this.rt.releaseSlot(slot);
      throw new ProtocolError(`${kindName(kind)} header says ${hl} + ${bl} bytes, the receive has ${byteLen - HEADER_BYTES}`);
    }
    try {
      this.fc.onReceive(dv.getUint16(at + HDR_CREDITS, true));
    } catch (e) {
      this.rt.releaseSlot(slot);
      throw e;
    }
    if (kind === KIND_DATA) {
      if (hl > this.caps.maxHeadBytes) {
        this.releaseNow(slot);
        throw new ProtocolError(`message head of ${hl} bytes exceeds maxHeadBytes ${this.caps.maxHeadBytes}`);
      }
      if (bl > this.caps.maxMessageBytes) {
        const head = this.rt.slab.bytes.slice(at + HEADER_BYTES, at + HEADER_BYTES + hl);
        this.releaseNow(slot);
        return this.enqueue(new Oversized(head, bl));
      }
      const m = this.freeMsgs.pop() ?? new RdmaRxMessage(this);
      m.fill(this.rt.slab.bytes, at + HEADER_BYTES, hl, bl, slot, this.rt.slabWords);
      this.heldSlots++;
      this.delivered++;
      this.rt.delivered++;
      return this.enqueue(m);
    }
    const body = at + HEADER_BYTES + hl;
    if (kind === KIND_CREDIT && hl === 0 && bl === 0) return this.releaseNow(slot);
    if (kind === KIND_ZONE_GRANT && hl === 0 && bl === ZONE_GRANT_BODY_BYTES) {
      this.grantGen = (this.grantGen + 1) >>> 0;
      this.grantComing = false;
      this.grant = { addr: dv.getBigUint64(body, true), rkey: dv.getUint32(body + 8, true), bytes: dv.getUint32(body + 12, true), gen: this.grantGen };
      return this.releaseNow(slot);
    }
    if (kind === KIND_ZONE_REQUEST && hl === 0 && bl === ZONE_REQUEST_BODY_BYTES) {
      const want = dv.getUint32(body, true);
      this.releaseNow(slot);
      return this.zone.onRequest(want);
    }
    if (kind === KIND_GOODBYE) {
      this.releaseNow(slot);
      this.fail(new TransportClosedError(`rdma connection to ${this.peer}: the peer closed`));
      return;
    }
    this.releaseNow(slot);
    throw new ProtocolError(`${kindName(kind)} message with a ${hl}-byte head and a ${bl}-byte body`);
  }

  private onLarge(slot: number, byteLen: number, imm: number): void {
    const z = this.zone;
    this.rt.releaseSlot(slot); // a write-with-immediate's receive carries no bytes
    if (!z.granted) throw new ProtocolError("a large message written without a grant");
    if (imm !== largeImm(z.gen)) throw new ProtocolError(`a large message with immediate 0x${imm.toString(16)}, expected 0x${largeImm(z.gen).toString(16)} (zone generation ${z.gen})`);
    const view = z.view;
    const dv = new DataView(view.buffer, view.byteOffset, HEADER_BYTES);
    const kind = dv.getUint8(HDR_KIND);
    const hl = dv.getUint32(HDR_HEAD_LEN, true);
    const bl = dv.getUint32(HDR_BODY_LEN, true);
    if (kind !== KIND_LARGE || HEADER_BYTES + hl + bl !== byteLen || byteLen > z.bytes) {
      throw new ProtocolError(`a large message header (${kindName(kind)}, ${hl} + ${bl} bytes) that disagrees with the ${byteLen} bytes written into a ${z.bytes}-byte zone`);
    }
    this.fc.onReceive(dv.getUint16(HDR_CREDITS, true));
    this.fc.onRelease();
    z.granted = false;
    if (hl > this.caps.maxHeadBytes) throw new ProtocolError(`message head of ${hl} bytes exceeds maxHeadBytes ${this.caps.maxHeadBytes}`);
    if (bl > this.caps.maxMessageBytes) return this.enqueue(new Oversized(view.slice(HEADER_BYTES, HEADER_BYTES + hl), bl));
    z.held = true;
    const m = this.freeMsgs.pop() ?? new RdmaRxMessage(this);
    m.fill(view, HEADER_BYTES, hl, bl, ZONE_SLOT, undefined);
    this.delivered++;
    this.largeDelivered++;
    this.rt.delivered++;
    this.enqueue(m);
  }

  /** RxOwner: a message was released. */
  onRelease(m: RdmaRxMessage, slot: number): void {
    if (this.freeMsgs.length < 64) this.freeMsgs.push(m);
    if (slot === ZONE_SLOT) {
      this.zone.held = false;
    } else {
      this.rt.releaseSlot(slot);
      this.heldSlots--;
      if (!this.closed) this.fc.onRelease();
      else if (this.heldSlots === 0 && this.qpGone) this.giveBack();
    }
    if (!this.closed) this.flushPending();
  }

  // ---------------------------------------------------------------- delivery

  private enqueue(m: RdmaRxMessage | Oversized): void {
    const r = this.receiver;
    if (r !== null && !this.delivering && this.queueHead === this.queue.length) {
      this.delivering = true;
      try {
        this.deliverOne(r, m);
      } finally {
        this.delivering = false;
      }
      return;
    }
    this.queue.push(m);
    this.deliver();
  }

  private deliverOne(r: Receiver, m: RdmaRxMessage | Oversized): boolean {
    try {
      if (m instanceof Oversized) {
        if (r.onOversized === undefined) {
          this.abort(new ProtocolError(`rdma connection to ${this.peer}: message body of ${m.bodyLength} bytes exceeds maxMessageBytes ${this.caps.maxMessageBytes}`));
          return false;
        }
        r.onOversized(m.head, m.bodyLength);
      } else r.onMessage(m);
      return true;
    } catch (e) {
      this.abort(e instanceof HotpathError ? e : new ProtocolError(`rdma connection to ${this.peer}: receiver failed: ${describeThrown(e, true)}`));
      return false;
    }
  }

  private deliver(): number {
    const r = this.receiver;
    if (r === null || this.delivering) return 0;
    this.delivering = true;
    let n = 0;
    try {
      while (this.queueHead < this.queue.length && !this.closed) {
        const m = this.queue[this.queueHead]!;
        this.queue[this.queueHead++] = null;
        if (!this.deliverOne(r, m)) break;
        n++;
      }
      if (this.queueHead === this.queue.length) {
        this.queue.length = 0;
        this.queueHead = 0;
      }
    } finally {
      this.delivering = false;
    }
    return n;
  }

  poll(): number {
    if (this.closed) return 0;
    const before = this.rt.delivered;
    this.rt.progress();
    this.deliver();
    return this.rt.delivered - before;
  }

  wait(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.queueHead < this.queue.length && this.receiver !== null) return Promise.resolve(true);
    if (this.fullMark >= 0) {
      const changed = this.activity !== this.fullMark;
      this.fullMark = -1;
      if (changed) return Promise.resolve(true);
    }
    // Only this connection's completions end the wait: the runtime's are shared by all of them.
    const mark = this.activity;
    if (this.mode === "spin") return Promise.resolve(this.spinFor(timeoutMs * 1e6, mark));
    if (this.spinFor(this.spinNs, mark) || this.closed) return Promise.resolve(!this.closed);
    if (this.mode === "blocking") return Promise.resolve(this.waitBlocking(timeoutMs, mark));
    return this.park(mark, performance.now() + timeoutMs);
  }

  /** Progresses the runtime for up to `budgetNs` until this connection had a completion (true) or closed. */
  private spinFor(budgetNs: number, mark: number): boolean {
    const rt = this.rt;
    const end = Bun.nanoseconds() + budgetNs;
    do {
      rt.progress();
      if (this.closed) return false;
      if (this.activity !== mark) return true;
    } while (Bun.nanoseconds() < end);
    return false;
  }

  /** Event-loop wait: the runtime's wake-ups until one brought this connection a completion, or the deadline. */
  private async park(mark: number, deadline: number): Promise<boolean> {
    const rt = this.rt;
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      const p = rt.waiters.wait(left);
      rt.arm();
      await p;
      if (this.closed) return false;
      if (this.activity !== mark) return true;
    }
  }

  /** Parks this thread in poll() on the completion channel until this connection's completion or `timeoutMs`. */
  private waitBlocking(timeoutMs: number, mark: number): boolean {
    const rt = this.rt;
    const end = performance.now() + timeoutMs;
    for (;;) {
      rt.armForBlocking();
      rt.progress();
      if (this.closed) return false;
      if (this.activity !== mark) return true;
      const left = end - performance.now();
      if (left <= 0) return false;
      pollReadable(rt.channel.fd, Math.min(Math.ceil(left), BLOCK_SLICE_MS));
      rt.takeChannelEvents();
    }
  }

  // ---------------------------------------------------------------- closing

  close(): void {
    if (this.closed || this.closing) return;
    if (this.stage.state !== 1) return this.finish(null, true);
    // A large message trySend accepted is still staged (waiting for a grant or a credit): it
    // goes before the GOODBYE (RC keeps their order), or the close reports it lost.
    this.closing = true;
    this.drainStage(performance.now() + CLOSE_DRAIN_MS);
  }

  private drainStage(deadline: number): void {
    if (this.closed) return; // the peer, an error or abort() closed it meanwhile
    this.rt.progress();
    if (this.closed) return;
    this.flushPending();
    if (this.closed) return;
    if (this.stage.state !== 1) return this.finish(null, true);
    if (performance.now() >= deadline) {
      return this.finish(new TransportClosedError(`rdma connection to ${this.peer}: closed with a ${this.stage.total}-byte large message not sent (no grant or credit from the peer within ${CLOSE_DRAIN_MS} ms)`), true);
    }
    setTimeout(() => this.drainStage(deadline), 1);
  }

  abort(error: HotpathError): void {
    if (this.closed) return;
    this.finish(error, true);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** The peer ended the transport out of band (socket mode: its socket closed; cm: DISCONNECTED). */
  peerGone(error: HotpathError): void {
    if (this.closed) return;
    this.finish(error, false);
  }

  /** The QP or the runtime failed: closes at once with `error`. */
  fail(error: HotpathError): void {
    if (this.closed) {
      if (!this.tornDown && this.goodbyeSeq !== 0) this.teardown();
      return;
    }
    this.finish(error, false);
  }

  /** `polite`: tell the peer (GOODBYE, when a credit and a slot are left) and destroy the QP once it completed. */
  private finish(error: HotpathError | null, polite: boolean): void {
    this.closed = true;
    this.closeError = error;
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const m = this.queue[i];
      if (m instanceof RdmaRxMessage) m.release();
    }
    this.queue.length = 0;
    this.queueHead = 0;
    let drain = false;
    if (polite && this.sig.free > 0) {
      // GOODBYE takes a credit (the last one too: nothing follows it); without any the peer
      // learns of the close from setup (its socket or rdma_cm's DISCONNECTED).
      const back = this.fc.tryTakeForLast();
      if (back >= 0) drain = this.sendSlot(KIND_GOODBYE, null, null, null, 0, back) === SEND_OK;
    }
    this.rt.waiters.wake(false);
    if (drain) this.drainThenTeardown(performance.now() + CLOSE_DRAIN_MS);
    else queueMicrotask(() => this.teardown());
    try {
      this.receiver?.onClose(error);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }

  private drainThenTeardown(deadline: number): void {
    if (this.tornDown) return;
    this.rt.progress();
    if (this.tornDown) return;
    if (performance.now() >= deadline) return this.teardown();
    setTimeout(() => this.drainThenTeardown(deadline), 1);
  }

  /**
   * Retires the QP (runtime.ts retireQp: ERR, its last receives polled, then destroyed), fails
   * what is in flight, deregisters the MRs, runs onClosed; the reservation goes once no
   * received view holds a slot (giveBack). Once.
   */
  protected teardown(): void {
    if (this.tornDown) return;
    this.tornDown = true;
    const rt = this.rt;
    if (rt.sinks.get(this.qp.qpNum) === this) rt.sinks.delete(this.qp.qpNum);
    rt.retireQp(this.qp, (e) => this.afterQp(e));
  }

  /** The QP is gone: what was in flight fails, the MRs go, onClosed runs. */
  private afterQp(destroyError: unknown): void {
    this.qpGone = true;
    const errors: unknown[] = destroyError === null ? [] : [destroyError];
    const attempt = (f: () => void) => {
      try {
        f();
      } catch (e) {
        errors.push(e);
      }
    };
    for (const o of this.oneSided.splice(0)) attempt(() => o.done(IBV.IBV_WC_WR_FLUSH_ERR));
    if (this.rma !== null) attempt(() => this.rma!.close());
    this.txInFlight.length = 0;
    this.sentBuffers.clear();
    attempt(() => this.pool.close());
    attempt(() => this.slab.close());
    attempt(() => this.stage.close());
    attempt(() => this.zone.close());
    attempt(() => this.runSendWaiters());
    if (this.heldSlots === 0) this.giveBack();
    attempt(() => this.onClosed());
    if (errors.length > 0) console.error(`hotpath rdma: closing the connection to ${this.peer}: ${describeThrown(errors[0])}`);
  }

  /**
   * The window's reservation, once the QP is gone and no view holds a slot: a held slot is not
   * posted, so a connection admitted against it could meet RNR within its credits. The runtime
   * itself is not kept for the views: they are JS memory, readable without it, and once its
   * last user (setup's reference) is gone no connection is admitted against it any more (a
   * release after that is a no-op).
   */
  private giveBack(): void {
    if (this.givenBack) return;
    this.givenBack = true;
    this.rt.unreserve(this.ep.opts.window, this.ep.opts.sqDepth);
  }
}
