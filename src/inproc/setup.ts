/**
 * inproc: the shm session code over a SharedArrayBuffer, between threads (Bun Workers) of one
 * process. `inproc://name`.
 *
 * Rendezvous: the listener holds the abstract Unix socket `@hotpath-inproc-<pid>-<name>` (a
 * second listener of the same name in this process fails with EADDRINUSE; a connect with no
 * listener is refused at once) and a BroadcastChannel of the same name. A client builds the
 * segment in a SharedArrayBuffer, posts it on the channel with a random id, and sends the id
 * on the socket; the listener pairs the two, checks the header and answers `{"ok":true}`.
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

import type { Socket, UnixSocketListener } from "bun";
import { ConnectError, HotpathError, ProtocolError } from "../errors.ts";
import { fdPeerGone } from "../ffi/libc.ts";
import { ListenerBase } from "../listener-base.ts";
import { SegmentConnection, type Signals } from "../shm/connection.ts";
import { acceptHandshake, Handshake, HANDSHAKE_TIMEOUT_MS, listenError, openHandshake, ownLimit, peerLimit, refuseHandshake, segmentConfig, sessionName, socketFd } from "../shm/handshake.ts";
import { computeLayout, readHeader, SEGMENT_VERSION, writeHeader } from "../shm/layout.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS, type ConnectOptions, type Connection, type Listener, type ListenOptions, type TransportFactory } from "../transport/transport.ts";

const channelName = (name: string) => `hotpath-inproc-${process.pid}-${name}`;

function signalsFor(buffer: SharedArrayBuffer, socket: Socket<Handshake>): Signals {
  const i32 = new Int32Array(buffer);
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
  sab: SharedArrayBuffer,
  socket: Socket<Handshake>,
  peer: string,
  opts: ConnectOptions | ListenOptions,
  peerMaxMessageBytes: number | undefined,
) {
  return new SegmentConnection({
    transport: "inproc",
    buffer: sab,
    layout: readHeader(new Uint32Array(sab, 0, 32), `inproc segment for ${peer}`, sab.byteLength),
    side,
    signals: signalsFor(sab, socket),
    peer,
    policy: opts.wait,
    maxMessageBytes: opts.maxMessageBytes,
    peerMaxMessageBytes,
    onLocalClose: () => socket.end(),
  });
}

export async function inprocConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const name = sessionName(url);
  const peer = `inproc://${name}`;
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const layout = computeLayout(segmentConfig(opts));
  const sab = new SharedArrayBuffer(layout.totalBytes);
  writeHeader(new Uint32Array(sab, 0, 32), layout, (Math.random() * 0xffffffff) >>> 0);
  const id = crypto.randomUUID();

  let settle!: (e: HotpathError | null) => void;
  const done = new Promise<HotpathError | null>((r) => (settle = r));
  const timer = setTimeout(() => settle(new ConnectError(`inproc connect ${peer}: no handshake within ${timeoutMs} ms`)), timeoutMs);
  const hs = new Handshake();
  let socket: Socket<Handshake>;
  try {
    socket = await Bun.connect<Handshake>({
      unix: `\0${channelName(name)}`,
      data: hs,
      socket: {
        data(s, chunk) {
          if (hs.conn) return; // doorbells travel through Atomics, not the socket
          const line = hs.line(chunk);
          if (line === null) return;
          let reply: { ok?: boolean; error?: string; maxMessageBytes?: unknown };
          try {
            reply = JSON.parse(line);
          } catch {
            return settle(new ProtocolError(`inproc connect ${peer}: handshake reply is not JSON`));
          }
          if (reply.ok !== true) return settle(new ConnectError(`inproc connect ${peer}: listener refused: ${reply.error ?? "no reason given"}`));
          const peerMax = peerLimit(reply.maxMessageBytes);
          if (peerMax === null) return settle(new ProtocolError(`inproc connect ${peer}: handshake reply has maxMessageBytes ${String(reply.maxMessageBytes)}`));
          hs.conn = makeConnection("A", sab, s, peer, opts, peerMax);
          settle(null);
        },
        close() {
          if (hs.conn) hs.conn.onPeerGone("the listener side closed (or its Worker ended)");
          else settle(new ConnectError(`inproc connect ${peer}: the listener closed the socket during the handshake`));
        },
      },
    });
  } catch (e) {
    clearTimeout(timer);
    throw new ConnectError(`inproc connect ${peer}: no inproc listener named "${name}" in this process`, { cause: e });
  }
  const bc = new BroadcastChannel(channelName(name));
  bc.postMessage({ id, sab });
  socket.write(`${JSON.stringify({ hello: "hotpath-inproc", version: SEGMENT_VERSION, id, maxMessageBytes: ownLimit(opts, layout) })}\n`);
  const err = await done;
  clearTimeout(timer);
  bc.close();
  if (err !== null) {
    hs.conn?.close();
    socket.terminate();
    throw err;
  }
  return hs.conn!;
}

class InprocListener extends ListenerBase<SegmentConnection> {
  readonly transport = "inproc";
  readonly url: string;
  /** Segments posted on the channel, by id, waiting for their socket line (or the reverse). */
  private readonly segments = new Map<string, SharedArrayBuffer>();
  private readonly waitingSockets = new Map<string, { socket: Socket<Handshake>; peerMax: number | undefined }>();
  private readonly server: UnixSocketListener<Handshake>;
  private readonly bc: BroadcastChannel;

  constructor(
    readonly name: string,
    private readonly opts: ListenOptions,
  ) {
    super();
    this.url = `inproc://${name}`;
    this.server = Bun.listen<Handshake>({
      unix: `\0${channelName(name)}`,
      socket: {
        open: openHandshake,
        data: (s, chunk) => {
          if (s.data.conn) return;
          const line = s.data.line(chunk);
          if (line === null) return;
          let hello: { hello?: string; version?: number; id?: string; maxMessageBytes?: unknown };
          try {
            hello = JSON.parse(line);
          } catch {
            return void s.terminate();
          }
          if (hello.hello !== "hotpath-inproc" || typeof hello.id !== "string") return void s.terminate();
          if (hello.version !== SEGMENT_VERSION) return refuseHandshake(s, `segment version ${hello.version}, this listener speaks ${SEGMENT_VERSION}`);
          const peerMax = peerLimit(hello.maxMessageBytes);
          if (peerMax === null) return refuseHandshake(s, `malformed handshake: maxMessageBytes ${String(hello.maxMessageBytes)}`);
          const sab = this.segments.get(hello.id);
          if (sab) this.accept(s, hello.id, sab, peerMax);
          else this.waitingSockets.set(hello.id, { socket: s, peerMax });
        },
        close: (s) => {
          const hs = s.data;
          clearTimeout(hs?.timer);
          if (hs?.conn) {
            this.forget(hs.conn);
            hs.conn.onPeerGone("the client side closed (or its Worker ended)");
          } else {
            for (const [id, w] of this.waitingSockets) if (w.socket === s) this.waitingSockets.delete(id);
          }
        },
      },
    });
    this.bc = new BroadcastChannel(channelName(name));
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
  }

  protected stop(closeActive: boolean): void {
    this.server.stop(closeActive);
    this.bc.close();
  }

  private accept(s: Socket<Handshake>, id: string, sab: SharedArrayBuffer, peerMax: number | undefined): void {
    this.segments.delete(id);
    this.waitingSockets.delete(id);
    let conn: SegmentConnection;
    try {
      conn = makeConnection("B", sab, s, `${this.url} (client)`, this.opts, peerMax);
    } catch (e) {
      return refuseHandshake(s, (e as Error).message);
    }
    acceptHandshake(s, conn);
    this.accepted(conn);
  }
}

export async function inprocListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const name = sessionName(url);
  try {
    return new InprocListener(name, opts);
  } catch (e) {
    throw listenError("inproc", name, e, "in this process");
  }
}

export const inprocTransport: TransportFactory = {
  scheme: "inproc",
  unavailableReason: () => (process.platform === "linux" ? null : "inproc's rendezvous uses abstract Unix sockets (Linux)"),
  connect: inprocConnect,
  listen: inprocListen,
};
