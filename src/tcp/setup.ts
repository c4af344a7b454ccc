/**
 * TCP control path: `tcp://host:port` listeners and connects on Bun sockets, and their TLS
 * forms `tcps://` and `tls://` (tls.ts: Bun's TLS; `tls` options on a `tcp://` URL mean TLS too).
 *
 * Both sides run the handshake (handshake.ts) as soon as the socket opens, or its TLS handshake
 * passed: hellos with limits, then token proofs when `auth` is on. connect() resolves only once
 * the handshake passed, so `caps.peerMaxMessageBytes` is known before the first send; it fails
 * with AuthError for a wrong or missing token or a listener that cannot prove the token (one
 * without auth included), and ConnectError when the peer refuses, is not a hotpath tcp
 * listener, speaks another protocol version, is at its connection limit, fails TLS, or
 * `connectTimeoutMs` passes (for the TCP connect, TLS and the handshake together). A listener
 * hands a connection to onConnection only after the client's handshake passed, before any of
 * its messages is delivered. Every peer it turns away is counted in `stats` and reported to
 * onRefused: "auth" (AuthError), "protocol" (ProtocolError: not hotpath, another version, a
 * failed TLS handshake, nothing within `tcp.handshakeTimeoutMs`, closed mid-handshake) and
 * "busy" (ConnectError: beyond `tcp.maxConnections`, handshakes included, a plain client gets a
 * busy hello; a TLS client is closed at once, before the server spends a TLS handshake on it).
 *
 * listen() accepts port 0 and reports the chosen port in `listener.url`, with the scheme it was
 * given. Listening on an address other than loopback with neither auth nor TLS prints one
 * warning (console.warn) naming the URL.
 */

import type { Socket, TCPSocketListener } from "bun";
import { ConnectError, HotpathError, UsageError, describeThrown } from "../errors.ts";
import { authKey } from "../contract/auth.ts";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_MAX_HEAD_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  type ConnectOptions,
  type Connection,
  type Listener,
  type ListenOptions,
  type TransportFactory,
} from "../contract/transport.ts";
import { ListenerBase } from "../contract/listener-base.ts";
import { TcpConnection } from "./connection.ts";
import { HELLO_BUSY, encodeHello } from "./hello.ts";
import { TCP_SCHEMES, connectTls, isPemError, listenTls, tlsFailureText } from "./tls.ts";
import { BufferPool, Sweeper, checkMaxMessageBytes, connectLimits, listenLimits, sweepPeriodMs, type TcpLimits } from "./limits.ts";

function hostPort(url: URL, forListen: boolean): { hostname: string; port: number } {
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (!hostname) throw new UsageError(`tcp url "${url.href}": missing host`);
  if (url.port === "" && !forListen) throw new UsageError(`tcp url "${url.href}": missing port`);
  const port = url.port === "" ? 0 : Number(url.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`tcp url "${url.href}": port must be 0..65535`);
  }
  return { hostname, port };
}

function checkTimeout(where: string, v: number): number {
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new UsageError(`${where}: connectTimeoutMs must be a positive number of milliseconds, got ${String(v)}`);
  }
  // setTimeout fires at once past 2^31 - 1 ms; nobody waits 24 days for a connect anyway.
  return Math.min(v, 0x7fffffff);
}

// Socket handlers shared by dialled and accepted sockets. `s.data` is unset for a socket the
// listener refused (busy) and for a dial that gave up before the socket opened.
const handlers = {
  // Reads arrive as plain Uint8Arrays: views of them (message bodies) are made on the fast path,
  // which a Buffer's species lookup would leave.
  binaryType: "uint8array" as const,
  data(s: Socket<TcpConnection>, chunk: Uint8Array) {
    s.data?.onData(chunk);
  },
  drain(s: Socket<TcpConnection>) {
    s.data?.onDrain();
  },
  close(s: Socket<TcpConnection>, error?: Error) {
    s.data?.onSocketClosed(error);
  },
  error(s: Socket<TcpConnection>, error: Error) {
    // Bun reports socket errors and exceptions thrown by a handler here: end the socket too,
    // so the peer learns the connection is gone.
    s.data?.onSocketClosed(error);
    s.terminate();
  },
};

/**
 * Dials a tcp / tcps / tls URL and resolves once the handshake passed (see the module comment
 * for the errors). The connection belongs to the calling thread; close() it when done.
 */
export async function tcpConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const { hostname, port } = hostPort(url, false);
  const scheme = url.protocol.slice(0, -1);
  const peer = `${scheme}://${url.host}`;
  const where = `tcp connect ${peer}`;
  const timeoutMs = checkTimeout(where, opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
  const maxMessageBytes = checkMaxMessageBytes(where, opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
  const limits = connectLimits(opts.tcp);
  const key = authKey(where, opts.auth);
  const tls = connectTls(url, opts.tls);
  const serverName = tls?.serverName ?? hostname;
  const period = sweepPeriodMs(limits);
  return new Promise<Connection>((resolve, reject) => {
    let settled = false;
    let conn: TcpConnection | null = null;
    const settle = (e: HotpathError | null) => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      if (e === null) resolve(conn!);
      else reject(e);
      return true;
    };
    const timer = setTimeout(() => {
      const what =
        conn === null ? "no connection"
        : conn.peerHelloArrived ? "connected, but the listener never answered this client's token proof"
        : `connected, but no hello from the peer (is it a hotpath ${tls ? "TLS " : ""}tcp listener?)`;
      if (settle(new ConnectError(`${where}: ${what} after ${timeoutMs} ms`))) conn?.drop("gave up waiting for the handshake");
    }, timeoutMs);
    Bun.connect<TcpConnection>({
      hostname,
      port,
      ...(tls ? { tls } : {}),
      socket: {
        ...handlers,
        open(s) {
          if (settled) {
            s.terminate();
            return;
          }
          conn = new TcpConnection(s, {
            peer,
            maxMessageBytes,
            limits,
            role: "connect",
            key,
            tls: tls !== null,
            pool: null,
            sweeper: period > 0 ? new Sweeper(period) : null,
            onHandshake(c, err) {
              // A handshake that passed after the deadline: the caller has its ConnectError already.
              if (!settle(err) && err === null) c.close();
            },
          });
          s.data = conn;
        },
        handshake(s, ok, error) {
          const passed = ok && error === null;
          s.data?.onTlsHandshake(passed, passed ? "" : tlsFailureText("connect", error, serverName));
        },
      },
    }).catch((e) => {
      const msg = `${where}: ${describeThrown(e)}`;
      settle(isPemError(e) ? new UsageError(`${msg} (tls.ca could not be loaded)`) : new ConnectError(msg, { cause: e }));
    });
  });
}

type BunTls = NonNullable<ReturnType<typeof listenTls>>;

class TcpListener extends ListenerBase<TcpConnection> {
  readonly transport = "tcp";
  readonly url: string;
  private readonly server: TCPSocketListener<TcpConnection>;
  /** Accepted sockets whose handshake has not passed yet. */
  private readonly handshaking = new Set<TcpConnection>();
  private readonly pool: BufferPool;
  private readonly sweeper: Sweeper | null;

  constructor(scheme: string, hostname: string, port: number, maxMessageBytes: number, limits: TcpLimits, key: Uint8Array | null, tls: BunTls | null) {
    super();
    this.pool = new BufferPool(limits.serverBufferBytes);
    const period = sweepPeriodMs(limits);
    this.sweeper = period > 0 ? new Sweeper(period) : null;
    this.server = Bun.listen<TcpConnection>({
      hostname,
      port,
      ...(tls ? { tls } : {}),
      socket: {
        ...handlers,
        open: (s) => {
          const peer = `${scheme}://${s.remoteAddress}`;
          if (this.conns.size + this.handshaking.size >= limits.maxConnections) {
            this.refused(new ConnectError(`tcp listener ${this.url}: client ${peer} refused: the listener is at its connection limit (tcp.maxConnections ${limits.maxConnections})`), "busy");
            if (tls) s.terminate();
            else s.end(encodeHello(HELLO_BUSY, 0, DEFAULT_MAX_HEAD_BYTES));
            return;
          }
          const conn = new TcpConnection(s, {
            peer,
            local: this.url,
            maxMessageBytes,
            limits,
            role: "accept",
            key,
            tls: tls !== null,
            pool: this.pool,
            sweeper: this.sweeper,
            onHandshake: (c, err, reason) => {
              this.handshaking.delete(c);
              if (err === null) this.accepted(c);
              else if (reason !== null) this.refused(err, reason);
            },
          });
          s.data = conn;
          if (conn.handshaking) this.handshaking.add(conn);
        },
        handshake: (s, ok, error) => {
          // Client certificates are not requested: `error` (no client certificate) is expected.
          s.data?.onTlsHandshake(ok, ok ? "" : tlsFailureText("accept", error, ""));
        },
        close: (s, error) => {
          if (!s.data) return;
          this.handshaking.delete(s.data);
          this.forget(s.data);
          s.data.onSocketClosed(error);
        },
      },
    });
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    this.url = `${scheme}://${host}:${this.server.port}`;
  }

  /** Connections open now, handshakes included (for tests and metrics). */
  get connectionCount(): number {
    return this.conns.size + this.handshaking.size;
  }

  protected stop(closeActive: boolean): void {
    // Handshakes not finished are never handed out after close.
    for (const c of [...this.handshaking]) c.drop("the listener closed");
    this.handshaking.clear();
    this.server.stop(closeActive);
  }
}

/** Loopback addresses: only this host can reach a listener bound to one. Pure: any thread. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\./.test(h) || /^(0+:){7}0*1$/.test(h);
}

/**
 * Listens on a tcp / tcps / tls URL (UsageError for bad options, ConnectError when the address
 * cannot be bound). The listener and its connections belong to the calling thread; close() it.
 */
export async function tcpListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const { hostname, port } = hostPort(url, true);
  const where = `tcp listen ${url.href}`;
  const maxMessageBytes = checkMaxMessageBytes(where, opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
  const limits = listenLimits(opts.tcp);
  const key = authKey(where, opts.auth);
  const tls = listenTls(url, opts.tls);
  let listener: TcpListener;
  try {
    listener = new TcpListener(url.protocol.slice(0, -1), hostname, port, maxMessageBytes, limits, key, tls);
  } catch (e) {
    const msg = `${where}: ${describeThrown(e)}`;
    if (isPemError(e)) throw new UsageError(`${msg} (tls.cert or tls.key could not be loaded)`);
    throw new ConnectError(msg, { cause: e });
  }
  if (key === null && tls === null && !isLoopbackHost(hostname)) {
    console.warn(
      `hotpath: tcp listener ${listener.url} is reachable from the network with neither authentication nor TLS: ` +
        `anyone who can reach it can call every method and read the traffic. Pass { auth: { token } } (a shared secret of 16+ bytes) ` +
        `and/or TLS (a tcps:// URL with { tls: { cert, key } }), or listen on 127.0.0.1.`,
    );
  }
  return listener;
}

function tcpFactory(scheme: (typeof TCP_SCHEMES)[number]): TransportFactory {
  return { scheme, unavailableReason: () => null, connect: tcpConnect, listen: tcpListen };
}

/** `tcp://`: plain, or TLS when `tls` options are given. */
export const tcpTransport: TransportFactory = tcpFactory("tcp");
/** `tcps://` and `tls://`: the same transport, always over TLS. */
export const tcpsTransport: TransportFactory = tcpFactory("tcps");
export const tlsTransport: TransportFactory = tcpFactory("tls");
