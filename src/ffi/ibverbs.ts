/**
 * libibverbs through bun:ffi: the owners the rdma transport uses. VerbsContext (a device opened,
 * or one rdma_cm opened and lends) → VerbsPd → VerbsMr / VerbsSrq / VerbsQp, and VerbsCompChannel
 * → VerbsCq; async events; the data path (ops at ibv_context.ops, called through CFunctions built
 * once per context) is verbs-ops.ts, the symbol table and device list ibverbs-lib.ts.
 *
 * Contract: every failing call throws NativeError naming the operation, its errno and what that
 * errno means for it (verbs-lib.ts's tables); no library or no device is RdmaUnavailableError
 * with the reason (`ibv_get_device_list: no devices (ENOSYS)` on a machine without RDMA).
 * Parents close their children first (a PD its QPs, then SRQs, then MRs; a context its PDs,
 * then CQs, then channels); close() twice is safe; a close whose destroy fails (EBUSY: a QP
 * still on the CQ) throws why and keeps the object and its handle, so a later close() (or its
 * parent's) destroys it; only a successful destroy forgets it, so nothing is destroyed twice.
 * A post, poll or notify on a closed object (or after the context closed) answers EBADF
 * (verbs-ops.ts); a control-path call on one throws UsageError. Every owner is Disposable (`using`).
 * Thread: the JS thread that opened the context; nothing here is shared between threads.
 *
 * Example:
 *   using ctx = VerbsContext.open();                 // first device, or open("mlx5_0")
 *   const pd = ctx.allocPd(), ch = ctx.createCompChannel(), cq = ctx.createCq(256, ch);
 *   const mr = pd.regMr(new Uint8Array(1 << 20), IBV.IBV_ACCESS_LOCAL_WRITE | IBV.IBV_ACCESS_REMOTE_WRITE);
 *   const qp = pd.createQp({ sendCq: cq, recvCq: cq, maxSendWr: 64, maxRecvWr: 64 });
 *   qp.modify({ qpState: IBV.IBV_QPS_INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 });
 */

import { ptr, read, type Pointer } from "bun:ffi";
import { RdmaUnavailableError, UsageError } from "../errors.ts";
import { ibverbs, withDeviceList, type IbvLibrary } from "./ibverbs-lib.ts";
import { constName, IBV, off, size, type VerbsField } from "./verbs-layout.ts";
import { clearErrno, EAGAIN, errno, getU64, NativeStruct, returnedErrno, setNonBlocking, verbsError } from "./verbs-lib.ts";
import { VerbsOps, type RecvWorkRequests, type SendWorkRequests } from "./verbs-ops.ts";
import { VerbsCompChannel, VerbsCq, VerbsMr, VerbsSrq, type VerbsParent } from "./verbs-queues.ts";
import { applyQpAttr, PORT_EVENTS, QP_EVENTS, readCaps, SRQ_EVENTS, writeQpInit, type QpAttr, type QpCaps, type QpInit } from "./verbs-attrs.ts";

export { ensureForkSafe, forkSafety, ibverbsPath, ibverbsUnavailableReason, rdmaUnavailableReason, verbsDevices, type ForkSafety, type VerbsDeviceInfo } from "./ibverbs-lib.ts";
export { RecvWorkRequests, SendWorkRequests, VerbsOps, WorkCompletions } from "./verbs-ops.ts";
export { constName, IBV, RDMA, wcStatusName } from "./verbs-layout.ts";
export { memlockLimit, verbsError } from "./verbs-lib.ts";
export type { QpAh, QpAttr, QpCaps, QpInit } from "./verbs-attrs.ts";
export { VerbsCompChannel, VerbsCq, VerbsMr, VerbsSrq } from "./verbs-queues.ts";

type P = Pointer;

/** The device attributes the transport sizes itself by (ibv_query_device). */
export interface VerbsDeviceAttr {
  fwVer: string;
  maxMrSize: number;
  maxQp: number;
  maxQpWr: number;
  deviceCapFlags: number;
  maxSge: number;
  maxCq: number;
  maxCqe: number;
  maxMr: number;
  maxPd: number;
  maxQpRdAtom: number;
  maxQpInitRdAtom: number;
  /** IBV_ATOMIC_NONE / HCA / GLOB. */
  atomicCap: number;
  maxSrq: number;
  maxSrqWr: number;
  maxSrqSge: number;
  physPortCnt: number;
}

/** One port's attributes (ibv_query_port). */
export interface VerbsPortAttr {
  /** IBV_PORT_* (IBV_PORT_ACTIVE when usable). */
  state: number;
  maxMtu: number;
  activeMtu: number;
  gidTblLen: number;
  portCapFlags: number;
  maxMsgSz: number;
  lid: number;
  smLid: number;
  physState: number;
  /** IBV_LINK_LAYER_INFINIBAND or IBV_LINK_LAYER_ETHERNET (RoCE: address by GID). */
  linkLayer: number;
}

/** An async event, copied out and acknowledged; `qp` / `srq` / `cq` is the owner it is about, when it is one of this context's. */
export interface VerbsAsyncEvent {
  type: number;
  /** IBV_EVENT_* name. */
  name: string;
  /** The port, for port events. */
  portNum: number;
  qp?: VerbsQp;
  srq?: VerbsSrq;
  cq?: VerbsCq;
}

function closeAll(owners: Iterable<{ close(): void }>, errors: unknown[]): void {
  for (const o of [...owners].reverse()) {
    try {
      o.close();
    } catch (e) {
      errors.push(e);
    }
  }
}

/**
 * An opened device (or one rdma_cm lends: borrow()). Owns what it makes: PDs (and through them
 * MRs, SRQs, QPs), CQs and completion channels, closed before it. Owner: whoever opened it; the
 * JS thread that opened it.
 */
export class VerbsContext implements VerbsParent {
  handle: number;
  /** The data-path calls of this context (its provider's ops), built once. */
  readonly ops: VerbsOps;
  readonly cmdFd: number;
  /** Readable when an async event is pending (tryGetAsyncEvent). */
  readonly asyncFd: number;
  readonly numCompVectors: number;
  private readonly pds = new Set<VerbsPd>();
  private readonly cqs = new Set<VerbsCq>();
  private readonly channels = new Set<VerbsCompChannel>();
  /** @internal this context's CQs, QPs and SRQs by native handle (events name them so). */
  readonly byHandle = new Map<number, VerbsCq | VerbsQp | VerbsSrq>();
  private readonly event = new NativeStruct(size("ibv_async_event"));
  private asyncNonBlocking = false;

  private constructor(
    /** @internal the library the context came from. */
    readonly lib: IbvLibrary,
    handle: number,
    readonly deviceName: string,
    /** Opened here (closed with ibv_close_device), or lent by rdma_cm (left open). */
    readonly owned: boolean,
  ) {
    this.handle = handle;
    this.ops = new VerbsOps(handle);
    this.cmdFd = read.i32(handle as P, off("ibv_context.cmd_fd"));
    this.asyncFd = read.i32(handle as P, off("ibv_context.async_fd"));
    this.numCompVectors = read.i32(handle as P, off("ibv_context.num_comp_vectors"));
  }

  /**
   * Opens `deviceName` (e.g. "mlx5_0"), or the first device listed. RdmaUnavailableError when
   * the library or any device is missing, or no device has that name (the message lists those
   * there are); NativeError when ibv_open_device fails. The caller owns the context.
   */
  static open(deviceName?: string): VerbsContext {
    return withDeviceList((lib, devices) => {
      const names = devices.map((d) => String(lib.C.ibv_get_device_name(d as P)));
      const i = deviceName === undefined ? 0 : names.indexOf(deviceName);
      if (i < 0) throw new RdmaUnavailableError(`no RDMA device "${deviceName}" (found: ${names.join(", ")})`);
      clearErrno();
      const h = Number(lib.C.ibv_open_device(devices[i]! as P));
      if (h === 0) throw verbsError(`ibv_open_device(${names[i]})`, errno());
      return new VerbsContext(lib, h, names[i]!, true);
    });
  }

  /**
   * Wraps a context librdmacm opened (an rdma_cm_id's `verbs`): what is made through the
   * wrapper is destroyed by its close(), the context itself stays rdma_cm's.
   */
  static borrow(handle: number): VerbsContext {
    const lib = ibverbs();
    const device = read.ptr(handle as P, off("ibv_context.device")) as number;
    return new VerbsContext(lib, handle, device === 0 ? "?" : String(lib.C.ibv_get_device_name(device as P)), false);
  }

  private get p(): P {
    if (this.handle === 0) throw new UsageError(`verbs context ${this.deviceName} is closed`);
    return this.handle as P;
  }

  /** ibv_query_device: the limits the transport sizes itself by. */
  queryDevice(): VerbsDeviceAttr {
    const a = new NativeStruct(size("ibv_device_attr"));
    const rc = this.lib.C.ibv_query_device(this.p, a.p);
    if (rc !== 0) throw verbsError(`ibv_query_device(${this.deviceName})`, returnedErrno(rc));
    const i = (f: string) => a.dv.getInt32(off(`ibv_device_attr.${f}` as VerbsField), true);
    const fw = a.bytes.subarray(off("ibv_device_attr.fw_ver"), off("ibv_device_attr.fw_ver") + size("ibv_device_attr.fw_ver"));
    return {
      fwVer: new TextDecoder().decode(fw.subarray(0, fw.indexOf(0) < 0 ? fw.length : fw.indexOf(0))),
      maxMrSize: getU64(a.dv, off("ibv_device_attr.max_mr_size")),
      maxQp: i("max_qp"), maxQpWr: i("max_qp_wr"), deviceCapFlags: a.dv.getUint32(off("ibv_device_attr.device_cap_flags"), true),
      maxSge: i("max_sge"), maxCq: i("max_cq"), maxCqe: i("max_cqe"), maxMr: i("max_mr"), maxPd: i("max_pd"),
      maxQpRdAtom: i("max_qp_rd_atom"), maxQpInitRdAtom: i("max_qp_init_rd_atom"), atomicCap: i("atomic_cap"),
      maxSrq: i("max_srq"), maxSrqWr: i("max_srq_wr"), maxSrqSge: i("max_srq_sge"),
      physPortCnt: a.dv.getUint8(off("ibv_device_attr.phys_port_cnt")),
    };
  }

  /** ibv_query_port of port `portNum` (1-based). */
  queryPort(portNum: number): VerbsPortAttr {
    const a = new NativeStruct(size("ibv_port_attr"));
    const rc = this.lib.C.ibv_query_port(this.p, portNum, a.p);
    if (rc !== 0) throw verbsError(`ibv_query_port(${this.deviceName}, port ${portNum})`, returnedErrno(rc));
    const u32 = (f: string) => a.dv.getUint32(off(`ibv_port_attr.${f}` as VerbsField), true);
    return {
      state: u32("state"), maxMtu: u32("max_mtu"), activeMtu: u32("active_mtu"), gidTblLen: a.dv.getInt32(off("ibv_port_attr.gid_tbl_len"), true),
      portCapFlags: u32("port_cap_flags"), maxMsgSz: u32("max_msg_sz"),
      lid: a.dv.getUint16(off("ibv_port_attr.lid"), true), smLid: a.dv.getUint16(off("ibv_port_attr.sm_lid"), true),
      physState: a.dv.getUint8(off("ibv_port_attr.phys_state")), linkLayer: a.dv.getUint8(off("ibv_port_attr.link_layer")),
    };
  }

  /** GID `index` of `portNum`: 16 bytes in network order (what a peer puts in ah.grh.dgid). */
  queryGid(portNum: number, index: number): Uint8Array {
    const gid = new NativeStruct(size("ibv_gid"));
    const rc = this.lib.C.ibv_query_gid(this.p, portNum, index, gid.p);
    if (rc !== 0) throw verbsError(`ibv_query_gid(${this.deviceName}, port ${portNum}, index ${index})`, returnedErrno(rc));
    return gid.bytes.slice();
  }

  /** A new protection domain, owned by this context. */
  allocPd(): VerbsPd {
    clearErrno();
    const h = Number(this.lib.C.ibv_alloc_pd(this.p));
    if (h === 0) throw verbsError(`ibv_alloc_pd(${this.deviceName})`, errno());
    const pd = new VerbsPd(this, h, () => this.pds.delete(pd));
    this.pds.add(pd);
    return pd;
  }

  /** A new completion channel (its fd for the event loop), owned by this context. */
  createCompChannel(): VerbsCompChannel {
    clearErrno();
    const h = Number(this.lib.C.ibv_create_comp_channel(this.p));
    if (h === 0) throw verbsError(`ibv_create_comp_channel(${this.deviceName})`, errno());
    const ch = new VerbsCompChannel(this, h, () => this.channels.delete(ch));
    this.channels.add(ch);
    return ch;
  }

  /** A CQ of at least `cqe` entries (size it ≥ send queue + receive queue or SRQ: an overrun is only an async event), notifying `channel` when armed. */
  createCq(cqe: number, channel: VerbsCompChannel | null = null, compVector = 0): VerbsCq {
    if (channel !== null && channel.handle === 0) throw new UsageError("ibv_create_cq: completion channel is closed");
    clearErrno();
    const h = Number(this.lib.C.ibv_create_cq(this.p, cqe, null, channel === null ? null : (channel.handle as P), compVector));
    if (h === 0) throw verbsError(`ibv_create_cq(${this.deviceName}, cqe ${cqe})`, errno());
    const cq = new VerbsCq(this, h, channel, () => {
      this.cqs.delete(cq);
      this.byHandle.delete(h);
    });
    this.cqs.add(cq);
    this.byHandle.set(h, cq);
    return cq;
  }

  /**
   * The next async event (the async fd is made non-blocking on first use), copied out and
   * acknowledged at once (a QP or SRQ can then be destroyed at any time); null when none is
   * pending. An IBV_EVENT_SRQ_LIMIT_REACHED disarms the SRQ's limit: re-arm it (VerbsSrq.arm).
   */
  tryGetAsyncEvent(): VerbsAsyncEvent | null {
    if (!this.asyncNonBlocking) {
      setNonBlocking(this.asyncFd, "ibv_get_async_event");
      this.asyncNonBlocking = true;
    }
    const ev = this.event.clear();
    const rc = this.lib.C.ibv_get_async_event(this.p, ev.p);
    if (rc !== 0) {
      const e = returnedErrno(rc);
      if (e === EAGAIN) return null;
      throw verbsError(`ibv_get_async_event(${this.deviceName})`, e);
    }
    const type = ev.dv.getUint32(off("ibv_async_event.event_type"), true);
    const element = getU64(ev.dv, off("ibv_async_event.element.cq"));
    const portNum = ev.dv.getInt32(off("ibv_async_event.element.port_num"), true);
    this.lib.C.ibv_ack_async_event(ev.p);
    const out: VerbsAsyncEvent = { type, name: constName("IBV_EVENT_", type), portNum: 0 };
    const owner = this.byHandle.get(element);
    if (type === IBV.IBV_EVENT_CQ_ERR && owner instanceof VerbsCq) out.cq = owner;
    else if (QP_EVENTS.has(type) && owner instanceof VerbsQp) out.qp = owner;
    else if (SRQ_EVENTS.has(type) && owner instanceof VerbsSrq) {
      out.srq = owner;
      if (type === IBV.IBV_EVENT_SRQ_LIMIT_REACHED) owner.limit = 0; // one-shot: disarmed until arm() again
    }
    else if (PORT_EVENTS.has(type)) out.portNum = portNum;
    return out;
  }

  /** Destroys PDs (with their QPs, SRQs, MRs), CQs and channels, then the context if it was opened here; throws the first failure after closing the rest. */
  close(): void {
    if (this.handle === 0) return;
    const errors: unknown[] = [];
    closeAll(this.pds, errors);
    closeAll(this.cqs, errors);
    closeAll(this.channels, errors);
    this.ops.close();
    const h = this.handle;
    this.handle = 0;
    if (this.owned) {
      const rc = this.lib.C.ibv_close_device(h as P);
      if (rc !== 0) errors.push(verbsError(`ibv_close_device(${this.deviceName})`, returnedErrno(rc)));
    }
    if (errors.length > 0) throw errors[0];
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A protection domain: owns its MRs, SRQs and QPs (closed before it). Made by VerbsContext.allocPd(); its thread. */
export class VerbsPd {
  handle: number;
  private readonly qps = new Set<VerbsQp>();
  private readonly srqs = new Set<VerbsSrq>();
  private readonly mrs = new Set<VerbsMr>();
  constructor(
    readonly ctx: VerbsContext,
    handle: number,
    private readonly forget: () => void,
  ) {
    this.handle = handle;
  }

  private get p(): P {
    if (this.handle === 0) throw new UsageError("verbs PD is closed");
    return this.handle as P;
  }

  /**
   * Registers `view`'s bytes (JS memory: the MR keeps a reference, so they stay alive while
   * registered) with IBV_ACCESS_* `access`. NativeError on failure; ENOMEM names RLIMIT_MEMLOCK.
   */
  regMr(view: Uint8Array, access: number): VerbsMr {
    if (view.byteLength === 0) throw new UsageError("ibv_reg_mr: no bytes to register");
    void view.buffer; // storage of its own, so the address below stays put
    const addr = Number(ptr(view));
    clearErrno();
    const h = Number(this.ctx.lib.C.ibv_reg_mr(this.p, addr as P, view.byteLength, access));
    if (h === 0) throw verbsError(`ibv_reg_mr(${view.byteLength} bytes, access 0x${access.toString(16)})`, errno());
    const mr = new VerbsMr(this.ctx.lib, h, view, addr, () => this.mrs.delete(mr));
    this.mrs.add(mr);
    return mr;
  }

  /** An SRQ of `maxWr` receives (each of up to `maxSge` SGEs); `srqLimit` > 0 arms the limit event at once. */
  createSrq(opts: { maxWr: number; maxSge?: number; srqLimit?: number }): VerbsSrq {
    const a = new NativeStruct(size("ibv_srq_init_attr"))
      .u32(off("ibv_srq_init_attr.attr.max_wr"), opts.maxWr)
      .u32(off("ibv_srq_init_attr.attr.max_sge"), opts.maxSge ?? 1)
      .u32(off("ibv_srq_init_attr.attr.srq_limit"), opts.srqLimit ?? 0);
    clearErrno();
    const h = Number(this.ctx.lib.C.ibv_create_srq(this.p, a.p));
    if (h === 0) throw verbsError(`ibv_create_srq(max_wr ${opts.maxWr}, max_sge ${opts.maxSge ?? 1})`, errno());
    // The provider writes back what it gave (at least what was asked).
    const srq = new VerbsSrq(this.ctx, h, a.dv.getUint32(off("ibv_srq_init_attr.attr.max_wr"), true), a.dv.getUint32(off("ibv_srq_init_attr.attr.max_sge"), true), () => {
      this.srqs.delete(srq);
      this.ctx.byHandle.delete(h);
    });
    srq.limit = opts.srqLimit ?? 0;
    this.srqs.add(srq);
    this.ctx.byHandle.set(h, srq);
    return srq;
  }

  /** An RC QP (in RESET) on these CQs and, when given, this SRQ; `caps` of the result are what the provider granted. */
  createQp(init: QpInit<VerbsCq, VerbsSrq>): VerbsQp {
    const a = writeQpInit(init);
    clearErrno();
    const h = Number(this.ctx.lib.C.ibv_create_qp(this.p, a.p));
    if (h === 0) throw verbsError(`ibv_create_qp(send_wr ${init.maxSendWr}, recv_wr ${init.maxRecvWr}, inline ${init.maxInlineData ?? 0})`, errno());
    return this.adoptQp(h, init, readCaps(a), (qp) => this.ctx.lib.C.ibv_destroy_qp(qp as P));
  }

  /** @internal a QP made by someone else on this PD (rdma_create_qp), destroyed by `destroy`, owned from now on. */
  adoptQp(h: number, init: QpInit<VerbsCq, VerbsSrq>, caps: QpCaps, destroy: (qp: number) => number): VerbsQp {
    const qp = new VerbsQp(this, h, init, caps, destroy, () => {
      this.qps.delete(qp);
      this.ctx.byHandle.delete(h);
    });
    this.qps.add(qp);
    this.ctx.byHandle.set(h, qp);
    return qp;
  }

  /** Destroys the QPs, SRQs and MRs of this PD, then the PD. */
  close(): void {
    if (this.handle === 0) return;
    const errors: unknown[] = [];
    closeAll(this.qps, errors);
    closeAll(this.srqs, errors);
    closeAll(this.mrs, errors);
    const rc = this.ctx.lib.C.ibv_dealloc_pd(this.handle as P);
    if (rc !== 0) errors.push(verbsError("ibv_dealloc_pd", returnedErrno(rc)));
    else {
      this.handle = 0;
      this.forget();
    }
    if (errors.length > 0) throw errors[0];
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * An RC QP (created in RESET). Owned by its PD (or, made by rdma_create_qp, by its rdma_cm id as
 * well: whichever closes first destroys it). `handle` is what the ops calls take. Its thread.
 */
export class VerbsQp {
  handle: number;
  readonly qpNum: number;
  readonly sendCq: VerbsCq;
  readonly recvCq: VerbsCq;
  readonly srq: VerbsSrq | null;
  private readonly attr = new NativeStruct(size("ibv_qp_attr"));
  private readonly initOut = new NativeStruct(size("ibv_qp_init_attr"));
  constructor(
    readonly pd: VerbsPd,
    handle: number,
    init: QpInit<VerbsCq, VerbsSrq>,
    /** What the provider granted (max_inline_data bounds IBV_SEND_INLINE). */
    readonly caps: QpCaps,
    private readonly destroy: (qp: number) => number,
    private readonly forget: () => void,
  ) {
    this.handle = handle;
    this.qpNum = read.u32(handle as P, off("ibv_qp.qp_num"));
    this.sendCq = init.sendCq;
    this.recvCq = init.recvCq;
    this.srq = init.srq ?? null;
  }

  /** IBV_QPS_*: ibv_query_qp where the library exports it (a QP the device moved to ERR shows so), else the state the last modify set. */
  get state(): number {
    if (this.handle === 0) return IBV.IBV_QPS_RESET;
    const query = this.pd.ctx.lib.opt.ibv_query_qp;
    if (query !== undefined && query(this.handle as P, this.attr.clear().p, IBV.IBV_QP_STATE, this.initOut.p) === 0) {
      return this.attr.dv.getUint32(off("ibv_qp_attr.qp_state"), true);
    }
    return read.u32(this.handle as P, off("ibv_qp.state"));
  }

  /**
   * ibv_modify_qp with the attributes given (the mask is the fields present: verbs-attrs.ts).
   * NativeError naming the transition when the provider refuses (EINVAL: wrong attributes for it).
   */
  modify(attr: QpAttr): void {
    if (this.handle === 0) throw new UsageError(`verbs QP ${this.qpNum} is closed`);
    const from = this.state;
    const mask = applyQpAttr(this.attr.clear(), attr);
    const rc = this.pd.ctx.lib.C.ibv_modify_qp(this.handle as P, this.attr.p, mask);
    if (rc !== 0) {
      const to = attr.qpState === undefined ? "(state unchanged)" : constName("IBV_QPS_", attr.qpState);
      throw verbsError(`ibv_modify_qp(qp ${this.qpNum}: ${constName("IBV_QPS_", from)} → ${to}, mask 0x${mask.toString(16)})`, returnedErrno(rc));
    }
  }

  /** Posts sends (ops.post_send); 0 or an errno (wrs.badIndex()). Hot path. */
  tryPostSend(wrs: SendWorkRequests, first = 0): number {
    return this.pd.ctx.ops.tryPostSend(this.handle, wrs, first);
  }

  /** Posts receives on a QP without an SRQ (ops.post_recv); 0 or an errno. Hot path. */
  tryPostRecv(wrs: RecvWorkRequests, first = 0): number {
    return this.pd.ctx.ops.tryPostRecv(this.handle, wrs, first);
  }

  close(): void {
    if (this.handle === 0) return;
    const rc = this.destroy(this.handle);
    if (rc !== 0) throw verbsError(`ibv_destroy_qp(qp ${this.qpNum})`, returnedErrno(rc));
    this.handle = 0;
    this.forget();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
