/**
 * The kv client: a typed promise API and a hot-path callback API over one or more kv servers.
 *
 *   await using kv = await kvConnect(["tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000"]);
 *   const v = await kv.put("user:1", "ada");          // 17
 *   const got = await kv.get("user:1");               // { value: Uint8Array "ada", version: 17 }
 *   await kv.cas("user:1", v, "grace");               // { ok: true, version: 18 }
 *
 *   kv.onResult = (ud, err, found, version, value) => { ... };   // value valid during the call only
 *   if (kv.getCb(keyBytes, 7) === SEND_FULL) kv.poll();
 *   kv.poll();                                        // delivers results inline
 *
 * Contract:
 * - Keys belong to servers by rendezvous hashing (hash.ts) over the URL list as given; each
 *   server is one target of a ConnectionPool (reconnect with backoff). kvConnect HELLOs every
 *   server and fails with KvUnavailableError if one cannot be reached then.
 * - Afterwards a call to a server that is down fails fast with KvUnavailableError (the pool's
 *   error as `cause`): at once while the pool is in TRANSIENT_FAILURE, else after the one
 *   connect attempt it triggers. Calls to the other servers go on. When the server is back the
 *   pool reconnects on a later call, and its keys work again with no user code.
 * - The store's errors come back as their own classes (KvFullError, KvKeyError, ...).
 * - `connect` (auth, tls, expectUid, ...) applies to every server. A server that refuses the
 *   client (no or wrong token) makes kvConnect reject with KvUnavailableError naming the URL
 *   and the reason; its `cause` is the pool's error, whose own cause is the AuthError.
 * - `pool.maxConnections` > 1 is allowed: calls spread over the target's connections, while
 *   the seam (hello, rpc, ucx) describes one of them, whose HELLO was asked on that connection
 *   itself, so a write buffer is never used on a connection it was not offered to.
 * - mget: each server's keys go in MGETs of at most MAX_MGET_KEYS keys and 1 MiB; a reply that would exceed
 *   the connection's send limit is refused by the server and asked for again in halves.
 * - `oneSided: "auto"`: where the connection's HELLO offers it (ucx with RMA), get() reads
 *   one-sided (one-sided.ts, verified, never torn) and falls back to KV_GET; put() of a value
 *   of at least `largePutBytes` goes by RMA put + KV_COMMIT.
 * - Hot path: getCb / putCb send one request each, no promise, and return SEND_OK, SEND_FULL
 *   (window full: poll and retry) or SEND_CLOSED (that server is not connected now: the call
 *   was not sent, and a reconnect is started). poll() delivers results to onResult inline;
 *   over event-driven transports (tcp; shm / ucx in their event-loop modes) results arrive from
 *   the event loop, so a loop awaits wait() between polls. The hot path is RPC only. Over shm
 *   it makes no object per getCb (values up to the server's 128-byte copy limit) or putCb in
 *   steady state, on either side: responses are decoded in place and value views are cached
 *   per body view (test/kv/rpc-alloc.test.ts).
 *
 * Threading: a client belongs to the thread that made it.
 */

import { EMPTY_BYTES } from "../bytes.ts";
import { SEND_CLOSED, SEND_OK, sendLimit, type ConnectOptions, type SendStatus } from "../contract/transport.ts";
import { readU32 } from "../bytes.ts";
import { HotpathError, KvUnavailableError, KvValueTooLargeError, ProtocolError, RemoteError, TimeoutError, TransportClosedError, UsageError, rebuildRemoteError } from "../errors.ts";
import { ConnectionPool, type PooledClient, type PoolOptions } from "../pool/pool.ts";
import type { Client } from "../rpc/client.ts";
import type { UcxConnection } from "../ucx/connection.ts";
import { Rendezvous } from "./hash.ts";
import { oneSidedClient } from "./one-sided.ts";
import * as p from "./protocol.ts";
import type { KvCasResult, KvValue } from "./store.ts";

export interface KvClientOptions {
  /** Passed to the ConnectionPool (backoff, connect options, ...). Default backoff: KV_BACKOFF. */
  pool?: PoolOptions;
  /** Per call, default 5000. */
  timeoutMs?: number;
  /** Default "auto": one-sided GET (and large PUT) where HELLO offers it. */
  oneSided?: "auto" | "never";
  /** Values at least this long go by RMA put + COMMIT when offered; default 16 KiB. */
  largePutBytes?: number;
  /**
   * Connect options for every server (auth token, tls, expectUid, ...): merged over
   * `pool.connect`; on ucx URLs `ucx.rma` is set when `oneSided` is "auto".
   */
  connect?: ConnectOptions;
}

export type KvKey = Uint8Array | string;

export type KvOnResult = (userData: number, error: Error | null, found: boolean, version: number, value: Uint8Array | null) => void;

export interface KvClient extends AsyncDisposable {
  /** The value is the client's own copy. */
  get(key: KvKey): Promise<KvValue | null>;
  put(key: KvKey, value: Uint8Array | string): Promise<number>;
  del(key: KvKey): Promise<boolean>;
  cas(key: KvKey, expectedVersion: number, value: Uint8Array | string): Promise<KvCasResult>;
  /**
   * One MGET per server (at most MAX_MGET_KEYS keys each), results in key order; a batch whose
   * reply would exceed what a connection can send is split in halves until each reply fits.
   */
  mget(keys: KvKey[]): Promise<Array<KvValue | null>>;
  stats(): Promise<Array<{ url: string; stats: unknown } | { url: string; error: Error }>>;
  /** SAVE on every server. */
  save(): Promise<void>;
  /** Rendezvous hashing: the URL that owns the key. */
  serverFor(key: KvKey): string;
  readonly urls: string[];
  /** Per server: the one-sided seam's view (its HELLO, rpc Client, ucx Connection). */
  readonly servers: readonly p.KvServerConn[];
  onResult: KvOnResult | null;
  /** GET without a promise; the value given to onResult is valid during the callback only. */
  getCb(key: Uint8Array, userData: number): SendStatus;
  putCb(key: Uint8Array, value: Uint8Array, userData: number): SendStatus;
  /** Delivers finished hot-path calls to onResult; returns how many. */
  poll(): number;
  /** Resolves when results may be ready (true) or after timeoutMs (false). */
  wait(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

export const DEFAULT_KV_TIMEOUT_MS = 5000;
/** Cached value views: a session's response slots and ring entries (a few hundred) with room to spare. */
const VALUE_VIEW_CACHE = 4096;
/** Cached PUT request views: one per request length in use (a workload has a few sizes). */
const PUT_VIEW_CACHE = 256;
const TWO_32 = 0x1_0000_0000;
/** The high word of a u64 below 2^53 (protocol.ts's readU64 refuses more). */
const MAX_HIGH_WORD = 0x1f_ffff;
export const DEFAULT_LARGE_PUT_BYTES = 16 << 10;
/** An MGET request's body at most: far below every transport's message limit, and big enough that splitting costs nothing. */
const MGET_REQUEST_BYTES = 1 << 20;
/** A restarted kv server is found within seconds (gRPC's 120 s cap suits fleets of clients, not a cache). */
export const KV_BACKOFF = Object.freeze({ initialMs: 100, maxMs: 2000 });

const utf8 = new TextEncoder();

function checkBytes(v: unknown, what: string): Uint8Array {
  if (typeof v === "string") return utf8.encode(v);
  if (v instanceof Uint8Array) return v;
  throw new UsageError(`kv ${what} must be a Uint8Array or a string, got ${v === null ? "null" : typeof v}`);
}

/** One server: its pool target and the current connection's HELLO (the seam one-sided.ts reads). */
class ServerConn implements p.KvServerConn {
  hello: p.KvHello | null = null;
  rpc: Client<number> | null = null;
  ucx: UcxConnection | null = null;
  rma: unknown = null;
  /** Earlier connections with hot-path calls not yet delivered: poll() drains them. */
  readonly retired: Client<number>[] = [];
  private kicking = false;

  constructor(
    readonly url: string,
    readonly pooled: PooledClient,
    private readonly onResponse: (ud: number, data: Uint8Array, err: HotpathError | null) => void,
    /** The per-call deadline (KvClientOptions.timeoutMs); one-sided.ts honours it too. */
    readonly timeoutMs: number,
    /** Called when the connection changes (the client drops what it cached of the old one). */
    private readonly onNewConnection: () => void,
  ) {}

  /** The HELLO sent on the current connection by sync() (null while not connected). */
  helloReq: Promise<Uint8Array> | null = null;

  /**
   * Brings rpc / hello / ucx up to date with the pool's READY connection; returns rpc. A new
   * connection is asked for its own HELLO on that very connection (helloReq), so a HELLO and
   * its write-buffer descriptor are never bound to another connection than the one that
   * answered it, whatever the pool's maxConnections.
   */
  sync(): Client<number> | null {
    const c = this.pooled.rpc as Client<number> | null;
    if (c === this.rpc) return c;
    const old = this.rpc;
    if (old !== null && old.inFlight > 0) this.retired.push(old);
    this.rpc = c;
    this.onNewConnection();
    this.hello = null;
    this.ucx = null;
    this.rma = null;
    this.helloReq = null;
    if (c !== null) {
      c.onResponse = this.onResponse;
      this.ucx = c.conn.transport === "ucx" && c.conn.caps.rma ? (c.conn as unknown as UcxConnection) : null;
      const req = (this.helloReq = c.request(p.KV_HELLO, EMPTY_BYTES, { timeoutMs: this.timeoutMs }));
      req.then(
        (b) => {
          if (this.rpc === c) this.hello = helloOrNull(b);
        },
        () => {}, // the connection went: the next sync() starts over
      );
    }
    return c;
  }

  /** Not connected: one HELLO through the pool starts a reconnect (at most one at a time); the connection's own HELLO follows in sync(). */
  kick(): void {
    if (this.kicking) return;
    this.kicking = true;
    this.pooled.request(p.KV_HELLO, EMPTY_BYTES, { failFast: true, timeoutMs: this.timeoutMs }).then(
      () => {
        this.kicking = false;
        this.sync();
      },
      () => {
        this.kicking = false;
      },
    );
  }
}

/** A later connection's HELLO; a malformed one leaves the connection without one (RPC only). */
function helloOrNull(b: Uint8Array): p.KvHello | null {
  try {
    return p.decodeHello(b);
  } catch {
    return null;
  }
}

/** What a failed call rejects with: a lost or unreachable server is KvUnavailableError. */
function kvError(sc: ServerConn, e: unknown): unknown {
  if (e instanceof RemoteError && e.constructor === RemoteError) return rebuildRemoteError(e);
  if (e instanceof TransportClosedError || (e instanceof TimeoutError && sc.pooled.state !== "READY")) {
    return new KvUnavailableError(`kv: server ${sc.url} is unavailable: ${e.message}`, { cause: e });
  }
  return e;
}

class KvClientImpl implements KvClient {
  readonly urls: string[];
  readonly servers: ServerConn[];
  onResult: KvOnResult | null = null;
  private readonly ring: Rendezvous;
  private readonly oneSided: boolean;
  private readonly largePutBytes: number;
  private readonly timeoutMs: number;
  private putScratch = new Uint8Array(4096);
  /** putView()'s cache: length -> view of putScratch. */
  private readonly putViews = new Map<number, Uint8Array>();
  /** valueOf()'s cache: body view -> the value view made of it. */
  private readonly valueViews = new Map<Uint8Array, Uint8Array>();
  /** Connections wait in spin / blocking mode: nothing but poll() brings responses in (see track()). */
  private readonly pumps: boolean;
  private promiseCalls = 0;
  private pumpOn = false;
  private closed = false;

  constructor(
    urls: string[],
    private readonly pool: ConnectionPool,
    opts: KvClientOptions,
  ) {
    this.urls = urls;
    this.ring = new Rendezvous(urls);
    this.oneSided = (opts.oneSided ?? "auto") === "auto";
    this.largePutBytes = opts.largePutBytes ?? DEFAULT_LARGE_PUT_BYTES;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_KV_TIMEOUT_MS;
    const connect: ConnectOptions = { ...opts.pool?.connect, ...opts.connect };
    const mode = connect.wait?.mode;
    this.pumps = mode === "spin" || mode === "blocking";
    this.servers = urls.map((u) => {
      const target = { connect: u.toLowerCase().startsWith("ucx:") && this.oneSided ? { ...connect, ucx: { ...connect.ucx, rma: true } } : connect };
      return new ServerConn(u, pool.client(u, target), this.onRpcResponse, this.timeoutMs, this.dropViews);
    });
  }

  /**
   * A promise call on connections that wait in spin / blocking mode: their responses come in
   * only through poll(), so while such calls are outstanding the client polls every connection
   * from the event loop (conn.poll(): settles promises, queues hot-path results for the
   * application's own poll()). Event-driven connections need none of it.
   */
  private track<T>(pr: Promise<T>): Promise<T> {
    if (!this.pumps) return pr;
    this.promiseCalls++;
    if (!this.pumpOn) {
      this.pumpOn = true;
      setImmediate(this.pump);
    }
    return pr.finally(() => {
      this.promiseCalls--;
    });
  }

  private readonly pump = (): void => {
    if (this.promiseCalls === 0 || this.closed) {
      this.pumpOn = false;
      return;
    }
    for (const sc of this.servers) {
      const c = sc.pooled.rpc;
      if (c !== null) c.conn.poll();
      for (const old of sc.retired) old.conn.poll();
    }
    setImmediate(this.pump);
  };

  /** Each server's first HELLO; KvUnavailableError (pool closed) for the first one that fails. */
  start(): Promise<void> {
    return this.track(this.hellos());
  }

  private async hellos(): Promise<void> {
    await Promise.all(
      this.servers.map(async (sc) => {
        try {
          // The pool's HELLO connects; the one kept is answered on sc.rpc's own connection (sync).
          await sc.pooled.request(p.KV_HELLO, EMPTY_BYTES, { failFast: true, timeoutMs: this.timeoutMs });
          sc.sync();
          if (sc.helloReq === null) throw new TransportClosedError(`kv: the connection to ${sc.url} closed right after it answered`);
          const c = sc.rpc;
          const hello = p.decodeHello(await sc.helloReq);
          if (sc.rpc === c) sc.hello = hello;
        } catch (e) {
          const err = kvError(sc, e);
          throw err instanceof KvUnavailableError ? err : new KvUnavailableError(`kv: server ${sc.url} is unavailable: ${(e as Error).message}`, { cause: e });
        }
      }),
    );
  }

  private owner(key: Uint8Array): ServerConn {
    return this.servers[this.ring.owner(key)]!;
  }

  serverFor(key: KvKey): string {
    return this.owner(checkBytes(key, "key")).url;
  }

  private call(sc: ServerConn, method: number, body: Uint8Array): Promise<Uint8Array> {
    sc.sync();
    return this.track(sc.pooled.request(method, body, { failFast: true, timeoutMs: this.timeoutMs })).catch((e) => {
      throw kvError(sc, e);
    });
  }

  /** A value the connection cannot carry is refused here, with the store's error class. */
  private checkValue(sc: ServerConn, key: Uint8Array, value: Uint8Array): void {
    const rpc = sc.rpc;
    if (rpc === null) return;
    const limit = sendLimit(rpc.conn.caps) - p.REQUEST_OVERHEAD - key.length;
    if (value.length > limit) {
      throw new KvValueTooLargeError(`kv put: value of ${value.length} bytes exceeds the ${limit} bytes a ${rpc.conn.transport} message to ${sc.url} can carry with this key (server maxValueBytes ${sc.hello?.maxValueBytes ?? "unknown"})`);
    }
  }

  async get(key: KvKey): Promise<KvValue | null> {
    const k = checkBytes(key, "key");
    const sc = this.owner(k);
    sc.sync();
    if (this.oneSided && sc.ucx !== null && sc.hello !== null && (sc.hello.flags & p.HELLO_ONE_SIDED) !== 0) {
      try {
        const r = await this.track(oneSidedClient.oneSidedGet(sc, k));
        if (r !== undefined) return r;
      } catch (e) {
        throw kvError(sc, e);
      }
    }
    return p.decodeGetResponse(await this.call(sc, p.KV_GET, k));
  }

  async put(key: KvKey, value: Uint8Array | string): Promise<number> {
    const k = checkBytes(key, "key");
    const v = checkBytes(value, "value");
    const sc = this.owner(k);
    sc.sync();
    if (this.oneSided && v.length >= this.largePutBytes && sc.ucx !== null && sc.hello !== null && (sc.hello.flags & p.HELLO_WRITE_BUFFER) !== 0) {
      try {
        return await this.track(oneSidedClient.largePut(sc, k, v));
      } catch (e) {
        throw kvError(sc, e);
      }
    }
    this.checkValue(sc, k, v);
    return p.decodeVersion(await this.call(sc, p.KV_PUT, p.encodePut(k, v)));
  }

  async del(key: KvKey): Promise<boolean> {
    const k = checkBytes(key, "key");
    return p.decodeDelResponse(await this.call(this.owner(k), p.KV_DEL, k));
  }

  async cas(key: KvKey, expectedVersion: number, value: Uint8Array | string): Promise<KvCasResult> {
    const k = checkBytes(key, "key");
    const v = checkBytes(value, "value");
    const sc = this.owner(k);
    sc.sync();
    this.checkValue(sc, k, v);
    return p.decodeCasResponse(await this.call(sc, p.KV_CAS, p.encodeCas(expectedVersion, k, v)));
  }

  async mget(keys: KvKey[]): Promise<Array<KvValue | null>> {
    if (!Array.isArray(keys)) throw new UsageError(`kv mget: keys must be an array`);
    const ks = keys.map((k) => checkBytes(k, "key"));
    const out: Array<KvValue | null> = new Array(ks.length).fill(null);
    // Per server: the positions of its keys, sent in chunks an MGET may hold.
    const byServer = new Map<ServerConn, number[]>();
    for (let i = 0; i < ks.length; i++) {
      const sc = this.owner(ks[i]!);
      let list = byServer.get(sc);
      if (list === undefined) byServer.set(sc, (list = []));
      list.push(i);
    }
    const calls: Promise<void>[] = [];
    for (const [sc, idx] of byServer) {
      let part: number[] = [];
      let bytes = 4;
      for (const i of idx) {
        if (part.length === p.MAX_MGET_KEYS || (part.length > 0 && bytes + 4 + ks[i]!.length > MGET_REQUEST_BYTES)) {
          calls.push(this.mgetPart(sc, ks, part, out));
          part = [];
          bytes = 4;
        }
        part.push(i);
        bytes += 4 + ks[i]!.length;
      }
      calls.push(this.mgetPart(sc, ks, part, out));
    }
    await Promise.all(calls);
    return out;
  }

  /**
   * One MGET of the keys at positions `part`. A reply the server refuses as over the send limit
   * (KvValueTooLargeError) is asked for in halves, down to single keys (maxValueBytes fits one).
   */
  private async mgetPart(sc: ServerConn, ks: Uint8Array[], part: number[], out: Array<KvValue | null>): Promise<void> {
    let body: Uint8Array;
    try {
      body = await this.call(sc, p.KV_MGET, p.encodeMget(part.map((i) => ks[i]!)));
    } catch (e) {
      if (!(e instanceof KvValueTooLargeError) || part.length < 2) throw e;
      const half = part.length >>> 1;
      await Promise.all([this.mgetPart(sc, ks, part.slice(0, half), out), this.mgetPart(sc, ks, part.slice(half), out)]);
      return;
    }
    const got = p.decodeMgetResponse(body, part.length, false); // the body is ours already
    for (let j = 0; j < part.length; j++) out[part[j]!] = got[j]!;
  }

  async stats(): Promise<Array<{ url: string; stats: unknown } | { url: string; error: Error }>> {
    return Promise.all(
      this.servers.map((sc) =>
        this.call(sc, p.KV_STATS, EMPTY_BYTES).then(
          (b) => ({ url: sc.url, stats: JSON.parse(new TextDecoder().decode(b)) as unknown }),
          (e) => ({ url: sc.url, error: e as Error }),
        ),
      ),
    );
  }

  async save(): Promise<void> {
    await Promise.all(this.servers.map((sc) => this.call(sc, p.KV_SAVE, EMPTY_BYTES)));
  }

  // ---- hot path ----

  /**
   * Every rpc Client's onResponse: a PUT's response is 8 bytes, a GET's at least 9. Decoded in
   * place, no object made per call: the value is a view of the response body cached per body
   * view (see valueOf); a malformed body goes to decodeGetResponse for its ProtocolError.
   */
  private readonly onRpcResponse = (ud: number, data: Uint8Array, err: HotpathError | null): void => {
    const cb = this.onResult!;
    if (err !== null) return cb(ud, this.hotError(err), false, 0, null);
    const len = data.length;
    if (len === 8) {
      let v: number;
      try {
        v = p.decodeVersion(data);
      } catch (e) {
        return cb(ud, e as Error, false, 0, null);
      }
      return cb(ud, null, true, v, null);
    }
    const found = len >= p.GET_RESPONSE_OVERHEAD ? data[0]! : 2;
    const hi = found < 2 ? readU32(data, 5) : 0;
    if (found === 1 && hi <= MAX_HIGH_WORD) return cb(ud, null, true, hi * TWO_32 + readU32(data, 1), this.valueOf(data));
    if (found === 0 && len === p.GET_RESPONSE_OVERHEAD && hi === 0 && readU32(data, 1) === 0) return cb(ud, null, false, 0, null);
    try {
      p.decodeGetResponse(data);
    } catch (e) {
      return cb(ud, e as Error, false, 0, null);
    }
    cb(ud, new ProtocolError(`kv GET response of ${len} bytes could not be decoded`), false, 0, null); // not reached: decodeGetResponse throws for every body refused above
  };

  /**
   * The value of GET response `body` (the bytes after its 9-byte head), as a view made once per
   * body view: the segment transports hand out the same view object for the same slot and
   * length (their bodyView cache), so in steady state no view is made per call. A body not seen
   * before (or tcp's fresh Buffers) makes one view; the map is emptied when it grows past
   * VALUE_VIEW_CACHE.
   */
  private valueOf(body: Uint8Array): Uint8Array {
    const known = this.valueViews.get(body);
    if (known !== undefined) return known;
    const v = body.subarray(p.GET_RESPONSE_OVERHEAD);
    if (this.valueViews.size >= VALUE_VIEW_CACHE) this.valueViews.clear();
    this.valueViews.set(body, v);
    return v;
  }

  /** Forgets the cached views (a connection changed: its memory must not be kept alive by them). */
  private readonly dropViews = (): void => {
    this.valueViews.clear();
  };

  private hotError(err: HotpathError): Error {
    if (err instanceof RemoteError) return rebuildRemoteError(err);
    if (err instanceof TransportClosedError) return new KvUnavailableError(`kv: the connection to the server closed: ${err.message}`, { cause: err });
    return err;
  }

  private hotClient(sc: ServerConn): Client<number> | null {
    let c = sc.rpc;
    if (c === null || c.closed || c.draining) c = sc.sync();
    if (c === null || c.closed) {
      sc.kick();
      return null;
    }
    return c;
  }

  getCb(key: Uint8Array, userData: number): SendStatus {
    if (this.onResult === null) throw new UsageError("kv getCb: set onResult before the first call");
    const sc = this.servers.length === 1 ? this.servers[0]! : this.owner(key);
    const c = this.hotClient(sc);
    if (c === null) return SEND_CLOSED;
    return c.call(p.KV_GET, key, userData);
  }

  putCb(key: Uint8Array, value: Uint8Array, userData: number): SendStatus {
    if (this.onResult === null) throw new UsageError("kv putCb: set onResult before the first call");
    const sc = this.servers.length === 1 ? this.servers[0]! : this.owner(key);
    const c = this.hotClient(sc);
    if (c === null) return SEND_CLOSED;
    const n = 4 + key.length + value.length;
    if (this.putScratch.length < n) {
      this.putScratch = new Uint8Array(Math.max(n, this.putScratch.length * 2));
      this.putViews.clear(); // views of the old buffer
    }
    p.writePut(this.putScratch, key, value);
    return c.call(p.KV_PUT, this.putView(n), userData); // copied before it returns
  }

  /** The first `n` bytes of putScratch, as a view made once per length (none per call for a steady size). */
  private putView(n: number): Uint8Array {
    let v = this.putViews.get(n);
    if (v === undefined) {
      if (this.putViews.size >= PUT_VIEW_CACHE) this.putViews.clear();
      this.putViews.set(n, (v = this.putScratch.subarray(0, n)));
    }
    return v;
  }

  poll(): number {
    let n = 0;
    const servers = this.servers;
    for (let i = 0; i < servers.length; i++) {
      const sc = servers[i]!;
      if (sc.rpc !== null) n += sc.rpc.poll();
      if (sc.retired.length > 0) {
        for (const old of sc.retired) n += old.poll();
        for (let j = sc.retired.length - 1; j >= 0; j--) if (sc.retired[j]!.inFlight === 0) sc.retired.splice(j, 1);
      }
    }
    return n;
  }

  wait(timeoutMs: number): Promise<boolean> {
    const waits: Promise<boolean>[] = [];
    for (const sc of this.servers) if (sc.rpc !== null && !sc.rpc.closed) waits.push(sc.rpc.wait(timeoutMs));
    if (waits.length === 0) return Bun.sleep(Math.min(timeoutMs, 1)).then(() => false);
    return waits.length === 1 ? waits[0]! : Promise.race(waits);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const sc of this.servers) sc.rma = null;
    await this.pool.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Connects to one or more kv servers (see the module comment), HELLOing each; rejects with
 * KvUnavailableError (naming the URL) when one cannot be reached, UsageError for bad options.
 * The client belongs to the calling thread.
 */
export async function kvConnect(urls: string | string[], opts: KvClientOptions = {}): Promise<KvClient> {
  const list = typeof urls === "string" ? [urls] : urls;
  if (!Array.isArray(list) || !list.every((u) => typeof u === "string" && u.length > 0)) throw new UsageError(`kvConnect: urls must be a URL or an array of URLs, got ${JSON.stringify(urls)}`);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_KV_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new UsageError(`kvConnect: timeoutMs ${String(timeoutMs)} must be > 0`);
  const pool = new ConnectionPool({ ...opts.pool, backoff: { ...KV_BACKOFF, ...opts.pool?.backoff } });
  let client: KvClientImpl;
  try {
    client = new KvClientImpl([...list], pool, opts);
    await client.start();
  } catch (e) {
    await pool.close();
    throw e;
  }
  return client;
}

export { SEND_OK };
