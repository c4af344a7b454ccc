/**
 * `rdma://host:port?mode=socket` (control path): the QP's number, PSN, LID/GID and the first
 * landing zone's rkey travel over a TCP socket, and each side moves its own QP through the
 * states (RdmaEndpoint.connectQp), as the seed KV store's socket mode does. No rdma_cm: any
 * device and port (`?device=&port=&gid=`) the verbs library lists.
 *
 *   client                                         server (listener's TCP socket)
 *   TCP connect ──────────────────────────────────▶ accept; handshake timer starts
 *   u16 len, HELLO (socket layout, hello.ts) ──────▶ decode; RdmaEndpoint.create (busy: null);
 *                                                    connectQp (RTR, RTS)
 *   ◀────────────────────────────────────────────── u16 len, HELLO, or u16 len, REFUSAL
 *   connectQp (RTR, RTS); READY byte ──────────────▶ the connection opens (onConnection)
 *   connect() resolves
 *
 * The socket then stays open, silent, for the connection's lifetime: it is the liveness token.
 * Its close (the peer closed, or its process died and the kernel closed it) is
 * RdmaConnection.peerGone(TransportClosedError) on the other side; closing a connection closes
 * its socket. A client refused by the listener gets ConnectError with the listener's reason
 * (busy: no receives left in its SRQ; protocol: a bad hello); a bad answer, a socket that
 * closes or fails, or no answer within connectTimeoutMs, is ConnectError too. The listener
 * counts each peer it turns away (ListenerBase: "protocol" for a bad or late hello or a peer
 * that left mid-handshake, "busy" when RdmaEndpoint.create returns null or MAX_RDMA_HANDSHAKING
 * clients are in their handshake already) and never lets a
 * claimed length allocate: a hello frame over MAX_HELLO_FRAME bytes is refused at once.
 *
 * Threading: the JS thread that connects or listens; socket events arrive on its event loop.
 */

import type { Socket, TCPSocketListener } from "bun";
import { ConnectError, describeThrown, HotpathError, ProtocolError, TransportClosedError } from "../errors.ts";
import { ListenerBase } from "../contract/listener-base.ts";
import type { RefusalReason, WaitPolicy } from "../contract/transport.ts";
import type { RdmaConnection } from "./connection.ts";
import { RdmaEndpoint } from "./endpoint.ts";
import { decodeHello, decodeRefusal, encodeHello, encodeRefusal, isRefusal, REFUSED_BUSY, REFUSED_PROTOCOL } from "./hello.ts";
import { listenerUrl, MAX_RDMA_HANDSHAKING, type RdmaTuning, type RdmaUrl } from "./options.ts";
import { RdmaRuntime } from "./runtime.ts";

/** The byte a client sends once its QP is in RTS: the server's connection opens on it. */
export const READY_BYTE = 0x52;
/** A hello is 64 bytes and a refusal at most 148: a frame claiming more is no hotpath peer (nothing is allocated for it). */
export const MAX_HELLO_FRAME = 1024;

/** The frame on the socket: u16 length, then the bytes. */
function frame(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + bytes.length);
  new DataView(out.buffer).setUint16(0, bytes.length, true);
  out.set(bytes, 2);
  return out;
}

/** What arrives on a handshake socket, parsed: whole frames, then single bytes. Owner: its socket. */
class Inbound {
  private buf = new Uint8Array(0);
  /** Set when the peer claimed a frame over MAX_HELLO_FRAME. */
  oversized = false;

  push(chunk: Uint8Array): void {
    if (this.oversized) return;
    const next = new Uint8Array(this.buf.length + chunk.length);
    next.set(this.buf);
    next.set(chunk, this.buf.length);
    this.buf = next;
  }

  /** The next whole frame, or null while incomplete (or oversized: see the flag). */
  takeFrame(): Uint8Array | null {
    if (this.oversized || this.buf.length < 2) return null;
    const len = this.buf[0]! | (this.buf[1]! << 8);
    if (len > MAX_HELLO_FRAME) {
      this.oversized = true;
      this.buf = new Uint8Array(0);
      return null;
    }
    if (this.buf.length < 2 + len) return null;
    const f = this.buf.slice(2, 2 + len);
    this.buf = this.buf.slice(2 + len);
    return f;
  }

  /** The next byte, or -1. */
  takeByte(): number {
    if (this.buf.length === 0) return -1;
    const b = this.buf[0]!;
    this.buf = this.buf.slice(1);
    return b;
  }
}

/** The client's socket: its state, what arrived, and a wake-up for connect()'s waits. Owner: socketConnect, then the connection. */
class ClientLink {
  sock: Socket<unknown> | null = null;
  closed = false;
  failure: string | null = null;
  readonly inbound = new Inbound();
  private wake: (() => void) | null = null;
  private closeCb: (() => void) | null = null;
  private abandoned = false;

  constructor(host: string, port: number) {
    const poke = () => this.poke();
    Bun.connect({
      hostname: host,
      port,
      socket: {
        binaryType: "uint8array",
        open: (s) => {
          this.sock = s;
          poke();
        },
        data: (_s, chunk) => {
          this.inbound.push(chunk);
          poke();
        },
        close: () => {
          this.closed = true;
          const cb = this.closeCb;
          this.closeCb = null;
          cb?.();
          poke();
        },
        error: (s, e) => {
          this.failure ??= describeThrown(e);
          s.end();
        },
        connectError: (_s, e) => {
          this.failure ??= describeThrown(e);
          this.closed = true;
          poke();
        },
      },
    }).then(
      (s) => {
        this.sock = s;
        if (this.abandoned) s.end();
        poke();
      },
      (e) => {
        this.failure ??= describeThrown(e);
        this.closed = true;
        poke();
      },
    );
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Resolves at the next socket event, or false once `deadline` (performance.now()) has passed. */
  async changed(deadline: number): Promise<boolean> {
    const left = deadline - performance.now();
    if (left <= 0) return false;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, left);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    return true;
  }

  /** `cb` runs once when the socket closes (at once if it has). */
  onClose(cb: () => void): void {
    if (this.closed) cb();
    else this.closeCb = cb;
  }

  /** Ends the socket, now or when a dial still under way lands. Idempotent. */
  end(): void {
    this.abandoned = true;
    this.sock?.end();
  }
}

/**
 * Connects in socket mode (see the module comment) within `timeoutMs` for the TCP connect and
 * the handshake together. The connection belongs to the calling thread.
 */
export async function socketConnect(u: RdmaUrl, tuning: RdmaTuning, timeoutMs: number, wait: Partial<WaitPolicy> | undefined): Promise<RdmaConnection> {
  const peerUrl = `rdma://${u.host}:${u.port}?mode=socket`;
  const where = `rdma connect ${peerUrl}`;
  const rt = RdmaRuntime.acquireDevice({ device: u.device, port: u.portNum, gidIndex: u.gidIndex });
  let ep: RdmaEndpoint | null;
  try {
    ep = RdmaEndpoint.create(rt, { maxMessageBytes: tuning.maxMessageBytes, window: tuning.window, sqDepth: tuning.sqDepth, zoneBytes: tuning.zoneBytes });
  } catch (e) {
    rt.release();
    throw e;
  }
  if (ep === null) {
    rt.release();
    throw new ConnectError(`${where}: this thread's rdma runtime has no receives left to reserve ${tuning.window} for another connection (its SRQ is full)`);
  }
  const endpoint: RdmaEndpoint = ep;
  const deadline = performance.now() + timeoutMs;
  const link = new ClientLink(u.host, u.port);
  const fail = (why: string, cause?: unknown): never => {
    link.end();
    endpoint.close();
    rt.release();
    throw new ConnectError(`${where}: ${why}`, cause === undefined ? undefined : { cause });
  };
  // 1. the TCP connect
  while (link.sock === null && !link.closed) if (!(await link.changed(deadline))) break;
  const s = link.sock;
  if (s === null || link.closed) return fail(link.failure !== null ? `cannot reach the listener (${link.failure})` : `no connection within ${timeoutMs} ms`);
  s.write(frame(encodeHello({ ...endpoint.local, mtu: rt.activeMtu }, "socket")));
  // 2. the listener's answer
  let answer = link.inbound.takeFrame();
  while (answer === null && !link.inbound.oversized && !link.closed) {
    if (!(await link.changed(deadline))) break;
    answer = link.inbound.takeFrame();
  }
  if (link.inbound.oversized) return fail(`the listener's answer is no hotpath rdma hello (a frame over ${MAX_HELLO_FRAME} bytes)`);
  if (answer === null) {
    return fail(link.closed ? `the listener closed the socket before it answered${link.failure !== null ? ` (${link.failure})` : ""}` : `connected, but no answer within ${timeoutMs} ms (is it a hotpath rdma listener in socket mode?)`);
  }
  if (isRefusal(answer)) {
    let r: { reason: number; text: string };
    try {
      r = decodeRefusal(answer);
    } catch (e) {
      return fail(describeThrown(e), e);
    }
    return fail(`the listener refused this client (${r.reason === REFUSED_BUSY ? "busy" : r.reason === REFUSED_PROTOCOL ? "protocol" : `reason ${r.reason}`}): ${r.text}`);
  }
  let conn: RdmaConnection;
  try {
    const peer = decodeHello(answer, "socket");
    endpoint.connectQp(peer);
    s.write(new Uint8Array([READY_BYTE]));
    // The connection owns the endpoint, the socket and this runtime reference from here on.
    conn = endpoint.open(peer, peerUrl, wait, () => {
      link.end();
      rt.release();
    });
  } catch (e) {
    return fail(e instanceof HotpathError ? e.message : describeThrown(e), e);
  }
  const c = conn;
  link.onClose(() => c.peerGone(new TransportClosedError(`rdma connection to ${peerUrl}: the peer closed or died (its socket closed)`)));
  return c;
}

/** One client socket of a listener, in its handshake or carrying an open connection's liveness. */
interface ServerSide {
  inbound: Inbound;
  timer: ReturnType<typeof setTimeout> | null;
  ep: RdmaEndpoint | null;
  rt: RdmaRuntime | null;
  peerHello: ReturnType<typeof decodeHello> | null;
  conn: RdmaConnection | null;
  done: boolean;
}

/** A socket-mode listener: its TCP socket hands out QP details; a connection per client. */
export class SocketListener extends ListenerBase<RdmaConnection> {
  readonly transport = "rdma";
  readonly url: string;
  private readonly server: TCPSocketListener<ServerSide>;
  private readonly handshaking = new Set<Socket<ServerSide>>();

  constructor(
    u: RdmaUrl,
    private readonly tuning: RdmaTuning,
    private readonly wait: Partial<WaitPolicy> | undefined,
    /** The listener's own runtime reference: the device is opened (and checked) at listen. */
    private readonly rt: RdmaRuntime,
  ) {
    super();
    this.server = Bun.listen<ServerSide>({
      hostname: u.host,
      port: u.port,
      socket: {
        binaryType: "uint8array",
        open: (s) => this.onOpen(s),
        data: (s, chunk) => this.onData(s, chunk),
        close: (s) => this.onClose(s),
        error: (s) => void s.end(),
      },
    });
    this.url = listenerUrl(u, this.server.port);
  }

  private onOpen(s: Socket<ServerSide>): void {
    const side: ServerSide = { inbound: new Inbound(), timer: null, ep: null, rt: null, peerHello: null, conn: null, done: false };
    s.data = side;
    if (this.handshaking.size >= MAX_RDMA_HANDSHAKING) {
      this.handshaking.add(s);
      this.turnAway(s, new ConnectError(`rdma listener ${this.url}: a client turned away: ${MAX_RDMA_HANDSHAKING} clients already in their handshake (MAX_RDMA_HANDSHAKING)`), "busy", true);
      return;
    }
    this.handshaking.add(s);
    side.timer = setTimeout(() => {
      side.timer = null;
      this.turnAway(s, new ProtocolError(`rdma listener ${this.url}: a client did not finish its handshake within ${this.tuning.handshakeTimeoutMs} ms`), "protocol", false);
    }, this.tuning.handshakeTimeoutMs);
  }

  private onData(s: Socket<ServerSide>, chunk: Uint8Array): void {
    const side = s.data;
    if (side === undefined || side.done) return; // an open connection's socket is silent: anything more is ignored
    side.inbound.push(chunk);
    try {
      if (side.peerHello === null) {
        const f = side.inbound.takeFrame();
        if (side.inbound.oversized) throw new ProtocolError(`rdma listener ${this.url}: a client's hello frame claims over ${MAX_HELLO_FRAME} bytes`);
        if (f === null) return;
        this.onHello(s, side, f);
      }
      if (side.peerHello !== null && side.ep !== null) {
        const b = side.inbound.takeByte();
        if (b === -1) return;
        if (b !== READY_BYTE) throw new ProtocolError(`rdma listener ${this.url}: a client sent byte ${b} where READY (${READY_BYTE}) was expected`);
        this.open(s, side);
      }
    } catch (e) {
      const err = e instanceof ProtocolError ? e : new ProtocolError(`rdma listener ${this.url}: a client's handshake failed: ${describeThrown(e)}`);
      this.turnAway(s, err, "protocol", true);
    }
  }

  private onHello(s: Socket<ServerSide>, side: ServerSide, f: Uint8Array): void {
    let peer;
    try {
      peer = decodeHello(f, "socket");
    } catch (e) {
      throw e instanceof ProtocolError ? new ProtocolError(`rdma listener ${this.url}: ${e.message}`) : e;
    }
    const rt = this.rt;
    rt.retain(); // the connection's own reference (released when it closes)
    side.rt = rt;
    const ep = RdmaEndpoint.create(rt, { maxMessageBytes: this.tuning.maxMessageBytes, window: this.tuning.window, sqDepth: this.tuning.sqDepth, zoneBytes: this.tuning.zoneBytes });
    if (ep === null) {
      this.turnAway(s, new ConnectError(`rdma listener ${this.url}: a client turned away: no receives left to reserve ${this.tuning.window} for another connection (the SRQ is full)`), "busy", true);
      return;
    }
    side.ep = ep;
    ep.connectQp(peer);
    side.peerHello = peer;
    s.write(frame(encodeHello({ ...ep.local, mtu: rt.activeMtu }, "socket")));
  }

  /**
   * READY came: the connection opens. When ep.open() throws (the data path refuses the peer, or
   * registering its memory fails) the handshake is turned away as any other: the endpoint, its
   * runtime reference and the socket go, the peer is told and it counts "protocol".
   */
  private open(s: Socket<ServerSide>, side: ServerSide): void {
    const ep = side.ep!;
    const rt = side.rt!;
    const remote = `rdma://${s.remoteAddress}:${s.remotePort ?? 0}?mode=socket`;
    let conn: RdmaConnection | null = null;
    try {
      conn = ep.open(side.peerHello!, remote, this.wait, () => {
        s.end();
        rt.release();
        if (conn !== null) this.forget(conn);
      });
    } catch (e) {
      const why = e instanceof HotpathError ? e.message : describeThrown(e);
      this.turnAway(s, new ProtocolError(`rdma listener ${this.url}: opening a client's connection failed: ${why}`), "protocol", true);
      return;
    }
    side.ep = null;
    side.rt = null;
    side.done = true;
    if (side.timer !== null) clearTimeout(side.timer);
    side.timer = null;
    this.handshaking.delete(s);
    side.conn = conn;
    try {
      this.accepted(conn);
    } catch (e) {
      conn.abort(new ProtocolError(`rdma listener ${this.url}: the connection callback failed: ${describeThrown(e, true)}`));
    }
  }

  private onClose(s: Socket<ServerSide>): void {
    const side = s.data;
    if (side === undefined) return;
    if (side.conn !== null) {
      side.conn.peerGone(new TransportClosedError(`rdma connection from a client of ${this.url}: the peer closed or died (its socket closed)`));
      return;
    }
    if (!side.done) this.turnAway(s, new ProtocolError(`rdma listener ${this.url}: a client left during its handshake`), "protocol", false);
  }

  /** Ends a handshake: counted and reported once; the refusal goes to the client when `tell`; the endpoint and socket go. */
  private turnAway(s: Socket<ServerSide>, error: HotpathError, reason: RefusalReason, tell: boolean): void {
    const side = s.data;
    if (side === undefined || side.done) return;
    side.done = true;
    if (side.timer !== null) clearTimeout(side.timer);
    side.timer = null;
    this.handshaking.delete(s);
    try {
      side.ep?.close();
    } finally {
      side.ep = null;
      side.rt?.release();
      side.rt = null;
    }
    if (tell) s.write(frame(encodeRefusal(reason === "busy" ? REFUSED_BUSY : REFUSED_PROTOCOL, error.message)));
    s.end();
    this.refused(error, reason);
  }

  protected stop(): void {
    this.server.stop(false);
    // Clients still in their handshake belong to nobody else: they go with the listener (not counted).
    for (const s of [...this.handshaking]) {
      const side = s.data;
      side.done = true;
      if (side.timer !== null) clearTimeout(side.timer);
      side.ep?.close();
      side.rt?.release();
      side.ep = null;
      side.rt = null;
      s.end();
    }
    this.handshaking.clear();
    this.rt.release();
  }
}
