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
 * After the handshake the socket stays open for two jobs: its close tells each side the other
 * is gone (a killed process closes it too), and single bytes on it are the event-loop doorbell.
 */

import type { Socket, UnixSocketListener } from "bun";
import { ConnectError, HotpathError, ProtocolError, UsageError } from "../errors.ts";
import { futexWait, futexWake, shmUnlink, ShmMapping } from "../ffi/libc.ts";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  type ConnectOptions,
  type Connection,
  type Listener,
  type ListenOptions,
  type TransportFactory,
} from "../transport/transport.ts";
import { SegmentConnection, type SegmentWaitPolicy, type Signals } from "./connection.ts";
import { computeLayout, DEFAULT_SEGMENT_CONFIG, readHeader, SEGMENT_VERSION, writeHeader, type SegmentConfig } from "./layout.ts";

export interface ShmOptions extends ConnectOptions {
  /** Segment shape (client side): descriptors per ring and slab size classes. */
  segment?: Partial<SegmentConfig>;
  /** Initial wait policy of the connection. */
  wait?: Partial<SegmentWaitPolicy>;
}

/** A client that connects but sends no handshake within this long is dropped. */
const HANDSHAKE_TIMEOUT_MS = 5000;
const NAME_RE = /^[A-Za-z0-9._-]{1,100}$/;
const DOORBELL = new Uint8Array([1]);

function shmName(url: URL): string {
  const name = decodeURIComponent(url.host + url.pathname).replace(/\/+$/, "");
  if (!NAME_RE.test(name)) throw new UsageError(`shm url "${url.href}": name must match ${NAME_RE} (letters, digits, . _ -)`);
  return name;
}

const socketPath = (name: string) => `\0hotpath-shm-${name}`;

/** Per-connection control state kept on the socket. */
class Control {
  conn: SegmentConnection | null = null;
  text = "";
  /** Drops a client that never completes the handshake; cleared once it does (or leaves). */
  handshakeTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  constructor(public mapping: ShmMapping | null) {}
}

function signalsFor(mapping: ShmMapping, socket: Socket<Control>): Signals {
  return {
    wakeBlocking: (off) => void futexWake(mapping, off, 1),
    wakeEventLoop: () => {
      if (socket.readyState === 1) socket.write(DOORBELL);
    },
    waitBlocking: (off, expected, ns) => void futexWait(mapping, off, expected, ns),
    armEventLoop: () => {},
  };
}

function makeConnection(
  side: "A" | "B",
  mapping: ShmMapping,
  socket: Socket<Control>,
  peer: string,
  wait: Partial<SegmentWaitPolicy> | undefined,
  maxMessageBytes: number | undefined,
) {
  const layout = readHeader(new Uint32Array(mapping.buffer, 0, 32), `shm segment ${mapping.name}`, mapping.lenBytes);
  const conn = new SegmentConnection({
    transport: "shm",
    buffer: mapping.buffer,
    layout,
    side,
    signals: signalsFor(mapping, socket),
    peer,
    policy: wait,
    maxMessageBytes,
    onLocalClose: () => {
      socket.end();
      mapping.close();
    },
  });
  return conn;
}

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function shmConnect(url: URL, opts: ShmOptions): Promise<Connection> {
  const name = shmName(url);
  const peer = `shm://${name}`;
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const cfg: SegmentConfig = { ...DEFAULT_SEGMENT_CONFIG, ...opts.segment };
  if (opts.maxMessageBytes !== undefined) {
    cfg.sizeClasses = cfg.sizeClasses.filter((c, i) => i === 0 || cfg.sizeClasses[i - 1]!.slotBytes < opts.maxMessageBytes!);
  }
  const layout = computeLayout(cfg);
  const segName = `/hotpath-${name}-${process.pid}-${randomHex(4)}`;
  const mapping = ShmMapping.create(segName, layout.totalBytes);
  writeHeader(new Uint32Array(mapping.buffer, 0, 32), layout, (Math.random() * 0xffffffff) >>> 0);

  let settle!: (e: HotpathError | null) => void;
  const handshake = new Promise<HotpathError | null>((r) => (settle = r));
  const control = new Control(mapping);
  let socket: Socket<Control>;
  const timer = setTimeout(() => settle(new ConnectError(`shm connect ${peer}: no handshake within ${timeoutMs} ms`)), timeoutMs);
  try {
    socket = await Bun.connect<Control>({
      unix: socketPath(name),
      data: control,
      socket: {
        data(s, chunk) {
          const c = s.data;
          if (c.conn) return c.conn.onDoorbell();
          c.text += Buffer.from(chunk).toString("latin1");
          const nl = c.text.indexOf("\n");
          if (nl < 0) {
            if (c.text.length > 4096) settle(new ProtocolError(`shm connect ${peer}: handshake reply too long`));
            return;
          }
          let reply: { ok?: boolean; error?: string };
          try {
            reply = JSON.parse(c.text.slice(0, nl));
          } catch {
            return settle(new ProtocolError(`shm connect ${peer}: handshake reply is not JSON`));
          }
          if (reply.ok !== true) return settle(new ConnectError(`shm connect ${peer}: server refused: ${reply.error ?? "no reason given"}`));
          c.conn = makeConnection("A", mapping, s, peer, opts.wait, opts.maxMessageBytes);
          settle(null);
          if (c.text.length > nl + 1) c.conn.onDoorbell();
        },
        close(s) {
          const c = s.data;
          if (c.conn) c.conn.onPeerGone("the server closed the session (or its process exited)");
          else settle(new ConnectError(`shm connect ${peer}: the server closed the control socket during the handshake`));
        },
        error(s, e) {
          if (!s.data.conn) settle(new ConnectError(`shm connect ${peer}: ${e.message}`));
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
  socket.write(`${JSON.stringify({ hello: "hotpath-shm", version: SEGMENT_VERSION, segment: segName, bytes: layout.totalBytes, pid: process.pid })}\n`);
  const err = await handshake;
  clearTimeout(timer);
  // The server unlinks after mapping; unlinking again is harmless and covers every failure path.
  shmUnlink(segName);
  if (err !== null) {
    control.conn?.close();
    socket.terminate();
    mapping.close();
    throw err;
  }
  return control.conn!;
}

class ShmListener implements Listener {
  readonly transport = "shm";
  readonly url: string;
  private callback: ((c: Connection) => void) | null = null;
  private readonly pending: Connection[] = [];
  private readonly conns = new Set<SegmentConnection>();
  private server: UnixSocketListener<Control> | null;

  constructor(
    readonly name: string,
    private readonly opts: ShmOptions,
  ) {
    this.url = `shm://${name}`;
    const peer = `shm://${name} (client)`;
    this.server = Bun.listen<Control>({
      unix: socketPath(name),
      socket: {
        open: (s) => {
          s.data = new Control(null);
          s.data.handshakeTimer = setTimeout(() => {
            if (!s.data.conn && s.readyState > 0) s.terminate();
          }, HANDSHAKE_TIMEOUT_MS);
        },
        data: (s, chunk) => {
          const c = s.data;
          if (c.conn) return c.conn.onDoorbell();
          c.text += Buffer.from(chunk).toString("latin1");
          const nl = c.text.indexOf("\n");
          if (nl < 0) {
            if (c.text.length > 4096) s.terminate();
            return;
          }
          this.accept(s, c.text.slice(0, nl), peer);
          if (c.conn && c.text.length > nl + 1) (c.conn as SegmentConnection).onDoorbell();
        },
        close: (s) => {
          const c = s.data;
          clearTimeout(c?.handshakeTimer);
          if (c?.conn) {
            this.conns.delete(c.conn);
            c.conn.onPeerGone("the client closed the session (or its process exited)");
          }
        },
      },
    });
  }

  private accept(s: Socket<Control>, line: string, peer: string): void {
    let hello: { hello?: string; version?: number; segment?: string; bytes?: number };
    try {
      hello = JSON.parse(line);
    } catch {
      s.terminate();
      return;
    }
    const seg = hello.segment;
    const refuse = (why: string) => {
      s.write(`${JSON.stringify({ error: why })}\n`);
      s.end();
    };
    if (hello.hello !== "hotpath-shm" || typeof seg !== "string" || !seg.startsWith(`/hotpath-${this.name}-`) || typeof hello.bytes !== "number") {
      return refuse("malformed handshake");
    }
    if (hello.version !== SEGMENT_VERSION) {
      return refuse(`shm listen "${this.name}": client speaks segment version ${hello.version}, this server ${SEGMENT_VERSION}`);
    }
    let mapping: ShmMapping;
    try {
      mapping = ShmMapping.open(seg, hello.bytes);
    } catch (e) {
      return refuse((e as Error).message);
    }
    try {
      shmUnlink(seg);
      const conn = makeConnection("B", mapping, s, peer, this.opts.wait, this.opts.maxMessageBytes);
      s.data.mapping = mapping;
      s.data.conn = conn;
      this.conns.add(conn);
    } catch (e) {
      mapping.close();
      return refuse((e as Error).message);
    }
    clearTimeout(s.data.handshakeTimer);
    s.write(`${JSON.stringify({ ok: true })}\n`);
    if (this.callback) this.callback(s.data.conn!);
    else this.pending.push(s.data.conn!);
  }

  onConnection(cb: (conn: Connection) => void): void {
    this.callback = cb;
    for (const c of this.pending.splice(0)) cb(c);
  }

  close(closeConnections = false): void {
    if (this.server === null) return;
    this.server.stop(closeConnections);
    this.server = null;
    if (closeConnections) for (const c of this.conns) c.close();
    this.conns.clear();
  }

  [Symbol.dispose](): void {
    this.close(true);
  }
}

export async function shmListen(url: URL, opts: ShmOptions & ListenOptions): Promise<Listener> {
  const name = shmName(url);
  try {
    return new ShmListener(name, opts);
  } catch (e) {
    const inUse = String((e as Error).message).includes("EADDRINUSE") || (e as { code?: string }).code === "EADDRINUSE";
    throw new ConnectError(`shm listen "${name}": ${inUse ? "a listener with this name already exists" : (e as Error).message}`, { cause: e });
  }
}

export const shmTransport: TransportFactory = {
  scheme: "shm",
  unavailableReason: () => (process.platform === "linux" ? null : "shm needs Linux (futex, abstract Unix sockets)"),
  connect: shmConnect,
  listen: shmListen,
};
