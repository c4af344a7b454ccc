/**
 * TCP control path: `tcp://host:port` listeners and connects on Bun sockets.
 *
 * listen() accepts port 0 and reports the chosen port in `listener.url`. connect() fails with
 * ConnectError when the peer refuses or `connectTimeoutMs` passes (a socket that connects after
 * the deadline is closed at once). Each accepted socket becomes a TcpConnection handed to the
 * listener's onConnection callback before any of its data is parsed.
 */

import type { Socket, TCPSocketListener } from "bun";
import { ConnectError, UsageError } from "../errors.ts";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_MAX_MESSAGE_BYTES,
  type ConnectOptions,
  type Connection,
  type Listener,
  type ListenOptions,
  type TransportFactory,
} from "../transport/transport.ts";
import { ListenerBase } from "../listener-base.ts";
import { TcpConnection } from "./connection.ts";

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

const handlers = {
  data(s: Socket<TcpConnection>, chunk: Uint8Array) {
    s.data.onData(chunk);
  },
  drain(s: Socket<TcpConnection>) {
    s.data.onDrain();
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
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const maxMessageBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const peer = `tcp://${url.host}`;
  let timedOut = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Bun.connect<TcpConnection>({
    hostname,
    port,
    socket: {
      ...handlers,
      open(s) {
        s.data = new TcpConnection(s, { maxMessageBytes, peer });
        if (timedOut) s.data.close();
      },
    },
  });
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new ConnectError(`tcp connect ${peer}: no connection after ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    const socket = await Promise.race([connecting, deadline]);
    return socket.data;
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    const reason = e instanceof Error ? e.message : String(e);
    throw new ConnectError(`tcp connect ${peer}: ${reason}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
}

class TcpListener extends ListenerBase<TcpConnection> {
  readonly transport = "tcp";
  readonly url: string;
  private readonly server: TCPSocketListener<TcpConnection>;

  constructor(hostname: string, port: number, maxMessageBytes: number) {
    super();
    this.server = Bun.listen<TcpConnection>({
      hostname,
      port,
      socket: {
        ...handlers,
        open: (s) => {
          s.data = new TcpConnection(s, { maxMessageBytes, peer: `tcp://${s.remoteAddress}` });
          this.accepted(s.data);
        },
        close: (s, error) => {
          if (!s.data) return;
          this.forget(s.data);
          s.data.onSocketClosed(error);
        },
      },
    });
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    this.url = `tcp://${host}:${this.server.port}`;
  }

  protected stop(closeActive: boolean): void {
    this.server.stop(closeActive);
  }
}

export async function tcpListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const { hostname, port } = hostPort(url, true);
  try {
    return new TcpListener(hostname, port, opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
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
