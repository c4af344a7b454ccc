/**
 * The send side's registered memory for one connection: the send slab (copied sends) and the
 * pool behind allocBuffer (zero-copy sends).
 *
 * SendSlab: `slots` fixed slots of `slotBytes` in one MR; the send of sequence `seq` (the
 * SignalBatcher's) uses slot `seq % slots`. With slots = sqDepth that slot's previous user
 * (seq - sqDepth) is known complete whenever the batcher admits `seq`, so a slot is never
 * rewritten while the device may still read it (unsignaled sends included).
 *
 * BufferPool: registered buffers by power-of-two size class (one MR each, made on first need,
 * kept for reuse: registration is the expensive part). take() lends one; the view it returns
 * is the allocation's identity (trySendBuffer refuses any other view). A buffer that was sent
 * comes back to the pool when its send completes (the connection calls put()).
 *
 * Example:
 *   const slab = new SendSlab(pd, 64, 4096);  slab.view(seq).set(bytes);
 *   const pool = new BufferPool(pd);  const b = pool.take(1000);  ...  pool.put(b!);
 *
 * Thread: the connection's.
 */

import { IBV, type VerbsMr, type VerbsPd } from "../ffi/ibverbs.ts";

/** Smallest allocBuffer size class: a page. */
const MIN_CLASS_BYTES = 4096;
/** Free buffers kept per size class up to KEEP_MANY_BYTES; more are deregistered when given back. */
const KEEP_PER_CLASS = 8;
/** Classes above this keep one free buffer: a few large registrations must not pin hundreds of MiB. */
const KEEP_MANY_BYTES = 1 << 20;

export class SendSlab {
  readonly mr: VerbsMr;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  constructor(
    pd: VerbsPd,
    readonly slots: number,
    readonly slotBytes: number,
  ) {
    this.bytes = new Uint8Array(slots * slotBytes);
    this.dv = new DataView(this.bytes.buffer);
    // The device only reads it (local access).
    this.mr = pd.regMr(this.bytes, IBV.IBV_ACCESS_LOCAL_WRITE);
  }
  /** Byte offset of the slot of sequence `seq`. */
  offsetOf(seq: number): number {
    return (seq % this.slots) * this.slotBytes;
  }
  close(): void {
    this.mr.close();
  }
}

/** One pooled registered buffer. */
export interface TxBuffer {
  readonly mr: VerbsMr;
  readonly classBytes: number;
  /** The view handed out (its length is what allocBuffer asked for). */
  view: Uint8Array;
  /** Lent out (allocBuffer) or in flight (sent, not yet completed). */
  busy: boolean;
}

export class BufferPool {
  private readonly free = new Map<number, TxBuffer[]>();
  /** Buffers lent or in flight, by the view handed out. */
  private readonly lent = new Map<Uint8Array, TxBuffer>();
  private closed = false;
  constructor(private readonly pd: VerbsPd) {}

  /** A registered buffer of at least `lenBytes`, viewed as exactly `lenBytes`. */
  take(lenBytes: number): Uint8Array {
    let cls = MIN_CLASS_BYTES;
    while (cls < lenBytes) cls *= 2;
    const list = this.free.get(cls);
    let b = list?.pop();
    if (b === undefined) {
      const mem = new Uint8Array(cls);
      b = { mr: this.pd.regMr(mem, IBV.IBV_ACCESS_LOCAL_WRITE), classBytes: cls, view: mem, busy: false };
    }
    b.busy = true;
    b.view = b.mr.view.subarray(0, lenBytes);
    this.lent.set(b.view, b);
    return b.view;
  }

  /** The buffer behind a view take() returned (that very view), or undefined. */
  lookup(view: Uint8Array): TxBuffer | undefined {
    return this.lent.get(view);
  }

  /** Gives a buffer back (releaseBuffer, or its send completed). Idempotent. */
  put(b: TxBuffer): void {
    if (!b.busy) return;
    b.busy = false;
    this.lent.delete(b.view);
    if (this.closed) return b.mr.close();
    let list = this.free.get(b.classBytes);
    if (list === undefined) this.free.set(b.classBytes, (list = []));
    if (list.length < (b.classBytes <= KEEP_MANY_BYTES ? KEEP_PER_CLASS : 1)) list.push(b);
    else b.mr.close();
  }

  /** Buffers registered now (lent, in flight or free). */
  get registered(): number {
    let n = this.lent.size;
    for (const l of this.free.values()) n += l.length;
    return n;
  }

  /** Deregisters every buffer (after the QP is gone: nothing reads them any more). Idempotent. */
  close(): void {
    this.closed = true;
    for (const l of this.free.values()) for (const b of l) b.mr.close();
    this.free.clear();
    for (const b of this.lent.values()) b.mr.close();
    this.lent.clear();
  }
}
