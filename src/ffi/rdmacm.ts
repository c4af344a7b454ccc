/**
 * librdmacm through bun:ffi: `librdmacm.so.1`, or the file named by env HOTPATH_RDMACM (read
 * when the library is first needed; a test fixture sets it). A symbol table, then the owners:
 * RdmaEventChannel (its fd is readable when an event is pending) → RdmaCmId (resolve addr and
 * route, bind/listen, a QP made by rdma_create_qp, connect/accept/reject with private data,
 * disconnect). Events are copied out (private data included) and acknowledged at once.
 *
 * Contract: a library that cannot be loaded, or no RDMA device (rdma_create_event_channel
 * fails with ENODEV here), is RdmaUnavailableError with the reason; every other failure is a
 * NativeError naming the operation and errno (verbs-lib.ts's tables). Parents close their
 * children first (a channel its ids, an id its QP); close() twice is safe; Disposable.
 * Thread: the JS thread that made the channel.
 *
 * Example (client):
 *   using ch = RdmaEventChannel.create();
 *   const id = ch.createId();
 *   id.resolveAddr("10.0.0.2", 7471, 2000);            // then RDMA_CM_EVENT_ADDR_RESOLVED
 *   const ev = ch.tryGetEvent();                       // poll ch.fd readable first
 *   id.resolveRoute(2000);                             // ROUTE_RESOLVED
 *   const ctx = id.verbsContext(), pd = ctx.allocPd(); // the device rdma_cm chose
 *   id.createQp(pd, { sendCq, recvCq, maxSendWr: 64, maxRecvWr: 64 });
 *   id.connect({ privateData: hello });                // ESTABLISHED (or REJECTED)
 */

import { FFIType, read, toArrayBuffer, type Pointer } from "bun:ffi";
import { NativeError, RdmaUnavailableError, UsageError } from "../errors.ts";
import { VerbsContext, type VerbsCq, type VerbsPd, type VerbsQp, type VerbsSrq } from "./ibverbs.ts";
import { readCaps, writeQpInit, type QpInit } from "./verbs-attrs.ts";
import { constName, off, RDMA, size } from "./verbs-layout.ts";
import { clearErrno, EAGAIN, ENODEV, ENOSYS, errno, errnoName, firstLine, loadLibrary, NativeStruct, OutPointer, readSockaddrIn, returnedErrno, setNonBlocking, sockaddrIn, verbsError, type LoadedLibrary } from "./verbs-lib.ts";

type P = Pointer;
const Ptr = FFIType.ptr;
const I32 = FFIType.i32;

const required = {
  rdma_create_event_channel: { args: [], returns: Ptr },
  rdma_destroy_event_channel: { args: [Ptr], returns: FFIType.void },
  rdma_create_id: { args: [Ptr, Ptr, Ptr, I32], returns: I32 },
  rdma_destroy_id: { args: [Ptr], returns: I32 },
  rdma_resolve_addr: { args: [Ptr, Ptr, Ptr, I32], returns: I32 },
  rdma_resolve_route: { args: [Ptr, I32], returns: I32 },
  rdma_create_qp: { args: [Ptr, Ptr, Ptr], returns: I32 },
  rdma_connect: { args: [Ptr, Ptr], returns: I32 },
  rdma_listen: { args: [Ptr, I32], returns: I32 },
  rdma_accept: { args: [Ptr, Ptr], returns: I32 },
  rdma_disconnect: { args: [Ptr], returns: I32 },
  rdma_get_cm_event: { args: [Ptr, Ptr], returns: I32 },
  rdma_ack_cm_event: { args: [Ptr], returns: I32 },
  rdma_event_str: { args: [I32], returns: FFIType.cstring },
} as const;

/** Needed only by some paths (a listener binds, a server may reject); a fixture may lack them. */
const optional = {
  rdma_bind_addr: { args: [Ptr, Ptr], returns: I32 },
  rdma_reject: { args: [Ptr, Ptr, FFIType.u8], returns: I32 },
  rdma_destroy_qp: { args: [Ptr], returns: FFIType.void },
  rdma_notify: { args: [Ptr, I32], returns: I32 },
} as const;

type CmLibrary = LoadedLibrary<typeof required, typeof optional>;
const loaded = new Map<string, CmLibrary | string>();

/** The path dlopen gets: env HOTPATH_RDMACM, else the Debian soname `librdmacm.so.1`. */
export function rdmacmPath(): string {
  return process.env.HOTPATH_RDMACM || "librdmacm.so.1";
}

function loadRdmacm(): CmLibrary | string {
  const path = rdmacmPath();
  let got = loaded.get(path);
  if (got === undefined) {
    try {
      got = loadLibrary(path, required, optional);
    } catch (e) {
      got = `cannot load ${path} (${firstLine(e)})${process.env.HOTPATH_RDMACM ? " (named by HOTPATH_RDMACM)" : "; install the Debian package librdmacm1"}`;
    }
    loaded.set(path, got);
  }
  return got;
}

/** Null when librdmacm loads, else why not. Loads once per path. */
export function rdmacmUnavailableReason(): string | null {
  const got = loadRdmacm();
  return typeof got === "string" ? got : null;
}

function rdmacm(): CmLibrary {
  const got = loadRdmacm();
  if (typeof got === "string") throw new RdmaUnavailableError(got);
  return got;
}

function need<K extends keyof typeof optional>(lib: CmLibrary, name: K): NonNullable<CmLibrary["opt"][K]> {
  const f = lib.opt[name];
  if (f === undefined) throw new NativeError(name, ENOSYS, `not exported by ${lib.path}`);
  return f as NonNullable<CmLibrary["opt"][K]>;
}

/** rdma_conn_param for connect / accept. Defaults: 1 outstanding RDMA READ/atomic each way, 7 retries of each kind. */
export interface ConnParam {
  /** Up to 255 bytes here (rdma_cm carries up to 56 on connect and 196 on accept over IB). */
  privateData?: Uint8Array;
  responderResources?: number;
  initiatorDepth?: number;
  flowControl?: number;
  retryCount?: number;
  /** 7 means retry for ever. */
  rnrRetryCount?: number;
  srq?: boolean;
  qpNum?: number;
}

function writeConnParam(p: ConnParam): { s: NativeStruct; data: NativeStruct | null } {
  const pd = p.privateData;
  if (pd !== undefined && pd.length > 255) throw new UsageError(`rdma_cm private data: ${pd.length} bytes, at most 255`);
  let data: NativeStruct | null = null;
  if (pd !== undefined && pd.length > 0) {
    data = new NativeStruct(pd.length);
    data.bytes.set(pd);
  }
  const s = new NativeStruct(size("rdma_conn_param"))
    .ptrAt(off("rdma_conn_param.private_data"), data?.address ?? 0)
    .u8(off("rdma_conn_param.private_data_len"), pd?.length ?? 0)
    .u8(off("rdma_conn_param.responder_resources"), p.responderResources ?? 1)
    .u8(off("rdma_conn_param.initiator_depth"), p.initiatorDepth ?? 1)
    .u8(off("rdma_conn_param.flow_control"), p.flowControl ?? 0)
    .u8(off("rdma_conn_param.retry_count"), p.retryCount ?? 7)
    .u8(off("rdma_conn_param.rnr_retry_count"), p.rnrRetryCount ?? 7)
    .u8(off("rdma_conn_param.srq"), p.srq ? 1 : 0)
    .u32(off("rdma_conn_param.qp_num"), p.qpNum ?? 0);
  return { s, data };
}

/** An rdma_cm event, copied out and acknowledged. */
export interface RdmaCmEvent {
  /** RDMA_CM_EVENT_*. */
  type: number;
  /** rdma_event_str's name, e.g. "RDMA_CM_EVENT_ESTABLISHED". */
  name: string;
  /** 0, or the failure (a negative errno; for REJECTED the reject reason). */
  status: number;
  /** The id it is about; for CONNECT_REQUEST a new id of this channel, to accept or reject (and close). */
  id: RdmaCmId;
  /** For CONNECT_REQUEST: the listening id it came to. */
  listenId: RdmaCmId | null;
  /** param.conn of CONNECT_REQUEST / ESTABLISHED / REJECTED, copied. */
  privateData: Uint8Array;
  responderResources: number;
  initiatorDepth: number;
  flowControl: number;
  retryCount: number;
  rnrRetryCount: number;
  srq: number;
  qpNum: number;
}

/**
 * An rdma_cm event channel: owns the ids made on it (and those connect requests bring) and the
 * wrappers of the contexts rdma_cm lends them, closed before it. Owner: its creator; its thread.
 */
export class RdmaEventChannel {
  handle: number;
  /** Readable when an event is pending (tryGetEvent); non-blocking. */
  readonly fd: number;
  private readonly ids = new Map<number, RdmaCmId>();
  private readonly contexts = new Map<number, VerbsContext>();
  private readonly eventOut = new OutPointer();
  private readonly idOut = new OutPointer();

  private constructor(
    /** @internal */
    readonly lib: CmLibrary,
    handle: number,
  ) {
    this.handle = handle;
    this.fd = read.i32(handle as P, off("rdma_event_channel.fd"));
    try {
      setNonBlocking(this.fd, "rdma_create_event_channel");
    } catch (e) {
      lib.C.rdma_destroy_event_channel(handle as P);
      this.handle = 0;
      throw e;
    }
  }

  /**
   * A new event channel (owned by the caller). RdmaUnavailableError when librdmacm cannot be
   * loaded or finds no RDMA device: `rdma_create_event_channel: no RDMA device (ENODEV)`.
   */
  static create(): RdmaEventChannel {
    const lib = rdmacm();
    clearErrno();
    const h = Number(lib.C.rdma_create_event_channel());
    if (h === 0) {
      const e = errno();
      if (e === ENODEV || e === ENOSYS) throw new RdmaUnavailableError(`rdma_create_event_channel: no RDMA device (${errnoName(e)})`);
      throw verbsError("rdma_create_event_channel", e);
    }
    return new RdmaEventChannel(lib, h);
  }

  private get p(): P {
    if (this.handle === 0) throw new UsageError("rdma_cm event channel is closed");
    return this.handle as P;
  }

  /** A new id (RDMA_PS_TCP: reliable connected) whose events come to this channel. */
  createId(): RdmaCmId {
    const rc = this.lib.C.rdma_create_id(this.p, this.idOut.clear().p, null, RDMA.RDMA_PS_TCP);
    if (rc !== 0) throw verbsError("rdma_create_id", returnedErrno(rc));
    return this.adopt(this.idOut.value);
  }

  private adopt(h: number): RdmaCmId {
    const id = new RdmaCmId(this, h, () => this.ids.delete(h));
    this.ids.set(h, id);
    return id;
  }

  /** @internal the borrowed wrapper of a context rdma_cm opened, one per context, closed with the channel. */
  contextFor(verbs: number): VerbsContext {
    let ctx = this.contexts.get(verbs);
    if (ctx === undefined) {
      ctx = VerbsContext.borrow(verbs);
      this.contexts.set(verbs, ctx);
    }
    return ctx;
  }

  /** The next event, copied out and acknowledged, or null when none is pending. */
  tryGetEvent(): RdmaCmEvent | null {
    const rc = this.lib.C.rdma_get_cm_event(this.p, this.eventOut.clear().p);
    if (rc !== 0) {
      const e = returnedErrno(rc);
      if (e === EAGAIN) return null;
      throw verbsError("rdma_get_cm_event", e);
    }
    const ev = this.eventOut.value as P;
    try {
      const type = read.i32(ev, off("rdma_cm_event.event"));
      const idh = read.ptr(ev, off("rdma_cm_event.id")) as number;
      const listenh = read.ptr(ev, off("rdma_cm_event.listen_id")) as number;
      const dataAt = read.ptr(ev, off("rdma_cm_event.param.conn.private_data")) as number;
      const dataLen = read.u8(ev, off("rdma_cm_event.param.conn.private_data_len"));
      const u8 = (f: "responder_resources" | "initiator_depth" | "flow_control" | "retry_count" | "rnr_retry_count" | "srq") => read.u8(ev, off(`rdma_cm_event.param.conn.${f}`));
      const name = this.lib.C.rdma_event_str(type);
      return {
        type,
        name: name ? String(name) : constName("RDMA_CM_EVENT_", type),
        status: read.i32(ev, off("rdma_cm_event.status")),
        id: this.ids.get(idh) ?? this.adopt(idh),
        listenId: listenh === 0 ? null : (this.ids.get(listenh) ?? null),
        privateData: dataAt === 0 || dataLen === 0 ? new Uint8Array(0) : new Uint8Array(toArrayBuffer(dataAt as P, 0, dataLen)).slice(),
        responderResources: u8("responder_resources"), initiatorDepth: u8("initiator_depth"), flowControl: u8("flow_control"),
        retryCount: u8("retry_count"), rnrRetryCount: u8("rnr_retry_count"), srq: u8("srq"),
        qpNum: read.u32(ev, off("rdma_cm_event.param.conn.qp_num")),
      };
    } finally {
      this.lib.C.rdma_ack_cm_event(ev);
    }
  }

  /** Closes the ids (their QPs first), the borrowed contexts (what was made through them), then the channel; throws the first failure after closing the rest. */
  close(): void {
    if (this.handle === 0) return;
    const errors: unknown[] = [];
    for (const group of [[...this.ids.values()].reverse(), [...this.contexts.values()]]) {
      for (const o of group) {
        try {
          o.close();
        } catch (e) {
          errors.push(e);
        }
      }
    }
    this.contexts.clear();
    const h = this.handle;
    this.handle = 0;
    this.lib.C.rdma_destroy_event_channel(h as P);
    if (errors.length > 0) throw errors[0];
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** An rdma_cm id, owned by its channel; owns the QP createQp made. Its channel's thread. */
export class RdmaCmId {
  handle: number;
  private ownQp: VerbsQp | null = null;

  constructor(
    readonly channel: RdmaEventChannel,
    handle: number,
    private readonly forget: () => void,
  ) {
    this.handle = handle;
  }

  private get p(): P {
    if (this.handle === 0) throw new UsageError("rdma_cm id is closed");
    return this.handle as P;
  }

  private get lib(): CmLibrary {
    return this.channel.lib;
  }

  /** The ibv_context rdma_cm bound this id to (after ADDR_RESOLVED, or bind on a device address); 0 before. */
  get verbs(): number {
    return this.handle === 0 ? 0 : (read.ptr(this.handle as P, off("rdma_cm_id.verbs")) as number);
  }

  /** That context, wrapped (one wrapper per context and channel, closed with the channel). */
  verbsContext(): VerbsContext {
    const v = this.verbs;
    if (v === 0) throw new UsageError("rdma_cm id has no device yet (resolve the address, or bind to a device's address, first)");
    return this.channel.contextFor(v);
  }

  /** The HCA port (1-based) rdma_cm bound the id to, with its device (0 before). */
  get portNum(): number {
    return this.handle === 0 ? 0 : read.u8(this.handle as P, off("rdma_cm_id.port_num"));
  }

  /** The port rdma_cm bound the id to, e.g. a listener on port 0 (after bind). */
  get localPort(): number {
    return this.handle === 0 ? 0 : (readSockaddrIn(this.handle + off("rdma_cm_id.route.addr.src_sin"))?.port ?? 0);
  }

  /** The peer's address, once known (a connect request's id, or after resolveAddr). */
  get remote(): { host: string; port: number } | null {
    return this.handle === 0 ? null : readSockaddrIn(this.handle + off("rdma_cm_id.route.addr.dst_sin"));
  }

  /** The QP made by createQp, or null. */
  get qp(): VerbsQp | null {
    return this.ownQp;
  }

  /** Binds to a local IPv4 address and port (0: any free one, then localPort says which). */
  bind(host: string, port: number): void {
    const sa = sockaddrIn(host, port);
    const rc = need(this.lib, "rdma_bind_addr")(this.p, sa.p);
    if (rc !== 0) throw verbsError(`rdma_bind_addr(${host}:${port})`, returnedErrno(rc));
  }

  /** Listens (after bind); each connection request is a CONNECT_REQUEST event with a new id. */
  listen(backlog = 128): void {
    const rc = this.lib.C.rdma_listen(this.p, backlog);
    if (rc !== 0) throw verbsError(`rdma_listen(port ${this.localPort})`, returnedErrno(rc));
  }

  /** Starts address resolution to host:port (ADDR_RESOLVED or ADDR_ERROR follows); `src` picks the local address. */
  resolveAddr(host: string, port: number, timeoutMs: number, src?: string): void {
    const dst = sockaddrIn(host, port);
    const from = src === undefined ? null : sockaddrIn(src, 0);
    const rc = this.lib.C.rdma_resolve_addr(this.p, from === null ? null : from.p, dst.p, timeoutMs);
    if (rc !== 0) throw verbsError(`rdma_resolve_addr(${host}:${port})`, returnedErrno(rc));
  }

  /** Starts route resolution (ROUTE_RESOLVED or ROUTE_ERROR follows). */
  resolveRoute(timeoutMs: number): void {
    const rc = this.lib.C.rdma_resolve_route(this.p, timeoutMs);
    if (rc !== 0) throw verbsError("rdma_resolve_route", returnedErrno(rc));
  }

  /**
   * An RC QP for this id (rdma_create_qp) on `pd` (of verbsContext()); rdma_cm moves it through
   * the states on connect/accept. Owned by the id (closed with it, or with the PD).
   */
  createQp(pd: VerbsPd, init: QpInit<VerbsCq, VerbsSrq>): VerbsQp {
    if (this.ownQp !== null) throw new UsageError("rdma_cm id already has a QP");
    if (pd.handle === 0) throw new UsageError("rdma_create_qp: PD is closed");
    const a = writeQpInit(init);
    const rc = this.lib.C.rdma_create_qp(this.p, pd.handle as P, a.p);
    if (rc !== 0) throw verbsError(`rdma_create_qp(send_wr ${init.maxSendWr}, inline ${init.maxInlineData ?? 0})`, returnedErrno(rc));
    const h = read.ptr(this.handle as P, off("rdma_cm_id.qp")) as number;
    const idh = this.handle;
    const destroyQp = this.lib.opt.rdma_destroy_qp;
    const qp = pd.adoptQp(h, init, readCaps(a), (qph) => {
      if (destroyQp !== undefined) {
        destroyQp(idh as P);
        return 0;
      }
      return pd.ctx.lib.C.ibv_destroy_qp(qph as P);
    });
    this.ownQp = qp;
    return qp;
  }

  /** Connects (after ROUTE_RESOLVED and createQp); ESTABLISHED, REJECTED or UNREACHABLE follows. */
  connect(param: ConnParam = {}): void {
    const { s, data } = writeConnParam(param);
    const rc = this.lib.C.rdma_connect(this.p, s.p);
    void data; // alive across the call
    if (rc !== 0) throw verbsError("rdma_connect", returnedErrno(rc));
  }

  /** Accepts a connect request (this is its id, with its QP made); ESTABLISHED follows. */
  accept(param: ConnParam = {}): void {
    const { s, data } = writeConnParam(param);
    const rc = this.lib.C.rdma_accept(this.p, s.p);
    void data;
    if (rc !== 0) throw verbsError("rdma_accept", returnedErrno(rc));
  }

  /** Rejects a connect request with `privateData` for the peer (its REJECTED event carries it). */
  reject(privateData: Uint8Array = new Uint8Array(0)): void {
    if (privateData.length > 255) throw new UsageError(`rdma_reject private data: ${privateData.length} bytes, at most 255`);
    const data = new NativeStruct(Math.max(1, privateData.length));
    data.bytes.set(privateData);
    const rc = need(this.lib, "rdma_reject")(this.p, privateData.length === 0 ? null : data.p, privateData.length);
    if (rc !== 0) throw verbsError("rdma_reject", returnedErrno(rc));
  }

  /** Disconnects (DISCONNECTED follows on both sides; the QP goes to ERR and its WRs flush). */
  disconnect(): void {
    const rc = this.lib.C.rdma_disconnect(this.p);
    if (rc !== 0) throw verbsError("rdma_disconnect", returnedErrno(rc));
  }

  /**
   * rdma_notify: tells rdma_cm of an affiliated event on the id's QP (IBV_EVENT_COMM_EST: the
   * peer's packets arrive, so its RTU was lost: ESTABLISHED follows). NativeError when it fails.
   */
  notify(event: number): void {
    const rc = need(this.lib, "rdma_notify")(this.p, event);
    if (rc !== 0) throw verbsError("rdma_notify", returnedErrno(rc));
  }

  /** Destroys the QP (if any), then the id. */
  close(): void {
    if (this.handle === 0) return;
    let error: unknown = null;
    try {
      this.ownQp?.close();
    } catch (e) {
      error = e;
    }
    this.ownQp = null;
    const h = this.handle;
    this.handle = 0;
    this.forget();
    const rc = this.lib.C.rdma_destroy_id(h as P);
    if (rc !== 0 && error === null) error = verbsError("rdma_destroy_id", returnedErrno(rc));
    if (error !== null) throw error;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
