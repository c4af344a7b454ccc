/**
 * Control-path pieces shared by `shm` and `inproc`: session names from URLs and the socket file
 * each names, the segment shape a connect asks for, the per-socket handshake state, line framing
 * of the JSON handshake, and who may talk to whom.
 *
 * Admission (contract: ListenOptions.allow, ConnectOptions.expectUid): both sides read the
 * other's credentials from the kernel (SO_PEERCRED) on the handshake socket, before anything else
 * is said. A listener admits its own effective uid, and the uids and (primary) gids of
 * `allow`; root is not admitted unless listed. A refused peer gets one JSON line
 * `{"error":why,"refused":"auth"}` (its AuthError) and the listener reports the refusal
 * (Listener.onRefused / stats). A client checks first that the listener runs as `expectUid`
 * (default: its own effective uid) and closes at once otherwise, having sent nothing. A
 * listener's refusal text reaches the client's error quoted, escaped and capped (refusalError):
 * it is the listener's word, not ours.
 *
 * Budget (HandshakeBudget): anyone may connect to the socket, admitted or not, so the sockets a
 * listener holds before a session exists (waiting for a hello, or refused and lingering so the
 * peer can read why) are capped, in all and per uid; beyond the cap a socket is closed at once
 * and counted as refused "busy". Without it a local user holding a few hundred connections ran
 * a server out of fds (EMFILE), and Bun's accept loop then spun on the listening socket.
 *
 * Example (listener side):
 *   const admit = admission(`shm listen "x"`, opts.allow);
 *   const why = admit(creds);            // null: admitted; else the refusal text
 *
 * Threading: everything here runs on the thread of the listener or connect that uses it (its
 * event loop); sockets stay owned by Bun.
 */

import type { Socket } from "bun";
import { AuthError, ConnectError, describeThrown, ProtocolError, UsageError, type HotpathError } from "../errors.ts";
import { peerCredentials, type Ucred } from "../ffi/libc.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, type AllowOptions, type ConnectOptions, type PeerCredentials } from "../contract/transport.ts";
import { SegmentConnection, type SegmentConnectionOptions } from "./connection.ts";
import { DEFAULT_SEGMENT_CONFIG, type SegmentConfig, type SegmentLayout } from "./layout.ts";
import { MAX_NAME_CHARS } from "./socket-dir.ts";

const NAME_RE = new RegExp(`^[A-Za-z0-9._-]{1,${MAX_NAME_CHARS}}$`);
/** A peer that connects but does not finish the handshake within this long is dropped. */
export const HANDSHAKE_TIMEOUT_MS = 5000;
/**
 * A peer refused as soon as it connected keeps its socket this long, or until it sends its hello:
 * closing at once can reach the client before its connect completed, and it would see
 * ECONNRESET instead of the reason.
 */
export const REFUSAL_LINGER_MS = 2000;
/** A handshake line longer than this is garbage. */
const MAX_LINE = 4096;
/**
 * Sockets of one listener before their session exists (in their handshake, or refused and
 * lingering): far more than honest clients connecting at once, far below the usual fd limit
 * (1024), so a flood cannot starve the process of fds. A fixed constant; see HandshakeBudget.
 */
export const MAX_PENDING_HANDSHAKES = 256;
/** One uid's share of MAX_PENDING_HANDSHAKES: a quarter, so a flooding uid leaves room for the others. */
export const MAX_PENDING_PER_UID = 64;
/** Characters of a listener's refusal text a client keeps (its own messages fit in a few hundred). */
export const MAX_REFUSAL_CHARS = 512;
if (MAX_PENDING_PER_UID * 4 > MAX_PENDING_HANDSHAKES || MAX_REFUSAL_CHARS > MAX_LINE) throw new Error("handshake limits drifted");

/** The listener name in `scheme://name`: letters, digits, `.`, `_`, `-`, at most MAX_NAME_CHARS (its socket path must fit in sun_path). */
export function sessionName(url: URL): string {
  const name = decodeURIComponent(url.host + url.pathname).replace(/\/+$/, "");
  if (!NAME_RE.test(name)) {
    throw new UsageError(`${url.protocol}// url "${url.href}": name must be 1 to ${MAX_NAME_CHARS} letters, digits, . _ - (its socket path must fit in the 108 bytes of sun_path)`);
  }
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

/** The kernel's credentials of the socket's peer (SO_PEERCRED), or null when they cannot be read. */
export function socketPeer(s: Socket<Handshake>): Ucred | null {
  const fd = socketFd(s);
  if (fd < 0) return null;
  try {
    return peerCredentials(fd);
  } catch {
    return null;
  }
}

/** This process's effective uid: what SO_PEERCRED reports to its peers. */
export const ownUid = (): number => process.geteuid?.() ?? 0;

function shown(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return describeThrown(v);
  }
}

function idList(where: string, what: string, v: unknown): number[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => Number.isSafeInteger(x) && x >= 0 && x <= 0xffffffff)) {
    throw new UsageError(`${where}: allow.${what} must be an array of ${what.slice(0, -1)} numbers (whole numbers 0..4294967295), got ${shown(v)}`);
  }
  return v as number[];
}

/**
 * The admission rule of a listener: a function of the peer's credentials that returns null for
 * a peer it admits, else the reason (for the peer's AuthError). UsageError for a malformed `allow`.
 */
export function admission(where: string, allow: AllowOptions | undefined): (peer: Ucred) => string | null {
  if (allow !== undefined && (allow === null || typeof allow !== "object")) throw new UsageError(`${where}: allow must be an object { uids?, gids? }`);
  const uids = new Set(idList(where, "uids", allow?.uids));
  const gids = new Set(idList(where, "gids", allow?.gids));
  const own = ownUid();
  return (peer) => {
    if (peer.uid === own || uids.has(peer.uid) || gids.has(peer.gid)) return null;
    const widen = peer.uid === 0 ? "root is not admitted unless listed" : "the listener may admit it";
    return `${where}: uid ${peer.uid} (gid ${peer.gid}, pid ${peer.pid}) is not admitted: this listener runs as uid ${own} (${widen} with listen(url, { allow: { uids: [${peer.uid}] } }) or allow.gids)`;
  };
}

/** The uid a connect expects its listener to run as (opts.expectUid, default this process's), checked. */
export function expectedUid(where: string, opts: ConnectOptions): number {
  const uid = opts.expectUid ?? ownUid();
  if (!Number.isSafeInteger(uid) || uid < 0 || uid > 0xffffffff) throw new UsageError(`${where}: expectUid ${String(uid)} must be a uid (a whole number 0..4294967295)`);
  return uid;
}

/** Client side: why the listener behind `s` is not the one expected (an AuthError), or null when it is. */
export function checkListener(where: string, s: Socket<Handshake>, expectUid: number, expectPid?: number): HotpathError | null {
  const peer = socketPeer(s);
  if (peer === null) return new ConnectError(`${where}: cannot read the listener's credentials (SO_PEERCRED)`);
  s.data.creds = peer;
  if (peer.uid !== expectUid) {
    return new AuthError(`${where}: the listener runs as uid ${peer.uid} (pid ${peer.pid}), expected uid ${expectUid}: pass expectUid to connect to another user's server`);
  }
  if (expectPid !== undefined && peer.pid !== expectPid) {
    return new AuthError(`${where}: the listener is process ${peer.pid}, not this process (${expectPid}): inproc peers are threads of one process`);
  }
  return null;
}

// C0 and C1 controls, and the Unicode marks that reorder or break displayed text.
const UNSAFE_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** A peer's text made safe to show inside our message: controls escaped as \uXXXX, at most MAX_REFUSAL_CHARS kept. */
export function peerText(text: string): string {
  const kept = text.length > MAX_REFUSAL_CHARS ? `${text.slice(0, MAX_REFUSAL_CHARS)}… (${text.length - MAX_REFUSAL_CHARS} more characters)` : text;
  return kept.replace(UNSAFE_CHARS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * Client side: the error for a listener's refusal line: AuthError when it refused who we are,
 * else ConnectError. The listener's text is quoted as its own (peerText): a hostile listener
 * cannot forge terminal escapes, log lines or a message of unbounded length.
 */
export function refusalError(where: string, reply: { error?: unknown; refused?: unknown }): HotpathError {
  const said = typeof reply.error === "string" ? `the listener said: "${peerText(reply.error)}"` : "the listener gave no reason";
  return reply.refused === "auth" ? new AuthError(`${where}: refused by the listener (${said})`) : new ConnectError(`${where}: the listener refused (${said})`);
}

/**
 * The sockets a listener holds before their session exists, counted in all and per uid (see the
 * module comment). Belongs to its listener's thread.
 */
export class HandshakeBudget {
  private total = 0;
  private readonly byUid = new Map<number, number>();

  constructor(
    private readonly where: string,
    private readonly maxTotal = MAX_PENDING_HANDSHAKES,
    private readonly maxPerUid = MAX_PENDING_PER_UID,
  ) {}

  /** Counts `hs` under `uid` (-1: unknown) and returns null, or returns why not (nothing counted). */
  take(hs: Handshake, uid: number): ConnectError | null {
    const mine = this.byUid.get(uid) ?? 0;
    if (this.total >= this.maxTotal || mine >= this.maxPerUid) {
      return new ConnectError(
        `${this.where}: too many connections in their handshake (${mine} of uid ${uid}, ${this.total} in all; at most ${this.maxPerUid} per uid and ${this.maxTotal} in all): closed at once`,
      );
    }
    this.total++;
    this.byUid.set(uid, mine + 1);
    hs.budget = this;
    hs.budgetUid = uid;
    return null;
  }

  /** Gives back what `hs` took, if anything; idempotent. */
  release(hs: Handshake): void {
    if (hs.budget !== this) return;
    hs.budget = null;
    this.total--;
    const left = (this.byUid.get(hs.budgetUid) ?? 1) - 1;
    if (left > 0) this.byUid.set(hs.budgetUid, left);
    else this.byUid.delete(hs.budgetUid);
  }
}

/**
 * A session connection that knows its peer's credentials (Connection.peerCredentials): what the
 * shm and inproc setups hand out. Belongs to the thread that created it, like SegmentConnection.
 */
export class SessionConnection extends SegmentConnection {
  readonly peerCredentials: PeerCredentials;
  constructor(o: SegmentConnectionOptions, peer: Ucred) {
    super(o);
    this.peerCredentials = Object.freeze({ pid: peer.pid, uid: peer.uid, gid: peer.gid });
  }
}

/** Per-socket state of a session's control channel. */
export class Handshake {
  conn: SegmentConnection | null = null;
  text = "";
  /** The peer's credentials, read when the socket opened. */
  creds: Ucred | null = null;
  /** This side refused the peer (or the peer's listener): nothing more is read. */
  refused = false;
  /** Drops a peer that never completes the handshake; cleared once it does (or leaves). */
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** The listener's budget this socket counts against until its session exists or it closes (release()). */
  budget: HandshakeBudget | null = null;
  budgetUid = -1;
  // UTF-8 across chunk boundaries: a character split between two reads stays whole.
  private readonly decoder = new TextDecoder();

  /** Listener side: the socket no longer counts against its listener's budget; idempotent. */
  release(): void {
    this.budget?.release(this);
  }

  /** Appends a chunk; returns the first complete line, "" for an over-long one, null for none yet. */
  line(chunk: Uint8Array): string | null {
    this.text += this.decoder.decode(chunk, { stream: true });
    const nl = this.text.indexOf("\n");
    if (nl < 0) return this.text.length > MAX_LINE ? "" : null;
    const line = this.text.slice(0, nl);
    this.text = this.text.slice(nl + 1);
    return line;
  }
}

/**
 * Listener side: a new control socket of a peer with credentials `creds` (null: unknown) gets its
 * handshake state, a place in `budget` and a deadline to finish; `onLate` runs if it does not
 * (the listener refuses it as a protocol error). Over budget the socket is closed at once and
 * the error returned, for the listener to count as refused "busy"; else null. The listener's
 * close handler calls `s.data.release()`.
 */
export function openHandshake(s: Socket<Handshake>, budget: HandshakeBudget, creds: Ucred | null, onLate: () => void): ConnectError | null {
  s.data = new Handshake();
  const busy = budget.take(s.data, creds?.uid ?? -1);
  if (busy !== null) {
    s.data.refused = true;
    s.terminate();
    return busy;
  }
  s.data.timer = setTimeout(() => {
    if (!s.data.conn && !s.data.refused && s.readyState > 0) onLate();
  }, HANDSHAKE_TIMEOUT_MS);
  return null;
}

/** Listener side: the session is set up; tell the client, with the largest body this side accepts. */
export function acceptHandshake(s: Socket<Handshake>, conn: SegmentConnection): void {
  s.data.conn = conn;
  s.data.release();
  clearTimeout(s.data.timer);
  s.write(`${JSON.stringify({ ok: true, maxMessageBytes: conn.caps.maxMessageBytes })}\n`);
}

/**
 * Listener side: refuse with the error's message, which the client reports (as AuthError when
 * `error` is one), and close: at once after the peer's hello, else (`atOpen`, refused for who it
 * is before it said anything) when its hello comes or REFUSAL_LINGER_MS later, whichever is
 * first (see refusedData). Nothing the peer sends afterwards is read.
 */
export function refuseHandshake(s: Socket<Handshake>, error: HotpathError, atOpen = false): void {
  s.data.refused = true;
  clearTimeout(s.data.timer);
  s.write(`${JSON.stringify({ error: error.message, refused: error instanceof AuthError ? "auth" : "protocol" })}\n`);
  if (atOpen) s.data.timer = setTimeout(() => s.end(), REFUSAL_LINGER_MS);
  else s.end();
}

/** Listener side: a refused peer sent something (its hello): its connect completed, close now. */
export function refusedData(s: Socket<Handshake>): void {
  clearTimeout(s.data.timer);
  s.end();
}

/** The ProtocolError for a handshake line that is not what `kind` sends ("hotpath-shm" / "hotpath-inproc"). */
export function parseHello(where: string, line: string, kind: string): Record<string, unknown> | ProtocolError {
  let hello: unknown;
  try {
    hello = JSON.parse(line);
  } catch {
    return new ProtocolError(`${where}: the handshake is not JSON (${JSON.stringify(line.slice(0, 40))})`);
  }
  if (hello === null || typeof hello !== "object" || (hello as { hello?: unknown }).hello !== kind) {
    return new ProtocolError(`${where}: the handshake is not a ${kind} hello`);
  }
  return hello as Record<string, unknown>;
}
