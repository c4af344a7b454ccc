/**
 * Credit-based flow control for one RC connection, as pure logic (no verbs, no I/O). One credit
 * is one receive buffer the peer posted for this connection: a sender never has more messages
 * outstanding than the credits it was granted, so a SEND (or WRITE_WITH_IMM, which consumes a
 * receive too) always finds a posted buffer and the device never answers RNR in normal operation.
 *
 * Contract (both directions live in one object, one per connection end):
 * - Sending side: `credits` starts at the peer's grant (`window`, the buffers it posted for us).
 *   Every message that consumes a receive at the peer (data or an explicit credit message) takes
 *   one credit. Credits come back piggybacked on the peer's traffic (`onReceive(returned)`).
 * - Receiving side: every message received holds one of our buffers; `onRelease()` (the buffer is
 *   re-posted) makes its credit owed to the peer. Owed credits ride on the next message we send
 *   (`tryTakeForData()` returns how many to put in its header); when `returnBatch` of them are owed
 *   and nothing goes back, `tryTakeForCreditMessage()` says to send an explicit credit message.
 * - The last credit is kept for a message that returns credits: data may take it only when it
 *   piggybacks at least one credit. Without that rule both ends could spend every credit on data
 *   while each owes the other, and neither could ever send the credit message that frees them.
 *   So one-way data has `window - 1` messages in flight at most.
 * - A credit message consumes a receive at the peer too; the peer re-posts it at once and owes
 *   that credit back, which travels only on traffic or the next batch, so credit messages never
 *   ping-pong: each one carries at least returnBatch credits (maxPiggyback >= returnBatch,
 *   asserted) and causes at most 1/returnBatch of another. Hence 2 <= returnBatch <=
 *   peerWindow - 1 (asserted): a peer down to its kept last credit waits for peerWindow - 1 owed
 *   credits, which must reach the threshold. So when both ends hold no messages and nothing is in
 *   flight, each end can send data again once due credit messages are delivered (tested).
 * - A peer that returns more credits than it could owe, or sends past its credits, is a protocol
 *   violation: ProtocolError (the connection must be closed).
 * Nothing is allocated per message: every call reads and writes number fields.
 *
 * Thread: the JS thread that owns the connection; no locking.
 *
 * Example:
 *   const fc = new CreditFlow({ window: 64, returnBatch: 16 });
 *   const back = fc.tryTakeForData();          // -1: Full; else credits to put in the header
 *   if (back >= 0) post(header(back), payload);
 *   // on a receive: fc.onReceive(header.credits); ...; on release: fc.onRelease();
 *   const c = fc.tryTakeForCreditMessage();   // >= 1: send a credit message carrying c
 */

import { ProtocolError, UsageError } from "../errors.ts";

/** Widest piggyback a header field carries by default (16 bits). */
export const MAX_PIGGYBACK_CREDITS = 0xffff;

export interface CreditFlowOptions {
  /** Credits granted by the peer: the receive buffers it posted for this connection (>= 2). */
  window: number;
  /** Owed credits after which an explicit credit message is due when nothing goes back (2..peerWindow - 1). */
  returnBatch: number;
  /** Buffers we posted for the peer (its window, >= 3); default `window`. */
  peerWindow?: number;
  /** Largest credit count one header carries (>= returnBatch); default MAX_PIGGYBACK_CREDITS. */
  maxPiggyback?: number;
}

/**
 * The credit state of one connection end. Owner: the connection; single thread.
 */
export class CreditFlow {
  /** Credits granted by the peer that we have not used yet (sending side). */
  private sendCredits: number;
  /** Messages received from the peer whose buffers the application still holds. */
  private heldCount = 0;
  /** Released buffers whose credit we owe the peer and have not sent back yet. */
  private owedCount = 0;
  readonly window: number;
  readonly peerWindow: number;
  readonly returnBatch: number;
  readonly maxPiggyback: number;

  constructor(opts: CreditFlowOptions) {
    const { window, returnBatch } = opts;
    const peerWindow = opts.peerWindow ?? window;
    const maxPiggyback = opts.maxPiggyback ?? MAX_PIGGYBACK_CREDITS;
    if (!Number.isInteger(window) || window < 2) throw new UsageError(`credit window must be an integer >= 2 (got ${window})`);
    if (!Number.isInteger(peerWindow) || peerWindow < 3) throw new UsageError(`peer credit window must be an integer >= 3 (got ${peerWindow})`);
    // A batch of 1 would answer every credit message with another one, forever; a batch of the
    // peer's whole window could leave its window - 1 owed below the threshold while it waits.
    if (!Number.isInteger(returnBatch) || returnBatch < 2 || returnBatch > peerWindow - 1) {
      throw new UsageError(`credit return batch must be an integer in 2..${peerWindow - 1} (peer window ${peerWindow}; got ${returnBatch})`);
    }
    // A credit message carries at most maxPiggyback credits and consumes one at the peer; one
    // carrying fewer than returnBatch would be answered by another, forever.
    if (!Number.isInteger(maxPiggyback) || maxPiggyback < returnBatch) {
      throw new UsageError(`maxPiggyback must be an integer >= returnBatch ${returnBatch} (got ${maxPiggyback})`);
    }
    this.window = window;
    this.peerWindow = peerWindow;
    this.returnBatch = returnBatch;
    this.maxPiggyback = maxPiggyback;
    this.sendCredits = window;
  }

  /** Credits left to send with. */
  get credits(): number {
    return this.sendCredits;
  }

  /** Peer messages the application still holds (buffers not yet released). */
  get held(): number {
    return this.heldCount;
  }

  /** Credits owed to the peer, not yet sent back. */
  get owed(): number {
    return this.owedCount;
  }

  /** Whether a data message could be sent now (what tryTakeForData would not refuse). */
  canSendData(): boolean {
    return this.sendCredits >= 2 || (this.sendCredits === 1 && this.owedCount > 0);
  }

  /**
   * Take one credit for a data message. Returns -1 when Full (nothing changed), else the number
   * of owed credits to carry in its header (0..maxPiggyback; those are no longer owed).
   * If the post then fails, the connection is broken anyway; there is no undo.
   */
  tryTakeForData(): number {
    if (!this.canSendData()) return -1;
    this.sendCredits--;
    return this.takeOwed();
  }

  /**
   * Whether an explicit credit message is due: `returnBatch` credits owed and a credit to send it
   * with. Returns 0 when not (nothing changed), else the credits to carry (and takes one credit
   * for the message itself). Call after releases when no traffic back is queued.
   */
  tryTakeForCreditMessage(): number {
    if (this.owedCount < this.returnBatch || this.sendCredits < 1) return 0;
    this.sendCredits--;
    return this.takeOwed();
  }

  /**
   * Take every owed credit now, as tryTakeForCreditMessage but below the batch threshold (a
   * connection that goes idle or closes politely). Returns 0 when nothing is owed or no credit.
   */
  tryTakeForFlush(): number {
    if (this.owedCount === 0 || this.sendCredits < 1) return 0;
    this.sendCredits--;
    return this.takeOwed();
  }

  /**
   * Take one credit for the last message of the connection (a goodbye: nothing follows it, so
   * the credit kept for returning credits is free to use). Returns -1 with no credit at all,
   * else the owed credits to carry.
   */
  tryTakeForLast(): number {
    if (this.sendCredits < 1) return -1;
    this.sendCredits--;
    return this.takeOwed();
  }

  /**
   * A message from the peer arrived into one of our buffers, carrying `returned` credits (its
   * header's count; 0 when none). Data messages are then held until onRelease(); the transport
   * calls onRelease() at once for a credit message. Throws ProtocolError when the peer sent past
   * its credits or returned more than it could owe (nothing changed then).
   */
  onReceive(returned: number): void {
    if (!Number.isInteger(returned) || returned < 0 || this.sendCredits + returned > this.window) {
      throw new ProtocolError(`peer returned ${returned} credits with ${this.sendCredits} of ${this.window} unused`);
    }
    if (this.heldCount + this.owedCount >= this.peerWindow) {
      throw new ProtocolError(`peer sent past its ${this.peerWindow} credits`);
    }
    this.sendCredits += returned;
    this.heldCount++;
  }

  /** The buffer of one received message was re-posted: its credit is owed to the peer. */
  onRelease(): void {
    if (this.heldCount === 0) throw new UsageError("credit release without a held message");
    this.heldCount--;
    this.owedCount++;
  }

  private takeOwed(): number {
    const n = this.owedCount < this.maxPiggyback ? this.owedCount : this.maxPiggyback;
    this.owedCount -= n;
    return n;
  }
}
