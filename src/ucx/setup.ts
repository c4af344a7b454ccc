/**
 * ucx control path: `ucx://host:port` listeners and connects (host: a numeric IPv4 address or
 * "localhost"; port 0 on listen picks a free port, reported in `listener.url`).
 *
 * Connect: a client-server endpoint to the listener's sockaddr, then the handshake
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
import type { UcpListener } from "../ffi/ucp.ts";
import { UcxConnection } from "./connection.ts";
import { ClientHandshake, REFUSAL_LINGER_MS, ServerHandshake } from "./handshake.ts";
import { AM_HELLO, UcxRuntime } from "./runtime.ts";

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

function hostPort(url: URL, forListen: boolean): { host: string; port: number } {
  let host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "localhost") host = "127.0.0.1";
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) throw new UsageError(`ucx url "${url.href}": host must be a numeric IPv4 address (or localhost)`);
  if (url.port === "" && !forListen) throw new UsageError(`ucx url "${url.href}": missing port`);
  const port = url.port === "" ? 0 : Number(url.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`ucx url "${url.href}": port must be 0..65535`);
  return { host, port };
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
  const peer = `ucx://${host}:${port}`;
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const peerErrors = opts.ucx?.peerErrors === true;
  if (opts.wait) UcxConnection.checkWaitPolicy(opts.wait);
  const key = authKey(`ucx connect ${peer}`, opts.auth);
  const rt = acquire(opts.ucx?.rma === true);
  let failed: number | null = null;
  /** connect() returned or threw: from then on the error callback closes the connection (as it does once the handshake passed). */
  let settled = false;
  let conn: UcxConnection | null = null;
  let ep;
  try {
    ep = rt.worker.connect({ host, port }, peerErrors, (status) => {
      if (settled || conn?.established === true) conn?.fail(new TransportClosedError(`ucx connection to ${peer}: the peer closed or failed (ucs_status ${status})`));
      else {
        failed = status;
        rt.waiters.wake(true);
      }
    });
  } catch (e) {
    rt.release();
    throw new ConnectError(`ucx connect ${peer}: ${describeThrown(e)}`, { cause: e });
  }
  conn = new UcxConnection(rt, ep, {
    maxMessageBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
    peer,
    onClosed: () => rt.release(),
  });
  if (opts.wait) conn.setWaitPolicy(opts.wait as never);
  const hs = new ClientHandshake(conn, key);
  conn.handshake = hs;
  conn.sendControl(AM_HELLO, hs.hello(peerErrors));
  const c = conn;
  const waiting = () => !c.established && hs.error === null && failed === null && !c.closed;
  const deadline = performance.now() + timeoutMs;
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

class UcxListener extends ListenerBase<UcxConnection> {
  readonly transport = "ucx";
  readonly url: string;
  private readonly listener: UcpListener;
  private readonly progressHook = { onAm: () => 0, wantsProgress: true };
  /** Endpoints whose handshake is under way, with their reaping timers. */
  private readonly handshaking = new Map<UcxConnection, ReturnType<typeof setTimeout>>();
  /** Endpoints refused and lingering until their peer closes (REFUSAL_LINGER_MS at most): they count against MAX_UCX_HANDSHAKING too. */
  private readonly lingering = new Set<UcxConnection>();
  private readonly handshakeTimeoutMs: number;

  constructor(
    private readonly rt: UcxRuntime,
    host: string,
    port: number,
    private readonly opts: UcxListenOptions,
    /** The token's key bytes, or null when the listener admits anyone. */
    private readonly key: Uint8Array | null,
  ) {
    super();
    const t = opts.ucx?.handshakeTimeoutMs ?? DEFAULT_UCX_HANDSHAKE_TIMEOUT_MS;
    if (!(t > 0) || !Number.isFinite(t)) throw new UsageError(`ucx listen: handshakeTimeoutMs ${t} must be a positive number of milliseconds`);
    this.handshakeTimeoutMs = t;
    if (opts.wait) UcxConnection.checkWaitPolicy(opts.wait);
    this.listener = rt.worker.listen(host, port, (req) => this.onRequest(req));
    this.url = `ucx://${host}:${this.listener.port}`;
    // The listener itself needs the worker to progress (connection requests arrive there).
    rt.sinks.set(-this.listener.port, this.progressHook);
    rt.schedule();
  }

  /** Inside worker progress: a client's endpoint arrived. Nothing here may throw into UCX. */
  private onRequest(connRequest: number): void {
    const held = this.handshaking.size + this.lingering.size;
    if (held >= MAX_UCX_HANDSHAKING) return this.turnAway(connRequest, held);
    const peer = `${this.url} (client)`;
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
    this.rt.retain();
    const c = new UcxConnection(this.rt, ep, {
      maxMessageBytes: this.opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
      maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
      peer,
      onClosed: () => {
        this.lingering.delete(c);
        this.forget(c);
        this.rt.release();
      },
    });
    conn = c;
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
    this.rt.sinks.delete(-this.listener.port);
    this.listener.close();
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
  const key = authKey(`ucx listen ${host}:${port}`, opts.auth);
  const rt = acquire(opts.ucx?.rma === true);
  try {
    return new UcxListener(rt, host, port, opts, key);
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
