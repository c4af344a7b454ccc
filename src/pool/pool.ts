/**
 * ConnectionPool: shared, self-healing clients per target. `pool.client(url)` returns the
 * target's client (the same one for every caller of that URL); its calls go over up to
 * `maxConnections` Channels (channel.ts: states, backoff reconnect, TTL, idle timeout,
 * keepalive, wait-for-ready), least-in-flight first. See channel.ts for call semantics during
 * failures.
 *
 *   await using pool = new ConnectionPool({ backoff: { initialMs: 200 } });
 *   const kv = pool.client("tcp://10.0.0.7:7000", { service: Kv, fallback: ["shm"] });
 *   const { value } = await kv.svc.get({ key: 7n }); // waits for a connection, reconnects on its own
 *   pool.stats(); // [{ url, state: "READY", connections: 1, inFlight: 0, reconnects: 0, ... }]
 *
 * A target's options are those of its first client() call (pool options, overridden per
 * target); later calls for the same URL get the same client. Methods declared idempotent in a
 * service (`{ id: 3, idempotent: true }`, a field MethodDef does not declare: read from the
 * definition object) or listed in `idempotent` (method ids) are retried once on a fresh
 * connection when theirs died.
 *
 * Threading: a pool, its clients and connections belong to the thread that created it.
 */

import { HotpathError, UsageError } from "../errors.ts";
import { raw, type Codec } from "../rpc/codec.ts";
import type { Client } from "../rpc/client.ts";
import type { ServiceClient, ServiceDef } from "../rpc/service.ts";
import { Channel, type CallOptions, type ChannelOptions, type ConnectivityState } from "./channel.ts";

export interface PoolOptions extends Omit<ChannelOptions, "onStateChange"> {
  /** Connections per target at most. Default 1; more: calls go to the least-in-flight READY one. */
  maxConnections?: number;
  /** Called with the target's URL when one of its connections changes state. */
  onStateChange?: (url: string, state: ConnectivityState, previous: ConnectivityState) => void;
}

export interface TargetOptions<S extends ServiceDef = {}> extends PoolOptions {
  service?: S;
  /** Shorthand for `connect.fallback`: transports to try after the URL's own. */
  fallback?: string[];
  /** Shorthand for `connect.connectTimeoutMs` (default: the backoff's connect timeout). */
  connectTimeoutMs?: number;
}

/** A pooled target's client: request() as on an RPC Client, typed methods in `svc`. */
export interface PooledClient<S extends ServiceDef = {}> {
  readonly url: string;
  /** The best state among the target's connections (READY if any is). */
  readonly state: ConnectivityState;
  request(method: number, data: Uint8Array, opts?: CallOptions): Promise<Uint8Array>;
  readonly svc: ServiceClient<S>;
  /** A READY connection's rpc Client (Channel.readyClient), null when none is READY. */
  readonly rpc: Client<any> | null;
}

export interface TargetStats {
  url: string;
  state: ConnectivityState;
  connections: number;
  inFlight: number;
  pending: number;
  attempts: number;
  reconnects: number;
  lastError: HotpathError | null;
}

const STATE_RANK: Record<ConnectivityState, number> = { READY: 4, CONNECTING: 3, IDLE: 2, TRANSIENT_FAILURE: 1, SHUTDOWN: 0 };

class Target {
  readonly channels: Channel[] = [];
  constructor(
    readonly url: string,
    readonly max: number,
    private readonly channelOpts: ChannelOptions,
  ) {
    this.channels.push(new Channel(url, channelOpts));
  }

  /** Least-in-flight READY channel; opens another (up to max) when every READY one is busy. */
  pick(): Channel {
    let best: Channel | null = null;
    for (const c of this.channels) if (c.state === "READY" && (best === null || c.inFlight < best.inFlight)) best = c;
    if (best === null) return this.channels[0]!;
    if (best.inFlight > 0 && this.channels.length < this.max) {
      const c = new Channel(this.url, this.channelOpts);
      this.channels.push(c);
      c.connect();
    }
    return best;
  }

  get state(): ConnectivityState {
    let s: ConnectivityState = "SHUTDOWN";
    for (const c of this.channels) if (STATE_RANK[c.state] > STATE_RANK[s]) s = c.state;
    return s;
  }

  stats(): TargetStats {
    let connections = 0, inFlight = 0, pending = 0, attempts = 0, reconnects = 0;
    let lastError: HotpathError | null = null;
    for (const c of this.channels) {
      connections += c.connections;
      inFlight += c.inFlight;
      pending += c.pendingCalls;
      attempts += c.attempts;
      reconnects += c.reconnects;
      lastError = c.lastError ?? lastError;
    }
    return { url: this.url, state: this.state, connections, inFlight, pending, attempts, reconnects, lastError };
  }
}

export class ConnectionPool implements AsyncDisposable {
  private readonly opts: PoolOptions;
  private readonly targets = new Map<string, Target>();
  private readonly clients = new Map<string, PooledClient<any>>();
  private closed = false;

  constructor(opts: PoolOptions = {}) {
    this.opts = opts;
  }

  /**
   * The shared client for `url` (made on first use; connecting starts with its first call).
   * UsageError after close() or for a maxConnections that is not an integer ≥ 1.
   */
  client<S extends ServiceDef = {}>(url: string, opts: TargetOptions<S> = {}): PooledClient<S> {
    if (this.closed) throw new UsageError(`pool: client(${url}) after close()`);
    const have = this.clients.get(url);
    if (have !== undefined) return have as PooledClient<S>;
    const o = { ...this.opts, ...opts };
    const max = o.maxConnections ?? 1;
    if (!Number.isInteger(max) || max < 1) throw new UsageError(`pool: maxConnections ${max} must be an integer ≥ 1`);
    const idempotent = new Set(o.idempotent ?? []);
    for (const m of Object.values(opts.service ?? {})) if ((m as { idempotent?: unknown }).idempotent === true) idempotent.add(m.id);
    const connect = { ...o.connect };
    if (o.fallback !== undefined) connect.fallback = o.fallback;
    if (o.connectTimeoutMs !== undefined) connect.connectTimeoutMs = o.connectTimeoutMs;
    const onState = o.onStateChange;
    const target = new Target(url, max, {
      ...o,
      connect,
      idempotent,
      onStateChange: onState ? (s, p) => onState(url, s, p) : undefined,
    });
    this.targets.set(url, target);
    const request = (method: number, data: Uint8Array, callOpts?: CallOptions) => target.pick().request(method, data, callOpts);
    const svc: Record<string, (req: unknown, callOpts?: CallOptions) => Promise<unknown>> = {};
    for (const [name, m] of Object.entries(opts.service ?? {})) {
      const enc = (m.request ?? raw) as Codec<unknown>;
      const dec = (m.response ?? raw) as Codec<unknown>;
      svc[name] = (value, callOpts) => {
        let data: Uint8Array;
        try {
          data = enc.encode(value);
        } catch (e) {
          return Promise.reject(e);
        }
        return request(m.id, data, callOpts).then((b) => dec.decode(b));
      };
    }
    const client: PooledClient<S> = {
      url,
      get state() {
        return target.state;
      },
      get rpc() {
        for (const c of target.channels) if (c.readyClient !== null) return c.readyClient;
        return null;
      },
      request,
      svc: svc as ServiceClient<S>,
    };
    this.clients.set(url, client);
    return client;
  }

  /** Per target: state, connections, in flight, waiting, connect attempts, reconnects, last error. */
  stats(): TargetStats[] {
    return [...this.targets.values()].map((t) => t.stats());
  }

  /** Closes every connection; waiting and in-flight calls fail with TransportClosedError. Idempotent. */
  close(): Promise<void> {
    this.closed = true;
    for (const t of this.targets.values()) for (const c of t.channels) c.close();
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
