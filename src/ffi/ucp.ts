/**
 * libucp (UCX 1.13, Debian `libucx0`) through bun:ffi. The only file that names UCP functions.
 *
 * A symbol table, then thin owners: UcpContext → UcpWorker → UcpListener / UcpEndpoint /
 * UcpMemory / UcpRkey (a worker's request bookkeeping is ucp-requests.ts: memory UCX uses
 * stays reachable until UCX completes the request). Parents close their children first;
 * close() twice is safe. Every `ucs_status_t` return is declared `i8` (a 1-byte enum); status
 * pointers come back as `i64_fast` with errors in -1…-100. A failing call throws UcxError naming the operation and
 * UCX's own message (`ucs_status_string`). Every JSCallback is kept in its owner and closed
 * with it. Callbacks run inside `progress()` (or inside the *_nbx call, for a send to this very
 * worker), on the JS thread that owns the worker; nothing progresses the worker from inside
 * them (UCX forbids it), and an exception they throw never unwinds through UCX: progress()
 * rethrows it once UCX has returned.
 *
 * Missing library: `ucpUnavailableReason()` says why (and names the Debian package);
 * `loadUcp()` throws UcxUnavailableError. HOTPATH_LIBUCP / HOTPATH_LIBUCS override the paths.
 */


import { FFIType, JSCallback, ptr, read, type Pointer } from "bun:ffi";
import { readUcxConfig } from "./ucp-config.ts";
import { C, check, copyOut, lib, Out, P, S, sockaddrIn, Struct, UcxError } from "./ucp-lib.ts";
import { off, size, UCP } from "./ucp-layout.ts";
import { UcpEndpoint, type EndpointWorker } from "./ucp-endpoint.ts";
import { UcpMemory } from "./ucp-memory.ts";
import { RequestTable } from "./ucp-requests.ts";

export { addressOf, copyInto, copyToAddress, copyOut, isStatusError, toView, sockaddrIn, ucpUnavailableReason, ucpVersion, ucxLogLevel, UcxError, type UcpVersion } from "./ucp-lib.ts";
export { UcpEndpoint, UcpRkey } from "./ucp-endpoint.ts";
export { UcpMemory } from "./ucp-memory.ts";

export class UcpContext {
  handle: number;
  private readonly workers = new Set<UcpWorker>();
  /** Memory registrations of this context not yet unmapped (UcpMemory counts them). */
  readonly registrations = { live: 0 };

  private constructor(
    handle: number,
    /** Whether the context has UCP_FEATURE_RMA and AMO64 (see create()). */
    readonly rma: boolean,
  ) {
    this.handle = handle;
  }

  /**
   * Context with Active Messages and wakeup (event fd), and with `rma` also RMA and 64-bit
   * atomics. Without them UCX installs no handlers for its software RMA / atomic emulation
   * (the PUT, GET and ATOMIC Active Messages it uses where a lane has no hardware RMA: its tcp
   * transport, and atomics over shared memory), which write and read whatever address the peer
   * names, registered or not: a context with `rma` lets every peer of its workers reach all of
   * this process's memory over those transports. Reads UCX_*
   * environment config. Indirect protocol ids are turned on unless UCX_PROTO_INDIRECT_ID says
   * otherwise: only then does UCX track an endpoint's in-flight requests (rendezvous sends and
   * receives) and complete them with an error when the endpoint fails; without it (the default
   * in UCP_ERR_HANDLING_MODE_NONE) a dead peer's requests stay pending forever. The rest of
   * DEFAULT_UCX_CONFIG applies the same way (a UCX_* variable the user set wins), and
   * DEFAULT_UCX_ENVIRONMENT through the C environment. UCX's log
   * level is set first (applyUcxLogLevel: UCX_LOG_LEVEL if the user set it, else quiet).
   * Every UCX_* variable of process.env is applied too (ucp_config_modify), so one set from JS
   * after the process started counts, as UcxRuntime.acquire's key assumes.
   */
  static create(opts: { rma: boolean }): UcpContext {
    const c = lib();
    const config = readUcxConfig();
    try {
      const params = new Struct(size("ucp_params_t"))
        .u64(off("ucp_params_t.field_mask"), UCP.UCP_PARAM_FIELD_FEATURES)
        .u64(off("ucp_params_t.features"), UCP.UCP_FEATURE_AM | UCP.UCP_FEATURE_WAKEUP | (opts.rma ? UCP.UCP_FEATURE_RMA | UCP.UCP_FEATURE_AMO64 : 0));
      const ctx = new Out();
      check("ucp_init_version", c.ucp_init_version(UCP.UCP_API_MAJOR, UCP.UCP_API_MINOR, params.p, config as Pointer, ctx.p));
      return new UcpContext(ctx.value, opts.rma);
    } finally {
      c.ucp_config_release(config as Pointer);
    }
  }

  createWorker(): UcpWorker {
    const params = new Struct(size("ucp_worker_params_t"))
      .u64(off("ucp_worker_params_t.field_mask"), UCP.UCP_WORKER_PARAM_FIELD_THREAD_MODE)
      .u32(off("ucp_worker_params_t.thread_mode"), UCP.UCS_THREAD_MODE_SINGLE);
    const out = new Out();
    check("ucp_worker_create", lib().ucp_worker_create(this.handle as Pointer, params.p, out.p));
    const w = new UcpWorker(this, out.value);
    this.workers.add(w);
    return w;
  }

  /**
   * Allocates `lenBytes` of JS memory and registers it for remote access; `view` is the memory.
   * UCX never frees it: unmapping only deregisters, so a view that outlives the registration
   * stays valid memory, freed by the GC when the last view goes (see ucp-memory.ts).
   */
  memMap(lenBytes: number): UcpMemory {
    if (!this.rma) throw new UcxError("ucp_mem_map (this context was made without RMA)", UCP.UCS_ERR_INVALID_PARAM);
    return UcpMemory.map(this.handle, lenBytes, this.registrations);
  }

  /** Registers memory the caller already has (`view`, kept reachable by the result) for remote access; allocates nothing (ucp-memory.ts). */
  memRegister(view: Uint8Array): UcpMemory {
    if (!this.rma) throw new UcxError("ucp_mem_map (this context was made without RMA)", UCP.UCS_ERR_INVALID_PARAM);
    return UcpMemory.register(this.handle, view, this.registrations);
  }

  close(): void {
    if (this.handle === 0) return;
    let clean = true;
    for (const w of this.workers) clean = w.close() && clean;
    if (!clean) return; // a worker UCX could not let go of keeps the context too
    lib().ucp_cleanup(this.handle as Pointer);
    this.handle = 0;
  }
}

/** Offsets read in every AM callback, looked up once (off() is a table lookup by name). */
const RECV_ATTR_OFFSET = off("ucp_am_recv_param_t.recv_attr");
const REPLY_EP_OFFSET = off("ucp_am_recv_param_t.reply_ep");

/** Called for each Active Message: header and data point into UCX memory during the call only. */
export type AmHandler = (header: number, headerLength: number, data: number, length: number, recvAttr: number, replyEp: number) => number;

export class UcpWorker implements EndpointWorker {
  handle: number;
  private readonly callbacks: JSCallback[] = [];
  private readonly children = new Set<{ close(): void }>();
  /** Completions, retained memory and given-up requests (ucp-requests.ts). */
  private readonly table = new RequestTable();
  private readonly sendCb: JSCallback;
  private readonly recvCb: JSCallback;
  /**
   * Request-param structs: UCX may run callbacks (an AM handler that sends, a completion)
   * inside an *_nbx call, so a struct is taken per call and given back after it returns.
   */
  private readonly params: Struct[] = [];
  private readonly out = new Out();
  /** One error callback for every endpoint; err_handler.arg says whose. */
  private readonly errCb: JSCallback;
  private readonly errHandlers = new Map<number, (status: number) => void>();
  private nextErrId = 1;

  /**
   * The first exception a callback threw while UCX was calling it. A JS exception must never
   * unwind through UCX (the call it came from would return garbage and UCX's later callbacks
   * in that progress would be skipped), so every callback catches; progress() rethrows it once
   * UCX has returned.
   */
  private callbackError: { error: unknown } | null = null;
  /**
   * @internal UCX calls under way that may run callbacks (progress, and the *_nbx calls: a
   * send to this very worker is delivered inside the send). UCX forbids progressing the worker
   * from inside them.
   */
  depth = 0;

  constructor(
    readonly ctx: UcpContext,
    handle: number,
  ) {
    this.handle = handle;
    this.sendCb = this.keep(
      new JSCallback(
        (_req: number, status: number, userData: number) => {
          try {
            this.table.complete(userData, status, 0);
          } catch (e) {
            this.caught(e);
          }
        },
        { args: [P, S, P], returns: FFIType.void },
      ),
    );
    this.errCb = this.keep(
      new JSCallback(
        (arg: number, _ep: number, status: number) => {
          try {
            this.errHandlers.get(arg)?.(status);
          } catch (e) {
            this.caught(e);
          }
        },
        { args: [P, P, S], returns: FFIType.void },
      ),
    );
    this.recvCb = this.keep(
      new JSCallback(
        (_req: number, status: number, length: number, userData: number) => {
          try {
            this.table.complete(userData, status, length);
          } catch (e) {
            this.caught(e);
          }
        },
        { args: [P, S, FFIType.u64_fast, P], returns: FFIType.void },
      ),
    );
  }

  private keep(cb: JSCallback): JSCallback {
    this.callbacks.push(cb);
    return cb;
  }

  private caught(e: unknown): void {
    if (this.callbackError === null) this.callbackError = { error: e };
  }

  /**
   * Gives up on the requests of `ep` that are still in flight: each completes now, for its
   * owner, with UCS_ERR_CANCELED; the request itself stays with UCX, and the memory it uses
   * stays reachable (RequestTable `detached`), until UCX completes it. For an endpoint whose
   * peer failed and whose close is done, after a grace period: UCX 1.13 never completes some of
   * them (a shared-memory lane to a dead peer whose FIFO is full never flushes, so the
   * endpoint's requests are never purged), and their owners must not wait for ever. Returns how
   * many were given up. JS thread of the worker, outside UCX callbacks.
   */
  abandon(ep: UcpEndpoint): number {
    return this.table.abandon(ep);
  }

  /** Requests of endpoint `ep` still in flight (those UCX returned a request for). JS thread of the worker. */
  requestsOf(ep: UcpEndpoint): number {
    return this.table.countOwnedBy(ep);
  }

  /** Requests still in flight. */
  get inFlight(): number {
    return this.table.inFlight;
  }

  /** True inside a UCX call, i.e. inside any callback UCX invokes. */
  get insideUcx(): boolean {
    return this.depth > 0;
  }

  /**
   * Debug counters: requests in flight, buffers retained for them, endpoint closes pending, live
   * endpoints and listeners, requests given up so far, and those given up that UCX has not
   * completed yet with the bytes they hold (`detached`, `detachedBytes`).
   */
  stats(): { inFlight: number; retained: number; requests: number; closing: number; children: number; errHandlers: number; abandoned: number; detached: number; detachedBytes: number } {
    return { ...this.table.stats(), closing: this.closing.size, children: this.children.size, errHandlers: this.errHandlers.size };
  }

  /**
   * Drives UCX; callbacks run inside. Returns the number of events processed. Called from
   * inside one of those callbacks (or any UCX call) it does nothing and returns 0 (UCX forbids
   * re-entering ucp_worker_progress). Rethrows the first exception a callback threw, after UCX returned.
   */
  progress(): number {
    if (this.depth > 0 || this.handle === 0) return 0;
    this.depth++;
    let n: number;
    try {
      n = C!.ucp_worker_progress(this.handle as Pointer);
    } finally {
      this.depth--;
    }
    if (this.table.finished.length > 0) this.freeFinished();
    if (this.closing.size > 0) this.reapCloses();
    if (this.callbackError !== null) {
      const { error } = this.callbackError;
      this.callbackError = null;
      throw error;
    }
    return n;
  }

  /** Endpoint close requests still in progress (and orphaned sends: see orphan()). */
  readonly closing = new Set<number>();
  /** Memory of orphaned requests in `closing`, by request: reachable until UCX completed it. */
  private readonly orphanMemory = new Map<number, unknown[]>();

  /** @internal see EndpointWorker.orphan. */
  orphan(req: number, memory: unknown[]): void {
    this.orphanMemory.set(req, memory);
    this.closing.add(req);
  }

  /** @internal amSendNow's param (FORCE_IMM_CMPL, REPLY; no callback): constant, so nested sends share it. */
  readonly immediateParams = new Struct(size("ucp_request_param_t"))
    .u32(off("ucp_request_param_t.op_attr_mask"), UCP.UCP_OP_ATTR_FIELD_FLAGS | UCP.UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL)
    .u32(off("ucp_request_param_t.flags"), UCP.UCP_AM_SEND_FLAG_REPLY);

  private reapCloses(): void {
    const c = lib();
    for (const req of this.closing) {
      if (c.ucp_request_check_status(req as Pointer) !== UCP.UCS_INPROGRESS) {
        c.ucp_request_free(req as Pointer);
        this.closing.delete(req);
        this.orphanMemory.delete(req);
      }
    }
  }

  private freeFinished(): void {
    const c = C!;
    const finished = this.table.finished;
    for (const req of finished) c.ucp_request_free(req as Pointer);
    finished.length = 0;
  }

  /** The worker's event fd (readable when armed and an event arrives). */
  eventFd(): number {
    const fd = new Int32Array(1);
    check("ucp_worker_get_efd", lib().ucp_worker_get_efd(this.handle as Pointer, ptr(fd)));
    return fd[0]!;
  }

  /** Arms the event fd; false means events are pending (progress again before sleeping). */
  arm(): boolean {
    const st = lib().ucp_worker_arm(this.handle as Pointer);
    if (st === UCP.UCS_OK) return true;
    if (st === UCP.UCS_ERR_BUSY) return false;
    throw new UcxError("ucp_worker_arm", st);
  }

  /**
   * Installs the handler for AM `id` (whole messages; data valid during the call only). The
   * handler's return is the ucs_status UCX gets; if it throws, UCX gets UCS_OK (the data is
   * dropped) and progress() rethrows.
   */
  setAmHandler(id: number, handler: AmHandler): void {
    const cb = this.keep(
      new JSCallback(
        (_arg: number, header: number, hlen: number, data: number, len: number, param: number) => {
          try {
            return handler(header, hlen, data, len, read.u32(param as Pointer, RECV_ATTR_OFFSET), read.ptr(param as Pointer, REPLY_EP_OFFSET) as number);
          } catch (e) {
            this.caught(e);
            return UCP.UCS_OK;
          }
        },
        { args: [P, P, FFIType.u64_fast, P, FFIType.u64_fast, P], returns: S },
      ),
    );
    const p = new Struct(size("ucp_am_handler_param_t"))
      .u64(off("ucp_am_handler_param_t.field_mask"), UCP.UCP_AM_HANDLER_PARAM_FIELD_ID | UCP.UCP_AM_HANDLER_PARAM_FIELD_FLAGS | UCP.UCP_AM_HANDLER_PARAM_FIELD_CB)
      .u32(off("ucp_am_handler_param_t.id"), id)
      .u32(off("ucp_am_handler_param_t.flags"), UCP.UCP_AM_FLAG_WHOLE_MSG)
      .ptrAt(off("ucp_am_handler_param_t.cb"), cb.ptr);
    check("ucp_worker_set_am_recv_handler", lib().ucp_worker_set_am_recv_handler(this.handle as Pointer, p.p));
  }

  /** Listens on host:port (0: any free port); `onConnRequest` gets each connection request. */
  listen(host: string, port: number, onConnRequest: (connRequest: number) => void): UcpListener {
    const cb = this.keep(
      new JSCallback(
        (req: number) => {
          try {
            onConnRequest(req);
          } catch (e) {
            this.caught(e);
          }
        },
        { args: [P, P], returns: FFIType.void },
      ),
    );
    const sa = sockaddrIn(host, port);
    const params = new Struct(size("ucp_listener_params_t"))
      .u64(off("ucp_listener_params_t.field_mask"), UCP.UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP.UCP_LISTENER_PARAM_FIELD_CONN_HANDLER)
      .ptrAt(off("ucp_listener_params_t.sockaddr.addr"), ptr(sa))
      .u32(off("ucp_listener_params_t.sockaddr.addrlen"), sa.length)
      .ptrAt(off("ucp_listener_params_t.conn_handler.cb"), cb.ptr);
    const out = new Out();
    check(`ucp_listener_create(${host}:${port})`, lib().ucp_listener_create(this.handle as Pointer, params.p, out.p));
    const attr = new Struct(size("ucp_listener_attr_t")).u64(off("ucp_listener_attr_t.field_mask"), UCP.UCP_LISTENER_ATTR_FIELD_SOCKADDR);
    check("ucp_listener_query", lib().ucp_listener_query(out.value as Pointer, attr.p));
    const boundPort = attr.dv.getUint16(off("ucp_listener_attr_t.sockaddr") + off("struct sockaddr_in.sin_port"), false);
    const l = new UcpListener(this, out.value, boundPort);
    this.children.add(l);
    return l;
  }

  /**
   * An endpoint: to `host:port` (client side), for `connRequest` (server side), or to a
   * worker's `address` (its address(), learned out of band; no connection manager involved). `onError`
   * runs (inside progress) when UCX reports the peer failed; `peerErrors` asks UCX for peer
   * failure detection (UCP_ERR_HANDLING_MODE_PEER, which in UCX 1.13 gives up shared memory).
   * `peerErrors` null (server side) takes the mode the client chose: UCX refuses an accepted
   * endpoint whose mode differs from its client's.
   */
  connect(target: { host: string; port: number } | { connRequest: number } | { address: Uint8Array }, peerErrors: boolean | null, onError: (status: number) => void): UcpEndpoint {
    const errId = this.nextErrId++;
    this.errHandlers.set(errId, onError);
    const p = new Struct(size("ucp_ep_params_t"));
    let mask = UCP.UCP_EP_PARAM_FIELD_ERR_HANDLER;
    if (peerErrors !== null) {
      mask |= UCP.UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
      p.u32(off("ucp_ep_params_t.err_mode"), peerErrors ? UCP.UCP_ERR_HANDLING_MODE_PEER : UCP.UCP_ERR_HANDLING_MODE_NONE);
    }
    p.ptrAt(off("ucp_ep_params_t.err_handler.cb"), this.errCb.ptr);
    p.ptrAt(off("ucp_ep_params_t.err_handler.arg"), errId);
    let sa: Uint8Array | null = null;
    if ("connRequest" in target) {
      mask |= UCP.UCP_EP_PARAM_FIELD_CONN_REQUEST;
      p.ptrAt(off("ucp_ep_params_t.conn_request"), target.connRequest);
    } else if ("address" in target) {
      // UCX reads the address during the call only (ucp_ep_create copies what it needs).
      mask |= UCP.UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
      p.ptrAt(off("ucp_ep_params_t.address"), ptr(target.address));
    } else {
      sa = sockaddrIn(target.host, target.port);
      mask |= UCP.UCP_EP_PARAM_FIELD_FLAGS | UCP.UCP_EP_PARAM_FIELD_SOCK_ADDR;
      p.u32(off("ucp_ep_params_t.flags"), UCP.UCP_EP_PARAMS_FLAGS_CLIENT_SERVER);
      p.ptrAt(off("ucp_ep_params_t.sockaddr.addr"), ptr(sa));
      p.u32(off("ucp_ep_params_t.sockaddr.addrlen"), sa.length);
    }
    p.u64(off("ucp_ep_params_t.field_mask"), mask);
    const st = lib().ucp_ep_create(this.handle as Pointer, p.p, this.out.p);
    if (st !== UCP.UCS_OK) this.errHandlers.delete(errId);
    check("ucp_ep_create", st);
    const ep = new UcpEndpoint(this, this.out.value, errId);
    this.children.add(ep);
    return ep;
  }

  /**
   * This worker's address (ucp_worker_get_address), copied into JS memory: what a peer passes
   * to connect({ address }) to reach this worker over any transport UCX_TLS allows, shared
   * memory included (no connection manager, so no tcp lane, is needed). The bytes describe this
   * process's worker to whoever holds them; hand them only to the peer being connected.
   * JS thread of the worker.
   */
  address(): Uint8Array {
    const addr = new Out();
    const len = new Out();
    check("ucp_worker_get_address", lib().ucp_worker_get_address(this.handle as Pointer, addr.p, len.p));
    const out = copyOut(addr.value, len.value).slice();
    lib().ucp_worker_release_address(this.handle as Pointer, addr.value as Pointer);
    return out;
  }

  /**
   * An endpoint UCX made itself: the reply endpoint (`replyEp` of an AM handler) of a peer that
   * connected to this worker's address(). The caller owns it from then on (closes it like any
   * other); UCX reports no errors for it (no error handler can be set on it), so the owner
   * must learn of the peer's death another way. JS thread of the worker.
   */
  adopt(handle: number): UcpEndpoint {
    const ep = new UcpEndpoint(this, handle, 0);
    this.children.add(ep);
    return ep;
  }

  /**
   * @internal registers a completion and the memory the request uses (kept alive until UCX
   * completed the request); returns the id to pass as user_data.
   */
  track(done: (status: number, length: number) => void, ...memory: unknown[]): number {
    return this.table.track(done, memory);
  }

  private readonly amParams: Struct[] = [];

  /** @internal an id for a request whose completion is registered only if it goes in flight. */
  reserveId(): number {
    return this.table.reserveId();
  }

  /** @internal an AM send param (callback, user data, REPLY flag), pre-filled; only user_data changes. */
  amSendParams(id: number): Struct {
    let p = this.amParams.pop();
    if (p === undefined) {
      p = new Struct(size("ucp_request_param_t"))
        .u32(off("ucp_request_param_t.op_attr_mask"), UCP.UCP_OP_ATTR_FIELD_CALLBACK | UCP.UCP_OP_ATTR_FIELD_USER_DATA | UCP.UCP_OP_ATTR_FIELD_FLAGS)
        .u32(off("ucp_request_param_t.flags"), UCP.UCP_AM_SEND_FLAG_REPLY)
        .ptrAt(off("ucp_request_param_t.cb"), this.sendCb.ptr);
    }
    p.dv.setUint32(off("ucp_request_param_t.user_data"), id, true);
    return p;
  }

  /** @internal */
  putAmSendParams(p: Struct): void {
    this.amParams.push(p);
  }

  /** @internal after an *_nbx call made with a reserved id: `memory` stays retained while the request is in flight. */
  settleReserved(sp: number, id: number, owner: UcpEndpoint, done: (status: number, ctx: unknown) => void, a: unknown, b: unknown, ctx: unknown): void {
    this.table.settleReserved(sp, id, owner, done, a, b, ctx);
  }

  /** @internal a request param; give it back with putParams() once the call returned. */
  takeParams(): Struct {
    return (this.params.pop() ?? new Struct(size("ucp_request_param_t"))).clear();
  }

  /** @internal */
  putParams(p: Struct): void {
    this.params.push(p);
  }

  /** @internal a request param with the send callback and `id` as user data. */
  sendParams(id: number, flags: number): Struct {
    return this.takeParams()
      .u32(off("ucp_request_param_t.op_attr_mask"), UCP.UCP_OP_ATTR_FIELD_CALLBACK | UCP.UCP_OP_ATTR_FIELD_USER_DATA | UCP.UCP_OP_ATTR_FIELD_FLAGS)
      .u32(off("ucp_request_param_t.flags"), flags)
      .ptrAt(off("ucp_request_param_t.cb"), this.sendCb.ptr)
      .ptrAt(off("ucp_request_param_t.user_data"), id);
  }

  /**
   * Rendezvous receive of an AM's data (`dataDesc` from the handler) into `buffer`, which must
   * stay alive until `done` runs. Call from inside the AM handler; `owner` is the endpoint the
   * message came through.
   */
  amRecvData(dataDesc: number, buffer: Uint8Array, owner: UcpEndpoint, done: (status: number) => void): void {
    const id = this.track((st) => done(st), buffer);
    const p = this.takeParams()
      .u32(off("ucp_request_param_t.op_attr_mask"), UCP.UCP_OP_ATTR_FIELD_CALLBACK | UCP.UCP_OP_ATTR_FIELD_USER_DATA)
      .ptrAt(off("ucp_request_param_t.cb"), this.recvCb.ptr)
      .ptrAt(off("ucp_request_param_t.user_data"), id);
    this.depth++;
    const sp = lib().ucp_am_recv_data_nbx(this.handle as Pointer, dataDesc as Pointer, ptr(buffer), buffer.length, p.p);
    this.depth--;
    this.putParams(p);
    this.settle(Number(sp), id, owner);
  }

  /** @internal after an *_nbx call: immediate completion, error, or a request to free. */
  settle(sp: number, id: number, owner: UcpEndpoint): void {
    this.table.settle(sp, id, owner);
  }

  releaseAmData(data: number): void {
    lib().ucp_am_data_release(this.handle as Pointer, data as Pointer);
  }

  /** @internal */
  forget(child: { close(): void }, errId = 0): void {
    this.children.delete(child);
    if (errId !== 0) this.errHandlers.delete(errId);
  }

  /**
   * Closes the endpoints and listeners, lets their closes finish (bounded by `graceMs`), and
   * destroys the worker. Requests still in flight complete for their owners with
   * UCS_ERR_CANCELED; their memory stays reachable until UCX is done with it, which a destroyed
   * worker is. Returns false when UCX still had endpoint closes in flight after the grace
   * period: the worker is then left alive (destroying it would abort the process inside UCX),
   * with its callbacks and given-up requests kept. JS thread of the worker, outside UCX callbacks.
   */
  close(graceMs = 2000): boolean {
    if (this.handle === 0) return true;
    for (const c of [...this.children]) c.close();
    const deadline = performance.now() + graceMs;
    while (this.closing.size > 0 && performance.now() < deadline) this.progress();
    this.table.detachAll();
    this.freeFinished();
    if (this.closing.size > 0) return false;
    // Back to UCX before the worker goes (no callback follows a free); the memory is held until
    // ucp_worker_destroy has returned, after which nothing of this worker runs.
    const c = lib();
    for (const req of this.table.detachedRequests()) c.ucp_request_free(req as Pointer);
    c.ucp_worker_destroy(this.handle as Pointer);
    this.handle = 0;
    this.table.dropDetached();
    for (const cb of this.callbacks.splice(0)) cb.close();
    return true;
  }
}

export class UcpListener {
  private handle: number;
  constructor(
    private readonly worker: UcpWorker,
    handle: number,
    readonly port: number,
  ) {
    this.handle = handle;
  }
  close(): void {
    if (this.handle === 0) return;
    lib().ucp_listener_destroy(this.handle as Pointer);
    this.handle = 0;
    this.worker.forget(this);
  }
}

