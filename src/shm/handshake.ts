/**
 * Control-path pieces shared by `shm` and `inproc`: session names from URLs, the segment shape
 * a connect asks for, the per-socket handshake state, and line framing of the JSON handshake.
 */

import type { Socket } from "bun";
import { ConnectError, UsageError } from "../errors.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, type ConnectOptions } from "../transport/transport.ts";
import type { SegmentConnection } from "./connection.ts";
import { DEFAULT_SEGMENT_CONFIG, type SegmentConfig, type SegmentLayout } from "./layout.ts";

const NAME_RE = /^[A-Za-z0-9._-]{1,100}$/;
/** A peer that connects but does not finish the handshake within this long is dropped. */
export const HANDSHAKE_TIMEOUT_MS = 5000;
/** A handshake line longer than this is garbage. */
const MAX_LINE = 4096;

/** The listener name in `scheme://name`. */
export function sessionName(url: URL): string {
  const name = decodeURIComponent(url.host + url.pathname).replace(/\/+$/, "");
  if (!NAME_RE.test(name)) throw new UsageError(`${url.protocol}// url "${url.href}": name must match ${NAME_RE} (letters, digits, . _ -)`);
  return name;
}

/** The segment a connect builds: the defaults, the caller's shape, classes cut at maxMessageBytes. */
export function segmentConfig(opts: ConnectOptions): SegmentConfig {
  const cfg: SegmentConfig = { ...DEFAULT_SEGMENT_CONFIG, ...opts.segment };
  const max = opts.maxMessageBytes;
  if (max !== undefined) cfg.sizeClasses = cfg.sizeClasses.filter((c, i) => i === 0 || cfg.sizeClasses[i - 1]!.slotBytes < max);
  return cfg;
}

/** The largest body a connecting side accepts (its hello's maxMessageBytes): its option, within the segment's largest class. */
export function ownLimit(opts: ConnectOptions, layout: SegmentLayout): number {
  return Math.min(opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, layout.sizeClasses[layout.sizeClasses.length - 1]!.slotBytes);
}

/**
 * The peer's maxMessageBytes from its handshake line: undefined when it sent none (the segment's
 * largest class applies), null when the value is not a whole number ≥ 0 (a malformed handshake).
 */
export function peerLimit(v: unknown): number | undefined | null {
  if (v === undefined) return undefined;
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : null;
}

/**
 * The fd of a Unix socket (Bun sets `fd` on listener, accepted and dialled sockets; the typings
 * omit it), or -1. Liveness probes poll it; the socket stays owned by Bun.
 */
export function socketFd(s: Socket<Handshake>): number {
  const fd = (s as unknown as { fd?: unknown }).fd;
  return typeof fd === "number" ? fd : -1;
}

/** Per-socket state of a session's control channel. */
export class Handshake {
  conn: SegmentConnection | null = null;
  text = "";
  /** Drops a peer that never completes the handshake; cleared once it does (or leaves). */
  timer: ReturnType<typeof setTimeout> | undefined = undefined;

  /** Appends a chunk; returns the first complete line, "" for an over-long one, null for none yet. */
  line(chunk: Uint8Array): string | null {
    this.text += Buffer.from(chunk).toString("latin1");
    const nl = this.text.indexOf("\n");
    if (nl < 0) return this.text.length > MAX_LINE ? "" : null;
    const line = this.text.slice(0, nl);
    this.text = this.text.slice(nl + 1);
    return line;
  }
}

export function listenError(scheme: string, name: string, e: unknown, scope: string): ConnectError {
  const msg = e instanceof Error ? e.message : String(e);
  const inUse = msg.includes("EADDRINUSE") || (e as { code?: string }).code === "EADDRINUSE";
  return new ConnectError(`${scheme} listen "${name}": ${inUse ? `a listener with this name already exists ${scope}` : msg}`, { cause: e });
}

/** Listener side: a new control socket gets its handshake state and a deadline to finish it. */
export function openHandshake(s: Socket<Handshake>): void {
  s.data = new Handshake();
  s.data.timer = setTimeout(() => {
    if (!s.data.conn && s.readyState > 0) s.terminate();
  }, HANDSHAKE_TIMEOUT_MS);
}

/** Listener side: the session is set up; tell the client, with the largest body this side accepts. */
export function acceptHandshake(s: Socket<Handshake>, conn: SegmentConnection): void {
  s.data.conn = conn;
  clearTimeout(s.data.timer);
  s.write(`${JSON.stringify({ ok: true, maxMessageBytes: conn.caps.maxMessageBytes })}\n`);
}

/** Listener side: refuse with a reason the client reports in its ConnectError. */
export function refuseHandshake(s: Socket<Handshake>, why: string): void {
  s.write(`${JSON.stringify({ error: why })}\n`);
  s.end();
}
