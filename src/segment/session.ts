/**
 * What `shm` and `inproc` share above the segment code: one segment kind, one session listener,
 * one dial. Either way a segment is a SharedArrayBuffer (SegmentMemory): inproc allocates one and
 * posts it to the peer Worker, shm maps a sealed memfd over one and hands the peer process the
 * fd. Only that handshake, how a side sleeps and wakes (Signals) and who is admitted differ; each
 * setup (src/shm/setup.ts, src/inproc/setup.ts) supplies those and nothing else.
 *
 * SessionListener: the Unix socket of a listener (bound through socket-dir.ts), the handshake
 * budget, admission (a subclass says who is admitted), refusals, and the control socket's life
 * after the session exists (its close is the peer's death; with `doorbellOnSocket`, single bytes
 * on it are the event-loop doorbell). dialSession(): connect to that socket, check who listens
 * before anything is sent, send the hello, await the verdict within the connect timeout, and
 * build the session. sessionConnection(): the SegmentConnection over a SegmentMemory, whose
 * memory goes when the connection ends and no received message is held.
 *
 * Example (a setup's connect):
 *   const memory = heapSegment(layout.totalBytes);       // inproc; shm: ShmMapping.createSealed
 *   const conn = await dialSession({ where, path, ..., hello: () => ({ hello: "hotpath-inproc", id }),
 *     connection: (s, peerMax, creds) => sessionConnection({ memory, socket: s, ... }) });
 *
 * Threading: a listener, a dial and their connections belong to the thread that made them (its
 * event loop runs the socket callbacks); Bun owns the sockets.
 */

import type { Socket, UnixSocketListener } from "bun";
import { AuthError, ConnectError, describeThrown, HotpathError, ProtocolError } from "../errors.ts";
import { freshSharedBuffer, releaseFreshSharedBuffer, type Ucred } from "../ffi/libc.ts";
import { ListenerBase } from "../contract/listener-base.ts";
import type { ConnectOptions, ListenOptions } from "../contract/transport.ts";
import type { SegmentConnection, Signals } from "./connection.ts";
import {
  acceptHandshake,
  checkListener,
  Handshake,
  HandshakeBudget,
  HANDSHAKE_TIMEOUT_MS,
  openHandshake,
  peerLimit,
  refusalError,
  refusedData,
  refuseHandshake,
  SessionConnection,
  socketPeer,
} from "./handshake.ts";
import type { SegmentLayout } from "./layout.ts";
import { bindSocket, type BoundSocket } from "./socket-dir.ts";

/**
 * A session segment's memory: `lenBytes` of `sab` from `byteOffset` on. ShmMapping (a memfd
 * mapped over a SharedArrayBuffer) is one; heapSegment() makes the other. close() lets go of it
 * (shm: the shared pages leave at once); idempotent; views still held stay safe to read.
 */
export interface SegmentMemory {
  readonly sab: SharedArrayBuffer;
  readonly byteOffset: number;
  readonly lenBytes: number;
  close(): void;
}

/**
 * A segment in a fresh SharedArrayBuffer (inproc; freshSharedBuffer: pages from the kernel, not
 * recycled and zero-filled storage): the garbage collector frees it once no thread holds it;
 * close() only says the segment ended (releaseFreshSharedBuffer).
 */
export function heapSegment(lenBytes: number): SegmentMemory {
  const sab = freshSharedBuffer(lenBytes);
  return { sab, byteOffset: 0, lenBytes, close: () => releaseFreshSharedBuffer(sab) };
}

/** The header words of a segment (for writeHeader / readHeader). */
export function headerWords(m: SegmentMemory): Uint32Array {
  return new Uint32Array(m.sab, m.byteOffset, 32);
}

/** What sessionConnection() needs. */
export interface SessionSpec {
  transport: "shm" | "inproc";
  memory: SegmentMemory;
  layout: SegmentLayout;
  side: "A" | "B";
  signals: Signals;
  /** The control socket: ended when the connection ends. */
  socket: Socket<Handshake>;
  peer: string;
  opts: ConnectOptions | ListenOptions;
  peerMaxMessageBytes: number | undefined;
  creds: Ucred;
  /** More to let go of when the connection ends (after the socket is ended). */
  onLocalClose?: () => void;
}

/**
 * The session over `spec.memory`: the connection owns the memory from here and closes it once the
 * connection ended and no received message is held. Thread: the caller's.
 */
export function sessionConnection(spec: SessionSpec): SessionConnection {
  const { socket, memory, onLocalClose } = spec;
  return new SessionConnection(
    {
      transport: spec.transport,
      buffer: memory.sab,
      byteOffset: memory.byteOffset,
      layout: spec.layout,
      side: spec.side,
      signals: spec.signals,
      peer: spec.peer,
      policy: spec.opts.wait,
      maxMessageBytes: spec.opts.maxMessageBytes,
      peerMaxMessageBytes: spec.peerMaxMessageBytes,
      onLocalClose: () => {
        socket.end();
        onLocalClose?.();
      },
      onUnused: () => memory.close(),
    },
    spec.creds,
  );
}

/** What a setup tells dialSession(). */
export interface DialSpec {
  /** "shm connect shm://x": how errors name the connect. */
  where: string;
  /** The listener's socket file. */
  path: string;
  timeoutMs: number;
  /** The uid the listener must run as (and, for inproc, the pid it must be). */
  expectUid: number;
  expectPid?: number;
  /** shm: after the session exists, bytes on the socket are the peer's doorbell. */
  doorbellOnSocket: boolean;
  /** What the connection's TransportClosedError says when the control socket closes. */
  peerGoneWhy: string;
  /** The hello line's object, asked once the listener checked out (inproc posts its segment here). */
  hello(): Record<string, unknown>;
  /** The listener accepted: build the session (a throw fails the connect with it). */
  connection(s: Socket<Handshake>, peerMax: number | undefined, creds: Ucred): SessionConnection;
  /** Why Bun.connect itself failed, for the ConnectError. */
  connectFailed(e: unknown): string;
}

/**
 * Dials a session listener: AuthError when the listener is not who `spec` expects or it refuses
 * who we are, ConnectError when nobody listens, the handshake fails or takes longer than
 * spec.timeoutMs, ProtocolError for a malformed reply. On failure nothing is left open here; the
 * caller closes its segment memory. Thread: the caller's (its event loop).
 */
export async function dialSession(spec: DialSpec): Promise<SessionConnection> {
  const { where } = spec;
  let settle!: (e: HotpathError | null) => void;
  const done = new Promise<HotpathError | null>((r) => (settle = r));
  const hs = new Handshake();
  let conn: SessionConnection | null = null;
  const timer = setTimeout(() => settle(new ConnectError(`${where}: no handshake within ${spec.timeoutMs} ms`)), spec.timeoutMs);
  const reply = (s: Socket<Handshake>, line: string): HotpathError | null => {
    let r: { ok?: unknown; error?: unknown; refused?: unknown; maxMessageBytes?: unknown } | null;
    try {
      r = JSON.parse(line);
    } catch {
      return new ProtocolError(`${where}: handshake reply is not JSON`);
    }
    if (r === null || typeof r !== "object") return new ProtocolError(`${where}: handshake reply is not an object`);
    if (r.ok !== true) return refusalError(where, r);
    const peerMax = peerLimit(r.maxMessageBytes);
    if (peerMax === null) return new ProtocolError(`${where}: handshake reply has maxMessageBytes ${String(r.maxMessageBytes)}`);
    try {
      hs.conn = conn = spec.connection(s, peerMax, hs.creds!);
    } catch (e) {
      return e instanceof HotpathError ? e : new ConnectError(`${where}: ${describeThrown(e)}`);
    }
    return null;
  };
  let socket: Socket<Handshake>;
  try {
    socket = await Bun.connect<Handshake>({
      unix: spec.path,
      data: hs,
      socket: {
        open(s) {
          // Who listens is checked before anything is sent: a squatter learns nothing.
          const refused = checkListener(where, s, spec.expectUid, spec.expectPid);
          if (refused === null) return;
          hs.refused = true;
          settle(refused);
          s.terminate();
        },
        data(s, chunk) {
          if (hs.refused) return;
          if (hs.conn) return spec.doorbellOnSocket ? hs.conn.onDoorbell() : undefined;
          const line = hs.line(chunk);
          if (line === null) return;
          const err = reply(s, line);
          settle(err);
          if (err === null && spec.doorbellOnSocket && hs.text.length > 0) hs.conn!.onDoorbell();
        },
        close() {
          if (hs.conn) hs.conn.onPeerGone(spec.peerGoneWhy);
          else settle(new ConnectError(`${where}: the listener closed the control socket during the handshake`));
        },
        error(_s, e) {
          if (!hs.conn) settle(new ConnectError(`${where}: ${e.message}`));
        },
      },
    });
  } catch (e) {
    clearTimeout(timer);
    throw new ConnectError(`${where}: ${spec.connectFailed(e)}`, { cause: e });
  }
  if (!hs.refused) {
    let hello: Record<string, unknown> | null = null;
    try {
      hello = spec.hello();
    } catch (e) {
      settle(e instanceof HotpathError ? e : new ConnectError(`${where}: ${describeThrown(e)}`));
    }
    if (hello !== null) socket.write(`${JSON.stringify(hello)}\n`);
  }
  const err = await done;
  clearTimeout(timer);
  if (err !== null || conn === null) {
    hs.conn?.close();
    socket.terminate();
    throw err ?? new ConnectError(`${where}: the handshake ended without a session`);
  }
  return conn;
}

/**
 * A session listener (shm or inproc): subclasses say who is admitted (admit) and what a hello
 * leads to (hello, which ends in refuse() or acceptSession()). Belongs to the thread that made it.
 */
export abstract class SessionListener extends ListenerBase<SegmentConnection> {
  readonly url: string;
  protected readonly where: string;
  private readonly budget: HandshakeBudget;
  private bound: BoundSocket<UnixSocketListener<Handshake>> | null = null;

  constructor(
    scheme: "shm" | "inproc",
    readonly name: string,
    protected readonly opts: ListenOptions,
    /** shm: after the session exists, bytes on the socket are the peer's doorbell. */
    private readonly doorbellOnSocket: boolean,
    /** What a connection's TransportClosedError says when its control socket closes. */
    private readonly peerGoneWhy: string,
  ) {
    super();
    this.url = `${scheme}://${name}`;
    this.where = `${scheme} listen "${name}"`;
    this.budget = new HandshakeBudget(this.where);
  }

  /** Null when a peer with credentials `creds` is admitted; else the refusal (an AuthError). */
  protected abstract admit(creds: Ucred): HotpathError | null;
  /** A hello line of an admitted peer: ends in refuse() or acceptSession() (now or later). */
  protected abstract hello(s: Socket<Handshake>, line: string): void;
  /** A socket closed before its session existed (inproc forgets a pairing it waits for). */
  protected handshakeClosed(_s: Socket<Handshake>): void {}

  /** Binds the listener's socket file `path`; ConnectError when it cannot (held, untrusted directory). */
  protected async bindAt(path: string): Promise<void> {
    this.bound = await bindSocket(this.where, path, (unix) =>
      Bun.listen<Handshake>({
        unix,
        socket: {
          open: (s) => this.opened(s),
          data: (s, chunk) => {
            const hs = s.data;
            if (hs.refused) return refusedData(s);
            if (hs.conn) return this.doorbellOnSocket ? hs.conn.onDoorbell() : undefined;
            const line = hs.line(chunk);
            if (line === null) return;
            this.hello(s, line);
          },
          close: (s) => {
            const hs = s.data;
            clearTimeout(hs?.timer);
            hs?.release();
            if (hs?.conn) {
              this.forget(hs.conn);
              hs.conn.onPeerGone(this.peerGoneWhy);
            } else if (hs) this.handshakeClosed(s);
          },
        },
      }),
    );
  }

  protected stop(closeActive: boolean): void {
    this.bound?.close(closeActive);
  }

  /** A client connected: closed at once beyond the budget, refused at once unless admitted. */
  private opened(s: Socket<Handshake>): void {
    const creds = socketPeer(s);
    const busy = openHandshake(s, this.budget, creds, () => this.refuse(s, new ProtocolError(`${this.where}: no handshake within ${HANDSHAKE_TIMEOUT_MS} ms`)));
    if (busy !== null) return this.refused(busy, "busy");
    if (creds === null) return this.refuse(s, new ProtocolError(`${this.where}: cannot read the client's credentials (SO_PEERCRED)`), true);
    const why = this.admit(creds);
    if (why !== null) return this.refuse(s, why, true);
    s.data.creds = creds;
  }

  /** Refuses the peer on `s` with `error` (see refuseHandshake) and counts it. */
  protected refuse(s: Socket<Handshake>, error: HotpathError, atOpen = false): void {
    refuseHandshake(s, error, atOpen);
    this.refused(error, error instanceof AuthError ? "auth" : "protocol");
  }

  /** The session on `s` exists: tell the client, hand the connection out, and ring it for bytes that came with the hello. */
  protected acceptSession(s: Socket<Handshake>, conn: SegmentConnection): void {
    acceptHandshake(s, conn);
    this.accepted(conn);
    if (this.doorbellOnSocket && s.data.text.length > 0) conn.onDoorbell();
  }
}
