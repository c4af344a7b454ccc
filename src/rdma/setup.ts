/**
 * rdma control path: the `rdma://` TransportFactory (`rdmaTransport`). `rdma://host:port`
 * connects and listens through rdma_cm (cm-mode.ts, the default), `rdma://host:port?mode=socket`
 * exchanges QP details over a TCP socket (socket-mode.ts); options.ts checks the URL
 * (`?mode=`, `?device=`, `?port=`, `?gid=`) and `opts.rdma` before anything native is touched,
 * hello.ts is the handshake's bytes, cm.ts the thread's rdma_cm event channel. The data path
 * (RdmaRuntime, RdmaEndpoint, RdmaConnection) is runtime.ts, endpoint.ts, connection.ts.
 *
 * Contract: connect() resolves once both QPs are connected and the hellos exchanged (so
 * `caps.peerMaxMessageBytes` is known), or rejects with ConnectError (nothing listening, a
 * refusal with the listener's reason, no answer within connectTimeoutMs, in both modes), with
 * UsageError for a bad URL or option (naming it), or with RdmaUnavailableError when the machine
 * has no RDMA device (`unavailableReason()` says why, e.g. `ibv_get_device_list: no devices
 * (ENOSYS)`, and `connect(url, { fallback: ["tcp"] })` moves on). listen() on port 0 picks a
 * free port (`listener.url` reports it, with `?mode=socket` kept); its stats and onRefused count
 * "protocol" (a bad hello, a handshake not done within `rdma.handshakeTimeoutMs`, a client that
 * left mid-way) and "busy" (no SRQ room for the connection's window). `auth` is not supported
 * yet (UsageError). An open listener or connection keeps the process alive, as a socket does;
 * after close the process can exit.
 *
 * Example:
 *   const l = await listen("rdma://10.0.0.1:0");
 *   const conn = await connect(l.url, { rdma: { window: 32 } });
 *
 * Threading: connects and listeners belong to the calling thread (each thread has its own
 * runtimes and rdma_cm channel).
 */

import { ConnectError, describeThrown, HotpathError, RdmaUnavailableError, UsageError } from "../errors.ts";
import type { ConnectOptions, Connection, Listener, ListenOptions, TransportFactory, WaitPolicy } from "../contract/transport.ts";
import { rdmaUnavailableReason } from "../ffi/ibverbs.ts";
import { CmChannel } from "./cm.ts";
import { cmConnect, CmListener } from "./cm-mode.ts";
import { connectTimeout, parseRdmaUrl, rdmaTuning } from "./options.ts";
import { RdmaRuntime } from "./runtime.ts";
import { socketConnect, SocketListener } from "./socket-mode.ts";

const WAIT_MODES = ["spin", "blocking", "async", "adaptive"];

/** UsageError for a wait policy no rdma connection takes (before anything native is touched). */
function checkWait(where: string, wait: Partial<WaitPolicy> | undefined): void {
  if (wait === undefined) return;
  if (wait === null || typeof wait !== "object") throw new UsageError(`${where}: wait must be an object`);
  if (wait.mode !== undefined && !WAIT_MODES.includes(wait.mode)) throw new UsageError(`${where}: wait mode "${String(wait.mode)}" is not spin, blocking, async or adaptive`);
  if (wait.spinNs !== undefined && !(typeof wait.spinNs === "number" && wait.spinNs >= 0 && wait.spinNs <= Number.MAX_SAFE_INTEGER)) throw new UsageError(`${where}: wait.spinNs ${String(wait.spinNs)} must be a number of nanoseconds >= 0`);
}

/**
 * Failures of the native calls (NativeError, a ProtocolError from the peer) and of the system
 * (a socket error with an errno code) become ConnectError naming where; the typed errors callers
 * act on pass through, and so does anything else (a bug is not a failed connect).
 */
function asConnectError(where: string, e: unknown): unknown {
  if (e instanceof UsageError || e instanceof ConnectError || e instanceof RdmaUnavailableError) return e;
  const system = e instanceof Error && typeof (e as { code?: unknown }).code === "string";
  if (!(e instanceof HotpathError) && !system) return e;
  return new ConnectError(`${where}: ${e instanceof HotpathError ? e.message : describeThrown(e)}`, { cause: e });
}

/** Connects to an rdma:// URL (see the module comment). */
export async function rdmaConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const u = parseRdmaUrl(url, false);
  const where = `rdma connect ${url.href}`;
  const tuning = rdmaTuning(where, opts);
  const timeoutMs = connectTimeout(where, opts);
  checkWait(where, opts.wait);
  const why = unavailableReason();
  if (why !== null) throw new RdmaUnavailableError(why);
  try {
    return u.mode === "socket" ? await socketConnect(u, tuning, timeoutMs, opts.wait) : await cmConnect(url, u, tuning, timeoutMs, opts.wait);
  } catch (e) {
    throw asConnectError(where, e);
  }
}

/** Listens on an rdma:// URL (see the module comment). */
export async function rdmaListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const u = parseRdmaUrl(url, true);
  const where = `rdma listen ${url.href}`;
  const tuning = rdmaTuning(where, opts);
  checkWait(where, opts.wait);
  const why = unavailableReason();
  if (why !== null) throw new RdmaUnavailableError(why);
  try {
    if (u.mode === "socket") {
      const rt = RdmaRuntime.acquireDevice({ device: u.device, port: u.portNum, gidIndex: u.gidIndex });
      try {
        return new SocketListener(u, tuning, opts.wait, rt);
      } catch (e) {
        rt.release();
        throw e;
      }
    }
    const cm = CmChannel.acquire();
    try {
      return new CmListener(cm, url, u, tuning, opts.wait);
    } catch (e) {
      cm.release();
      throw e;
    }
  } catch (e) {
    throw asConnectError(where, e);
  }
}

let reason: { why: string | null } | null = null;

/** rdmaUnavailableReason() (a device listed by libibverbs), asked once per thread: null when rdma can run here. */
function unavailableReason(): string | null {
  reason ??= { why: rdmaUnavailableReason() };
  return reason.why;
}

export const rdmaTransport: TransportFactory = {
  scheme: "rdma",
  unavailableReason,
  unavailableError: (why) => new RdmaUnavailableError(why),
  connect: rdmaConnect,
  listen: rdmaListen,
};
