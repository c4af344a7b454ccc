/**
 * The Transport contract. Every transport folder (`tcp/`, later `shm/`, `inproc/`, `ucx/`,
 * `rdma/`) implements it, and `test/conformance/` checks every numbered item against each one.
 *
 * A transport moves messages. A message is two parts, both opaque to the transport: a `head`
 * (small, at most `caps.maxHeadBytes`; the RPC layer puts its wire header there) and a `body`
 * (the bulk data, at most `caps.maxMessageBytes`). Transports that can send them apart (UCX AM
 * header + data, RDMA write-with-immediate) do so; others frame them together.
 *
 * 1. `connect(url)` and `listen(url)` return a Connection / Listener or fail with a typed error
 *    that says what failed and why (`ConnectError`, `TransportUnavailableError`, `UsageError`
 *    for a bad URL), never a hang: every connect has a timeout (`connectTimeoutMs`).
 * 2. Messages arrive whole, in order, exactly once, or the connection reports closed.
 * 3. A sender can ask the transport for a writable buffer in transport memory (`allocBuffer`:
 *    shm slab slot, registered RDMA memory, heap for TCP) and send it without another copy
 *    (`trySendBuffer`).
 * 4. A received message is a view into transport memory, valid until released; the slot is
 *    not reused while the view is held. Release is explicit (`msg.release()`) and idempotent.
 * 5. Sending never throws on the hot path: `trySend` returns Ok, Full (backpressure) or
 *    Closed. Full means "try again after poll()/wait()", never that the message was dropped.
 * 6. Capabilities are declared, not guessed: `maxInlineBytes`, `maxMessageBytes`,
 *    `peerMaxMessageBytes`, `maxHeadBytes`, `zeroCopy`, `rma`, `sameHostOnly`. Limits are
 *    exchanged at connection setup: `peerMaxMessageBytes` is the largest body the peer said it
 *    accepts, and a send larger than `min(maxMessageBytes, peerMaxMessageBytes)` is refused
 *    locally with a UsageError that names both limits.
 * 7. Closing either side fails every pending operation on the other side with
 *    `TransportClosedError` promptly: the receiver's `onClose` runs once, `closed` turns true,
 *    and every later send returns Closed.
 * 8. A malformed frame from the peer aborts that connection with `ProtocolError` (passed to
 *    `onClose`); the listener and other connections keep working, and no memory is allocated
 *    for a length the peer merely claims. An oversized message that the transport can skip
 *    (its head is whole and within `maxHeadBytes`, only the body is too large) is skipped and
 *    reported to `Receiver.onOversized` when the receiver has that hook, so the layer above can
 *    fail just that call; without the hook, or for a frame it cannot skip, the connection aborts.
 *    An exception thrown by the receiver's `onMessage` closes that connection with the error
 *    (it never wedges the transport or escapes into the event loop).
 * 9. Waiting for input does not burn a core forever: `wait()` spins for at most
 *    `WaitPolicy.spinNs`, then parks until the peer rings (futex / event loop) or
 *    `timeoutMs` passes. Both are configurable per connection (`setWaitPolicy`).
 *
 * Threading: a Connection belongs to the thread that created it; none of its methods may be
 * called from another thread.
 *
 * Example:
 *   const conn = await connect("tcp://127.0.0.1:7000");
 *   conn.setReceiver({ onMessage(m) { use(m.head, m.body); m.release() }, onClose(e) {} });
 *   if (conn.trySend(head, body) === SEND_FULL) await conn.wait(10);
 */

import { UsageError, type HotpathError } from "../errors.ts";

/** Result of a send. Plain numbers so the hot path compares integers. */
export const SEND_OK = 0;
export const SEND_FULL = 1;
export const SEND_CLOSED = 2;
export type SendStatus = typeof SEND_OK | typeof SEND_FULL | typeof SEND_CLOSED;

export interface Capabilities {
  /** Largest body carried without a separate buffer (inline in a descriptor / one frame). */
  readonly maxInlineBytes: number;
  /** Largest body this side accepts from the peer (larger receives are skipped or abort, see item 8). */
  readonly maxMessageBytes: number;
  /**
   * Largest body the peer declared it accepts, learned at connection setup (equal to
   * maxMessageBytes where the transport has no way to learn it). Sends above
   * min(maxMessageBytes, peerMaxMessageBytes) are refused locally with UsageError.
   */
  readonly peerMaxMessageBytes: number;
  /** Largest head. */
  readonly maxHeadBytes: number;
  /** allocBuffer() returns transport memory that is sent without another copy. */
  readonly zeroCopy: boolean;
  /** One-sided get/put/cas on registered regions. */
  readonly rma: boolean;
  /** Both peers must be on one host. */
  readonly sameHostOnly: boolean;
}

/**
 * A received message. `head` and `body` are views into transport memory, valid until release().
 * The head's bytes can also be read in place, at `headBuf[headOffset .. headOffset + headLength)`,
 * which lets a layer above parse its header without creating a view per message.
 * A transport may reuse a released message object for a later message (shm / inproc keep one
 * per ring descriptor, so delivering allocates nothing): nothing of it may be kept past release().
 */
export interface RxMessage {
  readonly head: Uint8Array;
  readonly body: Uint8Array;
  readonly headBuf: Uint8Array;
  readonly headOffset: number;
  readonly headLength: number;
  readonly bodyLength: number;
  /**
   * Optional: an Int32Array over the same memory as headBuf (word i covers bytes 4i..4i+3, in
   * the host's byte order, little-endian on every supported host), set only where headOffset is
   * a multiple of 4, so a layer above reads its header a word at a time.
   */
  readonly headWords?: Int32Array | undefined;
  /** Hands the memory back to the transport. Idempotent until the object is reused (above). */
  release(): void;
}

export interface Receiver {
  /** Called inline (from poll(), or from the event loop for event-driven transports). */
  onMessage(msg: RxMessage): void;
  /** Called once when the connection closes; `error` says why (null for a local close()). */
  onClose(error: HotpathError | null): void;
  /**
   * Optional: a message whose body (`bodyLength` bytes) exceeds this side's maxMessageBytes
   * arrived and was skipped (contract item 8). `head` is a view valid during the call only.
   * Without this hook the connection aborts with ProtocolError instead.
   */
  onOversized?(head: Uint8Array, bodyLength: number): void;
}

/**
 * The first `lenBytes` of a buffer given to trySendBuffer() (the buffer itself when that is all
 * of it); UsageError unless lenBytes is an integer in 0..buffer.length.
 */
export function bufferPrefix(transport: string, buffer: Uint8Array, lenBytes: number): Uint8Array {
  if (lenBytes === buffer.length) return buffer;
  if (!Number.isInteger(lenBytes) || lenBytes < 0 || lenBytes > buffer.length) {
    throw new UsageError(`${transport} trySendBuffer: lenBytes ${String(lenBytes)} must be an integer in 0..${buffer.length}`);
  }
  return buffer.subarray(0, lenBytes);
}

/** The largest body a connection may send: its own limit and the peer's, whichever is smaller. */
export function sendLimit(caps: Capabilities): number {
  return Math.min(caps.maxMessageBytes, caps.peerMaxMessageBytes);
}

/** The UsageError for a body above sendLimit(caps), naming both limits. */
export function oversizedSendMessage(transport: string, bodyBytes: number, caps: Capabilities): string {
  return `${transport} send: body of ${bodyBytes} bytes exceeds the limit of ${sendLimit(caps)} bytes (this side's maxMessageBytes ${caps.maxMessageBytes}, the peer's ${caps.peerMaxMessageBytes})`;
}

/**
 * How a connection waits: "spin" (busy-poll), "blocking" (spin, then park the thread),
 * "async" (event-loop delivery), "adaptive" (async that spins only while spinning recently paid,
 * at most spinNs). shm and inproc offer all four, ucx all but "blocking"; tcp always waits on the
 * event loop.
 */
export type WaitMode = "spin" | "blocking" | "async" | "adaptive";

/** A connection's wait policy (connect/listen `wait`, Connection.setWaitPolicy). */
export interface WaitPolicy {
  /** How long wait() busy-polls before it parks. 0 parks at once. */
  spinNs: number;
  /** How input is waited for and delivered. Transports that have one way ignore it. */
  mode: WaitMode;
}

export interface Connection extends Disposable {
  readonly transport: string;
  readonly caps: Capabilities;
  /** URL of the peer as this side sees it. */
  readonly peer: string;
  /**
   * Who the peer process is, from the kernel (SO_PEERCRED on the handshake socket) where the
   * transport can know it (shm, inproc); undefined elsewhere (tcp, ucx: the network says nothing
   * trustworthy about the peer; use `auth`).
   */
  readonly peerCredentials?: PeerCredentials;
  readonly closed: boolean;
  /** Why the connection closed (null while open, or after a clean local close). */
  readonly closeError: HotpathError | null;

  /** Installs the receiver. Messages that arrived before are delivered to it in order. */
  setReceiver(receiver: Receiver): void;
  /** Copies head and body into transport memory and queues them. Never throws. */
  trySend(head: Uint8Array, body?: Uint8Array | null): SendStatus;
  /**
   * Optional hot path: trySend() of a 24-byte head given as six 32-bit words `h0..h5` (head
   * bytes 4i..4i+3 are word i, little-endian), so a layer above whose header is 24 bytes (the
   * RPC wire header) builds no head bytes and the transport stores the words straight into its
   * descriptor (shm / inproc). Same statuses, limits and UsageErrors as trySend(); the body is
   * copied before it returns. Transports without it are driven through trySend().
   */
  trySendWords?(h0: number, h1: number, h2: number, h3: number, h4: number, h5: number, body: Uint8Array): SendStatus;
  /**
   * A writable buffer of `lenBytes` in transport memory, or null when none is free now (Full)
   * or the connection is closed. The caller owns it until it passes it to trySendBuffer().
   */
  allocBuffer(lenBytes: number): Uint8Array | null;
  /**
   * Sends the first `lenBytes` (default: all) of a buffer from allocBuffer(): the very view it
   * returned, which binds the buffer to that allocation (a subarray of it, or a view kept from
   * an earlier allocation of the same memory, is refused with UsageError where the transport
   * lends its memory). Ok: the transport owns it from then on. Full: the caller still owns it
   * and may retry, or give it back with releaseBuffer(). Closed: it is gone with the connection.
   */
  trySendBuffer(head: Uint8Array, buffer: Uint8Array, lenBytes?: number): SendStatus;
  /** Gives back a buffer from allocBuffer() (the view it returned) that will not be sent. Idempotent; anything else is ignored. */
  releaseBuffer(buffer: Uint8Array): void;
  /** Non-blocking progress: delivers arrived messages, pushes queued sends. Returns messages delivered. */
  poll(): number;
  /**
   * Resolves when input may be there (true) or after `timeoutMs` (false) or at close (false).
   * Spins at most `spinNs` of the wait policy before it parks.
   */
  wait(timeoutMs: number): Promise<boolean>;
  setWaitPolicy(policy: Partial<WaitPolicy>): void;
  /**
   * True when wait() parks on the event loop and never holds the thread (tcp; shm / inproc /
   * ucx in their event-loop modes); false where it spins or parks the thread (spin, blocking),
   * so a layer above that must not freeze the event loop retries from a timer instead and
   * leaves waiting to the application's own poll()/wait() loop.
   */
  readonly waitsOnEventLoop: boolean;
  /** Closes this side; the peer sees TransportClosedError. Idempotent. */
  close(): void;
  /**
   * Closes at once, reporting `error` (a ProtocolError found by a layer above) to this side's
   * receiver: nothing more is delivered or accepted for sending. Output queued before the abort
   * may still reach the peer (tcp hands it to the socket, bounded by a linger time), so replies
   * to valid requests that came before a violation are not lost. The peer sees
   * TransportClosedError. Idempotent.
   */
  abort(error: HotpathError): void;
}

/** A peer process as the kernel reports it (SO_PEERCRED). */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** What a listener refused, by cause, and what it accepted. Counters only grow. */
export interface ListenerStats {
  /** Connections handed to onConnection. */
  accepted: number;
  /** Peers refused for who they are: a wrong or missing token, a uid or gid not allowed (AuthError). */
  refusedAuth: number;
  /** Peers refused for what they sent: not hotpath, another version, a malformed or late handshake. */
  refusedProtocol: number;
  /** Peers refused because the listener was at its connection limit. */
  refusedBusy: number;
}

/** Why a listener refused a peer, as `Listener.onRefused` reports it. */
export type RefusalReason = "auth" | "protocol" | "busy";

export interface Listener extends Disposable {
  readonly transport: string;
  /** The URL clients connect to, with the chosen port when the request said port 0. */
  readonly url: string;
  /** Accepted and refused peers so far. */
  readonly stats: Readonly<ListenerStats>;
  /** Called for every accepted connection, before any of its messages is delivered. */
  onConnection(cb: (conn: Connection) => void): void;
  /**
   * Called for every refused peer, with the typed error that says why (AuthError for "auth",
   * ProtocolError for "protocol", ConnectError for "busy"). Without a callback refusals are only
   * counted. A throwing callback is printed and ignored.
   */
  onRefused(cb: (error: HotpathError, reason: RefusalReason) => void): void;
  /** Stops accepting. Open connections stay open unless `closeConnections` is true. */
  close(closeConnections?: boolean): void;
}

/** Shared-secret authentication (tcp, ucx): an HMAC-SHA256 challenge-response; the token never travels. */
export interface AuthOptions {
  /** The shared secret: at least 16 bytes (a string is taken as UTF-8). */
  token: string | Uint8Array;
}

/** TLS on a listener (`tcps://` or `tls://`, or `tls` on a `tcp://` listen): PEM text or bytes. */
export interface TlsListenOptions {
  cert: string | Uint8Array;
  key: string | Uint8Array;
  /** CA certificates to trust beyond the system's (for client certificates; optional). */
  ca?: string | Uint8Array | Array<string | Uint8Array>;
}

/** TLS on a connect (`tcps://` or `tls://` URLs, or `tls` on a `tcp://` connect). */
export interface TlsConnectOptions {
  /** CA certificates to trust beyond the system's (a self-made CA). */
  ca?: string | Uint8Array | Array<string | Uint8Array>;
  /** The name the server's certificate must carry. Default: the URL's host. */
  serverName?: string;
}

/** Local transports (shm, inproc): who besides the listener's own uid may connect. */
export interface AllowOptions {
  /** Uids admitted besides the listener's own (root is not admitted unless listed). */
  uids?: number[];
  /** Gids whose members (by the peer's primary gid, from SO_PEERCRED) are admitted. */
  gids?: number[];
}

export interface ConnectOptions {
  /** Fail with ConnectError after this long. Default 5000. */
  connectTimeoutMs?: number;
  /** tcp / ucx: prove the shared token (and make the server prove it). A server without auth is refused with AuthError. */
  auth?: AuthOptions;
  /** tcp: TLS (implied by `tcps://` and `tls://` URLs). */
  tls?: TlsConnectOptions;
  /**
   * shm / inproc: the uid the listener must run as (SO_PEERCRED), and whose socket directory
   * the name is looked up in. Default: this process's own uid. A listener of another uid is
   * refused with AuthError.
   */
  expectUid?: number;
  /** Largest body this side accepts from the peer and sends. Default 64 MiB. */
  maxMessageBytes?: number;
  /** Transports to try after the URL's own, in order: scheme names or whole URLs. */
  fallback?: string[];
  /** shm / inproc / ucx / rdma: the connection's initial wait policy. Others ignore it. */
  wait?: Partial<WaitPolicy>;
  /**
   * ucx: `peerErrors` asks for UCP_ERR_HANDLING_MODE_PEER (gives up shared memory in UCX 1.13);
   * `rma` gives the connection UCX's RMA and atomics (caps.rma; registerMemory / attachRegion).
   * Off by default: with it, the server can read and write any of this process's memory over
   * UCX's tcp and shared-memory transports (their software RMA checks no registration).
   */
  ucx?: { peerErrors?: boolean; rma?: boolean };
  /**
   * rdma: `window` receives reserved for the peer (its send credits; default 16), `sqDepth` send-queue
   * slots (default 64), `zoneBytes` the first landing zone for large messages (default 1 MiB),
   * `handshakeTimeoutMs` (listen: an endpoint whose handshake has not completed this long after its
   * request is closed and counted "protocol"; default 10000). See the README's rdma:// section.
   */
  rdma?: RdmaOptions;
  /** tcp: the dialled connection's buffer and time limits (0 turns a timeout off). Others ignore it. */
  tcp?: {
    /** Output queued before trySend reports Full. Default 4 MiB. */
    sendBufferBytes?: number;
    /**
     * Close the connection when no whole frame moved either way for this long, whatever is in
     * flight: a call running longer than this with nothing else moving is cut, so raise it for
     * long calls. Default 0 (never).
     */
    idleTimeoutMs?: number;
    /** Abort with ProtocolError when a frame that began arriving is still incomplete after this long. Default 0 (never). */
    frameTimeoutMs?: number;
  };
}

export interface ListenOptions {
  maxMessageBytes?: number;
  /** tcp / ucx: admit only peers that prove the shared token (AuthError otherwise, counted in stats.refusedAuth). */
  auth?: AuthOptions;
  /** tcp: TLS (required for `tcps://` and `tls://` URLs). */
  tls?: TlsListenOptions;
  /** shm / inproc: admit these uids / gids besides the listener's own uid (SO_PEERCRED). */
  allow?: AllowOptions;
  /** shm / inproc / rdma: the initial wait policy of accepted connections. Others ignore it. */
  wait?: Partial<WaitPolicy>;
  /**
   * tcp: the listener's connection, memory and time limits (0 turns a timeout off). Others ignore
   * it. The defaults bound what the tcp layer holds for a listener's peers (see src/tcp/limits.ts).
   */
  tcp?: {
    /** Connections open or in their handshake at once; a client beyond it is refused with a busy hello. Default 1024. */
    maxConnections?: number;
    /** Bytes of a frame split across reads that one connection assembles on its own; a larger frame waits for a share of serverBufferBytes. Default 256 KiB. */
    connectionBufferBytes?: number;
    /** Bytes of large split frames all connections together may hold; a connection waiting for its share stops reading. Default 256 MiB. */
    serverBufferBytes?: number;
    /** Output queued before trySend reports Full; from half of it, reading from that connection pauses until it drains. Default 4 MiB. */
    sendBufferBytes?: number;
    /** Disconnect a peer that leaves its connection's output over budget (not reading its replies) for this long. Default 30000. */
    slowConsumerMs?: number;
    /**
     * Close a connection when no whole frame moved either way for this long, whatever is in
     * flight (an unanswered request, a one-way message, a cancelled call): a call running longer
     * than this with nothing else moving is cut, so raise it for long calls. Default 300000.
     */
    idleTimeoutMs?: number;
    /** Drop a connection whose hello has not arrived this long after it was accepted. Default 10000. */
    handshakeTimeoutMs?: number;
    /** Abort with ProtocolError when a frame that began arriving is still incomplete after this long (slowloris). Default 30000. */
    frameTimeoutMs?: number;
  };
  /**
   * ucx: `handshakeTimeoutMs`: close an accepted endpoint whose handshake has not completed this
   * long after it connected (default 10000). `rma`: the listener's connections get UCX's RMA and
   * atomics (caps.rma; registerMemory / attachRegion). Off by default: with it, every peer that
   * reaches the listener, authenticated or not, can read and write any of this process's memory
   * over UCX's tcp and shared-memory transports (their software RMA checks no registration).
   */
  ucx?: { handshakeTimeoutMs?: number; rma?: boolean };
  /**
   * rdma: `window` receives reserved for the peer (its send credits; default 16), `sqDepth` send-queue
   * slots (default 64), `zoneBytes` the first landing zone for large messages (default 1 MiB),
   * `handshakeTimeoutMs` (listen: an endpoint whose handshake has not completed this long after its
   * request is closed and counted "protocol"; default 10000). See the README's rdma:// section.
   */
  rdma?: RdmaOptions;
}

/** The `rdma` group of ConnectOptions / ListenOptions (each field checked: UsageError naming it). */
export interface RdmaOptions {
  window?: number;
  sqDepth?: number;
  zoneBytes?: number;
  handshakeTimeoutMs?: number;
}

/** What a transport module registers with the URL registry. */
export interface TransportFactory {
  readonly scheme: string;
  /** Null when the transport can run here, else the reason it cannot. */
  unavailableReason(): string | null;
  /** The typed error for that reason (default: TransportUnavailableError). */
  unavailableError?(reason: string): HotpathError;
  connect(url: URL, opts: ConnectOptions): Promise<Connection>;
  listen(url: URL, opts: ListenOptions): Promise<Listener>;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
export const DEFAULT_MAX_MESSAGE_BYTES = 64 << 20;
/** Heads carry the RPC wire header plus the application header. */
export const DEFAULT_MAX_HEAD_BYTES = 4096;
