/**
 * SegmentChannel: the data path of one session segment, shared by `shm` (a mapped POSIX shm
 * object, peers in two processes) and `inproc` (a SharedArrayBuffer, peers in two Workers):
 * send, receive, release, close. How a side waits lives in SegmentConnection (connection.ts),
 * which is the class setup builds.
 *
 * Send: a message whose head and body fit in 56 bytes travels inline in its descriptor (one
 * cache line); otherwise the head (≤ 48 bytes) rides in the descriptor and the body in a slab
 * slot the sender allocates and the receiver frees on release. Bodies above sendLimit(caps)
 * (this side's and the peer's maxMessageBytes, exchanged at setup) are refused with UsageError.
 * allocBuffer() hands out a slot view to fill in place, trySendBuffer() sends it without a copy;
 * a view is bound to its allocation, so a stale one is refused. Ring or slab exhaustion is Full.
 *
 * Receive: poll() hands each descriptor to the receiver as a message whose views point into
 * the segment; release() frees its slot and, once every older message was released too, its
 * descriptor. A body above maxMessageBytes is skipped and reported to onOversized; a receiver
 * that throws closes the connection with that error.
 *
 * The peer rings only when this side is armed: a send costs a wake syscall only after the
 * receiver parked.
 *
 * A hostile peer can write anything into the segment, at any time. Every value this side reads
 * from it is read once into a local and checked before use: descriptor sequence words and the
 * ring head (ring.ts), descriptor flags, lengths, slot references and generations (here and in
 * slab.ts). A violation aborts this session only, with a ProtocolError naming the fault and its
 * values ("shm session shm://x (client): ring descriptor 7 has sequence 2147483656, neither 8
 * (published) nor 4294967048 (not yet; ring size 256)"),
 * through the usual close: pending calls fail, the memory goes once no message is held, the
 * peer is told. Words that cannot hurt this side are left unchecked: doorbell sequences and
 * armed / space-wanted flags at worst cost a spurious wake; nothing re-reads the header after
 * setup except the closed flags. One poll() delivers at most one ring's worth of messages, so
 * a peer that keeps publishing cannot hold the caller's thread (and its event loop) forever.
 *
 * Threading: a connection belongs to the thread that created it.
 */

import { HotpathError, ProtocolError, UsageError } from "../errors.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, oversizedSendMessage, sendLimit, SEND_CLOSED, SEND_FULL, SEND_OK } from "../contract/transport.ts";
import type { Capabilities, Connection, Receiver, SendStatus } from "../contract/transport.ts";
import {
  ARMED_AWAKE,
  ARMED_FUTEX,
  CLOSED_A,
  CLOSED_B,
  DESC_BODY_LEN,
  DESC_FLAG_SLOT,
  DESC_INLINE,
  DESC_INLINE_BYTES,
  DESC_LEN_FLAGS,
  DESC_SLOT_GEN,
  DESC_SLOT_HEAD,
  DESC_SLOT_HEAD_BYTES,
  HDR_CLOSED,
  RING_ARMED,
  RING_DOORBELL,
  RING_SPACE_WANTED,
  type SegmentLayout,
} from "./layout.ts";
import { RING_FAULT, RING_FULL, RingConsumer, RingProducer } from "./ring.ts";
import { Slab } from "./slab.ts";
import { copyInto, descriptorFault, receiverFailed, SegmentRxMessage, WORDS_HEAD_BYTES, type MessageOwner } from "./message.ts";
import type { SegmentWaitPolicy, Signals } from "./waiting.ts";

export interface SegmentConnectionOptions {
  transport: "shm" | "inproc";
  buffer: ArrayBufferLike;
  /**
   * Where the segment starts in `buffer` (default 0; a multiple of 8). Every view this side
   * builds starts here, so offsets inside the segment stay relative to the segment start.
   */
  byteOffset?: number;
  layout: SegmentLayout;
  /** "A" is the client (sends on ring A→B), "B" the server. */
  side: "A" | "B";
  signals: Signals;
  peer: string;
  /** Called once when the connection ends, however it ends (setup closes its control socket). */
  onLocalClose?: () => void;
  /**
   * Called once after the connection ended and no received message is held any more: setup
   * lets go of the segment's memory (shm drops its shared pages).
   */
  onUnused?: () => void;
  policy?: Partial<SegmentWaitPolicy>;
  /** Largest body accepted from the peer and sent (default 64 MiB; never above the largest slab class). */
  maxMessageBytes?: number;
  /** Largest body the peer said it accepts, from the handshake (default: the largest slab class). */
  peerMaxMessageBytes?: number;
}

/**
 * The data path of a segment connection; SegmentConnection (connection.ts) adds the waits.
 * Owns no memory: setup owns the segment and lets go of it in onUnused.
 */
export abstract class SegmentChannel implements Connection, MessageOwner {
  readonly transport: string;
  readonly caps: Capabilities;
  readonly peer: string;
  closed = false;
  closeError: HotpathError | null = null;

  protected readonly words: Int32Array;
  protected readonly bytes: Uint8Array;
  private readonly tx: RingProducer;
  protected readonly rx: RingConsumer;
  private readonly txSlab: Slab;
  private readonly rxSlab: Slab;
  protected readonly signals: Signals;
  private readonly myClosedBit: number;
  private readonly peerClosedBit: number;
  protected readonly rxDoorbell: number;
  protected readonly rxArmedIdx: number;
  private readonly txDoorbell: number;
  private readonly txArmedIdx: number;
  private readonly rxSpaceIdx: number;
  protected readonly txSpaceIdx: number;
  private readonly rxMaxBytes: number;
  protected receiver: Receiver | null = null;
  /** A send met Full and asked the receiver for room (spaceWanted) since the last send. */
  protected wantingSpace = false;
  private memoryReleased = false;
  /** poll() is delivering: a nested poll() returns 0. */
  private delivering = false;
  private readonly onLocalClose: (() => void) | undefined;
  private readonly onUnused: (() => void) | undefined;
  /** Per ring descriptor: the message object it delivers through (see SegmentRxMessage). */
  private readonly messages: SegmentRxMessage[];
  private readonly inlineViewCache: (Uint8Array | undefined)[];
  private readonly slotViewCache: (Uint8Array | undefined)[];
  /** Per tx slot: the view allocBuffer() handed out for its current allocation (until sent or released). */
  private readonly handedOut: (Uint8Array | undefined)[];
  private readonly ringMask: number;
  private readonly ringSlots: number;
  /** "shm session shm://x (client)": how this side's ProtocolErrors name the session. */
  private readonly session: string;

  abstract wait(timeoutMs: number): Promise<boolean>;
  abstract readonly waitsOnEventLoop: boolean;
  abstract setWaitPolicy(policy: Partial<SegmentWaitPolicy>): void;
  /** The receiver is set (deliver what waits, in event-loop modes). */
  protected abstract onReceiverSet(): void;
  /** A message was published (event-loop modes pump for the reply). */
  protected abstract onSent(): void;
  /** poll() found nothing: look for a closed or dead peer. */
  protected abstract onIdlePoll(): void;
  /** The connection is closing: let go of waiters and armed waits. */
  protected abstract onShutdown(): void;

  constructor(o: SegmentConnectionOptions) {
    this.transport = o.transport;
    this.peer = o.peer;
    this.signals = o.signals;
    this.onLocalClose = o.onLocalClose;
    this.onUnused = o.onUnused;
    const base = o.byteOffset ?? 0;
    this.words = new Int32Array(o.buffer, base, o.layout.totalBytes >> 2);
    this.bytes = new Uint8Array(o.buffer, base, o.layout.totalBytes);
    const [txDir, rxDir] = o.side === "A" ? [0, 1] : [1, 0];
    const l = o.layout;
    this.tx = new RingProducer(this.words, l.rings[txDir]!, l.ringSlots);
    this.rx = new RingConsumer(this.words, l.rings[rxDir]!, l.ringSlots);
    this.session = `${o.transport} session ${o.peer}`;
    if (this.tx.fault !== null) throw new ProtocolError(`${this.session}: ${this.tx.fault}`);
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
    const own = Math.min(o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, this.rxSlab.maxSlotBytes);
    const peerMax = Math.min(o.peerMaxMessageBytes ?? this.txSlab.maxSlotBytes, this.txSlab.maxSlotBytes);
    this.caps = {
      maxInlineBytes: DESC_INLINE_BYTES,
      maxMessageBytes: own,
      peerMaxMessageBytes: peerMax,
      maxHeadBytes: DESC_SLOT_HEAD_BYTES,
      zeroCopy: true,
      rma: false,
      sameHostOnly: true,
    };
    this.rxMaxBytes = own;
    this.ringMask = l.ringSlots - 1;
    this.ringSlots = l.ringSlots;
    this.messages = [];
    for (let i = 0; i < l.ringSlots; i++) this.messages.push(new SegmentRxMessage(this, this.bytes, this.words));
    this.inlineViewCache = new Array(l.ringSlots).fill(undefined);
    this.slotViewCache = new Array(this.rxSlab.layout.totalSlots).fill(undefined);
    this.handedOut = new Array(this.txSlab.layout.totalSlots).fill(undefined);
  }

  setReceiver(receiver: Receiver): void {
    this.receiver = receiver;
    if (this.closed) {
      receiver.onClose(this.closeError);
      return;
    }
    this.onReceiverSet();
  }

  // ---------------------------------------------------------------- send

  trySend(head: Uint8Array, body?: Uint8Array | null): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const hl = head.length;
    const bl = body ? body.length : 0;
    if (hl > DESC_SLOT_HEAD_BYTES) throw new UsageError(`${this.transport} send: head of ${hl} bytes exceeds ${DESC_SLOT_HEAD_BYTES}`);
    if (bl > sendLimit(this.caps)) throw new UsageError(oversizedSendMessage(this.transport, bl, this.caps));
    let d = this.tx.reserve();
    if (d < 0 && (d = this.retryReserve(d)) < 0) return this.noRoom(d);
    if (hl + bl <= DESC_INLINE_BYTES) {
      copyInto(this.bytes, this.words, d + DESC_INLINE, head);
      if (bl > 0) copyInto(this.bytes, this.words, d + DESC_INLINE + hl, body!);
      this.publish(d, hl, bl, -1);
      return SEND_OK;
    }
    const slot = this.allocSlot(bl);
    if (slot < 0) return SEND_FULL;
    this.txSlab.views[slot]!.set(body!, 0);
    copyInto(this.bytes, this.words, d + DESC_SLOT_HEAD, head);
    this.publish(d, hl, bl, slot);
    return SEND_OK;
  }

  /**
   * trySend() of a 24-byte head given as six words (the contract's trySendWords): the words go
   * straight into the descriptor, the body inline after them or into a slab slot. Same thread
   * as the connection; the body is copied before it returns.
   */
  trySendWords(h0: number, h1: number, h2: number, h3: number, h4: number, h5: number, body: Uint8Array): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const bl = body.length;
    if (bl > sendLimit(this.caps)) throw new UsageError(oversizedSendMessage(this.transport, bl, this.caps));
    let d = this.tx.reserve();
    if (d < 0 && (d = this.retryReserve(d)) < 0) return this.noRoom(d);
    let at = d + DESC_INLINE;
    let slot = -1;
    if (WORDS_HEAD_BYTES + bl <= DESC_INLINE_BYTES) {
      if (bl > 0) copyInto(this.bytes, this.words, at + WORDS_HEAD_BYTES, body);
    } else {
      slot = this.allocSlot(bl);
      if (slot < 0) return SEND_FULL;
      this.txSlab.views[slot]!.set(body, 0);
      at = d + DESC_SLOT_HEAD;
    }
    const w = this.words;
    const i = at >> 2;
    w[i] = h0;
    w[i + 1] = h1;
    w[i + 2] = h2;
    w[i + 3] = h3;
    w[i + 4] = h4;
    w[i + 5] = h5;
    this.publish(d, WORDS_HEAD_BYTES, bl, slot);
    return SEND_OK;
  }

  /** A slot view of `lenBytes` to fill and pass to trySendBuffer() (or releaseBuffer()); null when Full or closed. */
  allocBuffer(lenBytes: number): Uint8Array | null {
    if (!Number.isInteger(lenBytes) || lenBytes < 0) throw new UsageError(`${this.transport} allocBuffer: length ${String(lenBytes)} must be an integer ≥ 0`);
    if (lenBytes > sendLimit(this.caps)) throw new UsageError(oversizedSendMessage(this.transport, lenBytes, this.caps));
    if (this.closed) return null;
    const slot = this.allocSlot(lenBytes);
    if (slot < 0) return null;
    const view = this.txSlab.views[slot]!.subarray(0, lenBytes);
    this.handedOut[slot] = view;
    return view;
  }

  /**
   * The tx slot `buffer` belongs to when it is the very view allocBuffer() handed out for the
   * slot's current allocation; -1 otherwise (not ours, a subarray, sent, released, or a view of
   * an earlier allocation of the same slot: identity binds a view to its allocation).
   */
  private handedSlot(buffer: Uint8Array): number {
    if (buffer.buffer !== this.bytes.buffer) return -1;
    const slot = this.txSlab.slotOfView(buffer);
    return slot >= 0 && this.handedOut[slot] === buffer ? slot : -1;
  }

  private retire(slot: number): void {
    this.handedOut[slot] = undefined;
  }

  trySendBuffer(head: Uint8Array, buffer: Uint8Array, lenBytes: number = buffer.length): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const slot = this.handedSlot(buffer);
    if (slot < 0) {
      throw new UsageError(`${this.transport} trySendBuffer: the buffer is not the view this connection's allocBuffer() handed out (a subarray, or one sent or released already); pass lenBytes to send a prefix`);
    }
    if (!Number.isInteger(lenBytes) || lenBytes < 0 || lenBytes > buffer.length) {
      throw new UsageError(`${this.transport} trySendBuffer: lenBytes ${String(lenBytes)} must be an integer in 0..${buffer.length}`);
    }
    if (head.length > DESC_SLOT_HEAD_BYTES) throw new UsageError(`${this.transport} send: head of ${head.length} bytes exceeds ${DESC_SLOT_HEAD_BYTES}`);
    let d = this.tx.reserve();
    if (d < 0 && (d = this.retryReserve(d)) < 0) return this.noRoom(d);
    this.retire(slot);
    this.bytes.set(head, d + DESC_SLOT_HEAD);
    this.publish(d, head.length, lenBytes, slot);
    return SEND_OK;
  }

  /**
   * Gives back a buffer from allocBuffer() that will not be sent (after Full, or never used).
   * Idempotent; a buffer already sent, or a view of an earlier allocation, is left alone.
   */
  releaseBuffer(buffer: Uint8Array): void {
    const slot = this.handedSlot(buffer);
    if (slot < 0) return;
    this.retire(slot);
    this.txSlab.unalloc(slot);
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

  private retryReserve(first: number): number {
    if (first === RING_FAULT) return first;
    this.wantSpace();
    return this.tx.reserve();
  }

  /** reserve() found no descriptor: Full, or (the peer's head was impossible) the session aborts: Closed. */
  private noRoom(d: number): SendStatus {
    if (d === RING_FULL) return SEND_FULL;
    this.peerFault(this.tx.fault!);
    return SEND_CLOSED;
  }

  private allocSlot(lenBytes: number): number {
    const slot = this.txSlab.alloc(lenBytes);
    if (slot >= 0) return slot;
    this.wantSpace();
    return this.txSlab.alloc(lenBytes);
  }

  private publish(d: number, hl: number, bl: number, slot: number): void {
    const w = this.words;
    this.wantingSpace = false;
    const i = d >> 2;
    if (slot >= 0) {
      w[i + DESC_LEN_FLAGS / 4] = hl | (DESC_FLAG_SLOT << 8) | (slot << 16);
      w[i + DESC_BODY_LEN / 4] = bl;
      w[i + DESC_SLOT_GEN / 4] = this.txSlab.generation(slot);
      this.txSlab.markSent(slot);
    } else {
      w[i + DESC_LEN_FLAGS / 4] = hl | (bl << 16);
    }
    this.tx.publish();
    // SYNC: the publish above (Atomics.store of the descriptor's sequence) and this exchange
    // are both sequentially consistent; the consumer stores `armed` and then looks at the
    // sequence again before it parks, so either it sees the message or we see it armed (and
    // ring exactly once per park).
    this.ringPeer();
    this.onSent();
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

  /** Non-blocking: delivers what arrived to the receiver, inline. Returns messages delivered. */
  poll(): number {
    const r = this.receiver;
    // Not re-entrant: a poll (or wait) from inside a delivery callback delivers nothing, so
    // deliveries never nest and the stack never grows with the backlog.
    if (r === null || this.closed || this.delivering) return 0;
    this.delivering = true;
    let n: number;
    try {
      n = this.deliver(r);
    } finally {
      this.delivering = false;
    }
    if (n === 0) this.onIdlePoll();
    return n;
  }

  private deliver(r: Receiver): number {
    let n = 0;
    const w = this.words;
    const rx = this.rx;
    let d = 0;
    for (let budget = this.ringSlots; budget > 0 && (d = rx.takeNext()) >= 0; budget--) {
      const index = rx.taken;
      // Each word the peer wrote is read once; the checks and the message use these locals.
      const lf = w[(d + DESC_LEN_FLAGS) >> 2]!;
      const hl = lf & 0xff;
      const flags = (lf >>> 8) & 0xff;
      // Inline: the body length; slot message: the slot index.
      let bl = lf >>> 16;
      let slot = -1;
      let at = d + DESC_INLINE;
      if (flags === DESC_FLAG_SLOT) {
        slot = bl;
        bl = w[(d + DESC_BODY_LEN) >> 2]! >>> 0;
        if (hl > DESC_SLOT_HEAD_BYTES) return this.badDescriptor(index, n, lf, bl, null);
        const bad = this.rxSlab.take(slot, w[(d + DESC_SLOT_GEN) >> 2]!, bl);
        if (bad !== null) return this.badDescriptor(index, n, lf, bl, bad);
        at = d + DESC_SLOT_HEAD;
      } else if (flags !== 0 || hl + bl > DESC_INLINE_BYTES) {
        return this.badDescriptor(index, n, lf, bl, null);
      }
      if (bl > this.rxMaxBytes) {
        if (!this.skipOversized(r, index, at, hl, bl, slot)) return n;
        continue;
      }
      const msg = this.messages[index & this.ringMask]!;
      msg.index = index;
      msg.headOffset = at;
      msg.headLength = hl;
      msg.bodyLength = bl;
      msg.slot = slot;
      msg.held = true;
      try {
        r.onMessage(msg);
      } catch (e) {
        // Item 8: a receiver that throws closes the connection; its message goes back first.
        msg.release();
        this.abort(receiverFailed(`${this.transport} connection to ${this.peer}`, e));
        return n;
      }
      n++;
      if (this.closed) return n;
    }
    if (d === RING_FAULT) this.peerFault(rx.fault!);
    return n;
  }

  /**
   * A descriptor the peer wrote is impossible (its words as read: `lf`, `bl`; `slotFault` when
   * the slab refused its slot): its ring entry goes back (it names no slot of ours), the session
   * aborts. Kept out of deliver() so the hot loop stays small.
   */
  private badDescriptor(index: number, delivered: number, lf: number, bl: number, slotFault: string | null): number {
    this.rx.release(index);
    this.peerFault(slotFault ?? descriptorFault(lf, bl));
    return delivered;
  }

  /** The peer wrote something impossible into the segment: this session ends with a ProtocolError saying what. */
  private peerFault(why: string): void {
    this.abort(new ProtocolError(`${this.session}: ${why}`));
  }

  /**
   * Item 8: a whole message whose body is above maxMessageBytes. Frees it and tells the
   * receiver's onOversized (the head is a view valid during the call); without the hook the
   * connection aborts with ProtocolError. Returns whether the connection is still open.
   */
  private skipOversized(r: Receiver, index: number, at: number, hl: number, bl: number, slot: number): boolean {
    if (r.onOversized === undefined) {
      this.releaseMessage(index, slot);
      this.abort(new ProtocolError(`${this.transport}: message body of ${bl} bytes exceeds maxMessageBytes ${this.rxMaxBytes}`));
      return false;
    }
    try {
      r.onOversized(this.bytes.subarray(at, at + hl), bl);
    } catch (e) {
      this.releaseMessage(index, slot);
      this.abort(receiverFailed(`${this.transport} connection to ${this.peer}`, e));
      return false;
    }
    this.releaseMessage(index, slot);
    return !this.closed;
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
    if (cached !== undefined && cached.byteOffset === this.bytes.byteOffset + at && cached.length === len) return cached;
    const v = this.bytes.subarray(at, at + len);
    this.inlineViewCache[k] = v;
    return v;
  }

  /** @internal */
  releaseMessage(index: number, slot: number): void {
    if (slot >= 0) this.rxSlab.free(slot);
    this.rx.release(index);
    if (this.closed) {
      // The last view of a closed connection is gone: its memory can go too.
      if (this.rx.held() === 0) this.releaseMemory();
      return;
    }
    // The sender found the ring or slab full and waits for room: wake it however it waits (it
    // may not have parked yet, so "armed" cannot be trusted here; this is the rare path).
    // SYNC: pairs with Atomics.store(spaceWanted) in the sender's wantSpace().
    if (Atomics.load(this.words, this.rxSpaceIdx) !== 0 && Atomics.exchange(this.words, this.rxSpaceIdx, 0) !== 0) {
      Atomics.exchange(this.words, this.txArmedIdx, ARMED_AWAKE);
      this.wakePeer();
    }
  }

  /** Rings the peer however it sleeps (it may not have parked yet, so "armed" is not consulted). */
  protected wakePeer(): void {
    Atomics.add(this.words, this.txDoorbell >> 2, 1);
    this.signals.wakeBlocking(this.txDoorbell);
    this.signals.wakeEventLoop(this.txDoorbell);
  }

  /** Whether the peer set its closed flag. */
  protected peerClosed(): boolean {
    // SYNC: pairs with Atomics.or(closed) in the peer's shutdown(), which follows its last publish.
    return (Atomics.load(this.words, HDR_CLOSED >> 2) & this.peerClosedBit) !== 0;
  }

  // ---------------------------------------------------------------- closing

  close(): void {
    if (this.closed) return;
    this.shutdown(null, true);
  }

  abort(error: HotpathError): void {
    if (this.closed) return;
    this.shutdown(error, true);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Slab slots this side has sent that the peer has not freed (tests, accounting). */
  txSlotsInUse(): number {
    return this.txSlab.used();
  }

  /**
   * Ends the connection: the closed flag for a peer that is still there (and a ring however it
   * sleeps), waiters and any armed event-loop wait let go, setup's socket closed, the memory
   * released unless a received message is still held, and the receiver told last (so a
   * throwing onClose cannot leave anything open).
   */
  protected shutdown(error: HotpathError | null, tellPeer: boolean): void {
    if (tellPeer) {
      // SYNC: pairs with the peer's peerClosed() load; follows every publish of ours.
      Atomics.or(this.words, HDR_CLOSED >> 2, this.myClosedBit);
      this.wakePeer();
    }
    this.closed = true;
    this.closeError = error;
    this.onShutdown();
    this.onLocalClose?.();
    if (this.rx.held() === 0) this.releaseMemory();
    this.receiver?.onClose(error);
  }

  private releaseMemory(): void {
    if (this.memoryReleased) return;
    this.memoryReleased = true;
    this.onUnused?.();
  }
}
