/**
 * UCP endpoints and unpacked remote keys: Active Message sends, one-sided put / get / CSWAP,
 * close. Created by UcpWorker (ucp.ts); every operation's completion and the memory it uses are
 * tracked by the worker (through EndpointWorker, so this file does not import ucp.ts).
 * Thread: the worker's JS thread, outside UCX callbacks unless a method says otherwise.
 *
 *   const ep = worker.connect({ host, port }, false, onError);  ep.amSend(1, head, body, done);  ep.close();
 */

import { ptr, type Pointer } from "bun:ffi";
import { C, check, isStatusError, lib, Out, withUcxLogsQuiet, type Struct } from "./ucp-lib.ts";
import { off, UCP } from "./ucp-layout.ts";

/**
 * What an endpoint needs of the worker that made it (UcpWorker in ucp.ts implements it): the
 * request bookkeeping, the request-param structs and the re-entrancy depth. Declared here so
 * that this file imports nothing of ucp.ts (ucp.ts imports this one).
 */
export interface EndpointWorker {
  /** The ucp_worker_h (fence()). */
  readonly handle: number;
  depth: number;
  readonly closing: Set<number>;
  /** The AM send param for sends that must complete inside the call (FORCE_IMM_CMPL, REPLY): constant, shared. */
  readonly immediateParams: Struct;
  /** Keeps `memory` reachable until request `req` (one UCX returned where none was expected) completes; the worker frees it then. */
  orphan(req: number, memory: unknown[]): void;
  reserveId(): number;
  amSendParams(id: number): Struct;
  putAmSendParams(p: Struct): void;
  settleReserved(sp: number, id: number, owner: UcpEndpoint, done: (status: number, ctx: unknown) => void, a: unknown, b: unknown, ctx: unknown): void;
  track(done: (status: number, length: number) => void, ...memory: unknown[]): number;
  sendParams(id: number, flags: number): Struct;
  takeParams(): Struct;
  putParams(p: Struct): void;
  settle(sp: number, id: number, owner: UcpEndpoint): void;
  forget(child: { close(): void }, errId?: number): void;
}

export class UcpRkey {
  constructor(private handle: number) {}
  get ptr(): number {
    return this.handle;
  }
  close(): void {
    if (this.handle === 0) return;
    lib().ucp_rkey_destroy(this.handle as Pointer);
    this.handle = 0;
  }
}

export class UcpEndpoint {
  handle: number;
  private readonly rkeys = new Set<UcpRkey>();

  constructor(
    readonly worker: EndpointWorker,
    handle: number,
    private readonly errId: number,
  ) {
    this.handle = handle;
  }

  /**
   * Sends an Active Message. `header` and `data` must stay untouched until `done(status, ctx)`
   * runs (at once, with nothing allocated, when UCX completed the send inside the call). While
   * the send is in flight the worker keeps `ctx` reachable, which must then reach `header` and
   * `data` too; with `ctx` null it keeps `header` and `data` themselves.
   */
  amSend<T = null>(id: number, header: Uint8Array, data: Uint8Array | null, done: (status: number, ctx: T) => void, ctx: T | null = null): void {
    const w = this.worker;
    const rid = w.reserveId();
    const p = w.amSendParams(rid);
    w.depth++; // callbacks may run inside (a send to this very worker is delivered in the call)
    const sp = Number(C!.ucp_am_send_nbx(this.handle as Pointer, id, header, header.length, data !== null && data.length > 0 ? data : null, data ? data.length : 0, p.p));
    w.depth--;
    w.putAmSendParams(p);
    // Completed inside the call (the usual eager case): nothing to register. In flight: header
    // and data stay retained until UCX is done with them (it may replay a send queued during
    // wire-up long after this call returned).
    w.settleReserved(sp, rid, this, done as (status: number, ctx: unknown) => void, header, data, ctx);
  }

  /**
   * Sends an Active Message only if UCX completes it inside this call (UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL:
   * an eager send, the bytes copied into UCX's buffers before it returns), straight from
   * `header` and `data`, with no request and no callback: the caller may reuse both at once.
   * Returns UCS_OK, UCS_ERR_NO_RESOURCE (UCX could not complete it now: nothing was sent; send
   * it with amSend), or another error status. Thread: the worker's; a send to this very worker
   * delivers inside the call.
   */
  amSendNow(id: number, header: Uint8Array, data: Uint8Array | null): number {
    const w = this.worker;
    w.depth++;
    const sp = Number(C!.ucp_am_send_nbx(this.handle as Pointer, id, header, header.length, data, data === null ? 0 : data.length, w.immediateParams.p));
    w.depth--;
    if (sp <= 0) return sp;
    // A request, which FORCE_IMM_CMPL rules out (ucp.h); should UCX return one anyway, the
    // memory it reads stays reachable until it completes.
    w.orphan(sp, [header, data]);
    return UCP.UCS_OK;
  }

  rkeyUnpack(packed: Uint8Array): UcpRkey {
    const out = new Out();
    check("ucp_ep_rkey_unpack", lib().ucp_ep_rkey_unpack(this.handle as Pointer, ptr(packed), out.p));
    const k = new UcpRkey(out.value);
    this.rkeys.add(k);
    return k;
  }

  /** One-sided write of `buffer` to `remoteAddr`; `buffer` must stay untouched until `done`. */
  put(buffer: Uint8Array, remoteAddr: number, rkey: UcpRkey, done: (status: number) => void): void {
    this.rma(C!.ucp_put_nbx, buffer, remoteAddr, rkey, done);
  }

  /** One-sided read into `buffer` from `remoteAddr`. */
  get(buffer: Uint8Array, remoteAddr: number, rkey: UcpRkey, done: (status: number) => void): void {
    this.rma(C!.ucp_get_nbx, buffer, remoteAddr, rkey, done);
  }

  /**
   * One-sided read of `length` bytes (at most buffer.length: the caller checks) into the start
   * of `buffer`, allocating nothing per call: `done(status, ctx)` runs once it completes (inside
   * the call when UCX completes it at once). While in flight the worker keeps `ctx` reachable,
   * so `ctx` must be an object that keeps `buffer` reachable too.
   */
  getWith<T extends object>(buffer: Uint8Array, length: number, remoteAddr: number, rkey: UcpRkey, done: (status: number, ctx: T) => void, ctx: T): void {
    const w = this.worker;
    const rid = w.reserveId();
    const p = w.sendParams(rid, 0);
    w.depth++;
    const sp = Number(C!.ucp_get_nbx(this.handle as Pointer, ptr(buffer), length, remoteAddr, rkey.ptr as Pointer, p.p));
    w.depth--;
    w.putParams(p);
    w.settleReserved(sp, rid, this, done as (status: number, ctx: unknown) => void, null, null, ctx);
  }

  private rma(
    op: (ep: Pointer, buf: Pointer, len: number, remote: number, rkey: Pointer, param: Pointer) => number | bigint,
    buffer: Uint8Array,
    remoteAddr: number,
    rkey: UcpRkey,
    done: (status: number) => void,
  ): void {
    const w = this.worker;
    const id = w.track((st) => done(st), buffer);
    const p = w.sendParams(id, 0);
    w.depth++;
    const sp = op(this.handle as Pointer, ptr(buffer), buffer.length, remoteAddr, rkey.ptr as Pointer, p.p);
    w.depth--;
    w.putParams(p);
    w.settle(Number(sp), id, this);
  }

  /**
   * Remote completion of this endpoint's RMA and atomics (ucp_ep_flush_nbx): `done(UCS_OK)` runs
   * once every put / get / CSWAP issued on the endpoint before the call has completed at the
   * target too (a put's own completion is local only: its buffer may be reused); inside the
   * call when UCX completes it at once. Over UCX 1.13's tcp and shared-memory transports RMA
   * is emulated with Active Messages served by the peer's worker, so a flush after a put is a
   * round trip to it. Thread: the worker's, outside UCX callbacks.
   */
  flush(done: (status: number) => void): void {
    const w = this.worker;
    const id = w.track((st) => done(st));
    const p = w.sendParams(id, 0);
    w.depth++;
    const sp = lib().ucp_ep_flush_nbx(this.handle as Pointer, p.p);
    w.depth--;
    w.putParams(p);
    w.settle(Number(sp), id, this);
  }

  /**
   * ucp_worker_fence on this endpoint's worker (every endpoint of it): in UCX 1.13 a weak fence,
   * uct_iface_fence on each transport interface, which orders operations within one interface
   * only; it orders nothing across lanes (a put on a NIC's RMA lane, an Active Message on
   * another). Order a put before a message with flush() instead. Thread: the worker's.
   */
  fence(): void {
    check("ucp_worker_fence", lib().ucp_worker_fence(this.worker.handle as Pointer));
  }

  /**
   * 64-bit compare-and-swap at `remoteAddr` (UCX's CSWAP: Result=Y; if X==Y then Y=Z, with X
   * in `compare[0]`, Z in `swapIn[0]`, and the old value Y written back into `swapIn[0]`).
   * Both arrays must stay untouched until `done`.
   */
  cas(compare: BigUint64Array, swapIn: BigUint64Array, remoteAddr: number, rkey: UcpRkey, done: (status: number) => void): void {
    const w = this.worker;
    const id = w.track((st) => done(st), compare, swapIn);
    const p = w.sendParams(id, 0);
    const mask = UCP.UCP_OP_ATTR_FIELD_CALLBACK | UCP.UCP_OP_ATTR_FIELD_USER_DATA | UCP.UCP_OP_ATTR_FIELD_DATATYPE | UCP.UCP_OP_ATTR_FIELD_REPLY_BUFFER;
    p.u32(off("ucp_request_param_t.op_attr_mask"), mask)
      .u64(off("ucp_request_param_t.datatype"), (8 << UCP.UCP_DATATYPE_SHIFT) | UCP.UCP_DATATYPE_CONTIG)
      .ptrAt(off("ucp_request_param_t.reply_buffer"), ptr(swapIn));
    w.depth++;
    const sp = lib().ucp_atomic_op_nbx(this.handle as Pointer, UCP.UCP_ATOMIC_OP_CSWAP, ptr(compare), 1, remoteAddr, rkey.ptr as Pointer, p.p);
    w.depth--;
    w.putParams(p);
    w.settle(Number(sp), id, this);
  }

  /**
   * Closes the endpoint: flushing, or with `force` dropping what is queued (UCX completes the
   * endpoint's outstanding requests with UCS_ERR_CANCELED). UCX accepts force only for an
   * endpoint in UCP_ERR_HANDLING_MODE_PEER (else it refuses with UCS_ERR_INVALID_PARAM and
   * closes nothing), so the other endpoints get the flushing close, which a failed endpoint
   * finishes at once. The request, when UCX returns one, is finished and freed by the worker as
   * it progresses. Never call it from inside a UCX callback. Twice is safe.
   */
  close(force = true): void {
    if (this.handle === 0) return;
    for (const k of this.rkeys) k.close();
    this.rkeys.clear();
    let sp = this.closeNbx(force);
    // Forced because the peer failed: the flush of its failed lanes can only fail, which UCX
    // reports as ERROR lines; the failure is known and handled, so keep them out of the log.
    if (force && sp === UCP.UCS_ERR_INVALID_PARAM) sp = withUcxLogsQuiet(() => this.closeNbx(false));
    this.handle = 0;
    if (sp !== 0 && !isStatusError(sp)) this.worker.closing.add(sp);
    this.worker.forget(this, this.errId);
  }

  private closeNbx(force: boolean): number {
    const p = this.worker.takeParams().u32(off("ucp_request_param_t.op_attr_mask"), UCP.UCP_OP_ATTR_FIELD_FLAGS).u32(off("ucp_request_param_t.flags"), force ? UCP.UCP_EP_CLOSE_FLAG_FORCE : 0);
    this.worker.depth++; // a forced close completes requests (their callbacks run inside)
    const sp = Number(lib().ucp_ep_close_nbx(this.handle as Pointer, p.p));
    this.worker.depth--;
    this.worker.putParams(p);
    return sp;
  }
}
