/**
 * The verbs owners that hang off a context or PD without depending on them: registered memory
 * (VerbsMr), completion channels (VerbsCompChannel), CQs (VerbsCq) and SRQs (VerbsSrq). Made by
 * VerbsContext / VerbsPd (ibverbs.ts, which re-exports them); see there for the contract
 * (errors, close order, close twice safe, a failed close keeps the object, Disposable).
 *
 * Example:
 *   const cq = ctx.createCq(256, ch);  cq.tryReqNotify();
 *   for (let got; (got = ch.tryGetCqEvent()) !== null; ) { got.tryReqNotify(); poll(got); }
 *   cq.ackEvents();
 *
 * Thread: the JS thread that owns the context.
 */

import { read, type Pointer } from "bun:ffi";
import { UsageError } from "../errors.ts";
import type { IbvLibrary } from "./ibverbs-lib.ts";
import { IBV, off, size } from "./verbs-layout.ts";
import { EAGAIN, NativeStruct, OutPointer, returnedErrno, setNonBlocking, verbsError } from "./verbs-lib.ts";
import type { RecvWorkRequests, VerbsOps } from "./verbs-ops.ts";

type P = Pointer;

/** What a CQ, channel or SRQ needs of its context: the library, the data-path ops, the owner-by-handle map. */
export interface VerbsParent {
  readonly lib: IbvLibrary;
  readonly ops: VerbsOps;
  readonly byHandle: Map<number, unknown>;
  readonly deviceName: string;
}

/** A registered memory region over JS memory (`view`, kept alive by this object). */
export class VerbsMr {
  handle: number;
  readonly lkey: number;
  readonly rkey: number;
  readonly lenBytes: number;
  constructor(
    private readonly lib: IbvLibrary,
    handle: number,
    /** The registered bytes. */
    readonly view: Uint8Array,
    /** Their native address (what SGEs and a peer's remote_addr name). */
    readonly address: number,
    private readonly forget: () => void,
  ) {
    this.handle = handle;
    this.lkey = read.u32(handle as P, off("ibv_mr.lkey"));
    this.rkey = read.u32(handle as P, off("ibv_mr.rkey"));
    this.lenBytes = view.byteLength;
  }

  /** Deregisters (the bytes stay valid JS memory). */
  close(): void {
    if (this.handle === 0) return;
    const h = this.handle;
    const rc = this.lib.C.ibv_dereg_mr(h as P);
    if (rc !== 0) throw verbsError("ibv_dereg_mr", returnedErrno(rc));
    this.handle = 0;
    this.forget();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A completion channel: its fd is readable when an armed CQ on it got a completion (tryGetCqEvent). */
export class VerbsCompChannel {
  handle: number;
  readonly fd: number;
  private nonBlocking = false;
  private readonly cqOut = new OutPointer();
  private readonly ctxOut = new OutPointer();
  constructor(
    readonly ctx: VerbsParent,
    handle: number,
    private readonly forget: () => void,
  ) {
    this.handle = handle;
    this.fd = read.i32(handle as P, off("ibv_comp_channel.fd"));
  }

  /**
   * The CQ of the next completion event (the fd is made non-blocking on first use), or null
   * when none is pending. The event counts as unacknowledged on that CQ until its ackEvents();
   * re-arm the CQ (tryReqNotify) before polling it empty.
   */
  tryGetCqEvent(): VerbsCq | null {
    if (this.handle === 0) return null;
    if (!this.nonBlocking) {
      setNonBlocking(this.fd, "ibv_get_cq_event");
      this.nonBlocking = true;
    }
    const rc = this.ctx.lib.C.ibv_get_cq_event(this.handle as P, this.cqOut.p, this.ctxOut.p);
    if (rc !== 0) {
      const e = returnedErrno(rc);
      if (e === EAGAIN) return null;
      throw verbsError("ibv_get_cq_event", e);
    }
    const owner = this.ctx.byHandle.get(this.cqOut.value);
    if (!(owner instanceof VerbsCq)) {
      this.ctx.lib.C.ibv_ack_cq_events(this.cqOut.value as P, 1);
      return null;
    }
    owner.unackedEvents++;
    return owner;
  }

  close(): void {
    if (this.handle === 0) return;
    const h = this.handle;
    const rc = this.ctx.lib.C.ibv_destroy_comp_channel(h as P);
    if (rc !== 0) throw verbsError("ibv_destroy_comp_channel", returnedErrno(rc));
    this.handle = 0;
    this.forget();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A completion queue, owned by its context; polled through ctx.ops (tryPollCq with its handle). Its thread. */
export class VerbsCq {
  handle: number;
  /** Entries the provider gave (at least what was asked). */
  readonly cqe: number;
  /** Completion events taken by tryGetCqEvent and not yet acknowledged (destroy waits for them: close() acks them). */
  unackedEvents = 0;
  constructor(
    readonly ctx: VerbsParent,
    handle: number,
    readonly channel: VerbsCompChannel | null,
    private readonly forget: () => void,
  ) {
    this.handle = handle;
    this.cqe = read.i32(handle as P, off("ibv_cq.cqe"));
  }

  /** Acknowledges the events taken so far (ibv_ack_cq_events, one call for all). */
  ackEvents(): void {
    if (this.unackedEvents === 0 || this.handle === 0) return;
    this.ctx.lib.C.ibv_ack_cq_events(this.handle as P, this.unackedEvents);
    this.unackedEvents = 0;
  }

  /** Arms the channel for the next completion (ops.req_notify_cq); 0 or an errno. Hot path. */
  tryReqNotify(solicitedOnly = false): number {
    return this.ctx.ops.tryReqNotifyCq(this.handle, solicitedOnly);
  }

  close(): void {
    if (this.handle === 0) return;
    this.ackEvents();
    const rc = this.ctx.lib.C.ibv_destroy_cq(this.handle as P);
    if (rc !== 0) throw verbsError("ibv_destroy_cq", returnedErrno(rc));
    this.handle = 0;
    this.forget();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A shared receive queue, owned by its PD; receives posted with tryPostRecv. Its thread. */
export class VerbsSrq {
  handle: number;
  /** The limit armed now (0: none; an IBV_EVENT_SRQ_LIMIT_REACHED seen by tryGetAsyncEvent disarms it). */
  limit = 0;
  constructor(
    readonly ctx: VerbsParent,
    handle: number,
    readonly maxWr: number,
    readonly maxSge: number,
    private readonly forget: () => void,
  ) {
    this.handle = handle;
  }

  /**
   * Arms IBV_EVENT_SRQ_LIMIT_REACHED for when fewer than `limit` receives are posted
   * (ibv_modify_srq with IBV_SRQ_LIMIT). The event is one-shot: arm again after each.
   */
  arm(limit: number): void {
    const a = new NativeStruct(size("ibv_srq_attr")).u32(off("ibv_srq_attr.srq_limit"), limit);
    const rc = this.ctx.lib.C.ibv_modify_srq(this.p, a.p, IBV.IBV_SRQ_LIMIT);
    if (rc !== 0) throw verbsError(`ibv_modify_srq(srq_limit ${limit}, max_wr ${this.maxWr})`, returnedErrno(rc));
    this.limit = limit;
  }

  /** Posts receives (ops.post_srq_recv); 0 or an errno. Hot path. */
  tryPostRecv(wrs: RecvWorkRequests, first = 0): number {
    return this.ctx.ops.tryPostSrqRecv(this.handle, wrs, first);
  }

  private get p(): P {
    if (this.handle === 0) throw new UsageError("verbs SRQ is closed");
    return this.handle as P;
  }

  close(): void {
    if (this.handle === 0) return;
    const h = this.handle;
    const rc = this.ctx.lib.C.ibv_destroy_srq(h as P);
    if (rc !== 0) throw verbsError("ibv_destroy_srq", returnedErrno(rc));
    this.handle = 0;
    this.forget();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
