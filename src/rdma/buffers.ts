/**
 * A registered receive-buffer slab: one MR over one buffer of `slotCount` fixed slots of
 * `slotBytes`, posted to an SRQ. Slot `i` is [address + i * slotBytes, + slotBytes) under the
 * MR's lkey, and its receive's wr_id is `wrIdBase + i`, so a receive completion names its slot
 * with no lookup table. A slot is IDLE (not posted yet), POSTED (the device may fill it) or HELD
 * (a received message lives in it until the application releases it); release() re-posts it at
 * once, so once postAll() succeeded the SRQ has `slotCount - held` of these receives posted: the
 * figure credit flow control grants against (credits.ts).
 *
 * Contract:
 * - postAll() once after construction posts every slot (in chains of POST_CHAIN receives); on a
 *   failed post (the SRQ full: ENOMEM) it returns the errno, the receives before the provider's
 *   bad_wr are posted and the rest stay IDLE, posted by a later postAll().
 * - onReceive(wrId) when a receive completion (status SUCCESS) arrives: returns the slot, now
 *   HELD; `views[slot]` is its full-size view (made once at construction: nothing is allocated
 *   per message), valid until release(slot). A wr_id outside the slab, or naming a slot not
 *   posted, is a UsageError (a completion is never delivered twice by a device).
 * - release(slot) re-posts a HELD slot; releasing one not held is a UsageError (never a second
 *   post of one buffer). A post that fails returns its errno and leaves the slot HELD.
 * - close() deregisters the MR (twice is safe). Destroy the QPs and the SRQ first: a receive
 *   still posted names this MR's lkey. The slab does not own the SRQ or the PD.
 *
 * Thread: the JS thread that owns the verbs context; no locking.
 *
 * Example:
 *   const slab = new RecvSlab(pd, srq, { slotCount: 256, slotBytes: 4096 });
 *   slab.postAll();
 *   // on a RECV completion: const s = slab.onReceive(wcs.wrId(i)); use(slab.views[s].subarray(0, wcs.byteLen(i)));
 *   slab.release(s);                               // re-posted to the SRQ
 */

import { UsageError } from "../errors.ts";
import { IBV, RecvWorkRequests, type VerbsMr, type VerbsPd, type VerbsSrq } from "../ffi/ibverbs.ts";

/** Receives linked into one post_srq_recv call by postAll(): one FFI call per chain instead of per slot. */
export const POST_CHAIN = 32;

const SLOT_IDLE = 0;
const SLOT_POSTED = 1;
const SLOT_HELD = 2;

export interface RecvSlabOptions {
  /** Slots (receives the SRQ holds); at most the SRQ's max_wr. */
  slotCount: number;
  /** Bytes per slot: the largest message a SEND may carry into it. */
  slotBytes: number;
  /** wr_id of slot 0 (slot i: wrIdBase + i), so receives can be told from other work requests; default 0. */
  wrIdBase?: number;
}

/**
 * Receive buffers in one registered region, posted to `srq`. Owner: the server context's data
 * path, which closes it after the SRQ; single thread.
 */
export class RecvSlab {
  readonly slotCount: number;
  readonly slotBytes: number;
  readonly wrIdBase: number;
  /** The whole buffer (registered). */
  readonly bytes: Uint8Array;
  /** One full-size view per slot, made once. */
  readonly views: Uint8Array[] = [];
  readonly mr: VerbsMr;
  private readonly state: Uint8Array;
  private readonly wrs = new RecvWorkRequests(POST_CHAIN);
  /** The slots of the chain postAll() is building, in order. */
  private readonly chainSlots = new Int32Array(POST_CHAIN);
  private postedCount = 0;
  private heldCount = 0;

  constructor(
    pd: VerbsPd,
    private readonly srq: VerbsSrq,
    opts: RecvSlabOptions,
  ) {
    const { slotCount, slotBytes } = opts;
    const wrIdBase = opts.wrIdBase ?? 0;
    if (!Number.isInteger(slotCount) || slotCount < 1) throw new UsageError(`receive slab: slotCount must be an integer >= 1 (got ${slotCount})`);
    if (slotCount > srq.maxWr) throw new UsageError(`receive slab: ${slotCount} slots > SRQ max_wr ${srq.maxWr}`);
    if (!Number.isInteger(slotBytes) || slotBytes < 1 || slotBytes > 0x7fffffff) throw new UsageError(`receive slab: slotBytes must be an integer in 1..2^31-1 (got ${slotBytes})`);
    if (!Number.isSafeInteger(wrIdBase) || wrIdBase < 0 || !Number.isSafeInteger(wrIdBase + slotCount)) throw new UsageError(`receive slab: bad wrIdBase ${wrIdBase}`);
    this.slotCount = slotCount;
    this.slotBytes = slotBytes;
    this.wrIdBase = wrIdBase;
    this.bytes = new Uint8Array(slotCount * slotBytes);
    for (let i = 0; i < slotCount; i++) this.views.push(this.bytes.subarray(i * slotBytes, (i + 1) * slotBytes));
    this.state = new Uint8Array(slotCount);
    // The device writes received bytes: local write access only (no remote access to receive buffers).
    this.mr = pd.regMr(this.bytes, IBV.IBV_ACCESS_LOCAL_WRITE);
  }

  /** Receives posted to the SRQ now. */
  get posted(): number {
    return this.postedCount;
  }

  /** Slots holding a received message not yet released. */
  get held(): number {
    return this.heldCount;
  }

  /** Native address of slot `slot` (what its receive's SGE names). */
  addressOf(slot: number): number {
    return this.mr.address + slot * this.slotBytes;
  }

  /** The slot whose bytes contain native `address`, or -1 when it is outside the slab. */
  slotAt(address: number): number {
    const rel = address - this.mr.address;
    return rel >= 0 && rel < this.bytes.byteLength ? Math.floor(rel / this.slotBytes) : -1;
  }

  /** lkey of every slot (one MR). */
  get lkey(): number {
    return this.mr.lkey;
  }

  /**
   * Posts every IDLE slot (all of them, after construction) in chains of POST_CHAIN. Returns 0,
   * or the errno of the first failed post (the slots of that chain before the provider's bad_wr
   * are posted; the rest stay IDLE).
   */
  postAll(): number {
    let n = 0;
    for (let s = 0; s < this.slotCount; s++) {
      if (this.state[s] !== SLOT_IDLE) continue;
      this.wrs.set(n, this.wrIdBase + s, this.addressOf(s), this.slotBytes, this.mr.lkey);
      if (n > 0) this.wrs.chain(n - 1, n);
      this.chainSlots[n++] = s;
      if (n === POST_CHAIN) {
        const rc = this.postChain(n);
        if (rc !== 0) return rc;
        n = 0;
      }
    }
    return n === 0 ? 0 : this.postChain(n);
  }

  /** Posts the `n` receives built in `wrs` (slots in chainSlots); marks those the provider took. */
  private postChain(n: number): number {
    const rc = this.srq.tryPostRecv(this.wrs, 0);
    // On failure the provider's bad_wr names the first receive not posted.
    const taken = rc === 0 ? n : Math.max(0, this.wrs.badIndex());
    for (let k = 0; k < taken; k++) this.state[this.chainSlots[k]!] = SLOT_POSTED;
    this.postedCount += taken;
    return rc;
  }

  /**
   * A receive completion with `wrId` (status SUCCESS): its slot is now HELD and returned;
   * `views[slot]` holds the message until release(slot).
   */
  onReceive(wrId: number): number {
    const slot = this.postedSlot(wrId);
    this.state[slot] = SLOT_HELD;
    this.postedCount--;
    this.heldCount++;
    return slot;
  }

  /**
   * Re-posts a HELD slot to the SRQ (one post_srq_recv): 0, or the errno of a failed post (the
   * slot stays HELD). The slot's view must not be used after a successful release.
   */
  release(slot: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount || this.state[slot] !== SLOT_HELD) {
      throw new UsageError(`receive slab: release of slot ${slot}, which holds no message`);
    }
    this.wrs.set(0, this.wrIdBase + slot, this.addressOf(slot), this.slotBytes, this.mr.lkey);
    const rc = this.srq.tryPostRecv(this.wrs, 0);
    if (rc !== 0) return rc;
    this.state[slot] = SLOT_POSTED;
    this.heldCount--;
    this.postedCount++;
    return 0;
  }

  /** Deregisters the MR (twice is safe). The SRQ and its QPs must be destroyed first. */
  close(): void {
    this.mr.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private postedSlot(wrId: number): number {
    const slot = wrId - this.wrIdBase;
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) throw new UsageError(`receive slab: completion wr_id ${wrId} is not one of its slots`);
    if (this.state[slot] !== SLOT_POSTED) throw new UsageError(`receive slab: completion for slot ${slot}, which was not posted`);
    return slot;
  }
}
