/**
 * The verbs data path: ibv_poll_cq, ibv_req_notify_cq, ibv_post_send, ibv_post_recv and
 * ibv_post_srq_recv are `static inline` in verbs.h and dispatch through the function pointers
 * in `struct ibv_context.ops` (x86-64 offsets 96, 104, 208, 216, 168: verbs-layout.ts). VerbsOps
 * builds one CFunction per pointer, once per context, and calls it with work requests and
 * completions that live in preallocated native buffers (SendWorkRequests, RecvWorkRequests,
 * WorkCompletions): no allocation and no throw per call. Every `try*` call returns what the
 * provider returned: 0 or an errno for posts and notify, the number of completions (or a
 * negative value on error) for poll; verbsError() makes a NativeError of it off the hot path.
 * A closed object (handle 0) or closed ops answer EBADF (-EBADF for poll) without calling the
 * provider, so a post or poll after close fails instead of crashing.
 *
 * Ownership: the caller owns the buffers and keeps them alive while a post runs (the provider
 * reads work requests and inline data during the call only; the memory an SGE points at must
 * be registered and stay alive until its completion). A VerbsOps is owned by its VerbsContext,
 * which closes it (the CFunctions) after everything of the context is destroyed.
 * Thread: the JS thread that owns the context; the buffers are not shared between threads.
 *
 * Example:
 *   const wrs = new SendWorkRequests(64);
 *   wrs.set(0, 7, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED | IBV.IBV_SEND_INLINE, addr, len, mr.lkey);
 *   if (ops.tryPostSend(qp.handle, wrs, 0) !== 0) ...  // errno; wrs.badIndex() says which
 *   const n = ops.tryPollCq(cq.handle, wcs);           // wcs.status(i), wcs.wrId(i), ...
 */

import { CFunction, FFIType, read, type Pointer } from "bun:ffi";
import { getU64, NativeStruct, OutPointer, setU64, EBADF, ENOSYS } from "./verbs-lib.ts";
import { off, size } from "./verbs-layout.ts";

const P = FFIType.ptr;
const I32 = FFIType.i32;

/** The ops slots called, with their C signatures (all return int). */
const OPS = {
  poll_cq: { at: off("ibv_context.ops.poll_cq"), args: [P, I32, P] },
  req_notify_cq: { at: off("ibv_context.ops.req_notify_cq"), args: [P, I32] },
  post_send: { at: off("ibv_context.ops.post_send"), args: [P, P, P] },
  post_recv: { at: off("ibv_context.ops.post_recv"), args: [P, P, P] },
  post_srq_recv: { at: off("ibv_context.ops.post_srq_recv"), args: [P, P, P] },
} as const;

type Op3 = (a: number, b: number, c: number) => number;
type Op2 = (a: number, b: number) => number;

/** The data-path function pointers of one ibv_context, as CFunctions built once. */
export class VerbsOps {
  private readonly fns: Array<{ close(): void }> = [];
  private readonly pollCq: Op3;
  private readonly reqNotifyCq: Op2;
  private readonly postSend: Op3;
  private readonly postRecv: Op3;
  private readonly postSrqRecv: Op3;
  private closed = false;

  /** Reads the pointers at `context`'s ops; a slot the provider left NULL answers ENOSYS. */
  constructor(context: number) {
    const make = <F>(slot: keyof typeof OPS, none: F): F => {
      const fnPtr = read.ptr(context as Pointer, OPS[slot].at) as number;
      if (fnPtr === 0) return none;
      const fn = CFunction({ ptr: fnPtr as Pointer, args: [...OPS[slot].args], returns: I32 });
      this.fns.push(fn);
      return fn as unknown as F;
    };
    this.pollCq = make<Op3>("poll_cq", () => -ENOSYS);
    this.reqNotifyCq = make<Op2>("req_notify_cq", () => ENOSYS);
    this.postSend = make<Op3>("post_send", () => ENOSYS);
    this.postRecv = make<Op3>("post_recv", () => ENOSYS);
    this.postSrqRecv = make<Op3>("post_srq_recv", () => ENOSYS);
  }

  /** ibv_poll_cq: up to `max` completions of CQ `cq` into `wcs` (from entry 0); the count, or negative on a CQ error. */
  tryPollCq(cq: number, wcs: WorkCompletions, max = wcs.capacity): number {
    if (cq === 0 || this.closed) return -EBADF;
    return this.pollCq(cq, max > wcs.capacity ? wcs.capacity : max, wcs.address);
  }

  /** ibv_req_notify_cq: arms CQ `cq`'s completion channel for the next completion (solicited only when asked); 0 or an errno. */
  tryReqNotifyCq(cq: number, solicitedOnly = false): number {
    if (cq === 0 || this.closed) return EBADF;
    return this.reqNotifyCq(cq, solicitedOnly ? 1 : 0);
  }

  /** ibv_post_send of the work request list starting at `wrs` entry `first` on QP `qp`; 0 or an errno (wrs.badIndex() names the entry). */
  tryPostSend(qp: number, wrs: SendWorkRequests, first = 0): number {
    if (qp === 0 || this.closed) return EBADF;
    wrs.clearBad();
    return this.postSend(qp, wrs.addressOf(first), wrs.badAddress);
  }

  /** ibv_post_recv on QP `qp` (one without an SRQ); 0 or an errno. */
  tryPostRecv(qp: number, wrs: RecvWorkRequests, first = 0): number {
    if (qp === 0 || this.closed) return EBADF;
    wrs.clearBad();
    return this.postRecv(qp, wrs.addressOf(first), wrs.badAddress);
  }

  /** ibv_post_srq_recv on SRQ `srq`; 0 or an errno. */
  tryPostSrqRecv(srq: number, wrs: RecvWorkRequests, first = 0): number {
    if (srq === 0 || this.closed) return EBADF;
    wrs.clearBad();
    return this.postSrqRecv(srq, wrs.addressOf(first), wrs.badAddress);
  }

  /** Frees the CFunctions; the context calls it once nothing of it can post or poll. Twice is safe. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fn of this.fns.splice(0)) fn.close();
  }
}

const SEND_WR = size("ibv_send_wr");
const RECV_WR = size("ibv_recv_wr");
const SGE = size("ibv_sge");
const WC = size("ibv_wc");
const SW_ID = off("ibv_send_wr.wr_id");
const SW_NEXT = off("ibv_send_wr.next");
const SW_SG_LIST = off("ibv_send_wr.sg_list");
const SW_NUM_SGE = off("ibv_send_wr.num_sge");
const SW_OPCODE = off("ibv_send_wr.opcode");
const SW_FLAGS = off("ibv_send_wr.send_flags");
const SW_IMM = off("ibv_send_wr.imm_data");
const SW_RDMA_ADDR = off("ibv_send_wr.wr.rdma.remote_addr");
const SW_RDMA_RKEY = off("ibv_send_wr.wr.rdma.rkey");
const SW_ATOMIC_ADDR = off("ibv_send_wr.wr.atomic.remote_addr");
const SW_ATOMIC_COMPARE = off("ibv_send_wr.wr.atomic.compare_add");
const SW_ATOMIC_SWAP = off("ibv_send_wr.wr.atomic.swap");
const SW_ATOMIC_RKEY = off("ibv_send_wr.wr.atomic.rkey");
const RW_ID = off("ibv_recv_wr.wr_id");
const RW_NEXT = off("ibv_recv_wr.next");
const RW_SG_LIST = off("ibv_recv_wr.sg_list");
const RW_NUM_SGE = off("ibv_recv_wr.num_sge");
const SGE_ADDR = off("ibv_sge.addr");
const SGE_LENGTH = off("ibv_sge.length");
const SGE_LKEY = off("ibv_sge.lkey");

/** Work requests of one kind in native memory, each with `sgePerWr` SGEs of its own (sg_list set once). */
abstract class WorkRequests {
  readonly wrs: NativeStruct;
  readonly sges: NativeStruct;
  private readonly bad = new OutPointer();
  /** The `bad_wr` out-pointer passed to every post. */
  readonly badAddress: number = Number(this.bad.p);

  constructor(
    readonly capacity: number,
    readonly sgePerWr: number,
    private readonly wrBytes: number,
    sgListAt: number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1 || !Number.isInteger(sgePerWr) || sgePerWr < 1) throw new RangeError(`work requests: capacity ${capacity}, sgePerWr ${sgePerWr}`);
    this.wrs = new NativeStruct(capacity * wrBytes);
    this.sges = new NativeStruct(capacity * sgePerWr * SGE);
    for (let i = 0; i < capacity; i++) this.wrs.ptrAt(i * wrBytes + sgListAt, this.sges.address + i * sgePerWr * SGE);
  }

  /** The native address of entry `i`. */
  addressOf(i: number): number {
    return this.wrs.address + i * this.wrBytes;
  }

  /** Sets SGE `j` of entry `i` (registered memory: `lkey` of the MR holding [addr, addr+lengthBytes)). */
  setSge(i: number, j: number, addr: number, lengthBytes: number, lkey: number): void {
    const at = (i * this.sgePerWr + j) * SGE;
    const dv = this.sges.dv;
    setU64(dv, at + SGE_ADDR, addr);
    dv.setUint32(at + SGE_LENGTH, lengthBytes, true);
    dv.setUint32(at + SGE_LKEY, lkey, true);
  }

  /** Zeroes `bad_wr` (done before each post: a provider that fails without writing it reports no entry, not a stale one). */
  clearBad(): void {
    this.bad.clear();
  }

  /** The entry the provider's `bad_wr` names after a failed post, or -1 (none, or not one of these). */
  badIndex(): number {
    const p = this.bad.value;
    const rel = p - this.wrs.address;
    return p !== 0 && rel >= 0 && rel % this.wrBytes === 0 && rel / this.wrBytes < this.capacity ? rel / this.wrBytes : -1;
  }
}

/**
 * `capacity` ibv_send_wr (with their SGEs) in native memory. set() fills an entry as one work
 * request ending a list (next = NULL); chain() links entries into one post. wr_id is a number
 * below 2^53. Owner: the caller; thread: the owner's.
 */
export class SendWorkRequests extends WorkRequests {
  constructor(capacity: number, sgePerWr = 1) {
    super(capacity, sgePerWr, SEND_WR, SW_SG_LIST);
  }

  /** Entry `i`: opcode (IBV_WR_*), send flags (IBV_SEND_*), one SGE (none when `lengthBytes` is 0), next = NULL. */
  set(i: number, wrId: number, opcode: number, sendFlags: number, addr: number, lengthBytes: number, lkey: number): void {
    const at = i * SEND_WR;
    const dv = this.wrs.dv;
    setU64(dv, at + SW_ID, wrId);
    setU64(dv, at + SW_NEXT, 0);
    dv.setInt32(at + SW_NUM_SGE, lengthBytes > 0 ? 1 : 0, true);
    dv.setUint32(at + SW_OPCODE, opcode, true);
    dv.setUint32(at + SW_FLAGS, sendFlags, true);
    if (lengthBytes > 0) this.setSge(i, 0, addr, lengthBytes, lkey);
  }

  /** How many SGEs of entry `i` count (after setSge for each). */
  setNumSge(i: number, n: number): void {
    this.wrs.dv.setInt32(i * SEND_WR + SW_NUM_SGE, n, true);
  }

  /** Immediate data of a *_WITH_IMM entry: the 32-bit value, carried big-endian (network order) as verbs wants; WorkCompletions.imm() reads it back. */
  setImm(i: number, imm: number): void {
    this.wrs.dv.setUint32(i * SEND_WR + SW_IMM, imm >>> 0, false);
  }

  /** Remote address and rkey of an RDMA WRITE / WRITE_WITH_IMM / READ entry. */
  setRdma(i: number, remoteAddr: number | bigint, rkey: number): void {
    setU64(this.wrs.dv, i * SEND_WR + SW_RDMA_ADDR, remoteAddr);
    this.wrs.dv.setUint32(i * SEND_WR + SW_RDMA_RKEY, rkey, true);
  }

  /** Remote address (8-byte aligned), rkey, compare (or add) and swap values of an ATOMIC entry. */
  setAtomic(i: number, remoteAddr: number | bigint, rkey: number, compareAdd: number | bigint, swap: number | bigint): void {
    const at = i * SEND_WR;
    setU64(this.wrs.dv, at + SW_ATOMIC_ADDR, remoteAddr);
    setU64(this.wrs.dv, at + SW_ATOMIC_COMPARE, compareAdd);
    setU64(this.wrs.dv, at + SW_ATOMIC_SWAP, swap);
    this.wrs.dv.setUint32(at + SW_ATOMIC_RKEY, rkey, true);
  }

  /** Links entry `i` to entry `j` (one post sends both, in order); `j` -1 ends the list at `i`. */
  chain(i: number, j: number): void {
    setU64(this.wrs.dv, i * SEND_WR + SW_NEXT, j < 0 ? 0 : this.addressOf(j));
  }
}

/** `capacity` ibv_recv_wr (with their SGEs) in native memory, for ibv_post_recv / ibv_post_srq_recv. Owner: the caller. */
export class RecvWorkRequests extends WorkRequests {
  constructor(capacity: number, sgePerWr = 1) {
    super(capacity, sgePerWr, RECV_WR, RW_SG_LIST);
  }

  /** Entry `i`: a receive into [addr, addr+lengthBytes) of the MR with `lkey`, next = NULL. */
  set(i: number, wrId: number, addr: number, lengthBytes: number, lkey: number): void {
    const at = i * RECV_WR;
    const dv = this.wrs.dv;
    setU64(dv, at + RW_ID, wrId);
    setU64(dv, at + RW_NEXT, 0);
    dv.setInt32(at + RW_NUM_SGE, 1, true);
    this.setSge(i, 0, addr, lengthBytes, lkey);
  }

  /** Links entry `i` to entry `j` (one post, in order); `j` -1 ends the list at `i`. */
  chain(i: number, j: number): void {
    setU64(this.wrs.dv, i * RECV_WR + RW_NEXT, j < 0 ? 0 : this.addressOf(j));
  }
}

const WC_ID = off("ibv_wc.wr_id");
const WC_STATUS = off("ibv_wc.status");
const WC_OPCODE = off("ibv_wc.opcode");
const WC_VENDOR_ERR = off("ibv_wc.vendor_err");
const WC_BYTE_LEN = off("ibv_wc.byte_len");
const WC_IMM = off("ibv_wc.imm_data");
const WC_QP_NUM = off("ibv_wc.qp_num");
const WC_SRC_QP = off("ibv_wc.src_qp");
const WC_FLAGS = off("ibv_wc.wc_flags");

/** `capacity` ibv_wc in native memory for ibv_poll_cq; entry getters read what the last poll wrote. Owner: the caller. */
export class WorkCompletions {
  readonly buf: NativeStruct;
  readonly address: number;
  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`work completions: capacity ${capacity}`);
    this.buf = new NativeStruct(capacity * WC);
    this.address = this.buf.address;
  }
  wrId(i: number): number {
    return getU64(this.buf.dv, i * WC + WC_ID);
  }
  /** IBV_WC_* status (wcStatusName() names it). */
  status(i: number): number {
    return this.buf.dv.getUint32(i * WC + WC_STATUS, true);
  }
  /** IBV_WC_* opcode; valid only when status is IBV_WC_SUCCESS. */
  opcode(i: number): number {
    return this.buf.dv.getUint32(i * WC + WC_OPCODE, true);
  }
  vendorErr(i: number): number {
    return this.buf.dv.getUint32(i * WC + WC_VENDOR_ERR, true);
  }
  byteLen(i: number): number {
    return this.buf.dv.getUint32(i * WC + WC_BYTE_LEN, true);
  }
  /** The immediate value as SendWorkRequests.setImm() gave it (when wcFlags has IBV_WC_WITH_IMM). */
  imm(i: number): number {
    return this.buf.dv.getUint32(i * WC + WC_IMM, false);
  }
  qpNum(i: number): number {
    return this.buf.dv.getUint32(i * WC + WC_QP_NUM, true);
  }
  srcQp(i: number): number {
    return this.buf.dv.getUint32(i * WC + WC_SRC_QP, true);
  }
  wcFlags(i: number): number {
    return this.buf.dv.getUint32(i * WC + WC_FLAGS, true);
  }
}
