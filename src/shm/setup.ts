/**
 * shm control path: `shm://name` listeners and connects.
 *
 * The listener is an abstract Unix socket `@hotpath-shm-<name>` (no file to clean up; a second
 * listener of the same name fails with EADDRINUSE). Each client creates its own session
 * segment `/hotpath-<name>-<pid>-<random>` (O_CREAT|O_EXCL, mode 0600), writes its header,
 * and sends one JSON line naming it; the server maps it, checks magic, version and layout,
 * unlinks the name (both sides have it mapped now, so a crash leaves nothing in /dev/shm) and
 * answers `{"ok":true}` or `{"error":…}`. The client unlinks the name too on any failure.
 *
 * Both lines carry the side's maxMessageBytes, so each side learns the largest body the other
 * accepts (caps.peerMaxMessageBytes) and refuses a larger send locally.
 *
 * After the handshake the socket stays open for two jobs: its close tells each side the other
 * is gone (a killed process closes it too; spin and blocking loops, which never return to the
 * event loop, ask poll(2) about its fd instead), and single bytes on it are the event-loop
 * doorbell (measured here against a helper Worker parked in futex that wakes the main thread
 * through Atomics.waitAsync: ~10 µs vs ~30 µs p50 to wake an idle process).
 *
 * On close the segment's shared pages are dropped at once (ShmMapping.close), as soon as no
 * received message is held any more.
 */

import type { Socket, UnixSocketListener } from "bun";
import { ConnectError, HotpathError, ProtocolError } from "../errors.ts";
import { fdPeerGone, futexWait, futexWake, shmUnlink, ShmMapping } from "../ffi/libc.ts";
import { ListenerBase } from "../listener-base.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS, type ConnectOptions, type Connection, type Listener, type ListenOptions, type TransportFactory } from "../transport/transport.ts";
import { SegmentConnection, type Signals } from "./connection.ts";
import { acceptHandshake, Handshake, listenError, openHandshake, ownLimit, peerLimit, refuseHandshake, segmentConfig, sessionName, socketFd } from "./handshake.ts";
import { computeLayout, readHeader, SEGMENT_VERSION, writeHeader } from "./layout.ts";

const DOORBELL = new Uint8Array([1]);
const socketPath = (name: string) => `\0hotpath-shm-${name}`;

function signalsFor(mapping: ShmMapping, socket: Socket<Handshake>): Signals {
  const fd = socketFd(socket);
  return {
    wakeBlocking: (off) => void futexWake(mapping, off, 1),
    wakeEventLoop: () => {
      if (socket.readyState === 1) socket.write(DOORBELL);
    },
    waitBlocking: (off, expected, ns) => void futexWait(mapping, off, expected, ns),
    armEventLoop: () => {},
    peerGone: () => fd >= 0 && fdPeerGone(fd),
  };
}

function makeConnection(
  side: "A" | "B",
  mapping: ShmMapping,
  socket: Socket<Handshake>,
  peer: string,
  opts: ConnectOptions | ListenOptions,
  peerMaxMessageBytes: number | undefined,
) {
  return new SegmentConnection({
    transport: "shm",
    buffer: mapping.buffer,
    layout: readHeader(new Uint32Array(mapping.buffer, 0, 32), `shm segment ${mapping.name}`, mapping.lenBytes),
    side,
    signals: signalsFor(mapping, socket),
    peer,
    policy: opts.wait,
    maxMessageBytes: opts.maxMessageBytes,
    peerMaxMessageBytes,
    onLocalClose: () => socket.end(),
    onUnused: () => mapping.close(),
  });
}

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function shmConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const name = sessionName(url);
  const peer = `shm://${name}`;
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const layout = computeLayout(segmentConfig(opts));
  const segName = `/hotpath-${name}-${process.pid}-${randomHex(4)}`;
  const mapping = ShmMapping.create(segName, layout.totalBytes);
  writeHeader(new Uint32Array(mapping.buffer, 0, 32), layout, (Math.random() * 0xffffffff) >>> 0);

  let settle!: (e: HotpathError | null) => void;
  const done = new Promise<HotpathError | null>((r) => (settle = r));
  const hs = new Handshake();
  const timer = setTimeout(() => settle(new ConnectError(`shm connect ${peer}: no handshake within ${timeoutMs} ms`)), timeoutMs);
  let socket: Socket<Handshake>;
  try {
    socket = await Bun.connect<Handshake>({
      unix: socketPath(name),
      data: hs,
      socket: {
        data(s, chunk) {
          if (hs.conn) return hs.conn.onDoorbell();
          const line = hs.line(chunk);
          if (line === null) return;
          let reply: { ok?: boolean; error?: string; maxMessageBytes?: unknown };
          try {
            reply = JSON.parse(line);
          } catch {
            return settle(new ProtocolError(`shm connect ${peer}: handshake reply is not JSON`));
          }
          if (reply.ok !== true) return settle(new ConnectError(`shm connect ${peer}: server refused: ${reply.error ?? "no reason given"}`));
          const peerMax = peerLimit(reply.maxMessageBytes);
          if (peerMax === null) return settle(new ProtocolError(`shm connect ${peer}: handshake reply has maxMessageBytes ${String(reply.maxMessageBytes)}`));
          try {
            hs.conn = makeConnection("A", mapping, s, peer, opts, peerMax);
          } catch (e) {
            return settle(e instanceof HotpathError ? e : new ConnectError(`shm connect ${peer}: ${(e as Error).message}`));
          }
          settle(null);
          if (hs.text.length > 0) hs.conn.onDoorbell();
        },
        close() {
          if (hs.conn) hs.conn.onPeerGone("the server closed the session (or its process exited)");
          else settle(new ConnectError(`shm connect ${peer}: the server closed the control socket during the handshake`));
        },
        error(_s, e) {
          if (!hs.conn) settle(new ConnectError(`shm connect ${peer}: ${e.message}`));
        },
      },
    });
  } catch (e) {
    clearTimeout(timer);
    mapping.close();
    shmUnlink(segName);
    const code = (e as { code?: string }).code;
    const why = code === "ECONNREFUSED" || code === "ENOENT" ? `no shm listener named "${name}"` : (e as Error).message;
    throw new ConnectError(`shm connect ${peer}: ${why}`, { cause: e });
  }
  const hello = { hello: "hotpath-shm", version: SEGMENT_VERSION, segment: segName, bytes: layout.totalBytes, pid: process.pid, maxMessageBytes: ownLimit(opts, layout) };
  socket.write(`${JSON.stringify(hello)}\n`);
  const err = await done;
  clearTimeout(timer);
  // The server unlinks after mapping; unlinking again is harmless and covers every failure path.
  shmUnlink(segName);
  if (err !== null) {
    hs.conn?.close();
    socket.terminate();
    mapping.close();
    throw err;
  }
  return hs.conn!;
}

class ShmListener extends ListenerBase<SegmentConnection> {
  readonly transport = "shm";
  readonly url: string;
  private readonly server: UnixSocketListener<Handshake>;

  constructor(
    readonly name: string,
    private readonly opts: ListenOptions,
  ) {
    super();
    this.url = `shm://${name}`;
    this.server = Bun.listen<Handshake>({
      unix: socketPath(name),
      socket: {
        open: openHandshake,
        data: (s, chunk) => {
          const hs = s.data;
          if (hs.conn) return hs.conn.onDoorbell();
          const line = hs.line(chunk);
          if (line === null) return;
          this.accept(s, line);
          if (hs.conn && hs.text.length > 0) (hs.conn as SegmentConnection).onDoorbell();
        },
        close: (s) => {
          const hs = s.data;
          clearTimeout(hs?.timer);
          if (hs?.conn) {
            this.forget(hs.conn);
            hs.conn.onPeerGone("the client closed the session (or its process exited)");
          }
        },
      },
    });
  }

  protected stop(closeActive: boolean): void {
    this.server.stop(closeActive);
  }

  private accept(s: Socket<Handshake>, line: string): void {
    const refuse = (why: string) => refuseHandshake(s, why);
    let hello: { hello?: string; version?: number; segment?: string; bytes?: number; maxMessageBytes?: unknown };
    try {
      hello = JSON.parse(line);
    } catch {
      return void s.terminate();
    }
    const seg = hello.segment;
    if (hello.hello !== "hotpath-shm" || typeof seg !== "string" || !seg.startsWith(`/hotpath-${this.name}-`) || typeof hello.bytes !== "number") {
      return refuse("malformed handshake");
    }
    if (hello.version !== SEGMENT_VERSION) {
      return refuse(`shm listen "${this.name}": client speaks segment version ${hello.version}, this server ${SEGMENT_VERSION}`);
    }
    const peerMax = peerLimit(hello.maxMessageBytes);
    if (peerMax === null) return refuse(`malformed handshake: maxMessageBytes ${String(hello.maxMessageBytes)}`);
    let mapping: ShmMapping;
    try {
      mapping = ShmMapping.open(seg, hello.bytes);
    } catch (e) {
      return refuse((e as Error).message);
    }
    let conn: SegmentConnection;
    try {
      shmUnlink(seg);
      conn = makeConnection("B", mapping, s, `shm://${this.name} (client)`, this.opts, peerMax);
    } catch (e) {
      mapping.close();
      return refuse((e as Error).message);
    }
    acceptHandshake(s, conn);
    this.accepted(conn);
  }
}

export async function shmListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const name = sessionName(url);
  try {
    return new ShmListener(name, opts);
  } catch (e) {
    throw listenError("shm", name, e, "on this host");
  }
}

export const shmTransport: TransportFactory = {
  scheme: "shm",
  unavailableReason: () => (process.platform === "linux" ? null : "shm needs Linux (futex, abstract Unix sockets)"),
  connect: shmConnect,
  listen: shmListen,
};
