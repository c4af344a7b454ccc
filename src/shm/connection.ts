/**
 * SegmentConnection: the Transport contract over one session segment (data path). Used by
 * `shm` (a mapped POSIX shm object, peers in two processes) and `inproc` (a SharedArrayBuffer,
 * peers in two Workers); only the doorbells differ (`Signals`).
 *
 * Send: a message whose head and body fit in 56 bytes travels inline in its descriptor (one
 * cache line); otherwise the head (≤ 48 bytes) rides in the descriptor and the body in a slab
 * slot the sender allocates and the receiver frees on release.
 * allocBuffer() hands out a slot view to fill in place, trySendBuffer() sends it without a copy.
 * Ring or slab exhaustion is Full, never an error.
 *
 * Receive: poll() hands each descriptor to the receiver as a message whose views point into
 * the segment; release() frees its slot and, once every older message was released too, its
 * descriptor.
 *
 * Waiting (WaitPolicy.mode):
 *   - "spin": poll() only; wait() busy-polls (never parks). For dedicated cores.
 *   - "blocking": wait() spins up to spinNs, then parks in futex (Atomics.wait for inproc);
 *     blocks the thread for at most the timeout. For dedicated threads and processes.
 *   - "async": messages are delivered from the event loop: after a send or a delivery the
 *     connection spins up to spinNs for more, then arms its doorbell and sleeps until the peer
 *     rings (no busy core while idle).
 *   - "adaptive" (default): "async", except that speculative spins (after a delivery, with
 *     nothing sent) get a budget that halves each time spinning found nothing and doubles (up
 *     to spinNs) each time it paid; a spin after a send always gets spinNs, a reply being due.
 * The peer rings only when this side is armed: a send costs a wake syscall only after the
 * receiver parked.
 *
 * Threading: a connection belongs to the thread that created it.
 */

import { HotpathError, ProtocolError, TransportClosedError, UsageError } from "../errors.ts";
import {
  SEND_CLOSED,
  SEND_FULL,
  SEND_OK,
  type Capabilities,
  type Connection,
  type Receiver,
  type RxMessage,
  type SendStatus,
  type WaitPolicy,
} from "../transport/transport.ts";
import { WaitList } from "../waitlist.ts";
import {
  ARMED_AWAKE,
  ARMED_EVENT_LOOP,
  ARMED_FUTEX,
  CLOSED_A,
  CLOSED_B,
  DESC_BODY_LEN,
  DESC_FLAG_SLOT,
  DESC_INLINE,
  DESC_INLINE_BYTES,
  DESC_LEN_FLAGS,
  DESC_SLOT,
  DESC_SLOT_GEN,
  DESC_SLOT_HEAD,
  DESC_SLOT_HEAD_BYTES,
  HDR_CLOSED,
  RING_ARMED,
  RING_DOORBELL,
  RING_SPACE_WANTED,
  type SegmentLayout,
} from "./layout.ts";
import { RingConsumer, RingProducer } from "./ring.ts";
import { Slab } from "./slab.ts";

export type WaitMode = "spin" | "blocking" | "async" | "adaptive";

export interface SegmentWaitPolicy extends WaitPolicy {
  mode: WaitMode;
}

/** How a side sleeps and how it wakes its peer; byte offsets name futex words in the segment. */
export interface Signals {
  /** Wakes a peer parked in futex / Atomics.wait on the word at `offset`. */
  wakeBlocking(offset: number): void;
  /** Wakes a peer parked in its event loop (shm: a byte on the control socket). */
  wakeEventLoop(offset: number): void;
  /** Blocks this thread while the word at `offset` equals `expected`, at most `timeoutNs`. */
  waitBlocking(offset: number, expected: number, timeoutNs: number): void;
  /**
   * Arranges for `onDoorbell()` once the word at `offset` moves past `expected` (inproc:
   * Atomics.waitAsync). Shm's doorbell arrives on the control socket instead: a no-op there.
   */
  armEventLoop(offset: number, expected: number, onDoorbell: () => void): void;
}

/** Default spin budget: covers a peer's turnaround on another core (~1–2 µs) with room to spare. */
export const DEFAULT_SPIN_NS = 20_000;
/** A blocking wait parks at most this long per slice, so peer death is noticed between slices. */
const BLOCK_SLICE_NS = 50e6;
/** Adaptive budgets below this stop spinning altogether. */
const MIN_ADAPTIVE_SPIN_NS = 500;

export interface SegmentConnectionOptions {
  transport: "shm" | "inproc";
  buffer: ArrayBufferLike;
  layout: SegmentLayout;
  /** "A" is the client (sends on ring A→B), "B" the server. */
  side: "A" | "B";
  signals: Signals;
  peer: string;
  /** Called once when the connection ends, however it ends (setup releases the socket / mapping). */
  onLocalClose?: () => void;
  policy?: Partial<SegmentWaitPolicy>;
  /** Largest body accepted from the peer (default: the largest slab class); bigger aborts. */
  maxMessageBytes?: number;
}

class SegmentRxMessage implements RxMessage {
  private done = false;
  constructor(
    private readonly conn: SegmentConnection,
    readonly index: number,
    readonly headBuf: Uint8Array,
    readonly headOffset: number,
    readonly headLength: number,
    readonly bodyLength: number,
    /** Slab slot of the body, or -1 when the body is inline after the head. */
    readonly slot: number,
  ) {}
  get head(): Uint8Array {
    return this.headBuf.subarray(this.headOffset, this.headOffset + this.headLength);
  }
  get body(): Uint8Array {
    return this.conn.bodyView(this);
  }
  release(): void {
    if (this.done) return;
    this.done = true;
    this.conn.releaseMessage(this.index, this.slot);
  }
}

export class SegmentConnection implements Connection {
  readonly transport: string;
  readonly caps: Capabilities;
  readonly peer: string;
  closed = false;
  closeError: HotpathError | null = null;

  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly tx: RingProducer;
  private readonly rx: RingConsumer;
  private readonly txSlab: Slab;
  private readonly rxSlab: Slab;
  private readonly signals: Signals;
  private readonly myClosedBit: number;
  private readonly peerClosedBit: number;
  private readonly rxDoorbell: number;
  private readonly rxArmedIdx: number;
  private readonly txDoorbell: number;
  private readonly txArmedIdx: number;
  private receiver: Receiver | null = null;
  private readonly waiters = new WaitList();
  private policy: SegmentWaitPolicy = { mode: "adaptive", spinNs: DEFAULT_SPIN_NS };
  private spinBudgetNs = DEFAULT_SPIN_NS;
  private microQueued = false;
  private immediateQueued = false;
  private pumping = false;
  /** A send happened since the last pump: spin the full budget (a reply is likely on its way). */
  private sentSincePump = false;
  private armedFor: number = ARMED_AWAKE;
  private readonly onLocalClose: (() => void) | undefined;
  private readonly microTask = () => {
    this.microQueued = false;
    this.pump();
  };
  private readonly immediateTask = () => {
    this.immediateQueued = false;
    this.pump();
  };
  private readonly rxSpaceIdx: number;
  private readonly txSpaceIdx: number;
  private readonly rxMaxBytes: number;
  /** A send met Full and asked the receiver for room (spaceWanted) since the last send. */
  private wantingSpace = false;
  private readonly inlineViewCache: (Uint8Array | undefined)[];
  private readonly slotViewCache: (Uint8Array | undefined)[];
  private readonly ringMask: number;

  constructor(o: SegmentConnectionOptions) {
    this.transport = o.transport;
    this.peer = o.peer;
    this.signals = o.signals;
    this.onLocalClose = o.onLocalClose;
    this.words = new Int32Array(o.buffer, 0, o.layout.totalBytes >> 2);
    this.bytes = new Uint8Array(o.buffer, 0, o.layout.totalBytes);
    const [txDir, rxDir] = o.side === "A" ? [0, 1] : [1, 0];
    const l = o.layout;
    this.tx = new RingProducer(this.words, l.rings[txDir]!, l.ringSlots);
    this.rx = new RingConsumer(this.words, l.rings[rxDir]!, l.ringSlots);
    this.txSlab = new Slab(this.words, this.bytes, l.slabs[txDir]!);
    this.rxSlab = new Slab(this.words, this.bytes, l.slabs[rxDir]!);
    this.rxDoorbell = l.rings[rxDir]! + RING_DOORBELL;
    this.rxArmedIdx = (l.rings[rxDir]! + RING_ARMED) >> 2;
    this.txDoorbell = l.rings[txDir]! + RING_DOORBELL;
    this.txArmedIdx = (l.rings[txDir]! + RING_ARMED) >> 2;
    this.rxSpaceIdx = (l.rings[rxDir]! + RING_SPACE_WANTED) >> 2;
    this.txSpaceIdx = (l.rings[txDir]! + RING_SPACE_WANTED) >> 2;
    this.myClosedBit = o.side === "A" ? CLOSED_A : CLOSED_B;
    this.peerClosedBit = o.side === "A" ? CLOSED_B : CLOSED_A;
    this.caps = {
      maxInlineBytes: DESC_INLINE_BYTES,
      maxMessageBytes: this.txSlab.maxSlotBytes,
      peerMaxMessageBytes: this.txSlab.maxSlotBytes,
      maxHeadBytes: DESC_SLOT_HEAD_BYTES,
      zeroCopy: true,
      rma: false,
      sameHostOnly: true,
    };
    this.rxMaxBytes = Math.min(o.maxMessageBytes ?? Infinity, this.rxSlab.maxSlotBytes);
    this.ringMask = l.ringSlots - 1;
    this.inlineViewCache = new Array(l.ringSlots).fill(undefined);
    this.slotViewCache = new Array(this.rxSlab.layout.totalSlots).fill(undefined);
    if (o.policy) this.setWaitPolicy(o.policy);
  }

  setReceiver(receiver: Receiver): void {
    this.receiver = receiver;
    if (this.closed) {
      receiver.onClose(this.closeError);
      return;
    }
    if (this.autoPumps()) this.schedulePump();
  }

  setWaitPolicy(policy: Partial<SegmentWaitPolicy>): void {
    const mode = policy.mode ?? this.policy.mode;
    if (!["spin", "blocking", "async", "adaptive"].includes(mode)) throw new UsageError(`wait mode "${mode}" is not spin, blocking, async or adaptive`);
    const spinNs = policy.spinNs ?? this.policy.spinNs;
    if (!(spinNs >= 0)) throw new UsageError(`spinNs ${spinNs} must be ≥ 0`);
    this.policy = { mode, spinNs };
    this.spinBudgetNs = spinNs;
    if (this.autoPumps() && this.receiver !== null) this.schedulePump();
  }

  get waitPolicy(): Readonly<SegmentWaitPolicy> {
    return this.policy;
  }

  // ---------------------------------------------------------------- send

  trySend(head: Uint8Array, body?: Uint8Array | null): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const hl = head.length;
    const bl = body ? body.length : 0;
    if (hl > DESC_SLOT_HEAD_BYTES || bl > this.caps.maxMessageBytes) {
      throw new UsageError(`${this.transport} send: head ${hl} bytes (max ${DESC_SLOT_HEAD_BYTES}), body ${bl} bytes (max ${this.caps.maxMessageBytes}); larger messages are refused, not split`);
    }
    let d = this.tx.reserve();
    if (d < 0 && (d = this.retryReserve()) < 0) return SEND_FULL;
    const bytes = this.bytes;
    if (hl + bl <= DESC_INLINE_BYTES) {
      bytes.set(head, d + DESC_INLINE);
      if (bl > 0) bytes.set(body!, d + DESC_INLINE + hl);
      this.publish(d, hl, bl, -1);
      return SEND_OK;
    }
    const slot = this.allocSlot(bl);
    if (slot < 0) return SEND_FULL;
    this.txSlab.views[slot]!.set(body!, 0);
    bytes.set(head, d + DESC_SLOT_HEAD);
    this.publish(d, hl, bl, slot);
    return SEND_OK;
  }

  allocBuffer(lenBytes: number): Uint8Array | null {
    if (this.closed) return null;
    if (!(lenBytes >= 0) || lenBytes > this.caps.maxMessageBytes) {
      throw new UsageError(`${this.transport} allocBuffer: ${lenBytes} bytes is outside 0..${this.caps.maxMessageBytes}`);
    }
    const slot = this.allocSlot(lenBytes);
    return slot < 0 ? null : this.txSlab.views[slot]!.subarray(0, lenBytes);
  }

  trySendBuffer(head: Uint8Array, buffer: Uint8Array): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const slot = buffer.buffer === this.bytes.buffer ? this.txSlab.slotOfView(buffer) : -1;
    if (slot < 0 || !this.txSlab.isAllocated(slot) || buffer.byteOffset !== this.txSlab.views[slot]!.byteOffset) {
      throw new UsageError(`${this.transport} trySendBuffer: the buffer is not one from this connection's allocBuffer() (or it was sent already)`);
    }
    if (head.length > DESC_SLOT_HEAD_BYTES) throw new UsageError(`${this.transport} send: head ${head.length} bytes exceeds ${DESC_SLOT_HEAD_BYTES}`);
    let d = this.tx.reserve();
    if (d < 0 && (d = this.retryReserve()) < 0) return SEND_FULL;
    this.bytes.set(head, d + DESC_SLOT_HEAD);
    this.publish(d, head.length, buffer.length, slot);
    return SEND_OK;
  }

  /**
   * Ring or slab full: ask the receiver to ring us when it frees something, then look once
   * more. SYNC: the flag store here and the receiver's free (head / slot state store) followed
   * by its load of the flag in releaseMessage() are all sequentially consistent, so either the
   * second look finds the room or the receiver sees the flag and rings.
   */
  private wantSpace(): void {
    this.wantingSpace = true;
    Atomics.store(this.words, this.txSpaceIdx, 1);
  }

  private retryReserve(): number {
    this.wantSpace();
    return this.tx.reserve();
  }

  private allocSlot(lenBytes: number): number {
    const slot = this.txSlab.alloc(lenBytes);
    if (slot >= 0) return slot;
    this.wantSpace();
    return this.txSlab.alloc(lenBytes);
  }

  /**
   * Gives back a buffer from allocBuffer() that will not be sent (after Full, or never used).
   * Idempotent; a buffer already sent is left alone.
   */
  releaseBuffer(buffer: Uint8Array): void {
    if (buffer.buffer !== this.bytes.buffer) return;
    const slot = this.txSlab.slotOfView(buffer);
    if (slot >= 0 && this.txSlab.isAllocated(slot)) this.txSlab.unalloc(slot);
  }

  private publish(d: number, hl: number, bl: number, slot: number): void {
    const w = this.words;
    this.wantingSpace = false;
    const i = d >> 2;
    w[i + DESC_LEN_FLAGS / 4] = hl | ((slot >= 0 ? DESC_FLAG_SLOT : 0) << 16);
    w[i + DESC_BODY_LEN / 4] = bl;
    if (slot >= 0) {
      w[i + DESC_SLOT / 4] = slot;
      w[i + DESC_SLOT_GEN / 4] = this.txSlab.generation(slot);
      this.txSlab.markSent(slot);
    }
    this.tx.publish();
    // SYNC: the publish above (Atomics.store of tail) and this exchange are both sequentially
    // consistent; the consumer stores `armed` and then re-reads tail before it parks, so either
    // it sees the message or we see it armed (and ring exactly once per park).
    this.ringPeer();
    if (this.autoPumps()) {
      // An answer usually follows a send: the next pump spins the whole budget for it.
      this.sentSincePump = true;
      this.schedulePump();
    }
  }

  /** Rings the peer if it is parked (armed), once per park. */
  private ringPeer(): void {
    // A plain Atomics.load first: the locked exchange is paid only when the peer is parked.
    if (Atomics.load(this.words, this.txArmedIdx) === ARMED_AWAKE) return;
    const armed = Atomics.exchange(this.words, this.txArmedIdx, ARMED_AWAKE);
    if (armed !== ARMED_AWAKE) this.ring(armed);
  }

  private ring(armed: number): void {
    Atomics.add(this.words, this.txDoorbell >> 2, 1);
    if (armed === ARMED_FUTEX) this.signals.wakeBlocking(this.txDoorbell);
    else this.signals.wakeEventLoop(this.txDoorbell);
  }

  // ---------------------------------------------------------------- receive

  poll(): number {
    const r = this.receiver;
    if (r === null || this.closed) return 0;
    let n = 0;
    const w = this.words;
    while (this.rx.available() > 0) {
      const index = this.rx.take();
      const d = this.rx.descOffset(index);
      const lf = w[(d + DESC_LEN_FLAGS) >> 2]!;
      const hl = lf & 0xffff;
      const flags = lf >>> 16;
      const bl = w[(d + DESC_BODY_LEN) >> 2]! >>> 0;
      let slot = -1;
      let at = d + DESC_INLINE;
      try {
        if (bl > this.rxMaxBytes) throw new ProtocolError(`${this.transport}: message body of ${bl} bytes exceeds maxMessageBytes ${this.rxMaxBytes}`);
        if (flags & DESC_FLAG_SLOT) {
          if (hl > DESC_SLOT_HEAD_BYTES) throw new ProtocolError(`${this.transport}: descriptor head of ${hl} bytes exceeds ${DESC_SLOT_HEAD_BYTES}`);
          slot = w[(d + DESC_SLOT) >> 2]! >>> 0;
          this.rxSlab.check(slot, w[(d + DESC_SLOT_GEN) >> 2]!, bl);
          at = d + DESC_SLOT_HEAD;
        } else if (hl + bl > DESC_INLINE_BYTES) {
          throw new ProtocolError(`${this.transport}: inline message of ${hl}+${bl} bytes exceeds ${DESC_INLINE_BYTES}`);
        }
      } catch (e) {
        this.abort(e as HotpathError);
        return n;
      }
      r.onMessage(new SegmentRxMessage(this, index, this.bytes, at, hl, bl, slot));
      n++;
      if (this.closed) break;
    }
    return n;
  }

  /**
   * @internal the body view of a message (inline after the head, or the slot's view). Views
   * are cached per descriptor / slot and reused when the next message there has the same
   * place and length: a view is only valid until its message is released, and a descriptor
   * or slot is not reused before that, so no live view is ever shared.
   */
  bodyView(m: SegmentRxMessage): Uint8Array {
    const len = m.bodyLength;
    if (m.slot >= 0) {
      const cached = this.slotViewCache[m.slot];
      if (cached !== undefined && cached.length === len) return cached;
      const v = this.rxSlab.views[m.slot]!.subarray(0, len);
      this.slotViewCache[m.slot] = v;
      return v;
    }
    const at = m.headOffset + m.headLength;
    const k = m.index & this.ringMask;
    const cached = this.inlineViewCache[k];
    if (cached !== undefined && cached.byteOffset === at && cached.length === len) return cached;
    const v = this.bytes.subarray(at, at + len);
    this.inlineViewCache[k] = v;
    return v;
  }

  /** @internal */
  releaseMessage(index: number, slot: number): void {
    if (slot >= 0) this.rxSlab.free(slot);
    this.rx.release(index);
    // The sender found the ring or slab full and waits for room: wake it however it waits (it
    // may not have parked yet, so "armed" cannot be trusted here; this is the rare path).
    // SYNC: pairs with Atomics.store(spaceWanted) in the sender's wantSpace().
    if (Atomics.load(this.words, this.rxSpaceIdx) !== 0 && Atomics.exchange(this.words, this.rxSpaceIdx, 0) !== 0 && !this.closed) {
      Atomics.exchange(this.words, this.txArmedIdx, ARMED_AWAKE);
      Atomics.add(this.words, this.txDoorbell >> 2, 1);
      this.signals.wakeBlocking(this.txDoorbell);
      this.signals.wakeEventLoop(this.txDoorbell);
    }
  }

  // ---------------------------------------------------------------- waiting

  private autoPumps(): boolean {
    return this.policy.mode === "async" || this.policy.mode === "adaptive";
  }

  /** Pump soon (a microtask): after a send, or when the doorbell rang. */
  private schedulePump(): void {
    if (this.microQueued || this.closed) return;
    this.microQueued = true;
    queueMicrotask(this.microTask);
  }

  /** Pump again after the receiver's continuations ran (setImmediate): more may follow a delivery. */
  private scheduleFollowUp(): void {
    if (this.immediateQueued || this.closed) return;
    this.immediateQueued = true;
    setImmediate(this.immediateTask);
  }

  /** Spins until input or `budgetNs`; returns true when input is there. */
  private spin(budgetNs: number): boolean {
    if (this.rx.available() > 0) return true;
    if (budgetNs <= 0) return false;
    const end = Bun.nanoseconds() + budgetNs;
    do {
      // Read the clock every 16 looks: a clock read costs more than a look at the ring.
      for (let i = 0; i < 16; i++) if (this.rx.available() > 0) return true;
    } while (Bun.nanoseconds() < end);
    return false;
  }

  /** spin-mode wait(): input, or (after a Full) the receiver freeing room, or the timeout. */
  private spinForInputOrRoom(budgetNs: number): boolean {
    const end = Bun.nanoseconds() + budgetNs;
    do {
      if (this.rx.available() > 0) return true;
      // SYNC: the receiver clears spaceWanted after it freed room (releaseMessage).
      if (this.wantingSpace && Atomics.load(this.words, this.txSpaceIdx) === 0) return true;
    } while (Bun.nanoseconds() < end);
    return false;
  }

  /**
   * Event-loop delivery (async / adaptive): deliver what is there; if nothing, spin for the
   * budget; if still nothing, arm the doorbell and return to the event loop. After a delivery
   * it yields (setImmediate) so the receiver's continuations run before it looks again.
   */
  private pump(): void {
    if (this.closed || this.pumping || this.receiver === null || !this.autoPumps()) return;
    this.pumping = true;
    // Read before poll(): sends made while delivering belong to the next pump.
    const expectReply = this.sentSincePump;
    this.sentSincePump = false;
    let n = 0;
    try {
      this.disarm();
      n = this.poll();
      if (n === 0 && !this.closed) {
        // Speculative spins (nothing sent, just delivered or woken) adapt; spins after a send
        // always get the whole budget.
        const speculative = this.policy.mode === "adaptive" && !expectReply;
        const paid = this.spin(speculative ? this.spinBudgetNs : this.policy.spinNs);
        if (speculative) this.adapt(paid);
        if (paid) n = this.poll();
      }
    } finally {
      this.pumping = false;
    }
    if (this.closed) return;
    if (n > 0) {
      this.waiters.wake(true);
      this.scheduleFollowUp();
      return;
    }
    if (this.peerClosed()) return this.onPeerGone("closed by the peer");
    this.armEventLoop();
  }

  private adapt(paid: boolean): void {
    if (paid) this.spinBudgetNs = Math.min(this.policy.spinNs, Math.max(MIN_ADAPTIVE_SPIN_NS * 2, this.spinBudgetNs * 2));
    else this.spinBudgetNs = this.spinBudgetNs / 2 < MIN_ADAPTIVE_SPIN_NS ? 0 : this.spinBudgetNs / 2;
  }

  private armEventLoop(): void {
    const seq = Atomics.load(this.words, this.rxDoorbell >> 2);
    // SYNC: pairs with Atomics.exchange(armed) in the peer's publish(): store armed, then re-check.
    Atomics.store(this.words, this.rxArmedIdx, ARMED_EVENT_LOOP);
    this.armedFor = ARMED_EVENT_LOOP;
    if (this.rx.available() > 0) {
      this.disarm();
      this.schedulePump();
      return;
    }
    this.signals.armEventLoop(this.rxDoorbell, seq, () => this.onDoorbell());
  }

  private disarm(): void {
    if (this.armedFor === ARMED_AWAKE) return;
    Atomics.store(this.words, this.rxArmedIdx, ARMED_AWAKE);
    this.armedFor = ARMED_AWAKE;
  }

  /** @internal the peer rang (shm: a byte on the control socket; inproc: waitAsync resolved). */
  onDoorbell(): void {
    if (this.closed) return;
    this.armedFor = ARMED_AWAKE;
    // Input, or room to send (the receiver freed what we waited for): wake waiters either way.
    this.waiters.wake(true);
    if (this.autoPumps() && this.receiver !== null) this.schedulePump();
  }

  wait(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    const mode = this.policy.mode;
    if (this.rx.available() > 0) {
      if (this.autoPumps()) this.poll();
      return Promise.resolve(true);
    }
    if (mode === "spin") return Promise.resolve(this.spinForInputOrRoom(timeoutMs * 1e6));
    if (mode === "blocking") return Promise.resolve(this.spin(this.policy.spinNs) || this.waitBlocking(timeoutMs));
    // async / adaptive: park in the event loop; the pump or the doorbell wakes us. The pump
    // runs first (a microtask) and spins, so a reply that is on its way is not missed.
    const p = this.waiters.wait(timeoutMs);
    if (this.receiver !== null) this.schedulePump();
    else this.armEventLoop();
    return p;
  }

  /** Parks the thread in futex / Atomics.wait until input, the timeout, or the peer's close. */
  waitBlocking(timeoutMs: number): boolean {
    const end = Bun.nanoseconds() + timeoutMs * 1e6;
    for (;;) {
      const seq = Atomics.load(this.words, this.rxDoorbell >> 2);
      // SYNC: pairs with Atomics.exchange(armed) in the peer's publish().
      Atomics.store(this.words, this.rxArmedIdx, ARMED_FUTEX);
      this.armedFor = ARMED_FUTEX;
      if (this.rx.available() > 0) break;
      if (this.peerClosed()) break;
      const left = end - Bun.nanoseconds();
      if (left <= 0) break;
      this.signals.waitBlocking(this.rxDoorbell, seq, Math.min(left, BLOCK_SLICE_NS));
      // The doorbell moved: input, or room freed for a sender that met Full. Either way the
      // caller should look again.
      if (Atomics.load(this.words, this.rxDoorbell >> 2) !== seq) {
        this.disarm();
        return true;
      }
    }
    this.disarm();
    if (this.rx.available() > 0) return true;
    if (this.peerClosed()) this.onPeerGone("closed by the peer");
    return false;
  }

  private peerClosed(): boolean {
    return (Atomics.load(this.words, HDR_CLOSED >> 2) & this.peerClosedBit) !== 0;
  }

  // ---------------------------------------------------------------- closing

  close(): void {
    if (this.closed) return;
    this.markClosed();
    this.finish(null);
    this.onLocalClose?.();
  }

  abort(error: HotpathError): void {
    if (this.closed) return;
    this.markClosed();
    this.finish(error);
    this.onLocalClose?.();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** @internal setup saw the peer go (control channel closed, process died). */
  onPeerGone(why: string): void {
    if (this.closed) return;
    // Messages the peer sent before it went are still delivered, then the close.
    this.poll();
    if (this.closed) return;
    this.finish(new TransportClosedError(`${this.transport} connection to ${this.peer}: ${why}`));
    this.onLocalClose?.();
  }

  /** Slab slots this side has sent that the peer has not freed (tests, accounting). */
  txSlotsInUse(): number {
    return this.txSlab.used();
  }

  private markClosed(): void {
    Atomics.or(this.words, HDR_CLOSED >> 2, this.myClosedBit);
    // Wake the peer however it sleeps so it sees the flag at once.
    Atomics.add(this.words, this.txDoorbell >> 2, 1);
    this.signals.wakeBlocking(this.txDoorbell);
    this.signals.wakeEventLoop(this.txDoorbell);
  }

  private finish(error: HotpathError | null): void {
    this.closed = true;
    this.closeError = error;
    this.waiters.wake(false);
    this.receiver?.onClose(error);
  }
}
