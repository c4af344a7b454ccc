/**
 * RdmaRuntime: one per thread per verbs context (refcounted), shared by every rdma connection
 * and listener on that device of the thread. It owns the PD, one completion channel, a send CQ
 * and a receive CQ (apart: a wr_id means a send sequence on one and a receive slot on the
 * other), the SRQ with its registered receive slab (buffers.ts: RECV_SLOT_BYTES slots, re-posted
 * on release), and the fd waiter (fd-waiter.ts) that watches the channel and the async-event fd.
 *
 * Progress: progress() polls both CQs and hands each completion to the connection of its QP
 * (by qp_num: `sinks`). A receive for a QP no connection owns any more is re-posted at once.
 * While some connection wants event-loop delivery (wait mode async / adaptive), the CQs are
 * armed (req_notify) whenever a progress round found nothing, and the channel fd's handler
 * drains the events and progresses. After a send in those modes the runtime spins (a
 * microtask) for the answer as long as the sender's idle strategy grants (segment/idle.ts:
 * "async" always spinNs, "adaptive" only while spinning recently paid), then parks on the fd;
 * input keeps it looking once per event-loop turn (setImmediate) until a look finds none.
 * Async events: QP_FATAL closes that QP's connection with TransportClosedError (the QP is gone,
 * which says nothing against the peer: the software provider raises it when the peer's process
 * died), QP_REQ_ERR / QP_ACCESS_ERR (the peer's bad requests) with ProtocolError, CQ_ERR or
 * SRQ_ERR every connection of the runtime with ProtocolError; SRQ_LIMIT_REACHED re-arms the
 * limit (and is counted: `srqLimitEvents`); QP_LAST_WQE_REACHED ends retireQp's wait.
 *
 * Retiring a QP (retireQp, before every destroy of a QP on the SRQ): ERR, then its
 * LAST_WQE_REACHED (bounded: retire.ts LAST_WQE_WAIT_MS), its completions polled, then the destroy; a
 * provider drops a destroyed QP's unpolled completions, and the receives in them would be lost
 * to the SRQ while the slab counts them posted.
 *
 * Lifetime: acquire*() counts a user, release() drops one; the last destroys everything (its
 * QPs must be gone: each connection destroys its own first) and stops the waiter, or the last
 * pin() (a QP being retired) once it is dropped. While users remain a timer holds the process
 * open, as an open socket does.
 *
 * Example:
 *   const rt = RdmaRuntime.acquireDevice({ device: "mlx5_0", port: 1, gidIndex: 0 });
 *   const ep = RdmaEndpoint.create(rt, { maxMessageBytes, window: 16, sqDepth: 64, zoneBytes: 1 << 20 });
 *   ...; rt.release();
 *
 * Threading: a runtime belongs to the thread that acquired it.
 */

import { ensureForkSafe, IBV, VerbsContext, WorkCompletions, type QpInit, type VerbsCompChannel, type VerbsCq, type VerbsPd, type VerbsQp, type VerbsSrq } from "../ffi/ibverbs.ts";
import { describeThrown, HotpathError, ProtocolError, TransportClosedError } from "../errors.ts";
import { WaitList } from "../contract/waitlist.ts";
import { RecvSlab } from "./buffers.ts";
import { assertCqDepth } from "./signal.ts";
import { FdWaiter } from "./fd-waiter.ts";
import { QpRetirement } from "./retire.ts";
import { IDLE_AFTER_SEND, type IdleStrategy } from "../segment/idle.ts";

/** Receive slot: every SEND into this runtime fits one (small messages; larger ones go by write-with-immediate). */
export const RECV_SLOT_BYTES = 4096;
/** SRQ receives per runtime: 128 connections of the default window (capped by the device's max_srq_wr). */
export const SRQ_SLOTS = 2048;
/** Send CQ entries: room for the send queues of the connections reserve() admits (capped by max_cqe). */
export const SEND_CQ_ENTRIES = 16384;
/** Completions taken per ibv_poll_cq call. */
const POLL_BATCH = 32;
/** Poll rounds of one progress() call at most (bounds the time a caller spends in it). */
const PROGRESS_ROUNDS = 16;
/** Inline sizes tried for QPs, largest first: the spec's cap 256, then smaller ones a device may take. */
const INLINE_TRIES = [256, 220, 128, 64, 0];
/** The keep-alive timer's period: it never needs to fire, only to exist. */
const KEEP_ALIVE_MS = 1 << 30;

/** What the runtime needs of a connection (or of an endpoint not yet open). */
export interface RdmaSink {
  /** A send-queue completion of this QP (wr_id: the send sequence). */
  onSendCompletion(wrId: number, status: number, opcode: number): void;
  /** A receive completion of this QP into slab slot `slot` (status SUCCESS), or a failed one (slot -1). */
  onRecvCompletion(slot: number, status: number, byteLen: number, opcode: number, imm: number, wcFlags: number): void;
  /** The runtime found this QP or its CQs broken (async event). */
  fail(error: HotpathError): void;
  /** True while it wants event-loop delivery (async / adaptive with a receiver). */
  readonly wantsEvents: boolean;
}

export class RdmaRuntime {
  readonly ctx: VerbsContext;
  readonly pd: VerbsPd;
  readonly portNum: number;
  readonly gidIndex: number;
  readonly lid: number;
  readonly gid: Uint8Array;
  readonly linkLayer: number;
  readonly activeMtu: number;
  readonly maxInline: number;
  readonly recvSlotBytes = RECV_SLOT_BYTES;
  /** RDMA READ / atomic depth QPs are set up with (device limits, at most 16). */
  readonly maxRdAtomic: number;
  /** The device does 64-bit compare-and-swap (atomic_cap is not IBV_ATOMIC_NONE). */
  readonly atomics: boolean;
  readonly channel: VerbsCompChannel;
  readonly sendCq: VerbsCq;
  readonly recvCq: VerbsCq;
  readonly srq: VerbsSrq;
  readonly slab: RecvSlab;
  /** Words over the slab's bytes (RxMessage.headWords: every slot and its head start 4-aligned). */
  readonly slabWords: Int32Array;
  readonly waiter = new FdWaiter();
  /** Connections (and endpoints not yet open) by their QP number. */
  readonly sinks = new Map<number, RdmaSink>();
  /** wait() of event-loop connections: woken after a progress round that found completions. */
  readonly waiters = new WaitList();
  /**
   * What to run at a QP's IBV_EVENT_COMM_EST, by QP number (the control path's: cm mode sets it
   * for an accepted QP until its ESTABLISHED, to call rdma_notify). This thread's.
   */
  readonly commEst = new Map<number, () => void>();
  /** IBV_EVENT_SRQ_LIMIT_REACHED seen (each re-armed). */
  srqLimitEvents = 0;
  /** Completions handled so far (send and receive). */
  completions = 0;
  /** Messages delivered so far (connections count them). */
  delivered = 0;
  private readonly srqLimit: number;
  private reservedRecv = 0;
  private reservedSend = 0;
  private users = 0;
  /** References that keep the runtime alive without keeping the process open (QPs being retired). */
  private pins = 0;
  private readonly retiring = new QpRetirement(this);
  private keepAlive: ReturnType<typeof setInterval> | null = null;
  private readonly wcs = new WorkCompletions(POLL_BATCH);
  private progressing = false;
  private armed = false;
  private microQueued = false;
  private immediateQueued = false;
  private pendingSpinNs = 0;
  private pendingIdle: IdleStrategy | null = null;
  /** When the pump last parked, and whose idle strategy waited then (onParkedInput). */
  private parkedAt = 0;
  private parkedIdle: IdleStrategy | null = null;
  /** Receive completions handled so far (the pump's spin stops at the first new one). */
  recvCompletions = 0;
  private readonly unwatch: Array<() => void> = [];
  private destroyed = false;

  private static readonly runtimes = new Map<string, RdmaRuntime>();

  /** Socket mode: the thread's runtime for a device opened here (first device when none named). The caller is a user until release(). */
  static acquireDevice(opts: { device?: string; port?: number; gidIndex?: number }): RdmaRuntime {
    const port = opts.port ?? 1;
    const gid = opts.gidIndex ?? 0;
    const key = `dev ${opts.device ?? ""} ${port} ${gid}`;
    let rt = RdmaRuntime.runtimes.get(key);
    if (rt === undefined) {
      ensureForkSafe();
      const ctx = VerbsContext.open(opts.device);
      try {
        rt = new RdmaRuntime(key, ctx, port, gid);
      } catch (e) {
        ctx.close();
        throw e;
      }
      RdmaRuntime.runtimes.set(key, rt);
    }
    rt.retain();
    return rt;
  }

  /** cm mode: the thread's runtime for a context rdma_cm lent (keyed by its handle; left open at the end). The caller is a user until release(). */
  static acquireContext(ctx: VerbsContext, port: number, gidIndex: number): RdmaRuntime {
    const key = `ctx ${ctx.handle} ${port} ${gidIndex}`;
    let rt = RdmaRuntime.runtimes.get(key);
    if (rt === undefined) {
      ensureForkSafe();
      rt = new RdmaRuntime(key, ctx, port, gidIndex);
      RdmaRuntime.runtimes.set(key, rt);
    }
    rt.retain();
    return rt;
  }

  private constructor(
    private readonly key: string,
    ctx: VerbsContext,
    port: number,
    gidIndex: number,
  ) {
    this.ctx = ctx;
    this.portNum = port;
    this.gidIndex = gidIndex;
    const dev = ctx.queryDevice();
    const pa = ctx.queryPort(port);
    this.lid = pa.lid;
    this.linkLayer = pa.linkLayer;
    this.activeMtu = pa.activeMtu;
    this.gid = ctx.queryGid(port, gidIndex);
    this.maxRdAtomic = Math.max(1, Math.min(16, dev.maxQpRdAtom, dev.maxQpInitRdAtom));
    this.atomics = dev.atomicCap !== IBV.IBV_ATOMIC_NONE;
    const made: Array<{ close(): void }> = [];
    try {
      this.pd = ctx.allocPd();
      made.push(this.pd);
      this.channel = ctx.createCompChannel();
      made.push(this.channel);
      const slots = Math.min(SRQ_SLOTS, dev.maxSrqWr);
      const maxCqe = dev.maxCqe > 0 ? dev.maxCqe : SEND_CQ_ENTRIES;
      this.sendCq = ctx.createCq(Math.min(SEND_CQ_ENTRIES, maxCqe), this.channel);
      made.push(this.sendCq);
      // Receives come from the SRQ only (QPs have no receive queue of their own): a flush of
      // every posted one fits, with room for the send CQ's share when a device merges nothing.
      this.recvCq = ctx.createCq(Math.min(slots * 2, maxCqe), this.channel);
      made.push(this.recvCq);
      assertCqDepth(this.recvCq.cqe, 0, slots);
      this.srq = this.pd.createSrq({ maxWr: slots, maxSge: 1 });
      this.slab = new RecvSlab(this.pd, this.srq, { slotCount: slots, slotBytes: RECV_SLOT_BYTES });
      this.slabWords = new Int32Array(this.slab.bytes.buffer, this.slab.bytes.byteOffset, this.slab.bytes.byteLength >> 2);
      const rc = this.slab.postAll();
      if (rc !== 0) throw new ProtocolError(`rdma runtime ${ctx.deviceName}: posting ${slots} receives to the SRQ failed (errno ${rc})`);
      // One-shot; re-armed after every event. Credits keep the SRQ above it unless a peer cheats.
      this.srqLimit = Math.max(1, slots >> 4);
      this.srq.arm(this.srqLimit);
      this.maxInline = this.probeInline();
      this.unwatch.push(this.waiter.watch(this.channel.fd, this.onChannel));
      this.unwatch.push(this.waiter.watch(ctx.asyncFd, this.onAsync));
    } catch (e) {
      this.waiter.stop();
      for (const o of made.reverse()) {
        try {
          o.close();
        } catch {
          // the first error is the one to report
        }
      }
      throw e;
    }
  }

  /** The largest inline size the device grants a QP (a throwaway QP per try). */
  private probeInline(): number {
    for (const inline of INLINE_TRIES) {
      try {
        const qp = this.pd.createQp({ ...this.qpInitWith(2, inline) });
        const got = Math.min(qp.caps.maxInlineData, 256);
        qp.close();
        return got;
      } catch {
        // EINVAL: too much inline for this device; try less
      }
    }
    return 0;
  }

  private qpInitWith(sqDepth: number, inline: number): QpInit<VerbsCq, VerbsSrq> {
    return { sendCq: this.sendCq, recvCq: this.recvCq, srq: this.srq, maxSendWr: sqDepth, maxRecvWr: 0, maxSendSge: 2, maxRecvSge: 1, maxInlineData: inline };
  }

  /** QpInit for a connection's QP (send CQ, recv CQ, this SRQ, sqDepth, maxInline, 2 SGEs). */
  qpInit(sqDepth: number): QpInit<VerbsCq, VerbsSrq> {
    return this.qpInitWith(sqDepth, this.maxInline);
  }

  /**
   * Reserves `window` SRQ receives for one connection (and `sqDepth` send-CQ entries for its
   * send queue); false when the SRQ or the send CQ has no room (a listener refuses "busy").
   */
  reserve(window: number, sqDepth = 0): boolean {
    if (this.reservedRecv + window > this.slab.slotCount) return false;
    if (this.reservedSend + sqDepth > this.sendCq.cqe) return false;
    this.reservedRecv += window;
    this.reservedSend += sqDepth;
    return true;
  }

  unreserve(window: number, sqDepth = 0): void {
    this.reservedRecv = Math.max(0, this.reservedRecv - window);
    this.reservedSend = Math.max(0, this.reservedSend - sqDepth);
  }

  /** Watches an fd in the waiter (level-triggered; see fd-waiter.ts). Returns the unwatch function. */
  watchFd(fd: number, onReadable: () => void): () => void {
    return this.waiter.watch(fd, onReadable);
  }

  retain(): void {
    if (this.users++ === 0 && this.keepAlive === null) this.keepAlive = setInterval(() => {}, KEEP_ALIVE_MS);
  }

  /**
   * Drops one user; the last destroys the SRQ, slab, CQs, channel and PD (and the context it
   * opened) and stops the waiter, or, while pins remain, lets the last unpin() do it.
   */
  release(): void {
    if (--this.users > 0) return;
    this.users = 0;
    if (this.keepAlive !== null) clearInterval(this.keepAlive);
    this.keepAlive = null;
    if (this.pins === 0) this.destroy();
  }

  /** A reference that keeps the runtime (its SRQ and slab) alive but not the process (no keep-alive timer). */
  pin(): void {
    this.pins++;
  }

  /** Drops a pin; the last one with no user left destroys the runtime (as release() does). */
  unpin(): void {
    if (--this.pins > 0) return;
    this.pins = 0;
    if (this.users === 0) this.destroy();
  }

  /**
   * Destroys `qp`, a QP on this SRQ, without losing receives (retire.ts: ERR, its
   * IBV_EVENT_QP_LAST_WQE_REACHED, its completions polled, then the destroy); then runs
   * `then(error)`. The runtime stays alive meanwhile (a pin).
   */
  retireQp(qp: VerbsQp, then: (error: unknown) => void): void {
    this.retiring.retire(qp, then);
  }

  /** True while progress() runs (a nested call would poll nothing). */
  get inProgress(): boolean {
    return this.progressing;
  }

  /** Debug counters (tests): users, connections, receives held, reservations. */
  stats(): { users: number; pins: number; sinks: number; recvHeld: number; recvPosted: number; reservedRecv: number; reservedSend: number; srqLimitEvents: number } {
    return { users: this.users, pins: this.pins, sinks: this.sinks.size, recvHeld: this.slab.held, recvPosted: this.slab.posted, reservedRecv: this.reservedRecv, reservedSend: this.reservedSend, srqLimitEvents: this.srqLimitEvents };
  }

  private destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    RdmaRuntime.runtimes.delete(this.key);
    for (const u of this.unwatch.splice(0)) u();
    this.waiter.stop();
    this.waiters.wake(false);
    const errors: unknown[] = [];
    const close = (o: { close(): void }) => {
      try {
        o.close();
      } catch (e) {
        errors.push(e);
      }
    };
    // The PD closes its QPs (none should be left), the SRQ and the MRs (the slab's).
    close(this.pd);
    close(this.sendCq);
    close(this.recvCq);
    close(this.channel);
    if (this.ctx.owned) close(this.ctx);
    if (errors.length > 0) console.error(`hotpath rdma: closing the runtime of ${this.ctx.deviceName}: ${describeThrown(errors[0])}`);
  }

  /**
   * Polls both CQs until empty (bounded) and dispatches every completion; returns completions
   * handled. Nested calls (a receiver that polls from its callback) return 0: the outer round
   * goes on with what arrived.
   */
  progress(): number {
    if (this.progressing || this.destroyed) return 0;
    this.progressing = true;
    let n = 0;
    try {
      for (let round = 0; round < PROGRESS_ROUNDS; round++) {
        const k = this.pollSend() + this.pollRecv();
        if (k === 0) break;
        n += k;
      }
    } finally {
      this.progressing = false;
    }
    if (n > 0) {
      this.completions += n;
      this.waiters.wake(true);
    }
    return n;
  }

  private pollSend(): number {
    const wcs = this.wcs;
    const k = this.ctx.ops.tryPollCq(this.sendCq.handle, wcs);
    if (k < 0) {
      this.failAll(new ProtocolError(`rdma ${this.ctx.deviceName}: ibv_poll_cq on the send CQ failed (${k})`));
      return 0;
    }
    for (let i = 0; i < k; i++) {
      const sink = this.sinks.get(wcs.qpNum(i));
      if (sink === undefined) continue;
      try {
        sink.onSendCompletion(wcs.wrId(i), wcs.status(i), wcs.opcode(i));
      } catch (e) {
        this.sinkFailed(sink, e); // the rest of this batch is still handled
      }
    }
    return k;
  }

  private pollRecv(): number {
    const wcs = this.wcs;
    const k = this.ctx.ops.tryPollCq(this.recvCq.handle, wcs);
    if (k < 0) {
      this.failAll(new ProtocolError(`rdma ${this.ctx.deviceName}: ibv_poll_cq on the receive CQ failed (${k})`));
      return 0;
    }
    const slab = this.slab;
    for (let i = 0; i < k; i++) {
      const status = wcs.status(i);
      const wrId = wcs.wrId(i);
      // Every completion of an SRQ receive hands its slot back from the device, whatever its status.
      const slot = slab.onReceive(wrId);
      const sink = this.sinks.get(wcs.qpNum(i));
      if (status !== IBV.IBV_WC_SUCCESS || sink === undefined) {
        slab.release(slot); // flushed, failed, or for a connection that is gone: posted again
        if (sink !== undefined && status !== IBV.IBV_WC_WR_FLUSH_ERR) sink.onRecvCompletion(-1, status, 0, 0, 0, 0);
        continue;
      }
      try {
        sink.onRecvCompletion(slot, status, wcs.byteLen(i), wcs.opcode(i), wcs.imm(i), wcs.wcFlags(i));
      } catch (e) {
        this.sinkFailed(sink, e);
      }
    }
    this.recvCompletions += k;
    return k;
  }

  /** Re-posts a slab slot a message held; a failed post closes the runtime's connections (the SRQ is broken). */
  releaseSlot(slot: number): void {
    if (this.destroyed) return;
    const rc = this.slab.release(slot);
    if (rc !== 0) this.failAll(new ProtocolError(`rdma ${this.ctx.deviceName}: re-posting a receive to the SRQ failed (errno ${rc})`));
  }

  /** A connection threw out of a completion handler (its own bug, or a callback's): it closes with that error, the runtime goes on. */
  private sinkFailed(sink: RdmaSink, e: unknown): void {
    sink.fail(e instanceof HotpathError ? e : new ProtocolError(`rdma ${this.ctx.deviceName}: a completion handler failed: ${describeThrown(e, true)}`));
  }

  private failAll(error: HotpathError): void {
    for (const s of [...this.sinks.values()]) s.fail(error);
  }

  private anyWantsEvents(): boolean {
    for (const s of this.sinks.values()) if (s.wantsEvents) return true;
    return false;
  }

  /**
   * After a send by an event-loop connection: progress soon, spinning up to `spinNs` for the
   * answer (a receive completion); `idle` (the sender's idle strategy) hears how the spin went
   * and, when it parked instead, how soon input woke it.
   */
  sent(spinNs: number, idle: IdleStrategy | null = null): void {
    if (spinNs >= this.pendingSpinNs) {
      this.pendingSpinNs = spinNs;
      this.pendingIdle = idle;
    }
    this.schedule();
  }

  /** Progress on a clean stack soon (a microtask), then park on the fd. */
  schedule(): void {
    if (this.microQueued || this.destroyed) return;
    this.microQueued = true;
    queueMicrotask(this.pump);
  }

  /** Progress again after this event-loop turn (setImmediate: timers and I/O run in between). */
  private followUp(): void {
    if (this.immediateQueued || this.destroyed) return;
    this.immediateQueued = true;
    setImmediate(this.immediatePump);
  }

  private readonly immediatePump = (): void => {
    this.immediateQueued = false;
    this.pump();
  };

  private readonly pump = (): void => {
    this.microQueued = false;
    if (this.destroyed) return;
    const budget = this.pendingSpinNs;
    const idle = this.pendingIdle;
    this.pendingSpinNs = 0;
    this.pendingIdle = null;
    const r0 = this.recvCompletions;
    this.progress();
    if (this.recvCompletions === r0 && budget > 0) {
      const t0 = Bun.nanoseconds();
      const end = t0 + budget;
      while (this.recvCompletions === r0 && Bun.nanoseconds() < end && !this.destroyed) this.progress();
      idle?.onSpinEnd(IDLE_AFTER_SEND, this.recvCompletions !== r0, Bun.nanoseconds() - t0);
    }
    if (this.recvCompletions !== r0) return this.followUp(); // more may follow: look again after this turn
    this.parkedAt = Bun.nanoseconds();
    this.parkedIdle = idle;
    this.arm();
  };

  /** Polls until a completion arrives, `stop()` says so, or `budgetNs` passes; returns completions handled. */
  spin(budgetNs: number, stop?: () => boolean): number {
    let n = this.progress();
    if (n > 0 || budgetNs <= 0) return n;
    const end = Bun.nanoseconds() + budgetNs;
    while (Bun.nanoseconds() < end) {
      n = this.progress();
      if (n > 0 || (stop !== undefined && stop())) return n;
    }
    return 0;
  }

  /**
   * Arms both CQs for the channel when some connection wants event-loop delivery, then polls
   * once more (a completion between the last poll and the arming raises no event). Returns
   * completions that poll found.
   */
  arm(): number {
    if (this.destroyed || !this.anyWantsEvents()) return 0;
    if (!this.armed) {
      this.sendCq.tryReqNotify();
      this.recvCq.tryReqNotify();
      this.armed = true;
    }
    const n = this.progress();
    if (n > 0) this.followUp();
    return n;
  }

  /** Arms the CQs whatever the connections want (a blocking wait parks on the channel fd). */
  armForBlocking(): void {
    if (this.destroyed || this.armed) return;
    this.sendCq.tryReqNotify();
    this.recvCq.tryReqNotify();
    this.armed = true;
  }

  /** Takes the channel's pending events (acknowledged at once) and disarms; true when there was one. */
  takeChannelEvents(): boolean {
    let any = false;
    for (;;) {
      const cq = this.channel.tryGetCqEvent();
      if (cq === null) break;
      cq.ackEvents();
      any = true;
    }
    if (any) this.armed = false;
    return any;
  }

  private readonly onChannel = (): void => {
    if (this.destroyed) return;
    this.takeChannelEvents();
    const r0 = this.recvCompletions;
    this.progress();
    const idle = this.parkedIdle;
    if (idle !== null && this.recvCompletions !== r0) {
      // Input woke the sender that parked: a spin might have caught it (AdaptiveIdle re-probes).
      idle.onParkedInput(IDLE_AFTER_SEND, Bun.nanoseconds() - this.parkedAt);
      this.parkedIdle = null;
    }
    this.arm();
  };

  /**
   * Handles the async events pending now. A connection calls it before it destroys its QP: an
   * event names its QP by address, so one handled while the QP exists can never be taken for a
   * QP made later at the same address (the kernel drops a destroyed QP's pending events; the
   * software provider keeps them in its pipe).
   */
  drainAsyncEvents(): void {
    this.onAsync();
  }

  private readonly onAsync = (): void => {
    if (this.destroyed) return;
    for (;;) {
      let ev;
      try {
        ev = this.ctx.tryGetAsyncEvent();
      } catch (e) {
        this.failAll(new ProtocolError(`rdma ${this.ctx.deviceName}: reading async events failed: ${describeThrown(e)}`));
        return;
      }
      if (ev === null) return;
      const t = ev.type;
      if (t === IBV.IBV_EVENT_SRQ_LIMIT_REACHED) {
        this.srqLimitEvents++;
        try {
          this.srq.arm(this.srqLimit);
        } catch {
          // the SRQ is gone with the runtime
        }
      } else if (t === IBV.IBV_EVENT_QP_LAST_WQE_REACHED) {
        if (ev.qp !== undefined) this.retiring.onLastWqe(ev.qp.qpNum);
      } else if (t === IBV.IBV_EVENT_QP_FATAL || t === IBV.IBV_EVENT_QP_REQ_ERR || t === IBV.IBV_EVENT_QP_ACCESS_ERR) {
        const sink = ev.qp !== undefined ? this.sinks.get(ev.qp.qpNum) : undefined;
        const what = `rdma ${this.ctx.deviceName}: ${ev.name} on QP ${ev.qp?.qpNum}`;
        sink?.fail(t === IBV.IBV_EVENT_QP_FATAL ? new TransportClosedError(what) : new ProtocolError(what));
      } else if (t === IBV.IBV_EVENT_COMM_EST) {
        const num = ev.qp?.qpNum;
        if (num !== undefined) this.commEst.get(num)?.();
      } else if (t === IBV.IBV_EVENT_CQ_ERR || t === IBV.IBV_EVENT_SRQ_ERR || t === IBV.IBV_EVENT_DEVICE_FATAL) {
        this.failAll(new ProtocolError(`rdma ${this.ctx.deviceName}: ${ev.name}: every connection of this device closes`));
      }
    }
  };
}
