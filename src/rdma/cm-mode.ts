/**
 * `rdma://host:port` over rdma_cm (control path, the default mode): rdma_cm resolves the
 * address to a device, carries each side's hello (hello.ts) as private data and moves the QPs
 * through their states; this thread's event channel (cm.ts) delivers its events.
 *
 *   client                                            server (listening id)
 *   resolveAddr → ADDR_RESOLVED; resolveRoute → ROUTE_RESOLVED
 *   runtime of the device (acquireContext), QP (id.createQp), endpoint
 *   connect(hello) ─────────────────────────────────▶ CONNECT_REQUEST: decode the hello;
 *                                                     runtime, QP, endpoint (null: busy)
 *   ◀───────────────────────────────────────────────── accept(hello), or reject(refusal)
 *   ESTABLISHED (the server's hello): open            ESTABLISHED: open, onConnection
 *
 * Every client wait is bounded by connectTimeoutMs (ConnectError: nothing listening (REJECTED
 * without a refusal), an unreachable peer, a refusal with its text, no answer in time); the
 * server closes an endpoint not ESTABLISHED within handshakeTimeoutMs and counts it
 * "protocol", as it does a bad hello (rejected with a refusal); RdmaEndpoint.create returning
 * null (the SRQ has no room), or MAX_RDMA_HANDSHAKING requests in their handshake already, is a
 * "busy" refusal. DISCONNECTED on an open connection is
 * RdmaConnection.peerGone(TransportClosedError); closing a connection disconnects its id and
 * destroys it once the connection's verbs objects are gone.
 *
 * Device: rdma_cm picks it and its port from the address; `?device=` and `?port=` in cm mode
 * must name those (UsageError otherwise); `?gid=` picks the GID index the runtime reports.
 *
 * Threading: the JS thread that connects or listens; events arrive through cm.ts.
 */

import { ConnectError, describeThrown, HotpathError, ProtocolError, RdmaUnavailableError, TransportClosedError, UsageError } from "../errors.ts";
import { ListenerBase } from "../contract/listener-base.ts";
import type { WaitPolicy } from "../contract/transport.ts";
import { IBV, type VerbsQp } from "../ffi/ibverbs.ts";
import type { RdmaCmEvent, RdmaCmId } from "../ffi/rdmacm.ts";
import { RDMA } from "../ffi/verbs-layout.ts";
import { CmChannel, type CmSession } from "./cm.ts";
import type { RdmaConnection } from "./connection.ts";
import { RdmaEndpoint } from "./endpoint.ts";
import { decodeHello, decodeRefusal, encodeHello, encodeRefusal, isRefusal, REFUSED_BUSY, REFUSED_PROTOCOL } from "./hello.ts";
import { listenerUrl, MAX_RDMA_HANDSHAKING, type RdmaTuning, type RdmaUrl } from "./options.ts";
import { MIN_RNR_TIMER, RNR_RETRY, RETRY_COUNT } from "./qp-setup.ts";
import { RdmaRuntime } from "./runtime.ts";

/** rdma_cm's consumer-defined reject reason (IB_CM_REJ_CONSUMER_DEFINED): a REJECTED with it came from the listener's rdma_reject. */
const REJECT_CONSUMER = 28;

function eventName(ev: RdmaCmEvent): string {
  return ev.status === 0 ? ev.name : `${ev.name} (status ${ev.status})`;
}

/**
 * The runtime of the device and port rdma_cm bound `id` to; UsageError when the URL named
 * another device or port (`?port=` unset: the one rdma_cm chose).
 */
function runtimeFor(cm: CmChannel, id: RdmaCmId, u: RdmaUrl, url: URL, where: string): RdmaRuntime {
  const ctx = cm.channel.contextFor(id.verbs);
  const how = "cm mode takes the device and port from the address; use mode=socket to choose them";
  if (u.device !== undefined && ctx.deviceName !== u.device) throw new UsageError(`${where}: device=${u.device}, but rdma_cm reaches ${u.host} through ${ctx.deviceName} (${how})`);
  const port = id.portNum || u.portNum;
  if (url.searchParams.has("port") && port !== u.portNum) throw new UsageError(`${where}: port=${u.portNum}, but rdma_cm reaches ${u.host} through port ${port} of ${ctx.deviceName} (${how})`);
  return RdmaRuntime.acquireContext(ctx, port, u.gidIndex);
}

/**
 * The parameters both sides connect / accept with: RNR_RETRY so that a lasting RNR is an error
 * (qp-setup.ts); READ / atomic depth from the device (rt.maxRdAtomic: its max_qp_rd_atom and
 * max_qp_init_rd_atom, capped at 16 as socket mode's QPs are), on the server no more than the
 * client's request offers (`req`: its initiator depth bounds our responder resources, and back).
 */
function connParam(hello: Uint8Array, rt: RdmaRuntime, req?: RdmaCmEvent) {
  const depth = rt.maxRdAtomic;
  return {
    privateData: hello,
    rnrRetryCount: RNR_RETRY,
    retryCount: RETRY_COUNT,
    responderResources: req === undefined ? depth : Math.max(1, Math.min(depth, req.initiatorDepth)),
    initiatorDepth: req === undefined ? depth : Math.max(1, Math.min(depth, req.responderResources)),
  };
}

/**
 * After ESTABLISHED (both sides): RTS → RTS with qp-setup's MIN_RNR_TIMER. rdma_cm's kernel side
 * moves a QP to RTR with min_rnr_timer 0 (655 ms), which would make the RNR that credits rule out
 * cost seconds before IBV_WC_RNR_RETRY_EXC_ERR; socket mode's QPs get MIN_RNR_TIMER at RTR.
 */
function setRnrTimer(qp: VerbsQp): void {
  // A QP already in ERR (a DISCONNECTED right behind ESTABLISHED) is left so: the connection's close follows.
  if (qp.state === IBV.IBV_QPS_RTS) qp.modify({ qpState: IBV.IBV_QPS_RTS, minRnrTimer: MIN_RNR_TIMER });
}

/** Connects over rdma_cm (see the module comment) within `timeoutMs`. The connection belongs to the calling thread. */
export async function cmConnect(url: URL, u: RdmaUrl, tuning: RdmaTuning, timeoutMs: number, wait: Partial<WaitPolicy> | undefined): Promise<RdmaConnection> {
  const peerUrl = `rdma://${u.host}:${u.port}`;
  const where = `rdma connect ${peerUrl}`;
  const cm = CmChannel.acquire();
  const deadline = performance.now() + timeoutMs;
  let session: CmSession | null = null;
  let rt: RdmaRuntime | null = null;
  let ep: RdmaEndpoint | null = null;
  const cleanup = () => {
    try {
      ep?.close();
      session?.close();
      rt?.release();
    } finally {
      cm.release();
    }
  };
  const next = async (): Promise<RdmaCmEvent> => {
    const ev = await session!.next(deadline - performance.now());
    if (ev === null) throw new ConnectError(`${where}: no answer within ${timeoutMs} ms (is it a hotpath rdma listener?)`);
    return ev;
  };
  const expect = (ev: RdmaCmEvent, type: number, step: string) => {
    if (ev.type !== type) throw new ConnectError(`${where}: ${step} failed: ${eventName(ev)}`);
  };
  try {
    session = cm.session();
    const id = session.id;
    const stepMs = () => Math.max(1, Math.ceil(deadline - performance.now()));
    id.resolveAddr(u.host, u.port, stepMs());
    expect(await next(), RDMA.RDMA_CM_EVENT_ADDR_RESOLVED, "address resolution");
    id.resolveRoute(stepMs());
    expect(await next(), RDMA.RDMA_CM_EVENT_ROUTE_RESOLVED, "route resolution");
    rt = runtimeFor(cm, id, u, url, where);
    const qp = id.createQp(rt.pd, rt.qpInit(tuning.sqDepth));
    ep = RdmaEndpoint.create(rt, { qp, maxMessageBytes: tuning.maxMessageBytes, window: tuning.window, sqDepth: tuning.sqDepth, zoneBytes: tuning.zoneBytes });
    if (ep === null) throw new ConnectError(`${where}: this thread's rdma runtime has no receives left to reserve ${tuning.window} for another connection (its SRQ is full)`);
    id.connect(connParam(encodeHello(ep.local, "cm"), rt));
    const ev = await next();
    if (ev.type === RDMA.RDMA_CM_EVENT_REJECTED) {
      if (isRefusal(ev.privateData)) {
        const r = decodeRefusal(ev.privateData);
        throw new ConnectError(`${where}: the listener refused this client (${r.reason === REFUSED_BUSY ? "busy" : r.reason === REFUSED_PROTOCOL ? "protocol" : `reason ${r.reason}`}): ${r.text}`);
      }
      throw new ConnectError(`${where}: rejected (${ev.status === REJECT_CONSUMER ? "by the peer" : `status ${ev.status}: nothing listening there, or unreachable`})`);
    }
    expect(ev, RDMA.RDMA_CM_EVENT_ESTABLISHED, "connect");
    const peer = decodeHello(ev.privateData, "cm", ev.qpNum);
    setRnrTimer(ep.qp);
    const s = session;
    const r = rt;
    const conn = ep.open(peer, peerUrl, wait, () => closeId(s, r, cm));
    s.onEvent = (e) => {
      if (e.type === RDMA.RDMA_CM_EVENT_DISCONNECTED || e.type === RDMA.RDMA_CM_EVENT_DEVICE_REMOVAL) conn.peerGone(new TransportClosedError(`rdma connection to ${peerUrl}: the peer closed or died (${e.name})`));
    };
    return conn;
  } catch (e) {
    cleanup();
    if (e instanceof UsageError || e instanceof ConnectError || e instanceof RdmaUnavailableError || !(e instanceof HotpathError)) throw e;
    throw new ConnectError(`${where}: ${e.message}`, { cause: e });
  }
}

/** After a connection closed (its QP is gone): disconnect (the peer's DISCONNECTED), destroy the id, let go of the runtime and the channel. */
function closeId(s: CmSession, rt: RdmaRuntime, cm: CmChannel): void {
  try {
    try {
      s.id.disconnect();
    } catch {
      // never connected, or already disconnected: nothing to tell the peer
    }
    s.close();
    rt.release();
  } finally {
    cm.release();
  }
}

/** An endpoint in its server-side handshake: accepted, waiting for ESTABLISHED. */
interface Pending {
  session: CmSession;
  rt: RdmaRuntime;
  ep: RdmaEndpoint;
  peer: ReturnType<typeof decodeHello>;
  timer: ReturnType<typeof setTimeout>;
}

/** A cm-mode listener: a listening id on this thread's channel; a connection per accepted request. */
export class CmListener extends ListenerBase<RdmaConnection> {
  readonly transport = "rdma";
  readonly url: string;
  private readonly listenSession: CmSession;
  private readonly handshaking = new Set<Pending>();

  constructor(
    private readonly cm: CmChannel,
    private readonly rawUrl: URL,
    private readonly u: RdmaUrl,
    private readonly tuning: RdmaTuning,
    private readonly wait: Partial<WaitPolicy> | undefined,
  ) {
    super();
    this.listenSession = cm.session();
    const id = this.listenSession.id;
    try {
      id.bind(u.host, u.port);
      id.listen();
    } catch (e) {
      this.listenSession.close();
      throw e;
    }
    this.url = listenerUrl(u, id.localPort);
    cm.listen(id, (ev) => this.onRequest(ev));
  }

  private onRequest(ev: RdmaCmEvent): void {
    const s = this.cm.adopt(ev.id);
    const remote = ev.id.remote;
    const peerUrl = remote === null ? `${this.url} (client)` : `rdma://${remote.host}:${remote.port}`;
    let peer;
    try {
      peer = decodeHello(ev.privateData, "cm", ev.qpNum);
    } catch (e) {
      const err = new ProtocolError(`rdma listener ${this.url}: ${e instanceof HotpathError ? e.message : describeThrown(e)}`);
      return this.reject(s, err, REFUSED_PROTOCOL);
    }
    if (this.handshaking.size >= MAX_RDMA_HANDSHAKING) {
      return this.reject(s, new ConnectError(`rdma listener ${this.url}: a client turned away: ${MAX_RDMA_HANDSHAKING} clients already in their handshake (MAX_RDMA_HANDSHAKING)`), REFUSED_BUSY);
    }
    let rt: RdmaRuntime;
    try {
      rt = runtimeFor(this.cm, ev.id, this.u, this.rawUrl, `rdma listener ${this.url}`);
    } catch (e) {
      return this.reject(s, new ProtocolError(`rdma listener ${this.url}: no runtime for a client's device: ${describeThrown(e)}`), REFUSED_PROTOCOL);
    }
    let ep: RdmaEndpoint | null = null;
    try {
      const qp = ev.id.createQp(rt.pd, rt.qpInit(this.tuning.sqDepth));
      ep = RdmaEndpoint.create(rt, { qp, maxMessageBytes: this.tuning.maxMessageBytes, window: this.tuning.window, sqDepth: this.tuning.sqDepth, zoneBytes: this.tuning.zoneBytes });
      if (ep === null) {
        this.reject(s, new ConnectError(`rdma listener ${this.url}: a client turned away: no receives left to reserve ${this.tuning.window} for another connection (the SRQ is full)`), REFUSED_BUSY);
        rt.release();
        return;
      }
      ev.id.accept(connParam(encodeHello(ep.local, "cm"), rt, ev));
    } catch (e) {
      ep?.close();
      this.reject(s, new ProtocolError(`rdma listener ${this.url}: accepting a client failed: ${describeThrown(e)}`), REFUSED_PROTOCOL);
      rt.release();
      return;
    }
    CmChannel.acquire(); // the connection's own reference (closeId / discard give it back)
    // The client's packets before our ESTABLISHED (its RTU lost): IBV_EVENT_COMM_EST on the QP;
    // rdma_notify makes rdma_cm establish the id, and ESTABLISHED follows as usual.
    const id = ev.id;
    rt.commEst.set(ep.qp.qpNum, () => {
      try {
        id.notify(IBV.IBV_EVENT_COMM_EST);
      } catch {
        // the handshake timeout decides instead
      }
    });
    const p: Pending = {
      session: s,
      rt,
      ep,
      peer,
      timer: setTimeout(() => this.drop(p, new ProtocolError(`rdma listener ${this.url}: a client's connection was not established within ${this.tuning.handshakeTimeoutMs} ms`)), this.tuning.handshakeTimeoutMs),
    };
    this.handshaking.add(p);
    s.onEvent = (e) => {
      if (e.type === RDMA.RDMA_CM_EVENT_ESTABLISHED) this.open(p, peerUrl);
      else this.drop(p, new ProtocolError(`rdma listener ${this.url}: a client left during its handshake (${eventName(e)})`));
    };
  }

  /** Rejects a request with a refusal the client reads, counts it, destroys the id. */
  private reject(s: CmSession, error: HotpathError, reason: typeof REFUSED_BUSY | typeof REFUSED_PROTOCOL): void {
    try {
      s.id.reject(encodeRefusal(reason, error.message));
    } catch {
      // the id's destruction tells the client instead
    }
    s.close();
    this.refused(error, reason === REFUSED_BUSY ? "busy" : "protocol");
  }

  private open(p: Pending, peerUrl: string): void {
    if (!this.handshaking.delete(p)) return;
    clearTimeout(p.timer);
    p.rt.commEst.delete(p.ep.qp.qpNum);
    const { session: s, rt } = p;
    let conn: RdmaConnection | null = null;
    try {
      setRnrTimer(p.ep.qp);
      conn = p.ep.open(p.peer, peerUrl, this.wait, () => {
        closeId(s, rt, this.cm);
        if (conn !== null) this.forget(conn);
      });
    } catch (e) {
      // The data path refused the peer or its memory could not be registered: everything of the
      // handshake goes (the id disconnected: the client sees DISCONNECTED), counted "protocol".
      this.discard(p);
      this.refused(new ProtocolError(`rdma listener ${this.url}: opening a client's connection failed: ${e instanceof HotpathError ? e.message : describeThrown(e)}`), "protocol");
      return;
    }
    const c = conn;
    s.onEvent = (e) => {
      if (e.type === RDMA.RDMA_CM_EVENT_DISCONNECTED || e.type === RDMA.RDMA_CM_EVENT_DEVICE_REMOVAL) c.peerGone(new TransportClosedError(`rdma connection from a client of ${this.url}: the peer closed or died (${e.name})`));
    };
    try {
      this.accepted(c);
    } catch (e) {
      c.abort(new ProtocolError(`rdma listener ${this.url}: the connection callback failed: ${describeThrown(e, true)}`));
    }
  }

  /** Ends a handshake that did not finish: counted "protocol", everything of it closed. */
  private drop(p: Pending, error: HotpathError): void {
    if (!this.handshaking.delete(p)) return;
    this.discard(p);
    this.refused(error, "protocol");
  }

  private discard(p: Pending): void {
    clearTimeout(p.timer);
    p.rt.commEst.delete(p.ep.qp.qpNum);
    p.session.onEvent = null;
    try {
      p.ep.close();
      try {
        p.session.id.disconnect();
      } catch {
        // not connected yet
      }
      p.session.close();
      p.rt.release();
    } finally {
      this.cm.release();
    }
  }

  protected stop(): void {
    try {
      // Endpoints still in their handshake belong to nobody else: they go with the listener (not counted).
      for (const p of [...this.handshaking]) {
        this.handshaking.delete(p);
        this.discard(p);
      }
      this.listenSession.close();
    } finally {
      this.cm.release();
    }
  }
}
