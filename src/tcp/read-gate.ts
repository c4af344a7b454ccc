/**
 * ReadGate (data path): when one TCP connection reads, and what it holds of the listener's
 * budget for large split frames. Reading pauses while any reason is set (waiting for a
 * reservation, unread output, no receiver yet, closing) and resumes when none is left; the
 * reservation for the frame being assembled, or granted to the frame waiting, is given back
 * when that frame completes or the connection closes.
 *
 * Example:
 *   const gate = new ReadGate(socket, pool, 256 << 10, () => parser.resume());
 *   if (!gate.reserve(frameLen)) return;  // paused; the callback runs once it is granted
 *
 * Ownership: one per connection, called from the connection's thread only.
 */

import type { BufferPool, PoolWaiter } from "./limits.ts";

/** Why reading is paused (bits): the socket reads again when none is left. */
export const PAUSE_RESERVE = 1;
export const PAUSE_OUTPUT = 2;
export const PAUSE_NO_RECEIVER = 4;
export const PAUSE_CLOSED = 8;

/** What the gate pauses and resumes. */
export interface Pausable {
  pause(): void;
  resume(): void;
}

export class ReadGate implements PoolWaiter {
  private mask = 0;
  /** Pool bytes held for the frame being assembled, granted to the one waiting, asked for. */
  private reservedBytes = 0;
  private grantedBytes = 0;
  private waitingBytes = 0;

  constructor(
    private readonly socket: Pausable,
    private readonly pool: BufferPool | null,
    /** Split frames up to this size need no reservation. */
    private readonly allowanceBytes: number,
    /** A queued reservation was granted; runs in a microtask, outside the releaser's stack. */
    private readonly onGranted: () => void,
  ) {}

  /** True while `reason` pauses reading. */
  has(reason: number): boolean {
    return (this.mask & reason) !== 0;
  }

  set(reason: number, on: boolean): void {
    const before = this.mask;
    this.mask = on ? before | reason : before & ~reason;
    if (before === 0 && this.mask !== 0) this.socket.pause();
    else if (before !== 0 && this.mask === 0) this.socket.resume();
  }

  /**
   * May a split frame of `n` bytes be assembled now? Small frames always may; a large one takes
   * a share of the pool (or the share granted while it waited), else it queues for one and
   * reading pauses until onGranted.
   */
  reserve(n: number): boolean {
    if (this.pool === null || n <= this.allowanceBytes) return true;
    if (this.grantedBytes > 0) {
      this.reservedBytes = this.grantedBytes;
      this.grantedBytes = 0;
      return true;
    }
    if (this.pool.tryReserve(n)) {
      this.reservedBytes = n;
      return true;
    }
    this.waitingBytes = n;
    this.pool.enqueue(this, n);
    this.set(PAUSE_RESERVE, true);
    return false;
  }

  /** The frame that reserve() admitted is complete: its share goes back. */
  unreserve(): void {
    if (this.reservedBytes === 0) return;
    const n = this.reservedBytes;
    this.reservedBytes = 0;
    this.pool!.release(n);
  }

  /** PoolWaiter: the share asked for is held now (called from another connection's release). */
  granted(): void {
    this.grantedBytes = this.waitingBytes;
    this.waitingBytes = 0;
    queueMicrotask(this.onGranted);
  }

  /** The connection closed: leave the queue and give back every share held. */
  releaseAll(): void {
    if (this.pool === null) return;
    if (this.waitingBytes > 0) this.pool.cancel(this);
    const held = this.reservedBytes + this.grantedBytes;
    this.waitingBytes = this.reservedBytes = this.grantedBytes = 0;
    if (held > 0) this.pool.release(held);
  }
}
