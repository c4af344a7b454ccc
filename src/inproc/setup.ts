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
 * Doorbells are Atomics.notify / Atomics.wait / Atomics.waitAsync on the segment's words, which
 * work natively on a SharedArrayBuffer. The socket stays open as the liveness signal: a Worker
 * that closes or is terminated closes it, and the other side fails its calls with
 * TransportClosedError.
 */

import type { Socket, UnixSocketListener } from "bun";
import { ConnectError, HotpathError, ProtocolError, UsageError } from "../errors.ts";
import { SegmentConnection, type SegmentWaitPolicy, type Signals } from "../shm/connection.ts";
import { computeLayout, DEFAULT_SEGMENT_CONFIG, readHeader, SEGMENT_VERSION, writeHeader, type SegmentConfig } from "../shm/layout.ts";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  type ConnectOptions,
  type Connection,
  type Listener,
  type ListenOptions,
  type TransportFactory,
} from "../transport/transport.ts";

export interface InprocOptions extends ConnectOptions {
  segment?: Partial<SegmentConfig>;
  wait?: Partial<SegmentWaitPolicy>;
}

const NAME_RE = /^[A-Za-z0-9._-]{1,100}$/;
const HANDSHAKE_TIMEOUT_MS = 5000;

function inprocName(url: URL): string {
  const name = decodeURIComponent(url.host + url.pathname).replace(/\/+$/, "");
  if (!NAME_RE.test(name)) throw new UsageError(`inproc url "${url.href}": name must match ${NAME_RE}`);
  return name;
}

const channelName = (name: string) => `hotpath-inproc-${process.pid}-${name}`;

function signalsFor(buffer: SharedArrayBuffer): Signals {
  const i32 = new Int32Array(buffer);
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
  };
}

class Control {
  conn: SegmentConnection | null = null;
  text = "";
  /** Drops a client that never completes the handshake; cleared once it does (or leaves). */
  handshakeTimer: ReturnType<typeof setTimeout> | undefined = undefined;
}

function makeConnection(side: "A" | "B", sab: SharedArrayBuffer, socket: Socket<Control>, peer: string, opts: InprocOptions) {
  const layout = readHeader(new Uint32Array(sab, 0, 32), `inproc segment for ${peer}`, sab.byteLength);
  return new SegmentConnection({
    transport: "inproc",
    buffer: sab,
    layout,
    side,
    signals: signalsFor(sab),
    peer,
    policy: opts.wait,
    maxMessageBytes: opts.maxMessageBytes,
    onLocalClose: () => socket.end(),
  });
}

function lineOf(c: Control, chunk: Uint8Array): string | null {
  c.text += Buffer.from(chunk).toString("latin1");
  const nl = c.text.indexOf("\n");
  if (nl < 0) return c.text.length > 4096 ? "" : null;
  const line = c.text.slice(0, nl);
  c.text = c.text.slice(nl + 1);
  return line;
}

export async function inprocConnect(url: URL, opts: InprocOptions): Promise<Connection> {
  const name = inprocName(url);
  const peer = `inproc://${name}`;
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const cfg: SegmentConfig = { ...DEFAULT_SEGMENT_CONFIG, ...opts.segment };
  if (opts.maxMessageBytes !== undefined) {
    cfg.sizeClasses = cfg.sizeClasses.filter((c, i) => i === 0 || cfg.sizeClasses[i - 1]!.slotBytes < opts.maxMessageBytes!);
  }
  const layout = computeLayout(cfg);
  const sab = new SharedArrayBuffer(layout.totalBytes);
  writeHeader(new Uint32Array(sab, 0, 32), layout, (Math.random() * 0xffffffff) >>> 0);
  const id = crypto.randomUUID();

  let settle!: (e: HotpathError | null) => void;
  const handshake = new Promise<HotpathError | null>((r) => (settle = r));
  const timer = setTimeout(() => settle(new ConnectError(`inproc connect ${peer}: no handshake within ${timeoutMs} ms`)), timeoutMs);
  const control = new Control();
  let socket: Socket<Control>;
  try {
    socket = await Bun.connect<Control>({
      unix: `\0${channelName(name)}`,
      data: control,
      socket: {
        data(s, chunk) {
          const c = s.data;
          if (c.conn) return; // doorbells travel through Atomics, not the socket
          const line = lineOf(c, chunk);
          if (line === null) return;
          let reply: { ok?: boolean; error?: string };
          try {
            reply = JSON.parse(line);
          } catch {
            return settle(new ProtocolError(`inproc connect ${peer}: handshake reply is not JSON`));
          }
          if (reply.ok !== true) return settle(new ConnectError(`inproc connect ${peer}: listener refused: ${reply.error ?? "no reason given"}`));
          c.conn = makeConnection("A", sab, s, peer, opts);
          settle(null);
        },
        close(s) {
          if (s.data.conn) s.data.conn.onPeerGone("the listener side closed (or its Worker ended)");
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
  socket.write(`${JSON.stringify({ hello: "hotpath-inproc", version: SEGMENT_VERSION, id })}\n`);
  const err = await handshake;
  clearTimeout(timer);
  bc.close();
  if (err !== null) {
    control.conn?.close();
    socket.terminate();
    throw err;
  }
  return control.conn!;
}

class InprocListener implements Listener {
  readonly transport = "inproc";
  readonly url: string;
  private callback: ((c: Connection) => void) | null = null;
  private readonly pending: Connection[] = [];
  private readonly conns = new Set<SegmentConnection>();
  /** Segments posted on the channel, by id, waiting for their socket line (or the reverse). */
  private readonly segments = new Map<string, SharedArrayBuffer>();
  private readonly waitingSockets = new Map<string, Socket<Control>>();
  private server: UnixSocketListener<Control> | null;
  private readonly bc: BroadcastChannel;

  constructor(
    readonly name: string,
    private readonly opts: InprocOptions,
  ) {
    this.url = `inproc://${name}`;
    this.server = Bun.listen<Control>({
      unix: `\0${channelName(name)}`,
      socket: {
        open: (s) => {
          s.data = new Control();
          s.data.handshakeTimer = setTimeout(() => {
            if (!s.data.conn && s.readyState > 0) s.terminate();
          }, HANDSHAKE_TIMEOUT_MS);
        },
        data: (s, chunk) => {
          if (s.data.conn) return;
          const line = lineOf(s.data, chunk);
          if (line === null) return;
          let hello: { hello?: string; version?: number; id?: string };
          try {
            hello = JSON.parse(line);
          } catch {
            return void s.terminate();
          }
          if (hello.hello !== "hotpath-inproc" || typeof hello.id !== "string") return void s.terminate();
          if (hello.version !== SEGMENT_VERSION) {
            s.write(`${JSON.stringify({ error: `segment version ${hello.version}, this listener speaks ${SEGMENT_VERSION}` })}\n`);
            return void s.end();
          }
          const sab = this.segments.get(hello.id);
          if (sab) this.accept(s, hello.id, sab);
          else this.waitingSockets.set(hello.id, s);
        },
        close: (s) => {
          const c = s.data;
          clearTimeout(c?.handshakeTimer);
          if (c?.conn) {
            this.conns.delete(c.conn);
            c.conn.onPeerGone("the client side closed (or its Worker ended)");
          }
        },
      },
    });
    this.bc = new BroadcastChannel(channelName(name));
    this.bc.onmessage = (e) => {
      const { id, sab } = (e.data ?? {}) as { id?: unknown; sab?: unknown };
      if (typeof id !== "string" || !(sab instanceof SharedArrayBuffer)) return;
      const s = this.waitingSockets.get(id);
      if (s) this.accept(s, id, sab);
      else {
        this.segments.set(id, sab);
        setTimeout(() => this.segments.delete(id), HANDSHAKE_TIMEOUT_MS);
      }
    };
  }

  private accept(s: Socket<Control>, id: string, sab: SharedArrayBuffer): void {
    this.segments.delete(id);
    this.waitingSockets.delete(id);
    let conn: SegmentConnection;
    try {
      conn = makeConnection("B", sab, s, `${this.url} (client)`, this.opts);
    } catch (e) {
      s.write(`${JSON.stringify({ error: (e as Error).message })}\n`);
      s.end();
      return;
    }
    s.data.conn = conn;
    this.conns.add(conn);
    clearTimeout(s.data.handshakeTimer);
    s.write(`${JSON.stringify({ ok: true })}\n`);
    if (this.callback) this.callback(conn);
    else this.pending.push(conn);
  }

  onConnection(cb: (conn: Connection) => void): void {
    this.callback = cb;
    for (const c of this.pending.splice(0)) cb(c);
  }

  close(closeConnections = false): void {
    if (this.server === null) return;
    this.server.stop(closeConnections);
    this.server = null;
    this.bc.close();
    if (closeConnections) for (const c of this.conns) c.close();
    this.conns.clear();
  }

  [Symbol.dispose](): void {
    this.close(true);
  }
}

export async function inprocListen(url: URL, opts: InprocOptions & ListenOptions): Promise<Listener> {
  const name = inprocName(url);
  try {
    return new InprocListener(name, opts);
  } catch (e) {
    const inUse = String((e as Error).message).includes("EADDRINUSE");
    throw new ConnectError(`inproc listen "${name}": ${inUse ? "a listener with this name already exists in this process" : (e as Error).message}`, { cause: e });
  }
}

export const inprocTransport: TransportFactory = {
  scheme: "inproc",
  unavailableReason: () => (process.platform === "linux" ? null : "inproc's rendezvous uses abstract Unix sockets (Linux)"),
  connect: inprocConnect,
  listen: inprocListen,
};
