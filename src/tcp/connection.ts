/**
 * TcpConnection: the Transport contract over one Bun TCP socket (data path).
 *
 * A connection starts in its handshake (handshake.ts): it writes its hello once the socket is
 * open (a TLS socket: once its TLS handshake passed, so the hello and the token proofs travel
 * inside TLS) and reads the peer's, then the token proofs when auth is on, before anything
 * else; `onHandshake` reports the outcome, and only then is the connection handed out, with
 * `caps.peerMaxMessageBytes` from the peer's hello.
 *
 * Sends append a frame to one bounded output buffer (output.ts), written straight from it by
 * offset and length: at the end of a read's handling, in poll(), else in a microtask for the
 * first send after a quiet tick, and at the end of the tick (setImmediate) for sends made after
 * a flush, so a Bun.serve handler sending once per HTTP request costs one write per tick, not
 * one per request (`writes` counts them). A short write keeps the rest and waits for `drain`; a
 * frame that would take the buffer past `sendBufferBytes` gets Full (one frame larger than the
 * budget goes when nothing is queued). Reads are parsed by FrameParser, every whole frame of a
 * read in place, each message handed to the receiver inline; released messages are reused.
 *
 * Limits (limits.ts): a split frame larger than `connectionBufferBytes` reserves its size from
 * the listener's BufferPool first, and reading pauses until it gets it; on an accepted
 * connection reading also pauses while half the output budget waits for the peer to read, and
 * a peer that stays so for `slowConsumerMs` is cut off; the sweeper enforces the handshake,
 * frame and idle timeouts. Idle is inactivity alone: no whole frame received or queued for
 * sending for `idleTimeoutMs` closes the connection, whatever it still waits for (a call
 * running longer than that with nothing else moving is cut). Closing for any reason still
 * hands output already queued to the socket (at most CLOSE_LINGER_MS, without keeping the
 * process alive), so replies queued before a protocol violation go out.
 *
 * Ownership: the socket belongs to this object; close() ends it. Call from the thread that
 * created the connection only.
 */

import type { Socket } from "bun";
import { HotpathError, ProtocolError, TransportClosedError, UsageError, describeThrown } from "../errors.ts";
import {
  DEFAULT_MAX_HEAD_BYTES,
  SEND_CLOSED,
  SEND_FULL,
  SEND_OK,
  bufferPrefix,
  oversizedSendMessage,
  sendLimit,
  type Capabilities,
  type Connection,
  type Receiver,
  type RefusalReason,
  type SendStatus,
  type WaitPolicy,
} from "../contract/transport.ts";
import { WaitList } from "../contract/waitlist.ts";
import { FRAME_PREFIX_BYTES, FrameParser, TcpRxMessage, encodeFrameStart, writeWords } from "./frame.ts";
import { TcpHandshake, handshakeError, type HandshakeFailure } from "./handshake.ts";
import type { BufferPool, Sweepable, Sweeper, TcpLimits } from "./limits.ts";
import { OutputBuffer } from "./output.ts";
import { PAUSE_CLOSED, PAUSE_NO_RECEIVER, PAUSE_OUTPUT, PAUSE_RESERVE, ReadGate } from "./read-gate.ts";

/** Bodies at least this large go to the socket without a copy when nothing is queued ahead. */
const DIRECT_WRITE_BYTES = 64 << 10;
/** trySendWords' head: six 32-bit words (the RPC wire header). */
const WORDS_HEAD_BYTES = 24;
/** How long a closed connection keeps trying to hand queued output to a slow peer. */
const CLOSE_LINGER_MS = 5000;

export interface TcpConnectionOptions {
  peer: string;
  maxMessageBytes: number;
  limits: TcpLimits;
  /** "connect": handshake failures are ConnectErrors (AuthErrors) for the caller; "accept": the peer is refused. */
  role: "connect" | "accept";
  /** The listener's URL, for an accepted connection's messages. */
  local?: string;
  /** The shared token's bytes (authKey), or null: no authentication. */
  key: Uint8Array | null;
  /** A TLS socket: the hello waits for onTlsHandshake. */
  tls: boolean;
  /** The listener's budget for large split frames; null: a frame is never kept waiting. */
  pool: BufferPool | null;
  /** The deadline checker this connection joins until it closes; null when no time limit is on. */
  sweeper: Sweeper | null;
  /**
   * Called once: the handshake passed (error null), or failed for `reason` (AuthError for
   * "auth", else ConnectError on a client, ProtocolError on a listener), or was given up by
   * this side (drop(): reason null).
   */
  onHandshake(conn: TcpConnection, error: HotpathError | null, reason: RefusalReason | null): void;
}

/** A skipped oversized message that arrived before setReceiver(). */
type EarlyOversized = { head: Uint8Array; bodyLen: number };

export class TcpConnection implements Connection, Sweepable {
  readonly transport = "tcp";
  /** wait() parks on the event loop, never blocks the thread. */
  readonly waitsOnEventLoop = true;
  caps: Capabilities;
  readonly peer: string;
  closed = false;
  closeError: HotpathError | null = null;
  /** True until the handshake passed (or failed). */
  handshaking = true;
  /** The peer's hello arrived and passed (the handshake may still wait for token proofs). */
  get peerHelloArrived(): boolean {
    return this.hs.peer !== null;
  }

  private readonly socket: Socket<TcpConnection>;
  private readonly opts: TcpConnectionOptions;
  private readonly limits: TcpLimits;
  private readonly parser: FrameParser;
  private receiver: Receiver | null = null;
  /** Messages (and skipped oversized ones) that arrived before setReceiver(). */
  private early: Array<TcpRxMessage | EarlyOversized> = [];
  private earlyBytes = 0;
  private readonly hs: TcpHandshake;
  /** Output queued for the socket, at most sendBufferBytes (or one larger frame): output.ts. */
  private readonly out: OutputBuffer;
  private readonly sendBufferBytes: number;
  private flushScheduled = false;
  private flushedThisTick = false; // a flush ran this tick: later sends wait for its end (tickEnd)
  private awaitingDrain = false;
  private inData = false;
  private lingering = false; // close() with output still queued: the socket ends once it drained
  private lingerTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  private readonly gate: ReadGate;
  /** @internal socket writes of queued output so far (tests: sends of one tick share one). */
  get writes(): number {
    return this.out.writes;
  }
  /** A whole frame arrived or was queued for sending since the last sweep (the idle rule). */
  private activity = false;
  private readonly openedAt = performance.now();
  private idleSince = this.openedAt;
  private partialSince = -1; // when the frame now arriving began (after the last whole one), or -1
  private overSince = 0; // when reading paused for unread output
  private readonly waiters = new WaitList();
  /** trySendWords' head in bytes, for the large bodies that take the direct-write path. */
  private readonly wordsHead = new Uint8Array(WORDS_HEAD_BYTES);
  private readonly flushTask = () => {
    this.flushScheduled = false;
    if (!this.flushedThisTick) {
      this.flushedThisTick = true;
      setImmediate(this.tickEnd);
    }
    this.flush();
  };
  /** The end of a tick that flushed: what later sends of that tick queued goes now, in one write. */
  private readonly tickEnd = () => {
    this.flushedThisTick = false;
    if (this.flushScheduled) this.flushTask();
  };

  constructor(socket: Socket<TcpConnection>, opts: TcpConnectionOptions) {
    this.socket = socket;
    this.opts = opts;
    this.limits = opts.limits;
    this.peer = opts.peer;
    this.sendBufferBytes = opts.limits.sendBufferBytes;
    this.out = new OutputBuffer(this.sendBufferBytes);
    this.caps = this.capsWith(opts.maxMessageBytes, DEFAULT_MAX_HEAD_BYTES);
    this.gate = new ReadGate(socket, opts.pool, opts.limits.connectionBufferBytes, () => this.resumeGranted());
    this.parser = new FrameParser(DEFAULT_MAX_HEAD_BYTES, opts.maxMessageBytes, (msg) => this.deliver(msg), {
      reserve: (n) => this.gate.reserve(n),
      unreserve: () => this.gate.unreserve(),
      canSkip: () => this.receiver === null || typeof this.receiver.onOversized === "function",
      onOversized: (head, bodyLen) => this.oversized(head, bodyLen),
    });
    socket.setNoDelay(true);
    opts.sweeper?.add(this);
    this.hs = new TcpHandshake(opts.role, opts.key, opts.maxMessageBytes, (b) => this.writeControl(b));
    if (!opts.tls) this.writeControl(this.hs.hello);
  }

  setReceiver(receiver: Receiver): void {
    // A close before this had no receiver to tell; one during the early deliveries tells it itself.
    const closedBefore = this.closed;
    this.receiver = receiver;
    const early = this.early;
    this.early = [];
    this.earlyBytes = 0;
    this.gate.set(PAUSE_NO_RECEIVER, false);
    try {
      for (const e of early) {
        if (this.closed) break;
        if (e instanceof TcpRxMessage) receiver.onMessage(e);
        else if (receiver.onOversized) receiver.onOversized(e.head, e.bodyLen);
        else {
          this.abort(new ProtocolError(`tcp frame: body of ${e.bodyLen} bytes exceeds maxMessageBytes ${this.caps.maxMessageBytes}`));
        }
      }
    } catch (e) {
      this.receiverFailed(e);
    }
    if (closedBefore) receiver.onClose(this.closeError);
  }

  trySend(head: Uint8Array, body?: Uint8Array | null): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const bodyLen = body ? body.length : 0;
    if (bodyLen >= DIRECT_WRITE_BYTES && this.out.length === 0 && !this.awaitingDrain) {
      this.checkSizes(head.length, bodyLen);
      return this.writeDirect(head, body!);
    }
    const at = this.claimFrame(head.length, bodyLen);
    if (at < 0) return SEND_FULL;
    const b = this.out.bytes;
    b.set(head, at + FRAME_PREFIX_BYTES);
    if (bodyLen > 0) b.set(body!, at + FRAME_PREFIX_BYTES + head.length);
    this.queued(FRAME_PREFIX_BYTES + head.length + bodyLen);
    return SEND_OK;
  }

  /**
   * trySend() of a 24-byte head given as six little-endian words (the RPC wire header): the
   * words are stored straight into the output buffer, with no head bytes built or copied. Same
   * statuses, limits and UsageErrors as trySend(); the body is copied before it returns.
   */
  trySendWords(h0: number, h1: number, h2: number, h3: number, h4: number, h5: number, body: Uint8Array): SendStatus {
    if (this.closed) return SEND_CLOSED;
    const bodyLen = body.length;
    if (bodyLen >= DIRECT_WRITE_BYTES) {
      // Large bodies take the direct-write path: the head is built in bytes once here.
      writeWords(this.wordsHead, 0, h0, h1, h2, h3, h4, h5);
      return this.trySend(this.wordsHead, body);
    }
    const at = this.claimFrame(WORDS_HEAD_BYTES, bodyLen);
    if (at < 0) return SEND_FULL;
    const b = this.out.bytes;
    writeWords(b, at + FRAME_PREFIX_BYTES, h0, h1, h2, h3, h4, h5);
    if (bodyLen > 0) b.set(body, at + FRAME_PREFIX_BYTES + WORDS_HEAD_BYTES);
    this.queued(FRAME_PREFIX_BYTES + WORDS_HEAD_BYTES + bodyLen);
    return SEND_OK;
  }

  /** TCP has no transport memory: a heap buffer, copied into the socket on send. */
  allocBuffer(lenBytes: number): Uint8Array | null {
    if (this.closed) return null;
    const limit = sendLimit(this.caps);
    if (!(lenBytes >= 0) || lenBytes > limit) {
      throw new UsageError(`tcp allocBuffer: ${lenBytes} bytes is outside 0..${limit} (this side's maxMessageBytes ${this.caps.maxMessageBytes}, the peer's ${this.caps.peerMaxMessageBytes})`);
    }
    return new Uint8Array(lenBytes);
  }

  trySendBuffer(head: Uint8Array, buffer: Uint8Array, lenBytes: number = buffer.length): SendStatus {
    return this.trySend(head, bufferPrefix("tcp", buffer, lenBytes));
  }

  releaseBuffer(_buffer: Uint8Array): void {} // heap memory: nothing to give back

  /** Messages arrive from the event loop; poll() pushes queued output now and delivers nothing. */
  poll(): number {
    if (this.out.length > 0 && !this.awaitingDrain && !this.closed) this.flush();
    return 0;
  }

  wait(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    return this.waiters.wait(timeoutMs);
  }

  setWaitPolicy(_policy: Partial<WaitPolicy>): void {} // the event loop parks TCP waits: nothing to spin on

  /**
   * Closes this side. Output already queued still goes out: if the socket cannot take it all
   * now, the socket ends once it drained (at most CLOSE_LINGER_MS later, then it is cut).
   */
  close(): void {
    this.shut(null);
  }

  /**
   * Closes at once for a protocol violation: the receiver sees `error`, nothing more is read or
   * accepted for sending, and output queued before the violation (replies to valid requests)
   * is still handed to the socket as close() does.
   */
  abort(error: HotpathError): void {
    this.shut(error);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- called by the socket handlers and the listener in setup.ts ----

  onData(chunk: Uint8Array): void {
    if (this.closed) return;
    if (this.handshaking) {
      const at = this.hs.push(chunk);
      if (this.hs.failure) return this.failHandshake(this.hs.failure);
      if (at < 0) return;
      this.passHandshake();
      if (at === chunk.length || this.closed) return;
      chunk = chunk.subarray(at);
    }
    this.parse(chunk);
  }

  /** A TLS socket's handshake ended: the hello goes now, inside TLS, or the connection fails. */
  onTlsHandshake(ok: boolean, failureText: string): void {
    if (!this.handshaking || this.closed) return;
    if (ok) this.writeControl(this.hs.hello);
    else this.failHandshake(this.hs.abandon(failureText));
  }

  onDrain(): void {
    this.awaitingDrain = false;
    if (this.lingering) {
      this.flushOut();
      if (this.out.length === 0) {
        clearTimeout(this.lingerTimer);
        this.socket.end();
      }
      return;
    }
    if (this.out.length > 0) this.flush();
    else this.checkOutput();
    if (!this.awaitingDrain) this.waiters.wake(true);
  }

  onSocketClosed(cause?: unknown): void {
    clearTimeout(this.lingerTimer);
    if (this.handshaking) {
      const tlsHint = this.opts.tls && this.opts.role === "accept" && this.hs.receivedBytes === 0 ? " (over TLS: a client that does not trust this listener's certificate closes so)" : "";
      this.failHandshake(this.hs.abandon(this.hs.closedText() + tlsHint));
      return;
    }
    if (this.closed) return;
    this.finish(new TransportClosedError(`tcp connection to ${this.peer} closed by the peer`, { cause }));
  }

  /** Drops a connection still in its handshake (listener closing, connect timed out); not a refusal. */
  drop(reason: string): void {
    if (this.handshaking) this.failHandshake(this.hs.abandon(reason), false);
    else this.abort(new TransportClosedError(`tcp connection to ${this.peer}: ${reason}`));
  }

  /** Sweepable: enforces the handshake, slow-consumer, frame and idle limits. */
  sweep(now: number): void {
    const l = this.limits;
    if (this.handshaking) {
      if (l.handshakeTimeoutMs > 0 && now - this.openedAt >= l.handshakeTimeoutMs) {
        const what = this.hs.receivedBytes === 0 ? "sent no hello" : "did not finish its handshake";
        this.failHandshake(this.hs.abandon(`${what} within handshakeTimeoutMs ${l.handshakeTimeoutMs}`));
      }
      return;
    }
    if (this.closed) return;
    if (l.slowConsumerMs > 0 && this.gate.has(PAUSE_OUTPUT) && now - this.overSince >= l.slowConsumerMs) {
      return this.cut(new TransportClosedError(`tcp connection to ${this.peer}: the peer left ${this.out.length} bytes of output unread for slowConsumerMs ${l.slowConsumerMs}; disconnected`));
    }
    if (l.frameTimeoutMs > 0 && this.partialSince >= 0 && !this.parser.stalledForReserve && now - this.partialSince >= l.frameTimeoutMs) {
      return this.abort(new ProtocolError(`tcp connection to ${this.peer}: a frame was still incomplete after frameTimeoutMs ${l.frameTimeoutMs}`));
    }
    if (l.idleTimeoutMs > 0) {
      if (this.activity) {
        this.activity = false;
        this.idleSince = now;
      } else if (now - this.idleSince >= l.idleTimeoutMs) {
        this.shut(new TransportClosedError(`tcp connection to ${this.peer}: idle for idleTimeoutMs ${l.idleTimeoutMs}; closed`));
      }
    }
  }

  // ---- internals ----

  private capsWith(peerMaxMessageBytes: number, peerMaxHeadBytes: number): Capabilities {
    const max = this.opts.maxMessageBytes;
    return {
      maxInlineBytes: max,
      maxMessageBytes: max,
      peerMaxMessageBytes,
      maxHeadBytes: Math.min(DEFAULT_MAX_HEAD_BYTES, peerMaxHeadBytes),
      zeroCopy: false,
      rma: false,
      sameHostOnly: false,
    };
  }

  /** UsageError for a body or head over the limits (contract item 6). */
  private checkSizes(headLen: number, bodyLen: number): void {
    const caps = this.caps;
    if (bodyLen > caps.maxMessageBytes || bodyLen > caps.peerMaxMessageBytes || headLen > caps.maxHeadBytes) this.sizeError(headLen, bodyLen);
  }

  /**
   * Room for one frame in the output buffer, its prefix written: the offset of the frame, or
   * -1 when it would pass the budget (Full; a frame bigger than the whole budget still goes
   * when nothing is queued). Throws UsageError for sizes over the limits.
   */
  private claimFrame(headLen: number, bodyLen: number): number {
    this.checkSizes(headLen, bodyLen);
    const at = this.out.claimFrame(headLen, bodyLen);
    if (at < 0) this.checkOutput();
    return at;
  }

  /** A frame of `frameLen` bytes was written where claimFrame() said: queue it and see that it goes out this tick. */
  private queued(frameLen: number): void {
    const out = this.out;
    out.commit(frameLen);
    this.activity = true;
    if (this.awaitingDrain) {
      // Queued behind unread output: past half the budget, stop taking in more work.
      if (!this.gate.has(PAUSE_OUTPUT) && 2 * out.length >= this.sendBufferBytes) this.checkOutput();
    } else if (!this.flushScheduled && !this.inData) {
      // Inside onData the read's handler flushes at its end; elsewhere a microtask does, or
      // the tick's end when one already flushed in this tick.
      this.flushScheduled = true;
      if (!this.flushedThisTick) queueMicrotask(this.flushTask);
    }
  }

  private sizeError(headLen: number, bodyLen: number): never {
    if (bodyLen > sendLimit(this.caps)) throw new UsageError(oversizedSendMessage("tcp", bodyLen, this.caps));
    throw new UsageError(`tcp send: head of ${headLen} bytes exceeds maxHeadBytes ${this.caps.maxHeadBytes}`);
  }

  /** The handshake passed on this side: the peer's limits apply, and the connection is handed out. */
  private passHandshake(): void {
    const h = this.hs.peer!;
    this.caps = this.capsWith(h.maxMessageBytes, h.maxHeadBytes);
    this.handshaking = false;
    this.idleSince = performance.now();
    this.opts.onHandshake(this, null, null);
  }

  /** Ends a failed handshake: the typed error for it, the peer's farewell (if any), the socket closed. */
  private failHandshake(f: HandshakeFailure, refusal = true): void {
    if (!this.handshaking) return;
    this.handshaking = false;
    const err = handshakeError(this.opts.role, this.peer, this.opts.local ?? "", f);
    this.closed = true;
    this.closeError = err;
    this.opts.sweeper?.delete(this);
    if (f.farewell !== null && this.out.length === 0) this.socket.end(f.farewell);
    else this.socket.terminate();
    this.opts.onHandshake(this, err, refusal ? f.reason : null);
  }

  /** Writes handshake bytes; what the socket does not take now waits in the output buffer for drain. */
  private writeControl(b: Uint8Array): void {
    if (this.out.length === 0 && !this.awaitingDrain) {
      const w = this.socket.write(b);
      if (w < 0 || w === b.length) return; // w < 0: the socket is gone; its close handler reports it
      b = b.subarray(w);
    }
    this.out.push(b);
    this.awaitingDrain = true;
  }

  /** Parses a chunk of frames; any exception (a bad frame, a receiver that threw) closes the connection. */
  private parse(chunk: Uint8Array | null): void {
    this.inData = true;
    const before = this.parser.completed;
    try {
      if (chunk === null) this.parser.resume();
      else this.parser.push(chunk);
    } catch (e) {
      this.receiverFailed(e);
      return;
    } finally {
      this.inData = false;
    }
    if (this.closed) return;
    if (this.parser.completed !== before) this.activity = true;
    if (!this.parser.partial) this.partialSince = -1;
    else if (this.partialSince < 0 || this.parser.completed !== before) this.partialSince = performance.now();
    // Replies produced while this read was parsed go out now, in one write with each other.
    if (this.out.length > 0 && !this.awaitingDrain) this.flush();
    this.waiters.wake(true);
  }

  /**
   * A malformed frame, or a receiver that threw: the stream's framing can no longer be trusted,
   * so the connection ends here (the peer sees it closed) instead of limping on.
   */
  private receiverFailed(e: unknown): void {
    const err = e instanceof HotpathError ? e : new ProtocolError(`tcp connection to ${this.peer}: receiver failed: ${describeThrown(e)}`);
    this.abort(err);
  }

  private deliver(msg: TcpRxMessage): boolean {
    if (this.receiver === null) {
      this.early.push(msg);
      this.earlyBytes += msg.headLength + msg.bodyLength;
      if (this.earlyBytes > this.limits.connectionBufferBytes) this.gate.set(PAUSE_NO_RECEIVER, true);
      return true;
    }
    this.receiver.onMessage(msg);
    return !this.closed;
  }

  private oversized(head: Uint8Array, bodyLen: number): boolean {
    if (this.receiver === null) {
      this.early.push({ head: head.slice(), bodyLen });
      return true;
    }
    this.receiver.onOversized!(head, bodyLen);
    return !this.closed;
  }

  private resumeGranted(): void {
    if (this.closed) return this.gate.releaseAll();
    this.parse(null);
    if (this.closed) return;
    if (this.partialSince >= 0) this.partialSince = performance.now();
    if (!this.parser.stalledForReserve) this.gate.set(PAUSE_RESERVE, false);
  }

  /** Accepted side: read no more requests while half the output budget waits for the peer. */
  private checkOutput(): void {
    if (this.opts.role !== "accept" || this.closed) return;
    const over = this.awaitingDrain && 2 * this.out.length >= this.sendBufferBytes;
    if (over === this.gate.has(PAUSE_OUTPUT)) return;
    if (over) this.overSince = performance.now();
    this.gate.set(PAUSE_OUTPUT, over);
  }

  /** A large body with nothing queued ahead of it: straight from the caller's memory (OutputBuffer.writeDirect). */
  private writeDirect(head: Uint8Array, body: Uint8Array): SendStatus {
    const left = this.out.writeDirect(this.socket, encodeFrameStart(head, body.length), body);
    if (left < 0) {
      this.writeFailed();
      return SEND_CLOSED;
    }
    this.activity = true;
    if (left > 0) {
      this.awaitingDrain = true;
      this.checkOutput();
    }
    return SEND_OK;
  }

  private flush(): void {
    if (this.closed || this.out.length === 0) return;
    this.flushOut();
    // Everything went: a sender that met Full may go on.
    if (this.out.length === 0 && this.waiters.size > 0) this.waiters.wake(true);
  }

  /** Writes what the socket takes (from the buffer itself, with offset and length); the rest waits for drain. */
  private flushOut(): void {
    const left = this.out.writeTo(this.socket);
    if (left < 0) {
      this.writeFailed();
      return;
    }
    if (left > 0) this.awaitingDrain = true;
    this.checkOutput();
  }

  /**
   * The socket refused a write (closed or shutting down) before Bun reported its close, which a
   * paused socket may never do: close this side and cut the socket, so its fd goes now.
   */
  private writeFailed(): void {
    this.onSocketClosed();
    this.out.clear();
    this.socket.terminate();
  }

  /** close() / abort() / idle: report `error`, stop reading, hand queued output over, then end. */
  private shut(error: HotpathError | null): void {
    if (this.closed) return;
    if (this.handshaking) return this.failHandshake(this.hs.abandon("closed locally during the handshake"), false);
    if (this.out.length > 0 && !this.awaitingDrain) this.flushOut();
    if (this.closed) return; // the write found the socket gone
    this.finish(error);
    this.gate.set(PAUSE_CLOSED, true);
    if (this.out.length === 0) {
      this.socket.end();
      return;
    }
    this.lingering = true;
    this.lingerTimer = setTimeout(() => this.socket.terminate(), CLOSE_LINGER_MS);
    // The linger is best effort: neither it nor the socket keeps a process that is done alive.
    this.lingerTimer.unref();
    this.socket.unref();
  }

  /** Slow consumer: nothing queued will be read, so the socket is cut at once. */
  private cut(error: HotpathError): void {
    this.out.clear();
    this.finish(error);
    this.socket.terminate();
  }

  private finish(error: HotpathError | null): void {
    this.closed = true;
    this.closeError = error;
    this.opts.sweeper?.delete(this);
    this.gate.releaseAll();
    this.early = [];
    this.waiters.wake(false);
    const r = this.receiver;
    if (r) r.onClose(error);
  }
}
