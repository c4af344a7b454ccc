/**
 * rdma:// URLs and options, checked before anything native is touched (control path).
 *
 *   rdma://host:port                     rdma_cm (the default mode)
 *   rdma://host:port?mode=socket         QP numbers, LID/GID, PSN and rkeys over a TCP socket
 *   ?device=mlx5_0&port=1&gid=0          device (socket mode picks it; cm mode checks what rdma_cm chose),
 *                                        port (1-based, default 1), GID index (default 0)
 *
 * host: a numeric IPv4 address or "localhost" (rdma_cm resolves IP addresses). port 0 on listen
 * picks a free one. Any other query parameter, or a value out of range, is a UsageError naming
 * it. `opts.rdma` fields (window, sqDepth, zoneBytes, handshakeTimeoutMs), maxMessageBytes and
 * connectTimeoutMs are checked the same way; `auth` is refused ("rdma: auth is not supported yet").
 *
 * Example: const u = parseRdmaUrl(new URL("rdma://10.0.0.2:7471?mode=socket"), false);
 *
 * Threading: pure functions; any thread.
 */

import { UsageError } from "../errors.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_MESSAGE_BYTES, type ConnectOptions, type ListenOptions } from "../contract/transport.ts";

/** The two connection modes (the URL's `mode=`). */
export type RdmaMode = "cm" | "socket";

/** Receives reserved per connection (the peer's send credits): 16 keeps a ping-pong window busy while 128 connections share one 2048-slot SRQ. */
export const DEFAULT_RDMA_WINDOW = 16;
/** Send-queue slots per QP: 64 gives a signal batch of 32 (signalBatchFor), one completion per 32 sends. */
export const DEFAULT_RDMA_SQ_DEPTH = 64;
/** First landing zone per connection end: 1 MiB takes a typical large message in one write without a re-registration. */
export const DEFAULT_RDMA_ZONE_BYTES = 1 << 20;
/** A client gives up after its connect timeout (5 s by default); an endpoint silent for 10 s is no client of ours. */
export const DEFAULT_RDMA_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Peers a listener holds in their handshake at once (each may hold an endpoint: a QP, a landing
 * zone, a window of SRQ receives, until its handshake timeout); beyond it a new one is refused
 * "busy". 256 is far above any honest burst of concurrent connects.
 */
export const MAX_RDMA_HANDSHAKING = 256;
/** CreditFlow needs a window of at least 3 (the last credit is kept for a credit message, a return batch of 2 below it). */
const MIN_WINDOW = 3;
/**
 * What a peer's hello may announce, in one place: hello.ts's decodeHello refuses anything else
 * (the listener counts it "protocol" before an endpoint exists), and the data path
 * (data-path.ts's constructor) checks the same ones.
 */
export const PEER_WINDOW_MIN = MIN_WINDOW;
/** The hello's u16 field. */
export const PEER_WINDOW_MAX = 0xffff;
/** A receive slot smaller than this cannot take a header and a small message. */
export const PEER_RECV_SLOT_MIN = 64;
/** The spec's 4096 with room around it; larger announcements are no honest peer. */
export const PEER_RECV_SLOT_MAX = 1 << 20;
/** The hello's u16 field, and far above what one SRQ can reserve for a connection. */
const MAX_WINDOW = 4096;
/** What a QP of any device takes; the device's own max_qp_wr is checked when the QP is made. */
const MAX_SQ_DEPTH = 32768;
const MAX_U32 = 0xffffffff;

export interface RdmaUrl {
  host: string;
  /** The TCP (socket mode) or rdma_cm port; 0 on listen: any free one. */
  port: number;
  mode: RdmaMode;
  /** Named in the URL, else undefined (socket mode: the first device; cm mode: what rdma_cm chose). */
  device: string | undefined;
  /** The HCA port (1-based). */
  portNum: number;
  gidIndex: number;
  /** True when the URL said `mode=socket` (a listener keeps it in its url). */
  socketAsked: boolean;
}

export interface RdmaTuning {
  window: number;
  sqDepth: number;
  zoneBytes: number;
  handshakeTimeoutMs: number;
  maxMessageBytes: number;
}

const QUERY_KEYS = new Set(["mode", "device", "port", "gid"]);

function intParam(url: URL, key: string, min: number, max: number, dflt: number): number {
  const raw = url.searchParams.get(key);
  if (raw === null) return dflt;
  const v = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(v) || v < min || v > max) throw new UsageError(`rdma url "${url.href}": ${key}=${JSON.stringify(raw)} must be an integer ${min}..${max}`);
  return v;
}

/** The parts of an rdma:// URL; UsageError naming the bad part. `forListen`: the port may be missing (0). */
export function parseRdmaUrl(url: URL, forListen: boolean): RdmaUrl {
  if (url.protocol !== "rdma:") throw new UsageError(`rdma url "${url.href}": the scheme must be rdma`);
  if (url.username !== "" || url.password !== "") throw new UsageError(`rdma url "${url.href}": no user or password goes in an rdma url`);
  if (url.pathname !== "" && url.pathname !== "/") throw new UsageError(`rdma url "${url.href}": unexpected path "${url.pathname}" (expected rdma://host:port)`);
  let host = url.hostname;
  if (host === "localhost") host = "127.0.0.1";
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.split(".").some((p) => Number(p) > 255)) throw new UsageError(`rdma url "${url.href}": host "${url.hostname}" must be a numeric IPv4 address (or localhost)`);
  if (url.port === "" && !forListen) throw new UsageError(`rdma url "${url.href}": missing port`);
  const port = url.port === "" ? 0 : Number(url.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535 || (port === 0 && !forListen)) throw new UsageError(`rdma url "${url.href}": port must be 1..65535${forListen ? " (or 0 on listen)" : ""}`);
  for (const k of url.searchParams.keys()) {
    if (!QUERY_KEYS.has(k)) throw new UsageError(`rdma url "${url.href}": unknown option "${k}" (known: mode, device, port, gid)`);
  }
  for (const k of QUERY_KEYS) {
    if (url.searchParams.getAll(k).length > 1) throw new UsageError(`rdma url "${url.href}": option "${k}" given twice`);
  }
  const m = url.searchParams.get("mode");
  if (m !== null && m !== "cm" && m !== "socket") throw new UsageError(`rdma url "${url.href}": mode=${JSON.stringify(m)} must be "cm" or "socket"`);
  const device = url.searchParams.get("device") ?? undefined;
  if (device !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(device)) throw new UsageError(`rdma url "${url.href}": device=${JSON.stringify(device)} is not a device name`);
  return {
    host,
    port,
    mode: m === "socket" ? "socket" : "cm",
    device,
    portNum: intParam(url, "port", 1, 255, 1),
    gidIndex: intParam(url, "gid", 0, 0xffff, 0),
    socketAsked: m === "socket",
  };
}

function checkInt(where: string, field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw new UsageError(`${where}: ${field} must be an integer ${min}..${max}, got ${String(v)}`);
  return v;
}

/** `opts.rdma` and maxMessageBytes with their defaults; UsageError naming the bad field, or for `auth`. */
export function rdmaTuning(where: string, opts: ConnectOptions | ListenOptions): RdmaTuning {
  if (opts.auth !== undefined) throw new UsageError(`${where}: rdma: auth is not supported yet`);
  const r = opts.rdma as unknown;
  if (r !== undefined && (r === null || typeof r !== "object")) throw new UsageError(`${where}: rdma options must be an object`);
  const o = (r ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!["window", "sqDepth", "zoneBytes", "handshakeTimeoutMs"].includes(k)) throw new UsageError(`${where}: unknown rdma option "${k}" (known: window, sqDepth, zoneBytes, handshakeTimeoutMs)`);
  }
  const t = o.handshakeTimeoutMs ?? DEFAULT_RDMA_HANDSHAKE_TIMEOUT_MS;
  if (typeof t !== "number" || !(t > 0) || !Number.isFinite(t)) throw new UsageError(`${where}: rdma.handshakeTimeoutMs must be a positive number of milliseconds, got ${String(t)}`);
  return {
    window: checkInt(where, "rdma.window", o.window ?? DEFAULT_RDMA_WINDOW, MIN_WINDOW, MAX_WINDOW),
    sqDepth: checkInt(where, "rdma.sqDepth", o.sqDepth ?? DEFAULT_RDMA_SQ_DEPTH, 2, MAX_SQ_DEPTH),
    zoneBytes: checkInt(where, "rdma.zoneBytes", o.zoneBytes ?? DEFAULT_RDMA_ZONE_BYTES, 4096, MAX_U32),
    handshakeTimeoutMs: Math.min(t, 0x7fffffff),
    maxMessageBytes: checkInt(where, "maxMessageBytes", opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, 0, MAX_U32),
  };
}

/** connectTimeoutMs with its default; UsageError unless a positive number (capped where setTimeout would fire at once). */
export function connectTimeout(where: string, opts: ConnectOptions): number {
  const v = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) throw new UsageError(`${where}: connectTimeoutMs must be a positive number of milliseconds, got ${String(v)}`);
  return Math.min(v, 0x7fffffff);
}

/** The URL a listener reports: its host and chosen port, with `?mode=socket` kept when given. */
export function listenerUrl(u: RdmaUrl, port: number): string {
  return `rdma://${u.host}:${port}${u.socketAsked ? "?mode=socket" : ""}`;
}
