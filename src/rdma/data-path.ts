/**
 * The send half of an rdma connection (RdmaConnection in connection.ts extends it with the
 * receive half, waiting and closing; see there for the whole contract): copied, inline and
 * zero-copy SENDs through the send slab and the allocBuffer pool (tx.ts), large messages by
 * WRITE_WITH_IMM (zones.ts), credits (credits.ts) and signal batching (signal.ts), one-sided
 * work requests for rma.ts, and the send-queue completions that free slots, buffers and the
 * large-message stage.
 *
 * Thread: the runtime's.
 */

import { HotpathError, ProtocolError, TransportClosedError, UsageError } from "../errors.ts";
import { IBV, SendWorkRequests, wcStatusName, type VerbsQp } from "../ffi/ibverbs.ts";
import { bufferPrefix, DEFAULT_MAX_HEAD_BYTES, oversizedSendMessage, sendLimit, SEND_CLOSED, SEND_FULL, SEND_OK, type Capabilities, type Receiver, type SendStatus, type WaitMode } from "../contract/transport.ts";
import { idleStrategyFor, IDLE_AFTER_SEND, type IdleStrategy } from "../segment/idle.ts";
import { CreditFlow } from "./credits.ts";
import { SignalBatcher } from "./signal.ts";
import { RdmaRma, type RdmaLocalRegion, type RdmaRemoteRegion } from "./rma.ts";
import type { HelloFields } from "./hello.ts";
import type { RdmaRuntime } from "./runtime.ts";
import type { Oversized, RdmaRxMessage } from "./rx.ts";
import { BufferPool, SendSlab, type TxBuffer } from "./tx.ts";
import { HEADER_BYTES, KIND_CREDIT, KIND_DATA, KIND_GOODBYE, KIND_LARGE, KIND_ZONE_GRANT, KIND_ZONE_REQUEST, largeImm, writeHeader, ZONE_GRANT_BODY_BYTES, ZONE_REQUEST_BODY_BYTES } from "./wire.ts";
import { LandingZone, LargeStage, type ZoneGrant } from "./zones.ts";
import { PEER_RECV_SLOT_MAX, PEER_RECV_SLOT_MIN, PEER_WINDOW_MAX, PEER_WINDOW_MIN } from "./options.ts";

export const DEFAULT_RDMA_SPIN_NS = 20_000;
/**
 * The send slab's slot (and so the largest SEND) whatever the peer announces: the slab is
 * sqDepth slots of registered (pinned) memory per connection, and a peer's hello must not size
 * it; a message above it goes by WRITE_WITH_IMM into the landing zone.
 */
export const SEND_SLOT_BYTES = 4096;

/** What the connection takes over from its endpoint (endpoint.ts). */
export interface EndpointParts {
  readonly rt: RdmaRuntime;
  readonly qp: VerbsQp;
  readonly zone: LandingZone;
  readonly local: { window: number; maxMessageBytes: number; qpNum: number };
  readonly opts: { sqDepth: number; window: number };
}

/** The peer's hello as the data path reads it. */
export type PeerParams = Pick<HelloFields, "window" | "recvSlotBytes" | "maxMessageBytes" | "zoneAddr" | "zoneRkey" | "zoneBytes">;

type MutableCaps = { -readonly [K in keyof Capabilities]: Capabilities[K] };

/** Owner: the connection (one per QP); the runtime's thread. */
export abstract class RdmaDataPath {
  readonly transport = "rdma";
  readonly caps: Capabilities;
  readonly peer: string;
  closed = false;
  closeError: HotpathError | null = null;
  readonly rt: RdmaRuntime;
  readonly qp: VerbsQp;
  protected receiver: Receiver | null = null;
  protected readonly queue: Array<RdmaRxMessage | Oversized | null> = [];
  protected queueHead = 0;
  protected delivering = false;
  protected mode: WaitMode = "adaptive";
  protected spinNs = DEFAULT_RDMA_SPIN_NS;
  /** How long a send spins for its answer (segment/idle.ts; set by the wait policy). */
  protected idle: IdleStrategy = idleStrategyFor("adaptive", DEFAULT_RDMA_SPIN_NS);
  protected readonly fc: CreditFlow;
  protected readonly sig: SignalBatcher;
  protected readonly slab: SendSlab;
  protected readonly pool: BufferPool;
  protected readonly stage: LargeStage;
  protected readonly zone: LandingZone;
  protected grant: ZoneGrant | null;
  protected grantGen = 0;
  /**
   * A grant is on its way: a write used the last one (the peer grants again at its release) or
   * a ZONE_REQUEST went out. No request until it lands: the peer would void the grant in flight
   * and grant again, and a write with the voided grant's generation would be refused.
   */
  protected grantComing = false;
  protected readonly wrs = new SendWorkRequests(1, 2);
  /** The largest SEND (header + head + body): the peer's receive slot, at most SEND_SLOT_BYTES. */
  protected readonly sendSlotBytes: number;
  protected readonly maxInline: number;
  protected readonly slabDv: DataView;
  /** Zero-copy sends in flight (FIFO by sequence): their buffers go back to the pool on completion. */
  protected readonly txInFlight: Array<{ seq: number; b: TxBuffer }> = [];
  protected readonly sentBuffers = new Set<TxBuffer>();
  protected readonly oneSided: Array<{ seq: number; done: (status: number) => void }> = [];
  protected readonly freeMsgs: RdmaRxMessage[] = [];
  protected rma: RdmaRma | null = null;
  protected goodbyeSeq = 0;
  /** close() waits for a staged large message to be posted before its GOODBYE (connection.ts); sends are refused meanwhile. */
  protected closing = false;
  /** One-shot callbacks for the next send-queue completion (rma.ts waits so for a full send queue). */
  private sendWaiters = new Set<() => void>();
  protected tornDown = false;
  /** Messages delivered so far (tests read it), large ones apart. */
  delivered = 0;
  largeDelivered = 0;

  constructor(
    protected readonly ep: EndpointParts,
    peer: PeerParams,
    peerUrl: string,
    protected readonly onClosed: () => void,
  ) {
    // The bounds decodeHello checks too (options.ts): a hello that passes them opens.
    if (!(peer.window >= PEER_WINDOW_MIN && peer.window <= PEER_WINDOW_MAX)) throw new ProtocolError(`rdma peer ${peerUrl}: window ${peer.window} (${PEER_WINDOW_MIN}..${PEER_WINDOW_MAX})`);
    if (!(peer.recvSlotBytes >= PEER_RECV_SLOT_MIN && peer.recvSlotBytes <= PEER_RECV_SLOT_MAX)) throw new ProtocolError(`rdma peer ${peerUrl}: receive slot of ${peer.recvSlotBytes} bytes (${PEER_RECV_SLOT_MIN}..${PEER_RECV_SLOT_MAX})`);
    this.rt = ep.rt;
    this.qp = ep.qp;
    this.zone = ep.zone;
    this.peer = peerUrl;
    const local = ep.local;
    this.fc = new CreditFlow({ window: peer.window, peerWindow: local.window, returnBatch: Math.max(2, Math.floor(local.window / 4)) });
    this.sig = new SignalBatcher(ep.opts.sqDepth);
    this.sendSlotBytes = Math.min(peer.recvSlotBytes, SEND_SLOT_BYTES);
    this.maxInline = this.rt.maxInline;
    this.slabDv = new DataView(this.rt.slab.bytes.buffer, this.rt.slab.bytes.byteOffset, this.rt.slab.bytes.byteLength);
    this.grant = peer.zoneBytes > HEADER_BYTES ? { addr: peer.zoneAddr, rkey: peer.zoneRkey, bytes: peer.zoneBytes, gen: 0 } : null;
    // Each registration may fail (ENOMEM: RLIMIT_MEMLOCK): what was registered before it goes
    // again, and the throw leaves the QP, zone and reservation to the endpoint (its close()).
    let slab: SendSlab | null = null;
    let pool: BufferPool | null = null;
    try {
      slab = new SendSlab(this.rt.pd, ep.opts.sqDepth, this.sendSlotBytes);
      pool = new BufferPool(this.rt.pd);
      this.stage = new LargeStage(this.rt.pd, DEFAULT_MAX_HEAD_BYTES);
    } catch (e) {
      pool?.close();
      slab?.close();
      throw e;
    }
    this.slab = slab;
    this.pool = pool;
    this.caps = {
      maxInlineBytes: Math.max(0, this.maxInline - HEADER_BYTES),
      maxMessageBytes: local.maxMessageBytes,
      peerMaxMessageBytes: peer.maxMessageBytes,
      maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
      zeroCopy: true,
      rma: true,
      sameHostOnly: false,
    } satisfies MutableCaps;
  }

  get wantsEvents(): boolean {
    return !this.closed && (this.mode === "async" || this.mode === "adaptive");
  }


  // ---------------------------------------------------------------- send

  protected checkSize(hl: number, bl: number): void {
    if (bl > sendLimit(this.caps)) throw new UsageError(oversizedSendMessage("rdma", bl, this.caps));
    if (hl > this.caps.maxHeadBytes) throw new UsageError(`rdma send: head of ${hl} bytes exceeds maxHeadBytes ${this.caps.maxHeadBytes}`);
  }

  /** A send may go now: a staged large message goes first (order). */
  protected blockedByStage(): boolean {
    if (this.stage.state !== 1) return false;
    this.flushPending();
    return this.stage.state === 1;
  }

  trySend(head: Uint8Array, body?: Uint8Array | null): SendStatus {
    if (this.closed || this.closing) return SEND_CLOSED;
    const bl = body ? body.length : 0;
    const hl = head.length;
    this.checkSize(hl, bl);
    if (this.blockedByStage()) return this.full();
    if (HEADER_BYTES + hl + bl <= this.sendSlotBytes) return this.sendSlot(KIND_DATA, head, bl > 0 ? body! : null, null);
    if (this.stage.state !== 0) return this.full();
    this.stage.stageCopy(head, bl > 0 ? body! : null);
    this.flushPending();
    return SEND_OK;
  }

  /** trySendWords()'s 24-byte head, filled from the words (no head bytes built by the caller). */
  private readonly wordsHead = new Uint8Array(24);
  private readonly wordsHeadDv = new DataView(this.wordsHead.buffer);

  /** trySend() of a 24-byte head given as six little-endian words (the RPC wire header); same statuses and limits. */
  trySendWords(h0: number, h1: number, h2: number, h3: number, h4: number, h5: number, body: Uint8Array): SendStatus {
    const dv = this.wordsHeadDv;
    dv.setInt32(0, h0, true);
    dv.setInt32(4, h1, true);
    dv.setInt32(8, h2, true);
    dv.setInt32(12, h3, true);
    dv.setInt32(16, h4, true);
    dv.setInt32(20, h5, true);
    // trySend copies the head (into the send slab or the large stage) before it returns.
    return this.trySend(this.wordsHead, body);
  }

  allocBuffer(lenBytes: number): Uint8Array | null {
    if (this.closed || this.closing) return null;
    if (!Number.isSafeInteger(lenBytes) || lenBytes < 0) throw new UsageError(`rdma allocBuffer: ${lenBytes} is not a number of bytes (an integer ≥ 0)`);
    if (lenBytes > sendLimit(this.caps)) throw new UsageError(oversizedSendMessage("rdma", lenBytes, this.caps));
    return this.pool.take(lenBytes);
  }

  trySendBuffer(head: Uint8Array, whole: Uint8Array, lenBytes: number = whole.length): SendStatus {
    if (this.closed || this.closing) return SEND_CLOSED;
    const b = this.pool.lookup(whole);
    if (b === undefined || this.sentBuffers.has(b)) throw new UsageError("rdma trySendBuffer: not a buffer allocBuffer() returned (that very view), or one already sent");
    const buffer = bufferPrefix("rdma", whole, lenBytes);
    const hl = head.length;
    const bl = buffer.length;
    this.checkSize(hl, bl);
    if (this.blockedByStage()) return this.full();
    const total = HEADER_BYTES + hl + bl;
    if (total <= this.sendSlotBytes) {
      if (total <= this.maxInline || bl === 0) {
        const st = this.sendSlot(KIND_DATA, head, buffer, null);
        if (st === SEND_OK) this.pool.put(b);
        return st;
      }
      return this.sendSlot(KIND_DATA, head, null, b, bl);
    }
    if (this.stage.state !== 0) return this.full();
    this.stage.stageBuffer(head, b, bl);
    this.sentBuffers.add(b);
    this.flushPending();
    return SEND_OK;
  }

  releaseBuffer(buffer: Uint8Array): void {
    const b = this.pool.lookup(buffer);
    if (b !== undefined && !this.sentBuffers.has(b)) this.pool.put(b);
  }

  /**
   * Completions of this connection handled so far (its receives and its send completions): what
   * a wait() of this connection waits for. The runtime's CQs, channel and wake-ups are shared by
   * all its connections, so another connection's completion must not end this one's wait.
   */
  activity = 0;

  /**
   * `activity` when a send last reported Full (-1: none since the last wait): a wait() after Full
   * returns at once when this connection's completions came in between (they may have made room,
   * and their wake-up went out before the wait began).
   */
  protected fullMark = -1;

  protected full(): SendStatus {
    this.fullMark = this.activity;
    if (this.wantsEvents) this.rt.schedule();
    return SEND_FULL;
  }

  /** Whether a message that takes a credit (not a credit message) and a send slot may go now. */
  protected canPost(): boolean {
    return this.sig.free > 0 && this.fc.canSendData();
  }

  /**
   * One SEND through the send slab: header + head (+ body copied, or `zc` as a second SGE of
   * `zcLen` bytes). `credits` < 0: take a data credit now (Full without one), else a credit
   * message already took its credit and carries `credits`.
   */
  protected sendSlot(kind: number, head: Uint8Array | null, body: Uint8Array | null, zc: TxBuffer | null, zcLen = 0, credits = -1, extra: ((dv: DataView, at: number) => void) | null = null, extraLen = 0): SendStatus {
    if (this.sig.free < 1 || (credits < 0 && !this.fc.canSendData())) return this.full();
    const back = credits < 0 ? this.fc.tryTakeForData() : credits;
    const flags = this.sig.tryPost(zc !== null || kind === KIND_GOODBYE);
    const seq = this.sig.lastSeq;
    const slab = this.slab;
    const at = slab.offsetOf(seq);
    const hl = head === null ? 0 : head.length;
    const bl = zc !== null ? zcLen : body !== null ? body.length : extraLen;
    writeHeader(slab.dv, at, kind, back, hl, bl);
    if (hl > 0) slab.bytes.set(head!, at + HEADER_BYTES);
    if (body !== null && body.length > 0) slab.bytes.set(body, at + HEADER_BYTES + hl);
    if (extra !== null) extra(slab.dv, at + HEADER_BYTES + hl);
    const inSlab = HEADER_BYTES + hl + (zc !== null ? 0 : bl);
    const wrs = this.wrs;
    const inline = zc === null && inSlab <= this.maxInline ? IBV.IBV_SEND_INLINE : 0;
    wrs.set(0, seq, IBV.IBV_WR_SEND, flags | inline, slab.mr.address + at, inSlab, slab.mr.lkey);
    if (zc !== null && zcLen > 0) {
      wrs.setSge(0, 1, zc.mr.address, zcLen, zc.mr.lkey);
      wrs.setNumSge(0, 2);
      this.txInFlight.push({ seq, b: zc });
      this.sentBuffers.add(zc);
    }
    if (kind === KIND_GOODBYE) this.goodbyeSeq = seq;
    return this.post();
  }

  protected post(): SendStatus {
    const rc = this.qp.tryPostSend(this.wrs, 0);
    if (rc !== 0) {
      this.fail(new TransportClosedError(`rdma connection to ${this.peer}: ibv_post_send failed (errno ${rc})`));
      return SEND_CLOSED;
    }
    if (this.wantsEvents) this.rt.sent(this.idle.spinBudgetNs(IDLE_AFTER_SEND), this.idle);
    return SEND_OK;
  }

  /** The staged large message by WRITE_WITH_IMM into the granted zone (credit and slot checked by the caller). */
  protected postLarge(g: ZoneGrant): void {
    const s = this.stage;
    const back = this.fc.tryTakeForData();
    const flags = this.sig.tryPost(true);
    const seq = this.sig.lastSeq;
    writeHeader(s.headDv, 0, KIND_LARGE, back, s.headLen, s.bodyLen);
    const wrs = this.wrs;
    wrs.set(0, seq, IBV.IBV_WR_RDMA_WRITE_WITH_IMM, flags, s.headMr.address, HEADER_BYTES + s.headLen, s.headMr.lkey);
    if (s.bodyLen > 0) {
      wrs.setSge(0, 1, s.bodyAddr, s.bodyLen, s.bodyLkey);
      wrs.setNumSge(0, 2);
    }
    wrs.setRdma(0, g.addr, g.rkey);
    wrs.setImm(0, largeImm(g.gen));
    this.grant = null;
    this.grantComing = true;
    s.state = 2;
    s.seq = seq;
    this.post();
  }

  /**
   * Sends what is due, in this order: a zone grant the peer waits for, the staged large message
   * (or its ZONE_REQUEST), a credit message. Called after every completion and release.
   */
  protected flushPending(): void {
    if (this.closed) return;
    const z = this.zone;
    if (z.grantDue && this.canPost()) {
      z.nextGrant();
      const addr = z.addr;
      const rkey = z.rkey;
      const bytes = z.bytes;
      this.sendSlot(KIND_ZONE_GRANT, null, null, null, 0, -1, (dv, at) => {
        dv.setBigUint64(at, addr, true);
        dv.setUint32(at + 8, rkey, true);
        dv.setUint32(at + 12, bytes, true);
      }, ZONE_GRANT_BODY_BYTES);
    }
    const s = this.stage;
    if (s.state === 1 && !this.closed) {
      const g = this.grant;
      if (g !== null && g.bytes >= s.total) {
        if (this.canPost()) this.postLarge(g);
      } else if (!s.requested && !this.grantComing && this.canPost()) {
        const want = s.total;
        this.grant = null;
        this.grantComing = true;
        s.requested = true;
        this.sendSlot(KIND_ZONE_REQUEST, null, null, null, 0, -1, (dv, at) => dv.setUint32(at, want, true), ZONE_REQUEST_BODY_BYTES);
      }
    }
    if (!this.closed && this.sig.free > 0) {
      const c = this.fc.tryTakeForCreditMessage();
      if (c > 0) this.sendSlot(KIND_CREDIT, null, null, null, 0, c);
    }
  }

  /**
   * For rma.ts: posts one signaled one-sided WR (RDMA_READ / RDMA_WRITE / ATOMIC_CMP_AND_SWP)
   * on this QP's send queue, sharing the SignalBatcher and the send-queue slots with messages;
   * `done(status)` runs on its completion (IBV_WC_SUCCESS or the failure), and with
   * IBV_WC_WR_FLUSH_ERR when the connection closes first. False (Full) when the send queue has
   * no slot; TransportClosedError when closed.
   */
  postOneSided(op: number, localAddr: number, lkey: number, lenBytes: number, remoteAddr: bigint, rkey: number, compare: bigint, swap: bigint, done: (status: number) => void): boolean {
    if (this.closed) throw new TransportClosedError(`rdma connection to ${this.peer} is closed`);
    if (this.sig.free < 1) {
      this.full();
      return false;
    }
    const flags = this.sig.tryPost(true);
    const seq = this.sig.lastSeq;
    const wrs = this.wrs;
    wrs.set(0, seq, op, flags, localAddr, lenBytes, lkey);
    if (op === IBV.IBV_WR_ATOMIC_CMP_AND_SWP) wrs.setAtomic(0, remoteAddr, rkey, compare, swap);
    else wrs.setRdma(0, remoteAddr, rkey);
    this.oneSided.push({ seq, done });
    this.post();
    return true;
  }

  registerMemory(lenBytes: number): RdmaLocalRegion {
    return this.rmaState().registerMemory(lenBytes);
  }

  attachRegion(descriptor: Uint8Array): RdmaRemoteRegion {
    return this.rmaState().attachRegion(descriptor);
  }

  protected rmaState(): RdmaRma {
    if (this.closed) throw new TransportClosedError(`rdma connection to ${this.peer} is closed`);
    this.rma ??= new RdmaRma(this, this.rt.pd, this.rt.atomics);
    return this.rma;
  }

  // ---------------------------------------------------------------- completions (runtime.ts)

  /** Runs `f` once at this connection's next send-queue completion (or its close: the waiters run then too); `f` given twice runs once. */
  onNextSendCompletion(f: () => void): void {
    this.sendWaiters.add(f);
  }

  /** Runs (and forgets) the waiters onNextSendCompletion registered. */
  protected runSendWaiters(): void {
    if (this.sendWaiters.size === 0) return;
    const w = this.sendWaiters;
    this.sendWaiters = new Set();
    for (const f of w) f();
  }

  onSendCompletion(wrId: number, status: number, opcode: number): void {
    this.activity++;
    try {
      this.onSendCompletionInner(wrId, status, opcode);
    } finally {
      this.runSendWaiters();
    }
  }

  private onSendCompletionInner(wrId: number, status: number, _opcode: number): void {
    const ops = this.oneSided;
    if (status !== IBV.IBV_WC_SUCCESS) {
      // RC stops at the first failure: this WR (one-sided: its owner hears why), the rest flush.
      while (ops.length > 0 && ops[0]!.seq <= wrId) {
        const o = ops.shift()!;
        o.done(o.seq === wrId ? status : IBV.IBV_WC_WR_FLUSH_ERR);
      }
      const s = this.stage;
      const ourWrite = s.state === 2 && s.seq === wrId;
      if (!this.closed) this.fail(ourWrite ? this.writeErrorFor(status) : this.errorFor(status));
      else if (this.goodbyeSeq !== 0 && wrId >= this.goodbyeSeq) this.teardown();
      return;
    }
    if (wrId > this.sig.lastSeq) return this.abort(new ProtocolError(`rdma connection to ${this.peer}: send completion for sequence ${wrId}, latest ${this.sig.lastSeq}`));
    this.sig.onCompletion(wrId);
    const tx = this.txInFlight;
    while (tx.length > 0 && tx[0]!.seq <= wrId) {
      const t = tx.shift()!;
      this.sentBuffers.delete(t.b);
      this.pool.put(t.b);
    }
    while (ops.length > 0 && ops[0]!.seq <= wrId) ops.shift()!.done(IBV.IBV_WC_SUCCESS);
    const s = this.stage;
    if (s.state === 2 && s.seq <= wrId) {
      if (s.txBuffer !== null) {
        this.sentBuffers.delete(s.txBuffer);
        this.pool.put(s.txBuffer);
      }
      s.done();
    }
    if (this.closed) {
      if (this.goodbyeSeq !== 0 && wrId >= this.goodbyeSeq) this.teardown();
      return;
    }
    this.flushPending();
  }

  /**
   * Our WRITE_WITH_IMM into the peer's landing zone failed: a refused rkey or address
   * (REM_ACCESS_ERR) or a request the peer could not take (REM_INV_REQ_ERR) means the grant it
   * gave was bad: ProtocolError. Anything else as errorFor.
   */
  protected writeErrorFor(status: number): HotpathError {
    if (status === IBV.IBV_WC_REM_ACCESS_ERR || status === IBV.IBV_WC_REM_INV_REQ_ERR) {
      return new ProtocolError(`rdma connection to ${this.peer}: the write into the peer's landing zone failed (${wcStatusName(status)}): its grant was not valid`);
    }
    return this.errorFor(status);
  }

  /** A failed receive completion: LOC_LEN_ERR is the peer's SEND larger than the receive slot its hello was told (ProtocolError). */
  protected recvErrorFor(status: number): HotpathError {
    if (status === IBV.IBV_WC_LOC_LEN_ERR) {
      return new ProtocolError(`rdma connection to ${this.peer}: the peer sent a message larger than the ${this.rt.recvSlotBytes}-byte receive slot (${wcStatusName(status)})`);
    }
    return this.errorFor(status);
  }

  protected errorFor(status: number): HotpathError {
    if (status === IBV.IBV_WC_RNR_RETRY_EXC_ERR) {
      return new ProtocolError(`rdma connection to ${this.peer}: ${wcStatusName(status)}: the peer had no receive posted (its credits were not honoured)`);
    }
    if (status === IBV.IBV_WC_RETRY_EXC_ERR) return new TransportClosedError(`rdma connection to ${this.peer}: the peer stopped answering (${wcStatusName(status)})`);
    return new TransportClosedError(`rdma connection to ${this.peer}: the QP failed (${wcStatusName(status)})`);
  }

  /** The QP or the runtime failed: closes at once with `error`. */
  abstract fail(error: HotpathError): void;
  /** Closes at once with `error` (the contract's abort). */
  abstract abort(error: HotpathError): void;
  /** Destroys the QP and what the connection registered; runs onClosed. Once. */
  protected abstract teardown(): void;
}
