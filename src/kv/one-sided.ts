/**
 * The client side of one-sided access (protocol.ts's KvOneSidedClient): GET by RMA reads of the
 * server's arena, and the large PUT by an RMA put into this connection's write buffer plus one
 * KV_COMMIT. client.ts calls it for a server whose HELLO offers it (ucx with RMA).
 *
 * GET (verify.ts does the checking): read the key's 256-byte group with one RMA get, then each
 * candidate's entry record (slot hash matches, slot crc holds) with one more; a record whose crc,
 * version and key hold is the value. A key read before is one round trip: the record it had
 * then is read beside the group, and used only when the group still names that very record
 * (offset, length, version) and it verifies: versions are never reused, so such a record holds
 * exactly that version's bytes. A torn slot or record (the server was writing it) means a
 * re-read of the group, up to MAX_TORN_REREADS times, then `undefined`: client.ts sends KV_GET.
 * Not found with the group's overflow count above 0 (the key may live outside the slots, where
 * only the server looks) is `undefined` too. Every value returned is verified: never torn.
 *
 * Cost: a GET is one object (GetOp, pooled per connection) driven by RMA completions
 * (RemoteRegion.readTo: no closure, promise or view per read), reading into buffers the op
 * keeps, checked with verify.ts's allocation-free scanGroupInto / checkEntry; what it
 * allocates is the one promise it returns and the value (a copy out of the op's buffer, or for
 * records over POOLED_RECORD_BYTES a view of a buffer of its own) with its KvValue. Its
 * completions run inside worker progress; the promise settles after it.
 *
 * Large PUT: the value goes by RMA put to offset 0 of the write buffer, then ucp_ep_flush_nbx
 * (remote completion of the put), then KV_COMMIT(key, length, crc32), which the server checks
 * against the buffer before it stores (rma-server.ts). The flush, not ucp_worker_fence: in UCX
 * 1.13 the fence is per transport interface and orders nothing across lanes (a put on a NIC's
 * RMA lane, the COMMIT on another); over UCX 1.13's tcp and shared-memory transports, where RMA
 * is emulated with Active Messages served by the server's worker, the flush is one round trip;
 * the put's own completion is local only. One large put at a time per connection (the buffer is
 * one): a put that finds it busy, or a value larger than the buffer, goes by KV_PUT. The buffer
 * is not in HELLO (which names its size): the connection's first large put asks for it with
 * KV_WRITE_BUFFER (one more round trip, once); a server past its cap on write-buffer bytes
 * gives none, and that connection's large puts go by KV_PUT.
 *
 * Deadlines: every step honours the client's timeoutMs (KvServerConn.timeoutMs). Over UCX's
 * tcp and shm transports RMA is served by the server's worker, so a stopped or stuck server
 * answers no read, put or flush. A GET whose reads are unanswered at its deadline rejects with
 * TimeoutError (one sweep timer per connection, none per GET); a large put whose put + flush
 * are, too; the KV_PUT, KV_COMMIT and KV_WRITE_BUFFER requests get the time left. The
 * connection is then suspect: its GETs go by KV_GET and its large puts by KV_PUT (both with
 * RPC deadlines) until the unanswered operations complete, and one-sided again after.
 *
 *   const v = await oneSidedClient.oneSidedGet(conn, key);   // KvValue | null | undefined (= ask by RPC)
 *   const version = await oneSidedClient.largePut(conn, key, bigValue);
 *
 * Counters (`oneSidedClient.stats`): GETs settled one-sided (hits; hintHits of them in one round
 * trip), torn re-reads, GETs handed back to the RPC path (fallbacks), large puts done by RMA
 * and those sent by KV_PUT instead, GETs and large puts rejected at their deadline (timeouts).
 * Thread: the client's.
 */

import { TimeoutError, TransportClosedError } from "../errors.ts";
import { UCP } from "../ffi/ucp-layout.ts";
import type { RegionReadTarget, RemoteRegion } from "../ucx/rma.ts";
import { ENTRY_HEADER_BYTES, GROUP_BYTES, keyHash, type KvLayout } from "./layout.ts";
import { HELLO_ONE_SIDED, HELLO_WRITE_BUFFER, type KvOneSidedClient, type KvServerConn } from "./protocol.ts";
import { DEFAULT_TIMEOUT_MS, largePut, type WriteBufState } from "./one-sided-put.ts";
import type { KvValue } from "./store.ts";
import { checkEntry, ENTRY_TORN, GroupScan, groupOffset, parseHeader, scanGroupInto } from "./verify.ts";

/** Torn reads of one GET re-read this many times before it goes by RPC: a write takes a few µs, a re-read a round trip. */
export const MAX_TORN_REREADS = 4;
/** Records up to this size are read into a buffer the GET's op keeps (the value copied out); larger ones into a buffer of their own, the value a view of it. */
const POOLED_RECORD_BYTES = 8192;
/** A kept record buffer's first size (grown by doubling up to POOLED_RECORD_BYTES): most records are small. */
const FIRST_RECORD_BYTES = 512;
/** Idle GET ops kept per connection (the GETs in flight at once, as the bench's 64). */
const MAX_POOLED = 128;
/** Keys whose record location a connection remembers (about 100 B each): the working set of a hot loop. */
const MAX_HINTS = 4096;

export interface OneSidedStats {
  /** GETs settled one-sided (found or absent). */
  hits: number;
  /** Hits settled by the remembered record read beside the group (one round trip). */
  hintHits: number;
  /** Group re-reads after a torn slot or record. */
  tornRereads: number;
  /** GETs left to KV_GET (torn too often, overflow, a failed RMA read, or the connection suspect after a timeout). */
  fallbacks: number;
  /** Large puts done by RMA put + KV_COMMIT. */
  largePuts: number;
  /** Large puts sent by KV_PUT instead (buffer busy, too small, refused by the server's cap, or the connection suspect). */
  largePutFallbacks: number;
  /** GETs and large puts rejected with TimeoutError: their RMA steps had no answer by the call's deadline. */
  timeouts: number;
}

/** Where a key's record was when last read (by the key's hash; see ConnState.hints). */
interface Hint {
  entryOffset: number;
  entryBytes: number;
  version: number;
}

/** One connection's attached regions (KvServerConn.rma); made on first use, dropped with the connection. */
class ConnState implements WriteBufState {
  /** Idle GET ops, reused last-freed first. */
  readonly ops: GetOp[] = [];
  /**
   * Where each recently read key's record was, by the key's hash, oldest first. Keys of one hash
   * share an entry: a hint for another key reads as "other" and is never used. Updated in place
   * (a key's hint keeps its age), so a hot loop allocates nothing here.
   */
  readonly hints = new Map<number, Hint>();
  /** A large put holds the write buffer (or asks for it). */
  writeBusy = false;
  /** The write buffer may still be asked for (KV_WRITE_BUFFER): HELLO offered one without its descriptor. */
  mayAsk: boolean;
  /** GETs in flight (each knows its index, `slot`), for the deadline sweep. */
  readonly active: GetOp[] = [];
  /**
   * Operations given up at their deadline whose RMA steps have not completed: while above 0 the
   * connection's one-sided path is suspect (GETs go by KV_GET, large puts by KV_PUT, both with
   * RPC deadlines); it is trusted again once they complete (the server's worker answers again).
   */
  stuck = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly arena: RemoteRegion,
    readonly layout: KvLayout,
    /** The attached write buffer (from HELLO, or asked for on the first large put), and its usable bytes. */
    public writeBuf: RemoteRegion | null,
    public writeBufBytes: number,
    /** The write buffer's size HELLO offers (0: none). */
    readonly offeredBytes: number,
    /** The client's per-call deadline (KvServerConn.timeoutMs). */
    readonly timeoutMs: number,
    readonly url: string,
  ) {
    this.mayAsk = writeBuf === null && offeredBytes > 0;
  }

  /** A GET started: tracked for the sweep, which is armed unless it already is. */
  track(op: GetOp): void {
    op.slot = this.active.length;
    this.active.push(op);
    if (this.timer === null) this.arm(this.timeoutMs);
  }

  /** A GET settled: no longer tracked (swap-remove, no allocation). */
  untrack(op: GetOp): void {
    const i = op.slot;
    if (i < 0) return;
    const last = this.active.pop()!;
    if (last !== op) {
      this.active[i] = last;
      last.slot = i;
    }
    op.slot = -1;
  }

  private arm(ms: number): void {
    // One timer per connection (not per GET): re-armed for the oldest GET's deadline while any is in flight.
    const t = setTimeout(this.sweep, Math.max(1, Math.ceil(ms)));
    t.unref?.();
    this.timer = t;
  }

  /** Rejects every GET past its deadline with TimeoutError, then re-arms for the next deadline. */
  private readonly sweep = (): void => {
    this.timer = null;
    const now = performance.now();
    let next = Infinity;
    for (let i = this.active.length - 1; i >= 0; i--) {
      const op = this.active[i];
      if (op === undefined) continue; // removed by an earlier expiry's swap
      const due = op.startedAt + this.timeoutMs;
      if (due - now <= 1) op.expire();
      else next = Math.min(next, due - now);
    }
    if (this.active.length > 0) this.arm(next === Infinity ? this.timeoutMs : next);
  };

  remember(hash: number, entryOffset: number, entryBytes: number, version: number): void {
    const h = this.hints.get(hash);
    if (h !== undefined) {
      h.entryOffset = entryOffset;
      h.entryBytes = entryBytes;
      h.version = version;
      return;
    }
    if (this.hints.size >= MAX_HINTS) this.hints.delete(this.hints.keys().next().value!);
    this.hints.set(hash, { entryOffset, entryBytes, version });
  }
}

const GROUP = 0;
const SPEC = 1;
const RECORD = 2;

/** One of a GetOp's read buffers, and the readTo target that routes its completion back to the op. */
class Target implements RegionReadTarget {
  /** The buffer the next read lands in: `kept`, or one of its own for a large record. */
  buf: Uint8Array;
  private kept: Uint8Array;

  constructor(
    private readonly op: GetOp,
    private readonly which: number,
    bytes: number,
  ) {
    this.kept = this.buf = new Uint8Array(new ArrayBuffer(bytes));
  }

  /** Makes `buf` hold `bytes` (not while a read into it is in flight). */
  prepare(bytes: number): void {
    if (bytes > POOLED_RECORD_BYTES) {
      this.buf = new Uint8Array(new ArrayBuffer(bytes));
      return;
    }
    if (this.kept.length < bytes) {
      let n = this.kept.length * 2;
      while (n < bytes) n *= 2;
      this.kept = new Uint8Array(new ArrayBuffer(Math.min(n, POOLED_RECORD_BYTES)));
    }
    this.buf = this.kept;
  }

  /** The value at `buf[at, len)` as the caller's own bytes: a copy out of the kept buffer, else a view of the buffer nobody else has. */
  value(at: number, len: number): Uint8Array {
    return this.buf === this.kept ? this.buf.slice(at, len) : this.buf.subarray(at, len);
  }

  onRead(status: number): void {
    this.op.onRead(this.which, status);
  }
}

/**
 * One one-sided GET in flight, driven by its reads' completions (inside worker progress): the
 * group read (with the remembered record beside it), then candidates' records one at a time,
 * re-reads after a torn slot or record. Pooled per connection: between GETs it holds nothing
 * of the last key but its buffers. Thread: the client's.
 */
class GetOp {
  private readonly group: Target;
  private readonly spec: Target;
  private readonly rec: Target;
  private readonly scan = new GroupScan();
  private key: Uint8Array = EMPTY;
  private hash = 0;
  private goff = 0;
  /** Reads of the current round not yet completed. */
  private pending = 0;
  private groupStatus = 0;
  private specStatus = 0;
  /** The remembered record read beside the group this round. */
  private hasSpec = false;
  private specOffset = 0;
  private specBytes = 0;
  private specVersion = 0;
  /** The candidate the speculative record answered for (skipped by the scan), -1 for none. */
  private specIdx = -1;
  /** The next candidate to look at, and the one whose record is being read. */
  private next = 0;
  private cur = 0;
  private torn = false;
  private attempt = 0;
  /** Reads issued and not yet completed (of every round: a given-up GET waits for them before it is reused). */
  private outstanding = 0;
  /** Rejected at its deadline while reads were in flight: their completions are ignored. */
  private abandoned = false;
  /** When run() started (performance.now()), and the op's index in ConnState.active (-1: not in flight). */
  startedAt = 0;
  slot = -1;
  private resolve: ((v: KvValue | null | undefined) => void) | null = null;
  private reject: ((e: unknown) => void) | null = null;
  private readonly executor = (res: (v: KvValue | null | undefined) => void, rej: (e: unknown) => void): void => {
    this.resolve = res;
    this.reject = rej;
  };

  constructor(
    private readonly client: OneSidedClient,
    private readonly st: ConnState,
  ) {
    this.group = new Target(this, GROUP, GROUP_BYTES);
    this.spec = new Target(this, SPEC, FIRST_RECORD_BYTES);
    this.rec = new Target(this, RECORD, FIRST_RECORD_BYTES);
  }

  run(key: Uint8Array, hash: number, goff: number): Promise<KvValue | null | undefined> {
    this.key = key;
    this.hash = hash;
    this.goff = goff;
    this.attempt = 0;
    const p = new Promise<KvValue | null | undefined>(this.executor);
    this.startedAt = performance.now();
    this.st.track(this);
    const hint = this.st.hints.get(hash);
    if (hint !== undefined) {
      this.specOffset = hint.entryOffset;
      this.specBytes = hint.entryBytes;
      this.specVersion = hint.version;
    }
    this.readGroup(hint !== undefined);
    return p;
  }

  /** Reads the group, and beside it (one round trip for both) the remembered record. */
  private readGroup(withSpec: boolean): void {
    this.pending = withSpec ? 2 : 1;
    this.hasSpec = withSpec;
    this.specStatus = UCP.UCS_OK;
    const arena = this.st.arena;
    this.outstanding++;
    try {
      arena.readTo(this.goff, GROUP_BYTES, this.group);
    } catch (e) {
      this.outstanding--;
      this.pending = 0;
      return this.fail(e);
    }
    if (!withSpec) return;
    this.outstanding++;
    try {
      this.spec.prepare(this.specBytes);
      arena.readTo(this.specOffset, this.specBytes, this.spec);
    } catch {
      // Not sent (closed meanwhile): the group read settles the GET alone.
      this.outstanding--;
      this.hasSpec = false;
      if (--this.pending === 0) this.afterGroup();
    }
  }

  onRead(which: number, status: number): void {
    this.outstanding--;
    if (this.abandoned) {
      // Given up at its deadline: this completion only means the server answers again.
      if (this.outstanding === 0) {
        this.abandoned = false;
        this.st.stuck--;
        this.pool();
      }
      return;
    }
    try {
      if (which === RECORD) return this.afterRecord(status);
      if (which === GROUP) this.groupStatus = status;
      else this.specStatus = status;
      if (--this.pending === 0) this.afterGroup();
    } catch (e) {
      this.fail(e);
    }
  }

  private afterGroup(): void {
    if (this.groupStatus !== UCP.UCS_OK) return this.fallback();
    const scan = this.scan;
    scanGroupInto(this.group.buf, this.hash, scan);
    this.torn = scan.torn > 0;
    this.next = 0;
    this.specIdx = -1;
    if (this.hasSpec && this.specStatus === UCP.UCS_OK) {
      for (let i = 0; i < scan.count; i++) {
        if (scan.entryOffset[i] !== this.specOffset || scan.entryBytes[i] !== this.specBytes || scan.version[i] !== this.specVersion) continue;
        // The group still names the remembered record: what was read beside it is that record.
        this.specIdx = i;
        const at = checkEntry(this.spec.buf, this.specBytes, this.key, this.specVersion);
        if (at >= 0) return this.found(this.spec, at, i, true);
        if (at === ENTRY_TORN) this.torn = true;
        break;
      }
    }
    this.nextCandidate();
  }

  /** Reads the next candidate's record; after the last, settles absent, or re-reads the group. */
  private nextCandidate(): void {
    const scan = this.scan;
    const layout = this.st.layout;
    while (this.next < scan.count) {
      const i = this.next++;
      if (i === this.specIdx) continue;
      const off = scan.entryOffset[i]!;
      const bytes = scan.entryBytes[i]!;
      if (bytes < ENTRY_HEADER_BYTES || off < layout.heapOffset || off + bytes > layout.arenaBytes) {
        this.torn = true;
        continue;
      }
      this.cur = i;
      this.outstanding++;
      try {
        this.rec.prepare(bytes);
        this.st.arena.readTo(off, bytes, this.rec);
      } catch (e) {
        this.outstanding--;
        return this.fail(e);
      }
      return;
    }
    if (!this.torn) {
      this.st.hints.delete(this.hash);
      if (scan.overflow > 0) return this.fallback();
      this.client.stats.hits++;
      return this.settle(null);
    }
    if (this.attempt++ >= MAX_TORN_REREADS) return this.fallback();
    this.client.stats.tornRereads++;
    this.readGroup(false);
  }

  private afterRecord(status: number): void {
    if (status !== UCP.UCS_OK) return this.fallback();
    const i = this.cur;
    const at = checkEntry(this.rec.buf, this.scan.entryBytes[i]!, this.key, this.scan.version[i]!);
    if (at >= 0) return this.found(this.rec, at, i, false);
    if (at === ENTRY_TORN) this.torn = true;
    this.nextCandidate();
  }

  private found(t: Target, at: number, i: number, viaHint: boolean): void {
    const scan = this.scan;
    const bytes = scan.entryBytes[i]!;
    const version = scan.version[i]!;
    const value = t.value(at, bytes);
    const stats = this.client.stats;
    stats.hits++;
    if (viaHint) stats.hintHits++;
    this.st.remember(this.hash, scan.entryOffset[i]!, bytes, version);
    this.settle({ value, version });
  }

  private fallback(): void {
    this.client.stats.fallbacks++;
    this.settle(undefined);
  }

  /** Settles the GET and gives the op back to its connection's pool. */
  private settle(v: KvValue | null | undefined): void {
    const resolve = this.resolve!;
    this.release();
    resolve(v);
  }

  private fail(e: unknown): void {
    const reject = this.reject!;
    this.release();
    reject(e);
  }

  /**
   * The deadline passed with reads in flight: rejects with TimeoutError and marks the
   * connection suspect (ConnState.stuck) until they complete; the op is reused only then (the
   * reads still land in its buffers).
   */
  expire(): void {
    const reject = this.reject;
    if (reject === null) return;
    const st = this.st;
    st.untrack(this);
    this.key = EMPTY;
    this.resolve = null;
    this.reject = null;
    if (this.outstanding > 0) {
      this.abandoned = true;
      st.stuck++;
    } else this.pool();
    this.client.stats.timeouts++;
    reject(new TimeoutError(`kv GET to ${st.url}: no answer to its one-sided reads within ${st.timeoutMs} ms (the server's worker serves RMA over UCX's tcp and shm transports; is it stopped or overloaded?)`));
  }

  private release(): void {
    this.st.untrack(this);
    this.key = EMPTY;
    this.resolve = null;
    this.reject = null;
    if (this.outstanding === 0) this.pool();
  }

  private pool(): void {
    const ops = this.st.ops;
    if (ops.length < MAX_POOLED) ops.push(this);
  }
}

const EMPTY = new Uint8Array(0);

/**
 * The one-sided client. One instance serves every KvClient of the thread (its state lives in
 * each KvServerConn.rma); `stats` counts for all of them. Thread: the client's.
 */
export class OneSidedClient implements KvOneSidedClient {
  readonly stats: OneSidedStats = { hits: 0, hintHits: 0, tornRereads: 0, fallbacks: 0, largePuts: 0, largePutFallbacks: 0, timeouts: 0 };

  /** Zeroes the counters (tests, bench). */
  resetStats(): void {
    for (const k of Object.keys(this.stats) as Array<keyof OneSidedStats>) this.stats[k] = 0;
  }

  /** The connection's state, attaching the arena and write buffer on first use; null when HELLO offers nothing. */
  private state(conn: KvServerConn): ConnState | null {
    const st = conn.rma;
    if (st instanceof ConnState) return st;
    const hello = conn.hello;
    const ucx = conn.ucx;
    if (hello === null || ucx === null || ucx.closed) return null;
    if ((hello.flags & HELLO_ONE_SIDED) === 0 || hello.arenaDesc.length === 0) return null;
    const layout = parseHeader(hello.arenaHeader);
    const arena = ucx.attachRegion(hello.arenaDesc);
    const offered = (hello.flags & HELLO_WRITE_BUFFER) !== 0 ? hello.writeBufBytes : 0;
    const wb = offered > 0 && hello.writeBufDesc.length > 0 ? ucx.attachRegion(hello.writeBufDesc) : null;
    const made = new ConnState(arena, layout, wb, wb === null ? 0 : Math.min(offered, wb.lenBytes), offered, conn.timeoutMs > 0 ? conn.timeoutMs : DEFAULT_TIMEOUT_MS, conn.url);
    conn.rma = made;
    return made;
  }

  oneSidedGet(conn: KvServerConn, key: Uint8Array): Promise<KvValue | null | undefined> {
    let st: ConnState | null;
    try {
      st = this.state(conn);
    } catch (e) {
      return Promise.reject(e);
    }
    if (st === null) return Promise.resolve(undefined);
    if (st.stuck > 0) {
      // Suspect: an earlier step got no answer by its deadline; KV_GET has a deadline of its own.
      this.stats.fallbacks++;
      return Promise.resolve(undefined);
    }
    const hash = keyHash(key, st.layout.hashSeed);
    const op = st.ops.pop() ?? new GetOp(this, st);
    return op.run(key, hash, groupOffset(st.layout, hash));
  }

  largePut(conn: KvServerConn, key: Uint8Array, value: Uint8Array): Promise<number> {
    if (conn.rpc === null) return Promise.reject(new TransportClosedError(`kv put: not connected to ${conn.url}`));
    let st: ConnState | null;
    try {
      st = this.state(conn);
    } catch (e) {
      return Promise.reject(e);
    }
    return largePut(this.stats, conn, st, key, value);
  }
}

/** The thread's one-sided client (client.ts uses it; tests and the bench read its stats). */
export const oneSidedClient = new OneSidedClient();
