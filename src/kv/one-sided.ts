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
 * Large PUT: the value goes by RMA put to offset 0 of the write buffer, then ucp_ep_flush_nbx
 * (remote completion of the put), then KV_COMMIT(key, length, crc32), which the server checks
 * against the buffer before it stores (rma-server.ts). The flush, not ucp_worker_fence: in UCX
 * 1.13 the fence is per transport interface and orders nothing across lanes (a put on a NIC's
 * RMA lane, the COMMIT on another); over UCX 1.13's tcp and shared-memory transports, where RMA
 * is emulated with Active Messages served by the server's worker, the flush is one round trip;
 * the put's own completion is local only. One large put at a time per connection (the buffer is
 * one): a put that finds it busy, or a value larger than the buffer, goes by KV_PUT.
 *
 *   const v = await oneSidedClient.oneSidedGet(conn, key);   // KvValue | null | undefined (= ask by RPC)
 *   const version = await oneSidedClient.largePut(conn, key, bigValue);
 *
 * Counters (`oneSidedClient.stats`): GETs settled one-sided (hits; hintHits of them in one round
 * trip), torn re-reads, GETs handed
 * back to the RPC path (fallbacks), large puts done by RMA and those sent by KV_PUT instead.
 * Thread: the client's.
 */

import { sendLimit } from "../contract/transport.ts";
import { KvValueTooLargeError, TransportClosedError } from "../errors.ts";
import { UCP } from "../ffi/ucp-layout.ts";
import type { RemoteRegion } from "../ucx/rma.ts";
import { ENTRY_HEADER_BYTES, GROUP_BYTES, keyHash, type KvLayout } from "./layout.ts";
import { decodeVersion, encodeCommit, encodePut, HELLO_ONE_SIDED, HELLO_WRITE_BUFFER, KV_COMMIT, KV_PUT, REQUEST_OVERHEAD, type KvOneSidedClient, type KvServerConn } from "./protocol.ts";
import type { KvValue } from "./store.ts";
import { groupOffset, parseHeader, scanGroup, verifyEntry } from "./verify.ts";

/** Torn reads of one GET re-read this many times before it goes by RPC: a write takes a few µs, a re-read a round trip. */
export const MAX_TORN_REREADS = 4;
/** Records up to this size are read into a pooled buffer (and the value copied out); larger ones into a buffer of their own. */
const POOLED_RECORD_BYTES = 4096;
/** Pooled read buffers kept per connection (the GETs in flight at once, as the bench's 64). */
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
  /** GETs left to KV_GET (torn too often, overflow, or a failed RMA read). */
  fallbacks: number;
  /** Large puts done by RMA put + KV_COMMIT. */
  largePuts: number;
  /** Large puts sent by KV_PUT instead (buffer busy or too small). */
  largePutFallbacks: number;
}

/** One connection's attached regions (KvServerConn.rma); made on first use, dropped with the connection. */
class ConnState {
  readonly groups: Uint8Array[] = [];
  readonly records: Uint8Array[] = [];
  /**
   * Where each recently read key's record was, by the key's hash, oldest first. Keys of one hash
   * share an entry: a hint for another key reads as "other" and is never used.
   */
  readonly hints = new Map<number, Hint>();
  writeBusy = false;

  constructor(
    readonly arena: RemoteRegion,
    readonly layout: KvLayout,
    readonly writeBuf: RemoteRegion | null,
    readonly writeBufBytes: number,
  ) {}

  take(pool: Uint8Array[], bytes: number): Uint8Array {
    return pool.pop() ?? new Uint8Array(new ArrayBuffer(bytes));
  }

  give(pool: Uint8Array[], b: Uint8Array): void {
    if (pool.length < MAX_POOLED) pool.push(b);
  }

  remember(hash: number, slot: Hint): void {
    this.hints.delete(hash);
    if (this.hints.size >= MAX_HINTS) this.hints.delete(this.hints.keys().next().value!);
    this.hints.set(hash, { entryOffset: slot.entryOffset, entryBytes: slot.entryBytes, version: slot.version });
  }
}

interface Hint {
  entryOffset: number;
  entryBytes: number;
  version: number;
}


/** Reads `dst.length` bytes at `offset` of `region` (RemoteRegion.readInto as a promise). */
function read(region: RemoteRegion, offset: number, dst: Uint8Array): Promise<boolean> {
  return new Promise((resolve, reject) => {
    try {
      region.readInto(offset, dst, (status) => resolve(status === UCP.UCS_OK));
    } catch (e) {
      reject(e);
    }
  });
}

/**
 * The one-sided client. One instance serves every KvClient of the thread (its state lives in
 * each KvServerConn.rma); `stats` counts for all of them. Thread: the client's.
 */
export class OneSidedClient implements KvOneSidedClient {
  readonly stats: OneSidedStats = { hits: 0, hintHits: 0, tornRereads: 0, fallbacks: 0, largePuts: 0, largePutFallbacks: 0 };

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
    const wb = (hello.flags & HELLO_WRITE_BUFFER) !== 0 && hello.writeBufDesc.length > 0 ? ucx.attachRegion(hello.writeBufDesc) : null;
    const made = new ConnState(arena, layout, wb, wb === null ? 0 : Math.min(hello.writeBufBytes, wb.lenBytes));
    conn.rma = made;
    return made;
  }

  async oneSidedGet(conn: KvServerConn, key: Uint8Array): Promise<KvValue | null | undefined> {
    const st = this.state(conn);
    if (st === null) return undefined;
    const layout = st.layout;
    const hash = keyHash(key, layout.hashSeed);
    const goff = groupOffset(layout, hash);
    const hint = st.hints.get(hash);
    const group = st.take(st.groups, GROUP_BYTES);
    try {
      for (let attempt = 0; attempt <= MAX_TORN_REREADS; attempt++) {
        if (attempt > 0) this.stats.tornRereads++;
        // The record this key had last time, read beside its group (one round trip for both):
        // used only if the group still names exactly it and it verifies.
        const early = attempt === 0 && hint !== undefined ? this.readEntry(st, hint.entryOffset, hint.entryBytes, key, hint.version) : null;
        const groupOk = await read(st.arena, goff, group);
        const speculated = early === null ? undefined : await early;
        if (!groupOk) return this.fallback();
        const g = scanGroup(group, hash);
        let torn = g.torn > 0;
        for (const c of g.candidates) {
          if (c.entryBytes < ENTRY_HEADER_BYTES || c.entryOffset < layout.heapOffset || c.entryOffset + c.entryBytes > layout.arenaBytes) {
            torn = true;
            continue;
          }
          const same = typeof speculated === "object" && hint !== undefined && c.entryOffset === hint.entryOffset && c.entryBytes === hint.entryBytes && c.version === hint.version;
          const got = same ? speculated : await this.readEntry(st, c.entryOffset, c.entryBytes, key, c.version);
          if (got === undefined) return this.fallback();
          if (got === "torn") torn = true;
          else if (got !== "other") {
            this.stats.hits++;
            if (same) this.stats.hintHits++;
            st.remember(hash, c);
            return got;
          }
        }
        if (!torn) {
          st.hints.delete(hash);
          if (g.overflow > 0) return this.fallback();
          this.stats.hits++;
          return null;
        }
      }
      return this.fallback();
    } finally {
      st.give(st.groups, group);
    }
  }

  /** One entry record read and verified: the value (the caller's own copy), "torn", "other", or undefined when the read failed. */
  private async readEntry(st: ConnState, offset: number, bytes: number, key: Uint8Array, version: number): Promise<KvValue | "torn" | "other" | undefined> {
    if (bytes > POOLED_RECORD_BYTES) {
      const rec = new Uint8Array(new ArrayBuffer(bytes));
      if (!(await read(st.arena, offset, rec))) return undefined;
      return verifyEntry(rec, key, version); // the value is a view of a buffer nobody else has
    }
    const pooled = st.take(st.records, POOLED_RECORD_BYTES);
    try {
      const rec = pooled.subarray(0, bytes);
      if (!(await read(st.arena, offset, rec))) return undefined;
      const r = verifyEntry(rec, key, version);
      return typeof r === "string" ? r : { value: r.value.slice(), version: r.version };
    } finally {
      st.give(st.records, pooled);
    }
  }

  private fallback(): undefined {
    this.stats.fallbacks++;
    return undefined;
  }

  async largePut(conn: KvServerConn, key: Uint8Array, value: Uint8Array): Promise<number> {
    const rpc = conn.rpc;
    if (rpc === null) throw new TransportClosedError(`kv put: not connected to ${conn.url}`);
    const st = this.state(conn);
    const wb = st?.writeBuf ?? null;
    if (st === null || wb === null || st.writeBusy || value.length > st.writeBufBytes) {
      const limit = sendLimit(rpc.conn.caps) - REQUEST_OVERHEAD - key.length;
      if (value.length > limit) {
        throw new KvValueTooLargeError(`kv put: value of ${value.length} bytes exceeds the ${limit} bytes a ${rpc.conn.transport} message to ${conn.url} can carry with this key, and the ${st?.writeBufBytes ?? 0}-byte write buffer (server maxValueBytes ${conn.hello?.maxValueBytes ?? "unknown"})`);
      }
      this.stats.largePutFallbacks++;
      return decodeVersion(await rpc.request(KV_PUT, encodePut(key, value)));
    }
    st.writeBusy = true;
    try {
      const crc = Bun.hash.crc32(value) >>> 0;
      await wb.put(0, value, { copy: false });
      await wb.flush();
      const version = decodeVersion(await rpc.request(KV_COMMIT, encodeCommit(key, value.length, crc)), "kv COMMIT response");
      this.stats.largePuts++;
      return version;
    } finally {
      st.writeBusy = false;
    }
  }
}

/** The thread's one-sided client (client.ts uses it; tests and the bench read its stats). */
export const oneSidedClient = new OneSidedClient();
