/**
 * TCP limits (control path): the resolved connection, memory and time limits of a listener or a
 * dialled connection, the server-wide budget for large split frames (`BufferPool`) and the one
 * timer per listener that enforces the time limits (`Sweeper`).
 *
 * What a listener's peers can make the tcp layer hold, with the defaults:
 * - split frames: at most `connectionBufferBytes` per connection on its own (256 KiB × 1024
 *   connections = 256 MiB) plus `serverBufferBytes` (256 MiB) shared by larger frames, which
 *   reserve their whole size before they are assembled (memory then follows the bytes that
 *   really arrive). A connection whose frame cannot get its share stops reading until it can.
 * - output: `sendBufferBytes` (4 MiB) per connection, or one frame when the buffer was empty;
 *   from half of it the connection stops reading, so a peer that does not read its replies
 *   cannot queue more work, and it is disconnected after `slowConsumerMs`.
 * - time: a hello within `handshakeTimeoutMs`, a begun frame complete within `frameTimeoutMs`,
 *   and a connection where no whole frame moved either way closed after `idleTimeoutMs`
 *   (whatever is in flight: raise it for calls that run longer).
 *
 * Example:
 *   const limits = listenLimits(opts.tcp);
 *   const pool = new BufferPool(limits.serverBufferBytes);
 *   if (!pool.tryReserve(frameLen)) pool.enqueue(conn, frameLen);   // conn.granted() later
 */

import { UsageError } from "../errors.ts";
import type { ConnectOptions, ListenOptions } from "../contract/transport.ts";

/** About 1 KiB of state per connection plus what it buffers: 1024 keeps idle peers cheap. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** Split frames up to this size (most RPC messages) never wait for the shared budget. */
export const DEFAULT_CONNECTION_BUFFER_BYTES = 256 << 10;
/** Four maximum-size (64 MiB) messages assembled at once, server-wide. */
export const DEFAULT_SERVER_BUFFER_BYTES = 256 << 20;
/** Output buffered before trySend reports Full: a few socket buffers' worth. */
export const DEFAULT_SEND_BUFFER_BYTES = 4 << 20;
/** Long enough for a busy client to catch up, short enough that a stuck one frees its buffers. */
export const DEFAULT_SLOW_CONSUMER_MS = 30_000;
/** RPC connections are long-lived; five quiet minutes means nobody is using this one. */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
/** A real client sends its hello with its first packet; ten seconds covers a slow network. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** A 64 MiB frame needs ~2.2 MB/s to finish in time; a dribbling (slowloris) peer does not. */
export const DEFAULT_FRAME_TIMEOUT_MS = 30_000;
/** The sweeper runs at a quarter of the shortest timeout, between these bounds. */
const SWEEP_MIN_MS = 5;
const SWEEP_MAX_MS = 1000;

export interface TcpLimits {
  maxConnections: number;
  connectionBufferBytes: number;
  serverBufferBytes: number;
  sendBufferBytes: number;
  slowConsumerMs: number;
  idleTimeoutMs: number;
  handshakeTimeoutMs: number;
  frameTimeoutMs: number;
}

function check(where: string, name: string, v: number | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    throw new UsageError(`${where}: tcp.${name} must be an integer ≥ ${min}, got ${String(v)}`);
  }
  return v;
}

/** The limits of a listener: the caller's `tcp` options over the defaults, validated. */
export function listenLimits(o: ListenOptions["tcp"] = {}): TcpLimits {
  const w = "tcp listen";
  return {
    maxConnections: check(w, "maxConnections", o.maxConnections, DEFAULT_MAX_CONNECTIONS, 1),
    connectionBufferBytes: check(w, "connectionBufferBytes", o.connectionBufferBytes, DEFAULT_CONNECTION_BUFFER_BYTES, 0),
    serverBufferBytes: check(w, "serverBufferBytes", o.serverBufferBytes, DEFAULT_SERVER_BUFFER_BYTES, 0),
    sendBufferBytes: check(w, "sendBufferBytes", o.sendBufferBytes, DEFAULT_SEND_BUFFER_BYTES, 1),
    slowConsumerMs: check(w, "slowConsumerMs", o.slowConsumerMs, DEFAULT_SLOW_CONSUMER_MS, 0),
    idleTimeoutMs: check(w, "idleTimeoutMs", o.idleTimeoutMs, DEFAULT_IDLE_TIMEOUT_MS, 0),
    handshakeTimeoutMs: check(w, "handshakeTimeoutMs", o.handshakeTimeoutMs, DEFAULT_HANDSHAKE_TIMEOUT_MS, 0),
    frameTimeoutMs: check(w, "frameTimeoutMs", o.frameTimeoutMs, DEFAULT_FRAME_TIMEOUT_MS, 0),
  };
}

/**
 * The limits of a dialled connection: a client trusts the server it chose, so only its output
 * budget is on by default; the handshake is bounded by connectTimeoutMs instead.
 */
export function connectLimits(o: ConnectOptions["tcp"] = {}): TcpLimits {
  const w = "tcp connect";
  return {
    maxConnections: 1,
    connectionBufferBytes: Number.MAX_SAFE_INTEGER,
    serverBufferBytes: Number.MAX_SAFE_INTEGER,
    sendBufferBytes: check(w, "sendBufferBytes", o.sendBufferBytes, DEFAULT_SEND_BUFFER_BYTES, 1),
    slowConsumerMs: 0,
    idleTimeoutMs: check(w, "idleTimeoutMs", o.idleTimeoutMs, 0, 0),
    handshakeTimeoutMs: 0,
    frameTimeoutMs: check(w, "frameTimeoutMs", o.frameTimeoutMs, 0, 0),
  };
}

/** Largest value a u32 length field carries: frames and hellos state sizes in u32. */
const MAX_U32 = 0xffffffff;

/** maxMessageBytes as the tcp protocol can state it (a u32), or UsageError naming the value. */
export function checkMaxMessageBytes(where: string, v: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_U32) {
    throw new UsageError(`${where}: maxMessageBytes must be an integer 0..${MAX_U32}, got ${String(v)}`);
  }
  return v;
}

/** How often a sweeper checks its connections: 0 when no time limit is on. */
export function sweepPeriodMs(l: TcpLimits): number {
  const on = [l.slowConsumerMs, l.idleTimeoutMs, l.handshakeTimeoutMs, l.frameTimeoutMs].filter((t) => t > 0);
  if (on.length === 0) return 0;
  return Math.min(SWEEP_MAX_MS, Math.max(SWEEP_MIN_MS, Math.floor(Math.min(...on) / 4)));
}

/** Something a BufferPool grants a reservation to later. */
export interface PoolWaiter {
  /** The reservation asked for in enqueue() is now held by the waiter. */
  granted(): void;
}

/**
 * A byte budget shared by the connections of one listener. A reservation is granted when it
 * fits, or when nothing is reserved at all (so a frame larger than the whole budget still gets
 * through, alone); otherwise the asker queues and is granted in arrival order as others
 * release. Whole-frame reservations mean every holder can finish its frame: no deadlock.
 * Threading: the listener's thread only.
 */
export class BufferPool {
  usedBytes = 0;
  private readonly queue: Array<{ who: PoolWaiter; bytes: number }> = [];

  constructor(readonly limitBytes: number) {}

  /** Reserves `bytes` now if it fits and nobody queues ahead. */
  tryReserve(bytes: number): boolean {
    if (this.queue.length > 0 || !this.fits(bytes)) return false;
    this.usedBytes += bytes;
    return true;
  }

  /** Queues `who` for `bytes`; who.granted() runs once the reservation is held. */
  enqueue(who: PoolWaiter, bytes: number): void {
    this.queue.push({ who, bytes });
  }

  /** Leaves the queue (a connection that closed while waiting). */
  cancel(who: PoolWaiter): void {
    const i = this.queue.findIndex((q) => q.who === who);
    if (i >= 0) this.queue.splice(i, 1);
    if (i === 0) this.grantQueued();
  }

  /** Gives back a reservation and grants queued ones that now fit. */
  release(bytes: number): void {
    this.usedBytes -= bytes;
    if (this.queue.length > 0) this.grantQueued();
  }

  get waiting(): number {
    return this.queue.length;
  }

  private fits(bytes: number): boolean {
    return this.usedBytes === 0 || this.usedBytes + bytes <= this.limitBytes;
  }

  private grantQueued(): void {
    while (this.queue.length > 0 && this.fits(this.queue[0]!.bytes)) {
      const q = this.queue.shift()!;
      this.usedBytes += q.bytes;
      q.who.granted();
    }
  }
}

/** Something whose deadlines a Sweeper checks. */
export interface Sweepable {
  sweep(nowMs: number): void;
}

/**
 * One interval timer for many connections' deadlines (instead of a timer re-armed per frame):
 * every `periodMs` it calls sweep(now) on each member. The timer is unref'd and runs only while
 * there are members. Threading: the creating thread only.
 */
export class Sweeper {
  private readonly members = new Set<Sweepable>();
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly periodMs: number) {}

  add(m: Sweepable): void {
    this.members.add(m);
    if (this.timer === null) {
      this.timer = setInterval(() => this.tick(), this.periodMs);
      this.timer.unref();
    }
  }

  delete(m: Sweepable): void {
    this.members.delete(m);
    if (this.members.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private tick(): void {
    const now = performance.now();
    for (const m of this.members) m.sweep(now);
  }
}
