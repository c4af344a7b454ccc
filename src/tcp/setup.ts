/**
 * TCP control path: `tcp://host:port` listeners and connects on Bun sockets.
 *
 * Both sides write a hello (hello.ts) as soon as the socket opens. connect() resolves only once
 * the listener's hello arrived and passed, so `caps.peerMaxMessageBytes` is known before the
 * first send; it fails with ConnectError when the peer refuses, is not a hotpath tcp listener,
 * speaks another protocol version, is at its connection limit, or `connectTimeoutMs` passes
 * (for the TCP connect and the hello together). A listener hands a connection to onConnection
 * only after the client's hello passed, before any of its messages is delivered; a client that
 * sends something else, or nothing within `tcp.handshakeTimeoutMs`, is dropped. Beyond
 * `tcp.maxConnections` (handshakes included) a client gets a busy hello and is closed.
 *
 * listen() accepts port 0 and reports the chosen port in `listener.url`.
 */

import type { Socket, TCPSocketListener } from "bun";
import { ConnectError, HotpathError, UsageError } from "../errors.ts";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_MAX_HEAD_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  type ConnectOptions,
  type Connection,
  type Listener,
  type ListenOptions,
  type TransportFactory,
} from "../transport/transport.ts";
import { ListenerBase } from "../listener-base.ts";
import { TcpConnection } from "./connection.ts";
import { HELLO_BUSY, encodeHello } from "./hello.ts";
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

export async function tcpConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const { hostname, port } = hostPort(url, false);
  const peer = `tcp://${url.host}`;
  const timeoutMs = checkTimeout(`tcp connect ${peer}`, opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
  const maxMessageBytes = checkMaxMessageBytes(`tcp connect ${peer}`, opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
  const limits = connectLimits(opts.tcp);
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
      const what = conn === null ? "no connection" : "connected, but no hello from the peer (is it a hotpath tcp listener?)";
      if (settle(new ConnectError(`tcp connect ${peer}: ${what} after ${timeoutMs} ms`))) conn?.drop("gave up waiting for the hello");
    }, timeoutMs);
    Bun.connect<TcpConnection>({
      hostname,
      port,
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
            pool: null,
            sweeper: period > 0 ? new Sweeper(period) : null,
            onHandshake(c, err) {
              // A hello after the deadline: the caller has its ConnectError already.
              if (!settle(err) && err === null) c.close();
            },
          });
          s.data = conn;
        },
      },
    }).catch((e) => {
      settle(new ConnectError(`tcp connect ${peer}: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
    });
  });
}

class TcpListener extends ListenerBase<TcpConnection> {
  readonly transport = "tcp";
  readonly url: string;
  private readonly server: TCPSocketListener<TcpConnection>;
  /** Accepted sockets whose hello has not arrived yet. */
  private readonly handshaking = new Set<TcpConnection>();
  private readonly pool: BufferPool;
  private readonly sweeper: Sweeper | null;

  constructor(hostname: string, port: number, maxMessageBytes: number, limits: TcpLimits) {
    super();
    this.pool = new BufferPool(limits.serverBufferBytes);
    const period = sweepPeriodMs(limits);
    this.sweeper = period > 0 ? new Sweeper(period) : null;
    this.server = Bun.listen<TcpConnection>({
      hostname,
      port,
      socket: {
        ...handlers,
        open: (s) => {
          if (this.conns.size + this.handshaking.size >= limits.maxConnections) {
            s.end(encodeHello(HELLO_BUSY, 0, DEFAULT_MAX_HEAD_BYTES));
            return;
          }
          const conn = new TcpConnection(s, {
            peer: `tcp://${s.remoteAddress}`,
            maxMessageBytes,
            limits,
            role: "accept",
            pool: this.pool,
            sweeper: this.sweeper,
            onHandshake: (c, err) => {
              this.handshaking.delete(c);
              if (err === null) this.accepted(c);
            },
          });
          s.data = conn;
          if (conn.handshaking) this.handshaking.add(conn);
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
    this.url = `tcp://${host}:${this.server.port}`;
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

export async function tcpListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const { hostname, port } = hostPort(url, true);
  const maxMessageBytes = checkMaxMessageBytes(`tcp listen ${url.host}`, opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
  const limits = listenLimits(opts.tcp);
  try {
    return new TcpListener(hostname, port, maxMessageBytes, limits);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ConnectError(`tcp listen ${url.host}: ${reason}`, { cause: e });
  }
}

export const tcpTransport: TransportFactory = {
  scheme: "tcp",
  unavailableReason: () => null,
  connect: tcpConnect,
  listen: tcpListen,
};
