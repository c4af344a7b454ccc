/**
 * One target's connection, kept up on its own: gRPC's connectivity states (IDLE, CONNECTING,
 * READY, TRANSIENT_FAILURE, SHUTDOWN), reconnect with backoff (backoff.ts), TTL, idle timeout
 * and an application-level keepalive. The pool (pool.ts) holds one Channel per connection.
 *
 * Call semantics during failures:
 * - a call made while not READY waits for a connection up to its own deadline (wait-for-ready);
 *   with `failFast` it fails at once while the channel is in TRANSIENT_FAILURE; at most
 *   `maxPendingCalls` wait (PendingLimitError beyond). Deadlines always win.
 * - a call in flight when its connection dies fails with TransportClosedError and is never
 *   re-sent, except a method declared idempotent (`idempotent` option: method ids, or the call's
 *   own `idempotent: true`), which is retried once on a fresh connection: it failed before any
 *   response arrived, as a response completes the call.
 * - concurrent callers share one connect attempt; attempts follow the backoff policy, reset
 *   only after a connection stayed READY for `backoffResetAfterMs`.
 * - a server's GOAWAY (server.drain()): new calls go to (or wait for) a fresh connection,
 *   calls in flight finish on the old one, which the Client closes once idle: no call fails.
 * - `maxLifetimeMs`: a connection is replaced (a new one connects, new calls go there, the old
 *   one closes once its calls finished): no call fails. `idleTimeoutMs`: closed when unused.
 * - `keepaliveMs`: after that long without a completed call, a ping (a request to the reserved
 *   method KEEPALIVE_METHOD; any answer, UnknownMethodError included, proves liveness); no
 *   answer within `keepaliveTimeoutMs` aborts the connection (calls on it: TransportClosedError).
 *
 *   const ch = new Channel("tcp://127.0.0.1:7000", { backoff: { initialMs: 50 } });
 *   const reply = await ch.request(1, bytes, { timeoutMs: 500 });
 *   ch.close();
 *
 * Threading: a Channel and its connections belong to the thread that created it. Timers come
 * from `clock`; realClock's are unref'd, so no pool timer keeps a process alive (an open
 * connection still does, as any socket does).
 */

import { EMPTY_BYTES } from "../bytes.ts";
import { CancelledError, HotpathError, RemoteError, TimeoutError, TransportClosedError, UsageError } from "../errors.ts";
import type { ConnectOptions, Connection, Receiver } from "../contract/transport.ts";
import { connect } from "../connect/registry.ts";
import { Client, DEFAULT_REQUEST_TIMEOUT_MS, type ClientOptions, type RequestOptions } from "../rpc/client.ts";
import { checkTimeout, describeValue } from "../rpc/validate.ts";
import { Backoff, type BackoffPolicy, type Random } from "./backoff.ts";
import { realClock, type Clock, type TimerHandle } from "./clock.ts";

export type ConnectivityState = "IDLE" | "CONNECTING" | "READY" | "TRANSIENT_FAILURE" | "SHUTDOWN";

/** The method id keepalive pings use; a server without a handler answers UnknownMethodError. */
export const KEEPALIVE_METHOD = 0xffffffff;
/** Calls that may wait for a connection by default: enough for a burst, bounded for memory. */
export const DEFAULT_MAX_PENDING_CALLS = 1024;
/** READY this long before the backoff resets: a server that accepts then dies keeps backing off. */
export const DEFAULT_BACKOFF_RESET_AFTER_MS = 5000;
/** gRPC's default keepalive timeout. */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 20_000;

/** More calls wait for a connection than `maxPendingCalls` allows. */
export class PendingLimitError extends HotpathError {
  constructor(message: string) {
    super("E_POOL_PENDING", message);
  }
}
// Named after its class: a bundler may rename the binding (code splitting does; see errors.ts).
Object.defineProperty(PendingLimitError, "name", { value: "PendingLimitError" });

/** Opens a connection to `url`: the registry's connect() (with fallback) unless replaced. */
export type Connector = (url: string, opts: ConnectOptions) => Promise<Connection>;

export interface ChannelOptions {
  /** Passed to connect() and the Client (fallback, auth, window, ...). */
  connect?: ConnectOptions & ClientOptions;
  /** Reconnect policy (backoff.ts). Default: gRPC's. */
  backoff?: Partial<BackoffPolicy>;
  /** The backoff's jitter source. Default Math.random. */
  random?: Random;
  /** Every timer of the channel. Default realClock. */
  clock?: Clock;
  /** How a connection is opened. Default: the registry's connect(). */
  connector?: Connector;
  /** READY this long (ms) before the backoff starts over. Default 5000. */
  backoffResetAfterMs?: number;
  /** Calls that may wait for a connection (integer ≥ 0). Default 1024. */
  maxPendingCalls?: number;
  /** Default for calls that give none. Default false (wait for ready). */
  failFast?: boolean;
  /** Deadline for calls that give none, ms (0 or Infinity: none). Default 30000. */
  timeoutMs?: number;
  /** Connection TTL in ms: replaced after it. Default off (0 or Infinity). */
  maxLifetimeMs?: number;
  /** Closed after this long with no call. Default off. */
  idleTimeoutMs?: number;
  /** Ping after this long without a completed call. Default off. */
  keepaliveMs?: number;
  /** A ping unanswered this long declares the peer dead. Default 20000. */
  keepaliveTimeoutMs?: number;
  /** Method ids that are retried once on a fresh connection when theirs died. */
  idempotent?: Iterable<number>;
  onStateChange?: (state: ConnectivityState, previous: ConnectivityState) => void;
}

/**
 * A channel call's options: every RequestOptions field reaches the connection's request()
 * (metadata, onResponseMetadata, parent, ...); the call's deadline, the wait for a connection
 * included, is cut to what is left of `parent`'s.
 */
export interface CallOptions extends RequestOptions {
  failFast?: boolean;
  idempotent?: boolean;
}

interface Live {
  client: Client<any>;
  inFlight: number;
  retired: boolean;
  /** The server sent GOAWAY: no new calls here, a replacement is connecting. */
  draining: boolean;
  lastActivityMs: number;
  timers: TimerHandle[];
  /** A call's settle handlers where it is not retried: made once per connection, not per call. */
  done: (v: Uint8Array) => Uint8Array;
  fail: (e: unknown) => never;
}

interface Waiting {
  method: number;
  data: Uint8Array;
  opts: CallOptions;
  deadline: number;
  retried: boolean;
  resolve: (v: Uint8Array) => void;
  reject: (e: unknown) => void;
  timer: TimerHandle | null;
  onAbort: (() => void) | null;
}

const positive = (v: number | undefined, name: string): number => {
  if (v === undefined || v === 0 || v === Infinity) return 0;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) throw new UsageError(`channel ${name} ${String(v)} must be a number > 0 (0 or Infinity: off)`);
  return v;
};

/**
 * What is left of `parent`'s deadline (performance.now() ms, as RequestHandle.deadline), or
 * undefined when there is no parent or it has no deadline. TimeoutError when it has passed
 * (nothing is sent), UsageError for a parent without a numeric deadline (as Client.request).
 */
function parentRemainingMs(parent: CallOptions["parent"], url: string): number | undefined {
  if (parent === undefined) return undefined;
  const deadline = parent === null || typeof parent !== "object" ? NaN : parent.deadline;
  if (deadline === undefined) return undefined;
  if (typeof deadline !== "number" || Number.isNaN(deadline)) throw new UsageError(`pool: request to ${url}: parent must be a request handle or stream (with a numeric deadline), got ${describeValue(parent)}`);
  const remaining = deadline - performance.now();
  if (remaining <= 0) throw new TimeoutError(`pool: request to ${url}: the parent call's deadline passed ${Math.round(-remaining)} ms ago; nothing was sent`);
  return remaining;
}

export class Channel {
  readonly url: string;
  state: ConnectivityState = "IDLE";
  onStateChange: ChannelOptions["onStateChange"] | null;
  /** Connect attempts started. */
  attempts = 0;
  /** Connections made after the first one (the target came back). */
  reconnects = 0;
  /** Connections replaced at maxLifetimeMs. */
  replaced = 0;
  lastError: HotpathError | null = null;
  /** Keepalive pings answered. */
  keepalivesAnswered = 0;

  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private readonly connector: Connector;
  private readonly connectOpts: ConnectOptions & ClientOptions;
  private readonly resetAfterMs: number;
  private readonly maxPending: number;
  private readonly failFast: boolean;
  private readonly timeoutMs: number;
  private readonly lifetimeMs: number;
  private readonly idleMs: number;
  private readonly keepaliveMs: number;
  private readonly keepaliveTimeoutMs: number;
  private readonly idempotent: Set<number>;
  private live: Live | null = null;
  private readonly retiring = new Set<Live>();
  private connecting = false;
  private everReady = false;
  private nextAttemptAt = -Infinity;
  private retryTimer: TimerHandle | null = null;
  private resetTimer: TimerHandle | null = null;
  private idleTimer: TimerHandle | null = null;
  private readonly waiting: Waiting[] = [];

  constructor(url: string, opts: ChannelOptions = {}) {
    this.url = url;
    this.clock = opts.clock ?? realClock;
    this.backoff = new Backoff(opts.backoff, opts.random);
    this.connector = opts.connector ?? connect;
    this.connectOpts = opts.connect ?? {};
    this.resetAfterMs = positive(opts.backoffResetAfterMs ?? DEFAULT_BACKOFF_RESET_AFTER_MS, "backoffResetAfterMs");
    const maxPending = opts.maxPendingCalls ?? DEFAULT_MAX_PENDING_CALLS;
    if (!Number.isInteger(maxPending) || maxPending < 0) throw new UsageError(`channel maxPendingCalls ${maxPending} must be an integer ≥ 0`);
    this.maxPending = maxPending;
    this.failFast = opts.failFast ?? false;
    this.timeoutMs = checkTimeout(opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, "channel options");
    this.lifetimeMs = positive(opts.maxLifetimeMs, "maxLifetimeMs");
    this.idleMs = positive(opts.idleTimeoutMs, "idleTimeoutMs");
    this.keepaliveMs = positive(opts.keepaliveMs, "keepaliveMs");
    this.keepaliveTimeoutMs = positive(opts.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS, "keepaliveTimeoutMs");
    this.idempotent = new Set(opts.idempotent ?? []);
    this.onStateChange = opts.onStateChange ?? null;
  }

  /** Calls in flight on this channel's connections (waiting ones not counted). */
  get inFlight(): number {
    let n = this.live?.inFlight ?? 0;
    for (const l of this.retiring) n += l.inFlight;
    return n;
  }

  /** Calls waiting for a connection. */
  get pendingCalls(): number {
    return this.waiting.length;
  }

  /** Open connections (the live one and any draining at end of life). */
  get connections(): number {
    return (this.live ? 1 : 0) + this.retiring.size;
  }

  /**
   * The READY connection's rpc Client, null when there is none (or it is draining): for
   * hot-path calls made on it directly (Client.call), which bypass request()'s bookkeeping.
   */
  get readyClient(): Client<any> | null {
    const l = this.live;
    return l !== null && !l.draining ? l.client : null;
  }

  /** Starts connecting if IDLE (calls do this themselves). */
  connect(): void {
    this.want();
  }

  /**
   * Sends a request as Client.request() does, over the current connection, waiting for one if
   * needed (see the module comment). `data` must stay unchanged until the promise settles.
   */
  request(method: number, data: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    let timeoutMs: number;
    try {
      timeoutMs = checkTimeout(opts.timeoutMs ?? this.timeoutMs, "request");
      const parentMs = parentRemainingMs(opts.parent, this.url);
      if (parentMs !== undefined && (timeoutMs === 0 || parentMs < timeoutMs)) timeoutMs = parentMs;
    } catch (e) {
      return Promise.reject(e);
    }
    const deadline = timeoutMs === 0 ? Infinity : this.clock.now() + timeoutMs;
    return this.run(method, data, opts, deadline, false);
  }

  /** Closes every connection and fails every waiting call with TransportClosedError; idempotent. */
  close(): void {
    if (this.state === "SHUTDOWN") return;
    this.setState("SHUTDOWN");
    for (const t of [this.retryTimer, this.resetTimer, this.idleTimer]) if (t !== null) this.clock.clearTimeout(t);
    this.retryTimer = this.resetTimer = this.idleTimer = null;
    const err = new TransportClosedError(`pool: channel to ${this.url} is closed`);
    for (const w of this.waiting.splice(0)) this.settleWaiting(w, err);
    const lives = [...this.retiring, ...(this.live ? [this.live] : [])];
    this.live = null;
    this.retiring.clear();
    for (const l of lives) this.dropLive(l, null);
  }

  private run(method: number, data: Uint8Array, opts: CallOptions, deadline: number, retried: boolean): Promise<Uint8Array> {
    if (this.state === "SHUTDOWN") return Promise.reject(new TransportClosedError(`pool: channel to ${this.url} is closed`));
    if (opts.signal?.aborted) return Promise.reject(new CancelledError(`pool: request to ${this.url} cancelled`, { cause: opts.signal.reason }));
    if (this.live !== null && !this.live.draining) return this.issue(this.live, method, data, opts, deadline, retried);
    if ((opts.failFast ?? this.failFast) && this.state === "TRANSIENT_FAILURE") return Promise.reject(this.unavailable());
    if (this.waiting.length >= this.maxPending) {
      return Promise.reject(new PendingLimitError(`pool: ${this.waiting.length} calls already wait for a connection to ${this.url} (maxPendingCalls ${this.maxPending})`));
    }
    return new Promise((resolve, reject) => {
      const w: Waiting = { method, data, opts, deadline, retried, resolve, reject, timer: null, onAbort: null };
      if (deadline !== Infinity) {
        w.timer = this.clock.setTimeout(() => {
          w.timer = null;
          this.removeWaiting(w);
          this.settleWaiting(w, new TimeoutError(`pool: no connection to ${this.url} before the call's deadline${this.lastError ? ` (last error: ${this.lastError.message})` : ""}`));
        }, deadline - this.clock.now());
      }
      if (opts.signal) {
        w.onAbort = () => {
          this.removeWaiting(w);
          this.settleWaiting(w, new CancelledError(`pool: request to ${this.url} cancelled`, { cause: opts.signal!.reason }));
        };
        opts.signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.waiting.push(w);
      this.want();
    });
  }

  private issue(live: Live, method: number, data: Uint8Array, opts: CallOptions, deadline: number, retried: boolean): Promise<Uint8Array> {
    const left = deadline - this.clock.now();
    if (left <= 0) return Promise.reject(new TimeoutError(`pool: request to ${this.url} reached its deadline`));
    // The idle timer stays armed: when it fires it looks at the last activity (armIdle).
    live.inFlight++;
    const reqOpts: RequestOptions = {
      timeoutMs: left === Infinity ? 0 : Math.max(1, Math.ceil(left)),
      signal: opts.signal,
      appHeader: opts.appHeader,
      metadata: opts.metadata,
      onResponseMetadata: opts.onResponseMetadata,
      parent: opts.parent,
    };
    const call = live.client.request(method, data, reqOpts);
    if (retried || !(opts.idempotent ?? this.idempotent.has(method))) return call.then(live.done, live.fail);
    // Idempotent: a call whose connection died is sent once more, on a fresh one.
    return call.then(live.done, (e) => {
      this.callDone(live);
      if (e instanceof TransportClosedError && this.state !== "SHUTDOWN") return this.run(method, data, opts, deadline, true);
      throw e;
    });
  }

  private callFailed(live: Live, e: unknown): never {
    this.callDone(live);
    throw e;
  }

  private callDone(live: Live): void {
    live.inFlight--;
    live.lastActivityMs = this.clock.now();
    if (live.inFlight > 0) return;
    if (live.retired) {
      if (this.retiring.delete(live)) this.dropLive(live, null);
    } else if (live === this.live) {
      this.armIdle(live);
    }
  }

  /**
   * Closes `live` once it had no call for idleMs. One timer at a time, left armed while calls
   * come and go (no timer per call): when it fires early it re-arms for the rest of the quiet
   * time; with calls in flight it ends, and the last one's completion arms it again.
   */
  private armIdle(live: Live, ms = this.idleMs): void {
    if (this.idleMs === 0 || this.idleTimer !== null) return;
    this.idleTimer = this.clock.setTimeout(() => {
      this.idleTimer = null;
      // The timer belongs to the channel, not to the connection it was armed for: a replacement
      // (GOAWAY, reconnect) that went quiet while it was armed is the one to look at now.
      live = this.live ?? live;
      if (this.live !== live || live.inFlight > 0 || this.waiting.length > 0) return;
      const quiet = this.clock.now() - live.lastActivityMs;
      if (quiet < this.idleMs) return this.armIdle(live, this.idleMs - quiet);
      this.live = null;
      this.dropLive(live, null);
      this.setState("IDLE");
    }, ms);
  }

  /** Makes sure a connect attempt runs or is scheduled, at most one at a time. */
  private want(): void {
    if (this.state === "SHUTDOWN" || this.connecting || this.retryTimer !== null) return;
    if (this.live !== null && !this.live.retired && !this.live.draining) return;
    const wait = this.nextAttemptAt - this.clock.now();
    if (wait > 0) {
      this.retryTimer = this.clock.setTimeout(() => {
        this.retryTimer = null;
        if (this.waiting.length > 0) this.want();
        else if (this.live === null && this.state !== "SHUTDOWN") this.setState("IDLE");
      }, wait);
      return;
    }
    this.attempt(null);
  }

  /** One connect attempt; `replacing` is the live connection it replaces at end of life. */
  private attempt(replacing: Live | null): void {
    this.connecting = true;
    if (replacing === null) this.setState("CONNECTING");
    this.attempts++;
    const delay = this.backoff.nextDelayMs();
    this.nextAttemptAt = this.clock.now() + delay;
    const opts = { ...this.connectOpts, connectTimeoutMs: this.connectOpts.connectTimeoutMs ?? this.backoff.connectTimeoutMs(delay) };
    this.connector(this.url, opts).then(
      (conn) => this.connected(conn, replacing),
      (e) => this.failed(e, replacing),
    );
  }

  private connected(conn: Connection, replacing: Live | null): void {
    this.connecting = false;
    if (this.state === "SHUTDOWN") {
      conn.close();
      return;
    }
    let live: Live | null = null;
    const setReceiver = conn.setReceiver.bind(conn);
    conn.setReceiver = (r: Receiver) => setReceiver(Object.assign({}, r, { onClose: (e: HotpathError | null) => (r.onClose(e), this.lost(live!, e)) }));
    const client = new Client<any>(conn, this.connectOpts);
    live = { client, inFlight: 0, retired: false, draining: false, lastActivityMs: this.clock.now(), timers: [], done: (v) => (this.callDone(live!), v), fail: (e) => this.callFailed(live!, e) };
    live.client.onGoaway = () => this.goaway(live!);
    const old = this.live;
    // The new connection is live before the old one retires: closing the old one is then no loss.
    this.live = live;
    if (replacing !== null) {
      if (old === replacing) this.retire(replacing);
      this.replaced++;
    } else if (this.everReady) {
      this.reconnects++;
    }
    this.everReady = true;
    this.setState("READY");
    if (this.resetTimer === null) {
      this.resetTimer = this.clock.setTimeout(() => {
        this.resetTimer = null;
        this.backoff.reset();
        this.nextAttemptAt = -Infinity;
      }, this.resetAfterMs);
    }
    if (this.lifetimeMs > 0) live.timers.push(this.clock.setTimeout(() => this.endOfLife(live!), this.lifetimeMs));
    if (this.keepaliveMs > 0) this.armKeepalive(live, this.keepaliveMs);
    for (const w of this.waiting.splice(0)) {
      this.unhookWaiting(w);
      this.issue(live, w.method, w.data, w.opts, w.deadline, w.retried).then(w.resolve, w.reject);
    }
    if (live.inFlight === 0) this.armIdle(live);
  }

  private failed(e: unknown, replacing: Live | null): void {
    this.connecting = false;
    if (this.state === "SHUTDOWN") return;
    this.lastError = e instanceof HotpathError ? e : new TransportClosedError(`pool: connect ${this.url} failed: ${String(e)}`, { cause: e });
    if (replacing !== null && this.live === replacing) {
      // The old connection still serves; try again at the next backoff step.
      replacing.timers.push(this.clock.setTimeout(() => this.endOfLife(replacing), Math.max(0, this.nextAttemptAt - this.clock.now())));
      return;
    }
    this.setState("TRANSIENT_FAILURE");
    const err = this.unavailable();
    for (const w of this.waiting.filter((x) => x.opts.failFast ?? this.failFast)) {
      this.removeWaiting(w);
      this.settleWaiting(w, err);
    }
    this.want();
  }

  /** A draining server's GOAWAY: new calls wait for a replacement, calls in flight finish here. */
  private goaway(live: Live): void {
    if (live.draining || this.state === "SHUTDOWN") return;
    live.draining = true;
    if (this.live === live && !this.connecting) this.attempt(live);
  }

  private endOfLife(live: Live): void {
    if (this.live !== live || this.connecting || this.state === "SHUTDOWN") return;
    this.attempt(live);
  }

  private retire(live: Live): void {
    live.retired = true;
    if (live.inFlight === 0) this.dropLive(live, null);
    else this.retiring.add(live);
  }

  /** The connection closed (peer gone, keepalive, local close). */
  private lost(live: Live, e: HotpathError | null): void {
    for (const t of live.timers) this.clock.clearTimeout(t);
    live.timers.length = 0;
    this.retiring.delete(live);
    if (live !== this.live) return;
    this.live = null;
    if (e !== null) this.lastError = e;
    if (this.resetTimer !== null) {
      // Not READY long enough: the backoff goes on from where it was.
      this.clock.clearTimeout(this.resetTimer);
      this.resetTimer = null;
    }
    if (this.idleTimer !== null) {
      this.clock.clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    if (this.state === "SHUTDOWN") return;
    this.setState("IDLE");
    if (this.waiting.length > 0) this.want();
  }

  private dropLive(live: Live, e: HotpathError | null): void {
    for (const t of live.timers) this.clock.clearTimeout(t);
    live.timers.length = 0;
    if (e !== null) live.client.conn.abort(e);
    else live.client.close();
  }

  private armKeepalive(live: Live, ms: number): void {
    live.timers.push(this.clock.setTimeout(() => {
      if (this.live !== live) return;
      const quiet = this.clock.now() - live.lastActivityMs;
      if (quiet < this.keepaliveMs) return this.armKeepalive(live, this.keepaliveMs - quiet);
      const dead = this.clock.setTimeout(() => {
        const err = new TransportClosedError(`pool: ${this.url} did not answer a keepalive ping within ${this.keepaliveTimeoutMs} ms: declared dead`);
        this.lastError = err;
        this.dropLive(live, err);
      }, this.keepaliveTimeoutMs);
      live.timers.push(dead);
      const answered = (alive: boolean) => {
        this.clock.clearTimeout(dead);
        if (!alive || this.live !== live) return;
        live.lastActivityMs = this.clock.now();
        this.keepalivesAnswered++;
        this.armKeepalive(live, this.keepaliveMs);
      };
      live.client.request(KEEPALIVE_METHOD, EMPTY_BYTES, { timeoutMs: 0 }).then(
        () => answered(true),
        (e) => answered(e instanceof RemoteError),
      );
    }, ms));
  }

  private unavailable(): TransportClosedError {
    const why = this.lastError ? `: ${this.lastError.message}` : "";
    return new TransportClosedError(`pool: ${this.url} is unavailable (TRANSIENT_FAILURE, failFast)${why}`, { cause: this.lastError ?? undefined });
  }

  private removeWaiting(w: Waiting): void {
    const i = this.waiting.indexOf(w);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  private unhookWaiting(w: Waiting): void {
    if (w.timer !== null) this.clock.clearTimeout(w.timer);
    w.timer = null;
    if (w.onAbort !== null) w.opts.signal?.removeEventListener("abort", w.onAbort);
    w.onAbort = null;
  }

  private settleWaiting(w: Waiting, e: unknown): void {
    this.unhookWaiting(w);
    w.reject(e);
  }

  private setState(s: ConnectivityState): void {
    if (s === this.state) return;
    const prev = this.state;
    this.state = s;
    this.onStateChange?.(s, prev);
  }
}
