/**
 * The kv server: one KvStore served over one or more listeners (any transport) by one RPC
 * Server, with synchronous handlers for the protocol in protocol.ts.
 *
 *   await using kv = await kvServe({ listen: ["shm://kv", "tcp://127.0.0.1:0"], memoryBytes: 64 << 20 });
 *   kv.urls; // ["shm://kv", "tcp://127.0.0.1:40123"]
 *
 * Contract:
 * - Every listener serves the same store; handlers run on the server's thread, inline in
 *   request delivery, and never await. A GET finds its value with store.lookup() (no object)
 *   and builds the reply from the arena: a value of at most SMALL_VALUE_BYTES is copied into
 *   one scratch buffer, sent through a view of it cached per length (no object per call, over
 *   shm; test/kv/rpc-alloc.test.ts); a larger one goes into a transport buffer (allocReply) when
 *   it is larger than what the transport sends inline, else through the scratch buffer.
 * - The store's errors (KvFullError, KvKeyError, KvValueTooLargeError, KvSnapshotError,
 *   UsageError) go back as error replies under their own names, so the caller gets the same
 *   class; a malformed body gets a ProtocolError reply and the session goes on.
 * - maxValueBytes is lowered to what every listener can carry (a shm / inproc session's largest
 *   slab class, 16 MiB by default; 64 MiB elsewhere; listenOptions.maxMessageBytes when lower)
 *   minus the protocol's overhead.
 * - `snapshot`: kvServe first checks that a snapshot can be written there (a probe temp file
 *   created and removed; a missing or read-only directory fails kvServe with KvSnapshotError
 *   naming the path), then loads it when the file exists (a bad one fails kvServe with
 *   KvSnapshotError, nothing listens); saved on SAVE and on close() (unless `save: false`).
 * - MGET: a reply larger than the connection can send is refused with KvValueTooLargeError
 *   (both sizes named) before it is built; at most MAX_MGET_KEYS keys per request.
 * - `listenOptions` go to every listener (auth, tls, allow, limits).
 * - `oneSided` (default true): ucx listeners are opened with `ucx: { rma: true }` and HELLO on
 *   such a connection offers the arena and names the write buffer's size; the buffer itself is
 *   registered when the client asks (KV_WRITE_BUFFER, its first large put), within
 *   `writeBufferTotalBytes` (rma-server.ts). Elsewhere HELLO offers nothing (flags 0).
 * - `wait` with mode "spin" or "blocking": the server busy-polls its connections, yielding to
 *   the event loop every SPIN_SLICE_MS (to accept connections and serve tcp); other modes are
 *   event-driven.
 * - close() drains (GOAWAY, calls in flight finish, at most drainMs), saves, frees the arena.
 *
 * Threading: the thread that called kvServe.
 */

import { existsSync } from "node:fs";
import { listen } from "../connect/registry.ts";
import { EMPTY_BYTES } from "../bytes.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, SEND_FULL, sendLimit, type Connection, type Listener, type ListenOptions, type WaitPolicy } from "../contract/transport.ts";
import { HotpathError, KvValueTooLargeError, UsageError, describeThrown, errorNameOf } from "../errors.ts";
import { Server, type RequestHandle } from "../rpc/server.ts";
import { DEFAULT_SEGMENT_CONFIG } from "../segment/layout.ts";
import { KvStore, type KvStoreOptions } from "./store.ts";
import { createRmaServer } from "./rma-server.ts";
import { probeSnapshotPath } from "./snapshot.ts";
import * as p from "./protocol.ts";

export interface KvServerOptions extends KvStoreOptions {
  /** One or more URLs, all serving the same store. */
  listen: string[];
  /** Loaded at start if the file exists; saved on close() and SAVE. */
  snapshot?: string;
  /** Default true: ucx listeners get `ucx: { rma: true }` and HELLO offers the arena. */
  oneSided?: boolean;
  /** Per-client RMA write buffer for large puts; default 1 MiB; 0 = none. Registered on the client's first large put (KV_WRITE_BUFFER). */
  writeBufferBytes?: number;
  /** Cap on all clients' write buffers together (rma-server.ts's default: 64 MiB); a client past it uses KV_PUT. */
  writeBufferTotalBytes?: number;
  /** Passed to the listeners (the bench uses spin). */
  wait?: Partial<WaitPolicy>;
  /**
   * Options for every listener (auth token, TLS, allowed uids, tcp limits, maxMessageBytes).
   * `wait` above, when given, overrides listenOptions.wait; on ucx listeners `ucx.rma` is set
   * when `oneSided` is on (other ucx options are kept).
   */
  listenOptions?: ListenOptions;
}

export interface KvServer extends AsyncDisposable {
  /** The real URLs (port 0 resolved), in the order of `listen`. */
  readonly urls: string[];
  readonly store: KvStore;
  /** The RPC server (its sessions, busy refusals). */
  readonly server: Server;
  /**
   * Graceful: stops listening, drains (GOAWAY; calls in flight finish, at most `drainMs`,
   * default 1000), saves the snapshot when one is configured (unless `save: false`), frees
   * the arena. Idempotent.
   */
  close(opts?: { save?: boolean; drainMs?: number }): Promise<void>;
}

/** Optional parts plugged in by their owners (tests may pass their own). */
export interface KvServerHooks {
  /** One-sided access; default: rma-server.ts's when `oneSided` and a ucx listener is asked for. */
  rma?: p.KvRmaServer;
}

export const DEFAULT_WRITE_BUFFER_BYTES = 1 << 20;
/** Spin mode: how long the server busy-polls before it lets the event loop run (accepts, tcp, timers). */
const SPIN_SLICE_MS = 2;
const DEFAULT_DRAIN_MS = 1000;
/**
 * GET values up to this size are copied by a JS loop (no view of the arena made): about 1 ns a
 * byte, against about 100 ns for a view and a native copy, so the two meet near here (measured).
 */
const SMALL_VALUE_BYTES = 128;
/** Reply scratch memory kept between calls: replies above it get a one-off buffer (a rare huge MGET must not pin its size). */
const SCRATCH_KEEP_BYTES = 1 << 20;
/** Cached PUT body views: a session's request slots (a few hundred) per session, with room to spare. */
const PUT_VIEW_CACHE = 4096;

interface PutParts {
  keyLen: number;
  key: Uint8Array;
  value: Uint8Array;
}
const GET_ABSENT = (() => {
  const b = new Uint8Array(p.GET_RESPONSE_OVERHEAD);
  p.writeGetResponse(b, false, 0, null);
  return b;
})();
const ONE = new Uint8Array([1]);
const ZERO = new Uint8Array([0]);

/** The largest body a listener of this URL carries with default options. */
export function listenerMessageLimit(url: string): number {
  const scheme = url.slice(0, Math.max(0, url.indexOf(":"))).toLowerCase();
  if (scheme === "shm" || scheme === "inproc") {
    const classes = DEFAULT_SEGMENT_CONFIG.sizeClasses;
    return Math.min(DEFAULT_MAX_MESSAGE_BYTES, classes[classes.length - 1]!.slotBytes);
  }
  return DEFAULT_MAX_MESSAGE_BYTES;
}

const isUcx = (url: string) => url.toLowerCase().startsWith("ucx:");
/** shm and inproc: the transports whose body views recur (see putParts). */
const isSegment = (conn: Connection) => conn.transport === "shm" || conn.transport === "inproc";

/**
 * Opens the store (or loads the snapshot), listens on every URL and serves until close().
 * Fails (leaving nothing open) with UsageError for bad options, KvSnapshotError for a snapshot
 * that cannot be loaded, or the transport's error when a URL cannot be listened on.
 */
export async function kvServe(opts: KvServerOptions, hooks: KvServerHooks = {}): Promise<KvServer> {
  if (!Array.isArray(opts.listen) || opts.listen.length === 0 || !opts.listen.every((u) => typeof u === "string")) {
    throw new UsageError(`kvServe: listen must be a non-empty array of URLs, got ${JSON.stringify(opts.listen)}`);
  }
  const writeBufferBytes = opts.writeBufferBytes ?? DEFAULT_WRITE_BUFFER_BYTES;
  if (!Number.isSafeInteger(writeBufferBytes) || writeBufferBytes < 0) throw new UsageError(`kvServe: writeBufferBytes ${String(writeBufferBytes)} must be an integer ≥ 0`);
  const maxKeyBytes = opts.maxKeyBytes ?? 1024;
  let transportLimit = Infinity;
  for (const u of opts.listen) transportLimit = Math.min(transportLimit, listenerMessageLimit(u), opts.listenOptions?.maxMessageBytes ?? Infinity);
  const valueLimit = transportLimit - p.REQUEST_OVERHEAD - maxKeyBytes;
  if (valueLimit < 1) throw new UsageError(`kvServe: maxKeyBytes ${maxKeyBytes} leaves no room for a value in a ${transportLimit}-byte message`);
  const storeOpts: KvStoreOptions = { ...opts, maxValueBytes: Math.min(opts.maxValueBytes ?? valueLimit, valueLimit) };
  if (opts.snapshot !== undefined) probeSnapshotPath(opts.snapshot); // a bad path fails now, not at shutdown with every write lost
  const store = opts.snapshot !== undefined && existsSync(opts.snapshot) ? KvStore.load(opts.snapshot, storeOpts) : KvStore.create(storeOpts);
  const oneSided = opts.oneSided ?? true;
  const rma = hooks.rma ?? (oneSided && opts.listen.some(isUcx) ? createRmaServer(store, { writeBufferBytes, writeBufferTotalBytes: opts.writeBufferTotalBytes }) : null);
  const kv = new KvServerImpl(store, { ...opts, wait: opts.wait ?? opts.listenOptions?.wait }, rma); // start() spins for either
  try {
    for (const url of opts.listen) {
      const lo: ListenOptions = { ...opts.listenOptions, wait: opts.wait ?? opts.listenOptions?.wait };
      if (isUcx(url) && oneSided) lo.ucx = { ...opts.listenOptions?.ucx, rma: true };
      kv.attach(await listen(url, lo));
    }
  } catch (e) {
    await kv.close({ save: false, drainMs: 0 });
    throw e;
  }
  kv.start();
  return kv;
}

class KvServerImpl implements KvServer {
  readonly urls: string[] = [];
  readonly server: Server;
  private readonly listeners: Listener[] = [];
  private scratch = new Uint8Array(64 << 10);
  /** putParts()'s cache: PUT body view -> its key and value views. */
  private readonly putViews = new Map<Uint8Array, PutParts>();
  /** Views of `scratch` by length (a small GET's reply), made once each. */
  private readonly replyViews: Array<Uint8Array | undefined> = new Array(p.GET_RESPONSE_OVERHEAD + SMALL_VALUE_BYTES + 1);
  private readonly ver8 = new Uint8Array(8);
  private readonly cas9 = new Uint8Array(9);
  private spinning = false;
  private closing: Promise<void> | null = null;

  constructor(
    readonly store: KvStore,
    private readonly opts: KvServerOptions,
    private readonly rma: p.KvRmaServer | null,
  ) {
    this.server = new Server({
      onRequest: (h) => this.onRequest(h),
      onSessionClose: (s) => {
        this.putViews.clear(); // views of the closed session's memory must not keep it alive
        this.rma?.onConnectionClose?.(s.conn);
      },
    });
  }

  attach(listener: Listener): void {
    this.listeners.push(listener);
    this.urls.push(listener.url);
    listener.onRefused((error, reason) => this.server.reportFailure(error, { source: "refused", method: null, session: null, reason, listener }));
    this.server.attach(listener);
  }

  start(): void {
    const mode = this.opts.wait?.mode;
    if (mode !== "spin" && mode !== "blocking") return;
    this.spinning = true;
    const slice = () => {
      if (!this.spinning) return;
      const end = performance.now() + SPIN_SLICE_MS;
      const server = this.server;
      while (performance.now() < end) for (let i = 0; i < 64; i++) server.poll();
      setImmediate(slice);
    };
    setImmediate(slice);
  }

  /**
   * A buffer of at least `n` bytes for a reply that respond() copies: the scratch buffer, grown
   * up to SCRATCH_KEEP_BYTES; a larger reply gets a one-off buffer, so one huge reply never
   * leaves the server holding its size.
   */
  private buffer(n: number): Uint8Array {
    if (n > SCRATCH_KEEP_BYTES) return new Uint8Array(n);
    if (this.scratch.length < n) this.scratch = new Uint8Array(Math.min(SCRATCH_KEEP_BYTES, Math.max(n, this.scratch.length * 2)));
    return this.scratch;
  }

  /** Bytes of scratch memory the server keeps for replies (tests: it stays bounded). */
  get scratchBytes(): number {
    return this.scratch.length;
  }

  private onRequest(h: RequestHandle): void {
    try {
      this.handle(h);
    } catch (e) {
      // Typed errors are the caller's answer; anything else is a server bug worth reporting too.
      if (!(e instanceof HotpathError)) this.server.report(e, "handler", h);
      h.respond(null, { name: errorNameOf(e), message: describeThrown(e) });
    }
  }

  private handle(h: RequestHandle): void {
    const store = this.store;
    const data = h.data;
    switch (h.method) {
      case p.KV_GET: {
        const at = store.lookup(data);
        if (at < 0) return h.respond(GET_ABSENT);
        return this.replyLookup(h, at, store.lookupBytes, store.lookupVersion);
      }
      case p.KV_PUT: {
        const parts = this.putParts(data, isSegment(h.session.conn));
        p.writeU64(this.ver8, 0, store.put(parts.key, parts.value));
        return h.respond(this.ver8);
      }
      case p.KV_DEL:
        return h.respond(store.del(data) ? ONE : ZERO);
      case p.KV_CAS: {
        const { expected, key, value } = p.decodeCas(data);
        const r = store.cas(key, expected, value);
        this.cas9[0] = r.ok ? 1 : 0;
        p.writeU64(this.cas9, 1, r.version);
        return h.respond(this.cas9);
      }
      case p.KV_MGET:
        return this.mget(h, p.decodeMget(data));
      case p.KV_HELLO:
        p.checkEmpty(data, "HELLO");
        return h.respond(this.hello(h.session.conn));
      case p.KV_STATS:
        p.checkEmpty(data, "STATS");
        return h.respond(new TextEncoder().encode(JSON.stringify({ ...store.stats(), oneSided: this.rma?.stats?.() ?? null, urls: this.urls, connections: this.server.sessions.size })));
      case p.KV_SAVE:
        p.checkEmpty(data, "SAVE");
        if (this.opts.snapshot === undefined) throw new UsageError("kv SAVE: this server has no snapshot path (start it with snapshot / --snapshot PATH)");
        store.save(this.opts.snapshot);
        return h.respond(EMPTY_BYTES);
      case p.KV_WRITE_BUFFER: {
        p.checkEmpty(data, "WRITE_BUFFER");
        const wb = this.rma?.onWriteBuffer?.(h.session.conn) ?? null;
        return h.respond(p.encodeWriteBuffer(wb?.desc ?? EMPTY_BYTES, wb?.bytes ?? 0));
      }
      case p.KV_COMMIT: {
        const req = p.decodeCommit(data);
        if (this.rma === null) throw new UsageError("kv COMMIT: this server offers no write buffer (no one-sided access)");
        p.writeU64(this.ver8, 0, this.rma.onCommit(h.session.conn, req));
        return h.respond(this.ver8);
      }
      default:
        // The pool's keepalive ping lands here too: any answer proves the server alive.
        return h.respond(null, { name: "UnknownMethodError", message: `kv server: no method ${h.method}` });
    }
  }

  /**
   * The key and value views of PUT body `data`. Over the segment transports (shm, inproc) a
   * body view object recurs for the same slot and length (their bodyView cache, which keeps
   * those views alive anyway), so the views are made once per body view and kept in a map
   * (emptied at PUT_VIEW_CACHE entries and when a session closes); elsewhere (tcp's fresh
   * Buffers, ucx's per-message views, which the map would keep alive) they are made per call.
   */
  private putParts(data: Uint8Array, cache: boolean): PutParts {
    const keyLen = p.putKeyLength(data);
    let parts = cache ? this.putViews.get(data) : undefined;
    if (parts === undefined || parts.keyLen !== keyLen) {
      parts = { keyLen, key: data.subarray(4, 4 + keyLen), value: data.subarray(4 + keyLen) };
      if (cache) {
        if (this.putViews.size >= PUT_VIEW_CACHE) this.putViews.clear();
        this.putViews.set(data, parts);
      }
    }
    return parts;
  }

  /**
   * A GET reply for the value lookup() found at arena offset `at`, with no object made per call:
   * small values are copied byte by byte from the arena into the scratch buffer and sent through
   * a view of it cached per length; large ones go into a transport buffer (allocReply).
   */
  private replyLookup(h: RequestHandle, at: number, len: number, version: number): void {
    const n = (p.GET_RESPONSE_OVERHEAD + len) | 0;
    if (len > SMALL_VALUE_BYTES) return this.replyValue(h, this.store.arena.subarray(at, at + len), version);
    const out = this.scratch;
    out[0] = 1;
    p.writeU64(out, 1, version);
    const a = this.store.arena;
    for (let i = 0; i < len; i++) out[(p.GET_RESPONSE_OVERHEAD + i) | 0] = a[(at + i) | 0]!;
    let view = this.replyViews[n];
    if (view === undefined || view.buffer !== out.buffer) view = this.replyViews[n] = out.subarray(0, n);
    h.respond(view);
  }

  /** A GET reply from the store's view: into a transport buffer when the value is large, else the scratch buffer. */
  private replyValue(h: RequestHandle, value: Uint8Array, version: number): void {
    const n = p.GET_RESPONSE_OVERHEAD + value.length;
    if (n > h.session.conn.caps.maxInlineBytes) {
      const buf = h.allocReply(n);
      if (buf !== null) {
        p.writeGetResponse(buf, true, version, value);
        if (h.replyBuffer(buf, n) !== SEND_FULL) return;
        h.releaseReply(buf); // full: the reply waits in the backlog as a copy instead
      }
    }
    const out = this.buffer(n);
    p.writeGetResponse(out, true, version, value);
    h.respond(out.subarray(0, n));
  }

  /**
   * MGET: the reply's size is summed while the values are looked up, and a reply larger than
   * this connection can send (sendLimit of the session's caps) is refused with
   * KvValueTooLargeError naming both sizes before any reply memory is allocated. A reply above
   * what the transport sends inline is built in a transport buffer (allocReply), as for GET.
   */
  private mget(h: RequestHandle, keys: Uint8Array[]): void {
    // Reads only: every view stays valid until the response is built.
    const values: Array<Uint8Array | null> = new Array(keys.length);
    const versions: number[] = new Array(keys.length);
    const caps = h.session.conn.caps;
    const limit = sendLimit(caps);
    let n = 0;
    for (let i = 0; i < keys.length; i++) {
      const r = this.store.get(keys[i]!);
      values[i] = r === null ? null : r.value;
      versions[i] = r === null ? 0 : r.version;
      n += p.MGET_ENTRY_OVERHEAD + (r === null ? 0 : r.value.length);
      if (n > limit) {
        throw new KvValueTooLargeError(`kv MGET: the reply for ${keys.length} keys would be at least ${n} bytes (${i + 1} keys looked up), over the ${limit} bytes this ${h.session.conn.transport} connection can send; ask for fewer keys per MGET`);
      }
    }
    if (n > caps.maxInlineBytes) {
      const buf = h.allocReply(n);
      if (buf !== null) {
        let at = 0;
        for (let i = 0; i < keys.length; i++) at = p.writeMgetEntry(buf, at, values[i] ?? null, versions[i]!);
        if (h.replyBuffer(buf, n) !== SEND_FULL) return;
        h.releaseReply(buf); // full: the reply waits in the backlog as a copy instead
      }
    }
    const out = this.buffer(n);
    let at = 0;
    for (let i = 0; i < keys.length; i++) at = p.writeMgetEntry(out, at, values[i] ?? null, versions[i]!);
    h.respond(out.subarray(0, n));
  }

  private hello(conn: Connection): Uint8Array {
    const offer = this.rma !== null && conn.caps.rma ? this.rma.onHello(conn) : null;
    let flags = 0;
    if (offer !== null && offer.arenaDesc.length > 0) flags |= p.HELLO_ONE_SIDED;
    if (offer !== null && (offer.writeBufDesc.length > 0 || offer.writeBufBytes > 0)) flags |= p.HELLO_WRITE_BUFFER; // no descriptor: asked for by WRITE_BUFFER
    return p.encodeHello({
      protocolVersion: p.KV_PROTOCOL_VERSION,
      maxKeyBytes: this.store.maxKeyBytes,
      maxValueBytes: this.store.maxValueBytes,
      flags,
      arenaDesc: offer?.arenaDesc ?? EMPTY_BYTES,
      writeBufDesc: offer?.writeBufDesc ?? EMPTY_BYTES,
      writeBufBytes: offer?.writeBufBytes ?? 0,
      arenaHeader: this.store.arena.slice(0, p.ARENA_HEADER_BYTES),
    });
  }

  close(opts: { save?: boolean; drainMs?: number } = {}): Promise<void> {
    this.closing ??= this.shutdown(opts);
    return this.closing;
  }

  private async shutdown(opts: { save?: boolean; drainMs?: number }): Promise<void> {
    const drainMs = opts.drainMs ?? DEFAULT_DRAIN_MS;
    try {
      if (drainMs > 0 && this.server.sessions.size > 0) await this.server.drain(drainMs);
    } finally {
      this.spinning = false;
      this.server.close();
      for (const l of this.listeners) l.close(true);
      try {
        if ((opts.save ?? true) && this.opts.snapshot !== undefined) this.store.save(this.opts.snapshot);
      } finally {
        this.rma?.close?.();
        this.store.close();
      }
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
