/**
 * ucx control path: `ucx://host:port` listeners and connects (host: a numeric IPv4 address or
 * "localhost"; port 0 on listen picks a free port, reported in `listener.url`).
 *
 * Wire-up, two modes (address-exchange.ts): "sockaddr" (a client-server endpoint through UCX's
 * connection manager, which needs a tcp or InfiniBand lane; across nodes) and "address" (the
 * listener hands out its worker address over a small TCP socket, which then stays open as the
 * connection's liveness token; any UCX_TLS, `shm,self` included). Chosen by `?wireup=address`
 * or `?wireup=sockaddr` on the URL, else "address" when UCX_TLS names no transport a connection
 * manager runs over; a listener in address mode reports `?wireup=address` in its URL. The
 * handshake below is the same in both. A connect to a listener of this very runtime gets a
 * worker of its own (UcxRuntime.acquire `loopback`): the two ends never share one.
 *
 * Connect: an endpoint to the listener (its sockaddr, or its worker address), then the handshake
 * (handshake.ts): a HELLO Active Message (hello.ts: version and this side's limits) that the
 * server answers with HELLO_ACK (its limits), and with `auth: { token }` the HMAC
 * challenge-response that follows. connect() resolves once the server admitted it; no answer
 * within connectTimeoutMs, a malformed answer, or an endpoint error first, is a ConnectError;
 * a refusal for who either side is (a wrong or missing token, a server that cannot prove the
 * token or has none), an AuthError. While it waits, connect() progresses the worker itself:
 * eagerly while UCX reports events (wire-up, the handshake's messages) and for CONNECT_EAGER_MS
 * after the last one, then between sleeps that back off to CONNECT_RECHECK_MAX_MS (cut short
 * when the handshake ends in a progress the runtime made meanwhile for another connection): a
 * silent or slow peer costs no core.
 *
 * Listen: the server's endpoint (made from the connection request) becomes a connection
 * (onConnection) when its handshake passed; one refused is counted and reported
 * (Listener.stats, onRefused: "auth" or "protocol"), and one that does not finish its
 * handshake within the listener's handshake timeout is closed and counted "protocol". At most
 * MAX_UCX_HANDSHAKING endpoints are held before they are admitted (in their handshake, or
 * lingering after a refusal); beyond that a new endpoint is closed at once and counted "busy"
 * (ConnectError on the listener; the client's connect fails with ConnectError).
 *
 * RMA: `ucx: { rma: true }` on connect / listen gives the connection (and every connection of
 * the listener) UCX's RMA and atomics, on a runtime of its own (runtime.ts); without it
 * registerMemory / attachRegion throw UsageError and no peer can reach this process's memory.
 *
 * Error mode: UCP_ERR_HANDLING_MODE_NONE by default. In UCX 1.13 asking for PEER mode drops the
 * shared-memory transports (about 7 µs instead of under 1 µs between processes of one host),
 * while the connection manager still reports a peer that closed or died through the endpoint's
 * error callback in NONE mode (tested over tcp and shm). So hotpath keeps shared memory and
 * relies on that; `ucx: { peerErrors: true }` asks for PEER mode (failures of in-flight
 * operations reported individually, e.g. for links that can fail without the peer dying). The
 * server's endpoint takes whichever mode its client chose (UCX refuses a mismatch).
 *
 * Lifetime: an open listener or connection keeps the process alive (runtime.ts), as a socket
 * does; close it to let the process exit.
 */

import { AuthError, ConnectError, describeThrown, ProtocolError, TransportClosedError, UcxUnavailableError, UsageError, type HotpathError } from "../errors.ts";
import { ListenerBase } from "../contract/listener-base.ts";
import { authKey } from "../contract/auth.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_MESSAGE_BYTES, type ConnectOptions, type Connection, type Listener, type ListenOptions, type RefusalReason, type TransportFactory } from "../contract/transport.ts";
import type { Socket, TCPSocketListener } from "bun";
import type { UcpEndpoint, UcpListener } from "../ffi/ucp.ts";
import { BIND_ID_BYTES, bindKey, encodeAddress, fetchAddress, listenAddress, wireupMode, type AddressLink, type UcxWireup } from "./address-exchange.ts";
import { UcxConnection } from "./connection.ts";
import { ClientHandshake, REFUSAL_LINGER_MS, ServerHandshake } from "./handshake.ts";
import { AM_BIND, AM_HELLO, UcxRuntime } from "./runtime.ts";

/** Listener options of ucx: the common ones (its own group is `ListenOptions.ucx`). */
export type UcxListenOptions = ListenOptions;

/** A client gives up after its connect timeout; an endpoint silent for longer is no client of ours. */
export const DEFAULT_UCX_HANDSHAKE_TIMEOUT_MS = 2 * DEFAULT_CONNECT_TIMEOUT_MS;
/**
 * Endpoints a listener holds before admitting them: each lives up to its handshake timeout, so
 * without a bound a peer that opens endpoints and never finishes holds memory and fds at will;
 * 256 is far above any honest burst of concurrent connects.
 */
export const MAX_UCX_HANDSHAKING = 256;
/** connect() progresses without sleeping this long after UCX's last event: the peer's next answer mostly comes within it. */
const CONNECT_EAGER_MS = 2;
/** connect()'s longest sleep between progress rounds after that: what a slow peer's answer may wait at most, at about 125 wake-ups a second. */
const CONNECT_RECHECK_MAX_MS = 8;
/** UCS_ERR_CONNECTION_RESET: what a connect in address mode reports when the listener's socket closed during the handshake. */
const UCP_ERR_CONNECTION_RESET = -25;

function hostPort(url: URL, forListen: boolean): { host: string; port: number } {
  let host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "localhost") host = "127.0.0.1";
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) throw new UsageError(`ucx url "${url.href}": host must be a numeric IPv4 address (or localhost)`);
  if (url.port === "" && !forListen) throw new UsageError(`ucx url "${url.href}": missing port`);
  const port = url.port === "" ? 0 : Number(url.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`ucx url "${url.href}": port must be 0..65535`);
  return { host, port };
}

/** The URL's wire-up (address-exchange.ts wireupMode, over this thread's UCX_TLS); UsageError for a bad `wireup`. */
function wireupOf(url: URL): UcxWireup {
  const m = wireupMode(url, process.env.UCX_TLS);
  if (m !== "address" && m !== "sockaddr") throw new UsageError(m);
  return m;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** After the liveness socket closed: deliver what already arrived (bounded), then fail `conn` with `why`. */
function failAfterDrain(rt: UcxRuntime, conn: UcxConnection, why: string): void {
  if (conn.closed) return;
  if (!rt.insideUcx) rt.progress();
  conn.fail(new TransportClosedError(why));
}

function acquire(rma: boolean): UcxRuntime {
  const why = UcxRuntime.unavailableReason();
  if (why !== null) throw new UcxUnavailableError(why);
  return UcxRuntime.acquire({ rma });
}

/** Progresses `rt`'s worker until it reports no more events (bounded, as UcxRuntime.progress); returns the events. Clean stack only (0 inside UCX). */
function progressEvents(rt: UcxRuntime): number {
  let events = 0;
  for (let i = 0; i < 64; i++) {
    const e = rt.worker.progress();
    if (e === 0) break;
    events += e;
  }
  return events;
}

export async function ucxConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const { host, port } = hostPort(url, false);
  const wireup = wireupOf(url);
  const peer = `ucx://${host}:${port}`;
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const peerErrors = opts.ucx?.peerErrors === true;
  if (opts.wait) UcxConnection.checkWaitPolicy(opts.wait);
  const key = authKey(`ucx connect ${peer}`, opts.auth);
  let rt = acquire(opts.ucx?.rma === true);
  const deadline = performance.now() + timeoutMs;
  let link: AddressLink | null = null;
  if (wireup === "address") {
    // The listener's worker address over its socket first (address-exchange.ts).
    try {
      link = await fetchAddress(host, port, timeoutMs);
    } catch (e) {
      rt.release();
      throw new ConnectError(`ucx connect ${peer} (worker-address wire-up): ${e instanceof ProtocolError ? e.message : describeThrown(e)}`, { cause: e });
    }
    if (sameBytes(link.address, rt.workerAddress())) {
      // A listener of this very runtime: this end needs a worker of its own (see UcxRuntime.acquire).
      rt.release();
      rt = UcxRuntime.acquire({ rma: opts.ucx?.rma === true, loopback: true });
    }
  } else if (rt.sockaddrPorts.has(port)) {
    // Likewise in sockaddr mode: the two ends of a connection never share a worker, so they
    // meet over the transports UCX_TLS names, as between processes (one worker's loop-back
    // "self" lane would complete every send inside its call, with no backpressure at all).
    rt.release();
    rt = UcxRuntime.acquire({ rma: opts.ucx?.rma === true, loopback: true });
  }
  let failed: number | null = null;
  /** connect() returned or threw: from then on the error callback closes the connection (as it does once the handshake passed). */
  let settled = false;
  let conn: UcxConnection | null = null;
  let ep;
  try {
    ep = rt.worker.connect(link !== null ? { address: link.address } : { host, port }, peerErrors, (status) => {
      if (settled || conn?.established === true) conn?.fail(new TransportClosedError(`ucx connection to ${peer}: the peer closed or failed (ucs_status ${status})`));
      else {
        failed = status;
        rt.waiters.wake(true);
      }
    });
  } catch (e) {
    link?.close();
    rt.release();
    throw new ConnectError(`ucx connect ${peer}: ${describeThrown(e)}`, { cause: e });
  }
  const l = link;
  conn = new UcxConnection(rt, ep, {
    maxMessageBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
    peer,
    onClosed: () => {
      l?.close();
      rt.release();
    },
  });
  if (opts.wait) conn.setWaitPolicy(opts.wait as never);
  const hs = new ClientHandshake(conn, key);
  conn.handshake = hs;
  const c = conn;
  if (l !== null) {
    l.onClose(() => {
      if (settled || c.established) failAfterDrain(rt, c, `ucx connection to ${peer}: the peer closed or died (its worker-address socket closed)`);
      else {
        failed = UCP_ERR_CONNECTION_RESET;
        rt.waiters.wake(true);
      }
    });
    conn.sendControl(AM_BIND, l.bindId); // names this endpoint to the listener, before the HELLO
  }
  conn.sendControl(AM_HELLO, hs.hello(peerErrors));
  const waiting = () => !c.established && hs.error === null && failed === null && !c.closed;
  // Progress here, not through the runtime's pump (it runs only while some connection or
  // listener of this thread wants event-loop progress, which may be none): eagerly while UCX moves, then sleeping on the runtime's wait list (which
  // establish / fail / the error callback wake) between rounds that back off to
  // CONNECT_RECHECK_MAX_MS. A silent or slow peer costs no core.
  let lastEventAt = performance.now();
  let sleepMs = 0;
  while (waiting()) {
    const events = progressEvents(rt);
    const now = performance.now();
    if (!waiting() || now >= deadline) break;
    if (events > 0) lastEventAt = now;
    sleepMs = now - lastEventAt < CONNECT_EAGER_MS ? 0 : Math.min(Math.max(1, sleepMs * 2), CONNECT_RECHECK_MAX_MS);
    await rt.waiters.wait(Math.min(deadline - now, sleepMs));
  }
  settled = true;
  if (conn.established && !conn.closed) return conn;
  if (hs.error !== null) {
    // A server this side refused either refused it already (and waits for it to close) or
    // admitted it: nothing of the server's waits on this endpoint, so it closes now.
    conn.close();
    const msg = `ucx connect ${peer}: ${hs.error.message}`;
    throw hs.error instanceof AuthError ? new AuthError(msg) : new ConnectError(msg, { cause: hs.error });
  }
  const why =
    conn.closeError !== null
      ? conn.closeError.message
      : failed !== null
        ? `the endpoint failed (ucs_status ${failed}: nothing listening, or the listener turned this endpoint away, e.g. too many handshakes under way there)`
        : `no answer within ${timeoutMs} ms`;
  conn.close();
  throw new ConnectError(`ucx connect ${peer}: ${why}`);
}

/** A socket of a listener in address mode whose client has not claimed its endpoint yet (AM_BIND). */
interface Unbound {
  key: string;
  timer: ReturnType<typeof setTimeout>;
}

class UcxListener extends ListenerBase<UcxConnection> {
  readonly transport = "ucx";
  readonly url: string;
  /** Sockaddr mode: UCX's listener. */
  private readonly listener: UcpListener | null = null;
  /** Address mode: the socket that hands out this worker's address (address-exchange.ts). */
  private readonly sockets: TCPSocketListener<unknown> | null = null;
  private readonly port: number;
  private readonly progressHook = { onAm: () => 0, wantsProgress: true };
  /** Endpoints whose handshake is under way, with their reaping timers. */
  private readonly handshaking = new Map<UcxConnection, ReturnType<typeof setTimeout>>();
  /** Endpoints refused and lingering until their peer closes (REFUSAL_LINGER_MS at most): they count against MAX_UCX_HANDSHAKING too. */
  private readonly lingering = new Set<UcxConnection>();
  /** Address mode: sockets waiting for their client's AM_BIND (they count against MAX_UCX_HANDSHAKING too). */
  private readonly unbound = new Map<Socket<unknown>, Unbound>();
  /** Address mode: the connection each bound socket keeps alive. */
  private readonly bound = new Map<Socket<unknown>, UcxConnection>();
  private readonly handshakeTimeoutMs: number;

  constructor(
    private readonly rt: UcxRuntime,
    host: string,
    port: number,
    private readonly opts: UcxListenOptions,
    /** The token's key bytes, or null when the listener admits anyone. */
    private readonly key: Uint8Array | null,
    wireup: UcxWireup,
  ) {
    super();
    const t = opts.ucx?.handshakeTimeoutMs ?? DEFAULT_UCX_HANDSHAKE_TIMEOUT_MS;
    if (!(t > 0) || !Number.isFinite(t)) throw new UsageError(`ucx listen: handshakeTimeoutMs ${t} must be a positive number of milliseconds`);
    this.handshakeTimeoutMs = t;
    if (opts.wait) UcxConnection.checkWaitPolicy(opts.wait);
    if (wireup === "address") {
      rt.workerAddress(); // fails here, not per client, if UCX cannot tell it
      this.sockets = listenAddress(host, port, { onSocket: (s) => this.onSocket(s), onClose: (s) => this.onSocketClose(s) });
      this.port = this.sockets.port;
      this.url = `ucx://${host}:${this.port}?wireup=address`;
    } else {
      this.listener = rt.worker.listen(host, port, (req) => this.onRequest(req));
      this.port = this.listener.port;
      this.url = `ucx://${host}:${this.port}`;
      rt.sockaddrPorts.add(this.port);
    }
    // The listener itself needs the worker to progress (connection requests and binds arrive there).
    rt.sinks.set(-this.port, this.progressHook);
    rt.schedule();
  }

  private get held(): number {
    return this.handshaking.size + this.lingering.size + this.unbound.size;
  }

  /** Inside worker progress: a client's endpoint arrived. Nothing here may throw into UCX. */
  private onRequest(connRequest: number): void {
    const held = this.held;
    if (held >= MAX_UCX_HANDSHAKING) return this.turnAway(connRequest, held);
    let conn: UcxConnection | null = null;
    let ep;
    try {
      // The client's error mode, whichever it chose (null: UCX takes it from the request).
      ep = this.rt.worker.connect({ connRequest }, null, (status) => {
        conn?.fail(new TransportClosedError(`ucx connection from a client of ${this.url}: the peer closed or failed (ucs_status ${status})`));
      });
    } catch {
      return; // UCX refused the request (and let go of it); the client sees its connect fail
    }
    conn = this.admit(ep, null);
  }

  /** Address mode: a client connected to the socket; it gets this worker's address and a bind id. */
  private onSocket(s: Socket<unknown>): void {
    const held = this.held;
    if (held >= MAX_UCX_HANDSHAKING) {
      s.end();
      this.refused(new ConnectError(`ucx listener ${this.url}: a client's socket turned away: ${held} endpoints already in their handshake (at most MAX_UCX_HANDSHAKING ${MAX_UCX_HANDSHAKING})`), "busy");
      return;
    }
    const id = crypto.getRandomValues(new Uint8Array(BIND_ID_BYTES));
    const key = bindKey(id);
    const timer = setTimeout(() => {
      if (!this.unbound.has(s)) return;
      this.unbound.delete(s);
      this.rt.binds.delete(key);
      s.end();
      this.refused(new ProtocolError(`ucx connection from a client of ${this.url}: no endpoint claimed its worker-address socket within ${this.handshakeTimeoutMs} ms`), "protocol");
    }, this.handshakeTimeoutMs);
    this.unbound.set(s, { key, timer });
    this.rt.binds.set(key, (replyEp) => this.onBind(s, replyEp));
    s.write(encodeAddress(id, this.rt.workerAddress()));
  }

  /** Inside worker progress: the client's endpoint claimed socket `s` (AM_BIND); its HELLO follows on that endpoint. */
  private onBind(s: Socket<unknown>, replyEp: number): void {
    const u = this.unbound.get(s);
    if (u === undefined) return;
    clearTimeout(u.timer);
    this.unbound.delete(s);
    const c = this.admit(this.rt.worker.adopt(replyEp), s);
    this.bound.set(s, c);
  }

  private onSocketClose(s: Socket<unknown>): void {
    const u = this.unbound.get(s);
    if (u !== undefined) {
      clearTimeout(u.timer);
      this.unbound.delete(s);
      this.rt.binds.delete(u.key);
      this.refused(new ProtocolError(`ucx connection from a client of ${this.url}: the client closed its worker-address socket before its endpoint claimed it`), "protocol");
      return;
    }
    const c = this.bound.get(s);
    if (c === undefined) return;
    this.bound.delete(s);
    failAfterDrain(this.rt, c, `ucx connection from a client of ${this.url}: the peer closed or died (its worker-address socket closed)`);
  }

  /** An endpoint for a client (`socket`: its liveness socket in address mode) becomes a connection in its handshake. */
  private admit(ep: UcpEndpoint, socket: Socket<unknown> | null): UcxConnection {
    const peer = `${this.url} (client)`;
    this.rt.retain();
    const c = new UcxConnection(this.rt, ep, {
      maxMessageBytes: this.opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
      maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
      peer,
      onClosed: () => {
        if (socket !== null) {
          this.bound.delete(socket);
          socket.end();
        }
        this.lingering.delete(c);
        this.forget(c);
        this.rt.release();
      },
    });
    if (this.opts.wait) c.setWaitPolicy(this.opts.wait as never);
    const hs = new ServerHandshake(c, this.key, {
      accept: () => {
        this.endHandshake(c);
        try {
          this.accepted(c);
        } catch (e) {
          c.abort(e instanceof ProtocolError ? e : new ProtocolError(`ucx listener ${this.url}: the connection callback failed: ${describeThrown(e, true)}`));
        }
      },
      refuse: (error, reason, linger) => this.refuse(c, error, reason, linger),
    });
    c.handshake = hs;
    const timer = setTimeout(() => {
      this.refuse(c, new ProtocolError(`ucx connection from a client of ${this.url}: no ${hs.waitingFor} within ${this.handshakeTimeoutMs} ms`), "protocol", false);
    }, this.handshakeTimeoutMs);
    this.handshaking.set(c, timer);
    return c;
  }

  /**
   * Beyond MAX_UCX_HANDSHAKING: the request gets an endpoint (UCX's way to answer it) that is
   * closed at once, on a clean stack (this runs inside worker progress), and is counted "busy".
   */
  private turnAway(connRequest: number, held: number): void {
    let ep;
    try {
      ep = this.rt.worker.connect({ connRequest }, null, () => {});
    } catch {
      ep = null; // UCX refused the request (and let go of it)
    }
    if (ep !== null) queueMicrotask(() => ep.close(false));
    this.refused(new ConnectError(`ucx listener ${this.url}: a client's endpoint turned away: ${held} endpoints already in their handshake (at most MAX_UCX_HANDSHAKING ${MAX_UCX_HANDSHAKING})`), "busy");
  }

  private endHandshake(c: UcxConnection): void {
    const timer = this.handshaking.get(c);
    if (timer !== undefined) clearTimeout(timer);
    this.handshaking.delete(c);
  }

  /** Turns away an endpoint in its handshake: counted and reported once, then closed (after the peer read the refusal, with `linger`). */
  private refuse(c: UcxConnection, error: HotpathError, reason: RefusalReason, linger: boolean): void {
    if (!this.handshaking.has(c)) return;
    this.endHandshake(c);
    this.refused(error, reason);
    if (linger) {
      if (!c.closed) this.lingering.add(c); // onClosed takes it out
      c.lingerClose(REFUSAL_LINGER_MS);
    } else c.abort(error);
  }

  protected override forget(conn: UcxConnection): void {
    // Closed in its handshake: the client left (or failed) before it passed.
    const why = conn.closeError?.message ?? "closed";
    this.refuse(conn, new ProtocolError(`ucx connection from a client of ${this.url}: the client left during its handshake (${why})`), "protocol", false);
    super.forget(conn);
  }

  protected stop(): void {
    this.rt.sinks.delete(-this.port);
    if (this.listener !== null) this.rt.sockaddrPorts.delete(this.port);
    this.listener?.close();
    // Address mode: stop taking sockets; those not yet claimed go now (bound ones live with their connections).
    this.sockets?.stop(false);
    for (const [s, u] of this.unbound) {
      clearTimeout(u.timer);
      this.rt.binds.delete(u.key);
      s.end();
    }
    this.unbound.clear();
    // Endpoints still in their handshake belong to nobody else: they go with the listener.
    for (const [c, timer] of this.handshaking) {
      clearTimeout(timer);
      c.close();
    }
    this.handshaking.clear();
    this.rt.release();
  }
}

export async function ucxListen(url: URL, opts: UcxListenOptions): Promise<Listener> {
  const { host, port } = hostPort(url, true);
  const wireup = wireupOf(url);
  const key = authKey(`ucx listen ${host}:${port}`, opts.auth);
  const rt = acquire(opts.ucx?.rma === true);
  try {
    return new UcxListener(rt, host, port, opts, key, wireup);
  } catch (e) {
    rt.release();
    if (e instanceof UsageError) throw e;
    throw new ConnectError(`ucx listen ${host}:${port}: ${describeThrown(e)}`, { cause: e });
  }
}

export const ucxTransport: TransportFactory = {
  scheme: "ucx",
  unavailableReason: () => UcxRuntime.unavailableReason(),
  unavailableError: (reason) => new UcxUnavailableError(reason),
  connect: ucxConnect,
  listen: ucxListen,
};
