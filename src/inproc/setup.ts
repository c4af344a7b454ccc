/**
 * inproc: the session code shm uses (segment/session.ts), over a SharedArrayBuffer posted
 * between threads (Bun Workers) of one process. `inproc://name`. This file adds only what
 * differs from shm: the rendezvous (the segment itself is posted) and Atomics doorbells.
 *
 * Rendezvous: the listener holds the Unix socket `/tmp/hotpath-<uid>/inproc-<pid>-<name>.sock`
 * (in the per-user directory of shm, socket-dir.ts: checked, the name bound so that a second
 * listener of the same name is told who holds it) and a BroadcastChannel named after it. Both
 * sides read the other's credentials from the kernel (SO_PEERCRED): the listener admits only a
 * client in this very process, and a client only a listener in this very process, since inproc
 * peers are threads of one process (`allow` does not apply; `expectUid` may only be this
 * process's uid). A client builds the segment in a SharedArrayBuffer, posts it on the channel
 * with a random id, and sends the id on the socket; the listener pairs the two, checks the
 * header and answers `{"ok":true}`.
 *
 * Both handshake lines carry the side's maxMessageBytes (caps.peerMaxMessageBytes on the other).
 *
 * Doorbells are Atomics.notify / Atomics.wait / Atomics.waitAsync on the segment's words, which
 * work natively on a SharedArrayBuffer. The socket stays open as the liveness signal: a Worker
 * that closes or is terminated closes it, and the other side fails its calls with
 * TransportClosedError (spin and blocking loops ask poll(2) about its fd). A connection that
 * closes wakes its own pending Atomics.waitAsync, which would otherwise keep the whole segment
 * alive after a peer that died without ringing.
 */

import type { Socket } from "bun";
import { AuthError, ConnectError, describeThrown, HotpathError, ProtocolError, UsageError } from "../errors.ts";
import { fdPeerGone, type Ucred } from "../ffi/libc.ts";
import type { Signals } from "../segment/connection.ts";
import { Handshake, HANDSHAKE_TIMEOUT_MS, ownLimit, ownUid, parseHello, peerLimit, segmentConfig, SessionConnection, sessionName, socketFd } from "../segment/handshake.ts";
import { computeLayout, readHeader, SEGMENT_VERSION, writeHeader } from "../segment/layout.ts";
import { dialSession, headerWords, heapSegment, sessionConnection, SessionListener, type SegmentMemory } from "../segment/session.ts";
import { processExists, removeStaleSockets, socketDir, unlinkAtExit } from "../segment/socket-dir.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS, type ConnectOptions, type Connection, type Listener, type ListenOptions, type TransportFactory } from "../contract/transport.ts";

const channelName = (name: string) => `hotpath-inproc-${process.pid}-${name}`;

function signalsFor(memory: SegmentMemory, socket: Socket<Handshake>): Signals {
  const i32 = new Int32Array(memory.sab, memory.byteOffset, memory.lenBytes >> 2);
  const fd = socketFd(socket);
  let pending = false;
  let callback: (() => void) | null = null;
  return {
    wakeBlocking: (off) => void Atomics.notify(i32, off >> 2),
    wakeEventLoop: (off) => void Atomics.notify(i32, off >> 2),
    waitBlocking: (off, expected, ns) => void Atomics.wait(i32, off >> 2, expected, ns / 1e6),
    armEventLoop(off, expected, onDoorbell) {
      callback = onDoorbell;
      if (pending) return; // one waitAsync at a time; it calls the latest callback
      const r = Atomics.waitAsync(i32, off >> 2, expected);
      const fire = () => {
        pending = false;
        const cb = callback;
        callback = null;
        cb?.();
      };
      if (r.async) {
        pending = true;
        r.value.then(fire);
      } else queueMicrotask(fire);
    },
    // Our own pending waitAsync resolves ("ok") and lets go of the segment.
    disarmEventLoop(off) {
      callback = null;
      if (pending) Atomics.notify(i32, off >> 2);
    },
    peerGone: () => fd >= 0 && fdPeerGone(fd),
  };
}

function makeConnection(
  side: "A" | "B",
  memory: SegmentMemory,
  socket: Socket<Handshake>,
  peer: string,
  opts: ConnectOptions | ListenOptions,
  peerMaxMessageBytes: number | undefined,
  creds: Ucred,
): SessionConnection {
  const layout = readHeader(headerWords(memory), `inproc segment for ${peer}`, memory.lenBytes);
  return sessionConnection({ transport: "inproc", memory, layout, side, signals: signalsFor(memory, socket), socket, peer, opts, peerMaxMessageBytes, creds });
}

const INPROC_NAME_RE = /^inproc-(\d+)-/;

/** The rendezvous socket of listener `name` of this process, in this uid's checked directory (null: no directory). */
function socketPath(where: string, name: string, side: "listen" | "connect"): string | null {
  const dir = side === "listen" ? socketDir(where, ownUid(), "listen") : socketDir(where, ownUid(), "connect");
  if (dir === null) return null;
  // The main thread outlives the Workers that listen: it removes their names when the process exits.
  if (Bun.isMainThread) unlinkAtExit(dir);
  return `${dir}/inproc-${process.pid}-${name}.sock`;
}

/**
 * Inproc socket files whose listener is gone: those of processes that no longer exist (killed),
 * and those of this process that refuse connections (a terminated Worker's). Names carry their
 * process's pid, so no later listen would ever replace them.
 */
function removeGoneInprocSockets(path: string): Promise<string[]> {
  return removeStaleSockets(path.slice(0, path.lastIndexOf("/")), (n) => {
    const m = INPROC_NAME_RE.exec(n);
    if (m === null) return false;
    const pid = Number(m[1]);
    return pid === process.pid || !processExists(pid);
  });
}

/**
 * Connects to listener `inproc://name` of this process (any of its threads). AuthError when the
 * socket's listener is another process; ConnectError when there is none. The connection belongs
 * to the calling thread.
 */
export async function inprocConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const name = sessionName(url);
  const peer = `inproc://${name}`;
  const where = `inproc connect ${peer}`;
  if (opts.expectUid !== undefined && opts.expectUid !== ownUid()) {
    throw new UsageError(`${where}: expectUid ${String(opts.expectUid)} is not this process's uid ${ownUid()}: inproc peers are threads of one process`);
  }
  const layout = computeLayout(segmentConfig(opts));
  const path = socketPath(where, name, "connect");
  const noListener = `no inproc listener named "${name}" in this process`;
  if (path === null) throw new ConnectError(`${where}: ${noListener}`);
  const memory = heapSegment(layout.totalBytes);
  writeHeader(headerWords(memory), layout, (Math.random() * 0xffffffff) >>> 0);
  const id = crypto.randomUUID();
  let bc: BroadcastChannel | null = null;
  try {
    return await dialSession({
      where,
      path,
      timeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      // Only a listener in this very process is an inproc peer; anyone else learns nothing.
      expectUid: ownUid(),
      expectPid: process.pid,
      doorbellOnSocket: false, // doorbells travel through Atomics, not the socket
      peerGoneWhy: "the listener side closed (or its Worker ended)",
      hello: () => {
        bc = new BroadcastChannel(channelName(name));
        bc.postMessage({ id, sab: memory.sab });
        return { hello: "hotpath-inproc", version: SEGMENT_VERSION, id, maxMessageBytes: ownLimit(opts, layout) };
      },
      connection: (s, peerMax, creds) => makeConnection("A", memory, s, peer, opts, peerMax, creds),
      connectFailed: () => noListener,
    });
  } catch (e) {
    memory.close();
    throw e;
  } finally {
    (bc as BroadcastChannel | null)?.close();
  }
}

class InprocListener extends SessionListener {
  readonly transport = "inproc";
  /** Segments posted on the channel, by id, waiting for their socket line (or the reverse). */
  private readonly segments = new Map<string, SharedArrayBuffer>();
  private readonly waitingSockets = new Map<string, { socket: Socket<Handshake>; peerMax: number | undefined }>();
  private bc: BroadcastChannel | null = null;

  constructor(name: string, opts: ListenOptions) {
    super("inproc", name, opts, false, "the client side closed (or its Worker ended)");
  }

  /** Binds the rendezvous socket and opens the channel; ConnectError when the name is held. */
  async bind(): Promise<void> {
    // The channel first: a client may post its segment as soon as the socket answers.
    this.bc = new BroadcastChannel(channelName(this.name));
    this.bc.onmessage = (e) => {
      const { id, sab } = (e.data ?? {}) as { id?: unknown; sab?: unknown };
      if (typeof id !== "string" || !(sab instanceof SharedArrayBuffer)) return;
      const w = this.waitingSockets.get(id);
      if (w) this.accept(w.socket, id, sab, w.peerMax);
      else {
        this.segments.set(id, sab);
        setTimeout(() => this.segments.delete(id), HANDSHAKE_TIMEOUT_MS);
      }
    };
    try {
      const path = socketPath(this.where, this.name, "listen")!;
      await removeGoneInprocSockets(path);
      await this.bindAt(path);
    } catch (e) {
      this.bc.close();
      throw e;
    }
  }

  protected override stop(closeActive: boolean): void {
    super.stop(closeActive);
    this.bc?.close();
  }

  /** Only a thread of this process is admitted. */
  protected admit(creds: Ucred): HotpathError | null {
    if (creds.pid === process.pid) return null;
    return new AuthError(`${this.where}: the client is process ${creds.pid} (uid ${creds.uid}), not this process (${process.pid}): inproc admits only threads of its own process`);
  }

  protected override handshakeClosed(s: Socket<Handshake>): void {
    for (const [id, w] of this.waitingSockets) if (w.socket === s) this.waitingSockets.delete(id);
  }

  protected hello(s: Socket<Handshake>, line: string): void {
    const hello = parseHello(this.where, line, "hotpath-inproc");
    if (hello instanceof ProtocolError) return this.refuse(s, hello);
    if (typeof hello.id !== "string") return this.refuse(s, new ProtocolError(`${this.where}: malformed handshake: id ${String(hello.id)}`));
    if (hello.version !== SEGMENT_VERSION) return this.refuse(s, new ProtocolError(`${this.where}: segment version ${String(hello.version)}, this listener speaks ${SEGMENT_VERSION}`));
    const peerMax = peerLimit(hello.maxMessageBytes);
    if (peerMax === null) return this.refuse(s, new ProtocolError(`${this.where}: malformed handshake: maxMessageBytes ${String(hello.maxMessageBytes)}`));
    const sab = this.segments.get(hello.id);
    if (sab) this.accept(s, hello.id, sab, peerMax);
    else this.waitingSockets.set(hello.id, { socket: s, peerMax });
  }

  private accept(s: Socket<Handshake>, id: string, sab: SharedArrayBuffer, peerMax: number | undefined): void {
    this.segments.delete(id);
    this.waitingSockets.delete(id);
    let conn: SessionConnection;
    try {
      const memory: SegmentMemory = { sab, byteOffset: 0, lenBytes: sab.byteLength, close() {} };
      conn = makeConnection("B", memory, s, `${this.url} (client)`, this.opts, peerMax, s.data.creds!);
    } catch (e) {
      return this.refuse(s, new ProtocolError(`${this.where}: ${describeThrown(e)}`));
    }
    this.acceptSession(s, conn);
  }
}

/**
 * Listens on `inproc://name` for threads of this process. ConnectError when this process already
 * has a listener of that name. The listener belongs to the calling thread.
 */
export async function inprocListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const listener = new InprocListener(sessionName(url), opts);
  await listener.bind();
  return listener;
}

export const inprocTransport: TransportFactory = {
  scheme: "inproc",
  unavailableReason: () => (process.platform === "linux" ? null : "inproc's rendezvous needs Linux (SO_PEERCRED on Unix sockets)"),
  connect: inprocConnect,
  listen: inprocListen,
};
