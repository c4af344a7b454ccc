/**
 * ucx control path: `ucx://host:port` listeners and connects (host: a numeric IPv4 address or
 * "localhost"; port 0 on listen picks a free port, reported in `listener.url`).
 *
 * Connect: a client-server endpoint to the listener's sockaddr, then a HELLO Active Message
 * that the server answers with HELLO_ACK; no answer within connectTimeoutMs, or an endpoint
 * error first, is a ConnectError. The server's endpoint (made from the connection request)
 * becomes a connection when its HELLO arrives.
 *
 * Error mode: UCP_ERR_HANDLING_MODE_NONE by default. In UCX 1.13 asking for PEER mode drops the
 * shared-memory transports (about 7 µs instead of under 1 µs between processes of one host),
 * while the connection manager still reports a peer that closed or died through the endpoint's
 * error callback in NONE mode (tested over tcp and shm). So hotpath keeps shared memory and
 * relies on that; `ucx: { peerErrors: true }` asks for PEER mode (failures of in-flight
 * operations reported individually, e.g. for links that can fail without the peer dying).
 */

import { ConnectError, TransportClosedError, UcxUnavailableError, UsageError } from "../errors.ts";
import { ListenerBase } from "../listener-base.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_MESSAGE_BYTES, type ConnectOptions, type Connection, type Listener, type ListenOptions, type TransportFactory } from "../transport/transport.ts";
import type { UcpListener } from "../ffi/ucp.ts";
import { HELLO_BYTES, UcxConnection } from "./connection.ts";
import { AM_HELLO, UcxRuntime } from "./runtime.ts";

function hostPort(url: URL, forListen: boolean): { host: string; port: number } {
  let host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "localhost") host = "127.0.0.1";
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) throw new UsageError(`ucx url "${url.href}": host must be a numeric IPv4 address (or localhost)`);
  if (url.port === "" && !forListen) throw new UsageError(`ucx url "${url.href}": missing port`);
  const port = url.port === "" ? 0 : Number(url.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`ucx url "${url.href}": port must be 0..65535`);
  return { host, port };
}

function acquire(): UcxRuntime {
  const why = UcxRuntime.unavailableReason();
  if (why !== null) throw new UcxUnavailableError(why);
  return UcxRuntime.acquire();
}

export async function ucxConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const { host, port } = hostPort(url, false);
  const peer = `ucx://${host}:${port}`;
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const rt = acquire();
  let failed: number | null = null;
  let conn: UcxConnection | null = null;
  let ep;
  try {
    ep = rt.worker.connect({ host, port }, opts.ucx?.peerErrors === true, (status) => {
      if (conn !== null && conn.helloAcked) conn.fail(new TransportClosedError(`ucx connection to ${peer}: the peer closed or failed (ucs_status ${status})`));
      else failed = status;
    });
  } catch (e) {
    rt.release();
    throw new ConnectError(`ucx connect ${peer}: ${(e as Error).message}`, { cause: e });
  }
  conn = new UcxConnection(rt, ep, {
    maxMessageBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
    peer,
    onClosed: () => rt.release(),
  });
  if (opts.wait) conn.setWaitPolicy(opts.wait as never);
  ep.amSend(AM_HELLO, HELLO_BYTES.slice(), null, () => {});
  const deadline = performance.now() + timeoutMs;
  while (!conn.helloAcked && failed === null && performance.now() < deadline) {
    rt.progress();
    if (!conn.helloAcked && failed === null) await Bun.sleep(0);
  }
  if (conn.helloAcked) return conn;
  const why = failed !== null ? `the endpoint failed (ucs_status ${failed}; nothing listening?)` : `no answer within ${timeoutMs} ms`;
  conn.close();
  throw new ConnectError(`ucx connect ${peer}: ${why}`);
}

class UcxListener extends ListenerBase<UcxConnection> {
  readonly transport = "ucx";
  readonly url: string;
  private readonly listener: UcpListener;
  private readonly progressHook = { onAm: () => 0, wantsProgress: true };

  constructor(
    private readonly rt: UcxRuntime,
    host: string,
    port: number,
    private readonly opts: ListenOptions,
  ) {
    super();
    this.listener = rt.worker.listen(host, port, (req) => this.onRequest(req));
    this.url = `ucx://${host}:${this.listener.port}`;
    // The listener itself needs the worker to progress (connection requests arrive there).
    rt.sinks.set(-this.listener.port, this.progressHook);
    rt.schedule();
  }

  private onRequest(connRequest: number): void {
    const peer = `${this.url} (client)`;
    let conn: UcxConnection | null = null;
    const ep = this.rt.worker.connect({ connRequest }, false, (status) => {
      conn?.fail(new TransportClosedError(`ucx connection from a client of ${this.url}: the peer closed or failed (ucs_status ${status})`));
    });
    this.rt.users++;
    conn = new UcxConnection(this.rt, ep, {
      maxMessageBytes: this.opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
      maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
      peer,
      onClosed: () => {
        this.forget(conn!);
        this.rt.release();
      },
    });
    if (this.opts.wait) conn.setWaitPolicy(this.opts.wait as never);
    conn.onHello = (c) => this.accepted(c);
  }

  protected stop(): void {
    this.rt.sinks.delete(-this.listener.port);
    this.listener.close();
    this.rt.release();
  }
}

export async function ucxListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const { host, port } = hostPort(url, true);
  const rt = acquire();
  try {
    return new UcxListener(rt, host, port, opts);
  } catch (e) {
    rt.release();
    throw new ConnectError(`ucx listen ${host}:${port}: ${(e as Error).message}`, { cause: e });
  }
}

export const ucxTransport: TransportFactory = {
  scheme: "ucx",
  unavailableReason: () => UcxRuntime.unavailableReason(),
  unavailableError: (reason) => new UcxUnavailableError(reason),
  connect: ucxConnect,
  listen: ucxListen,
};
