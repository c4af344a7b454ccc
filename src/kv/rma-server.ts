/**
 * (Deviation from the spec's seam comment: a COMMIT that does not match is refused with
 * UsageError, not ProtocolError, because ProtocolError does not travel back to the caller as
 * its class over RPC (the caller would get a RemoteError named "Error"); UsageError does.)
 *
 * The server side of one-sided access (protocol.ts's KvRmaServer), for a KvServer with
 * `oneSided`: on HELLO over a ucx connection with RMA it offers the store's whole arena (one
 * SharedRegion per RMA runtime: registered once, whatever the number of connections, with one
 * descriptor every client of that runtime attaches) and, with `writeBufferBytes` > 0, a write
 * buffer of the connection's own (a LocalRegion, deregistered with its connection). The write
 * buffer is not made at HELLO (which only names its size, with an empty descriptor): a client
 * asks for it with KV_WRITE_BUFFER on its first large put, so clients that never put a large
 * value register nothing. All write buffers together stay within `writeBufferTotalBytes`
 * (default DEFAULT_WRITE_BUFFER_TOTAL_BYTES): a client asking past it gets none and uses
 * KV_PUT; stats() counts buffers, their bytes and refusals (STATS' `oneSided`). A COMMIT
 * stores what the client put at offset 0 of its write buffer, after checking its length and
 * crc32 against the bytes there: a mismatch is refused with UsageError and nothing is
 * stored, so a COMMIT that overtook its put (or a lying client) never stores torn bytes.
 *
 * Contract: the arena stays registered until close() (the server closes it before it frees the
 * arena); connections of other transports (and ucx without RMA) are offered nothing. What a
 * registration protects depends on the UCX transport (src/ucx/rma.ts): over UCX's tcp and
 * shared-memory transports every RMA peer can read (and write) any address of the server
 * process, so one-sided access is for trusted clients, as every RMA runtime is.
 *
 *   const rma = createRmaServer(store, { writeBufferBytes: 1 << 20 });
 *   kvServe({ ..., }, { rma });   // server.ts calls onHello / onCommit / onConnectionClose / close
 *
 * Thread: the server's (inline in request delivery).
 */

import { UsageError } from "../errors.ts";
import type { Connection } from "../contract/transport.ts";
import type { UcxConnection } from "../ucx/connection.ts";
import { SharedRegion, type LocalRegion } from "../ucx/rma.ts";
import type { UcxRuntime } from "../ucx/runtime.ts";
import type { CommitRequest, KvHelloOffer, KvRmaServer } from "./protocol.ts";
import type { KvStore } from "./store.ts";

const EMPTY = new Uint8Array(0);

/** Write buffers of all connections together: 64 clients doing large puts at the default 1 MiB each; the rest use KV_PUT. */
export const DEFAULT_WRITE_BUFFER_TOTAL_BYTES = 64 << 20;

export interface RmaServerOptions {
  /** Bytes of each connection's write buffer; 0: none (large puts go by KV_PUT). */
  writeBufferBytes: number;
  /** Cap on the bytes of all write buffers together; default DEFAULT_WRITE_BUFFER_TOTAL_BYTES. */
  writeBufferTotalBytes?: number;
}

/** Counters for tests and the bench. */
export interface RmaServerStats {
  /** Arena registrations open now (one per RMA runtime that served a HELLO). */
  arenaRegistrations: number;
  /** Write buffers open now (one per connection that asked for one), their bytes, and the cap on those. */
  writeBuffers: number;
  writeBufferBytes: number;
  writeBufferTotalBytes: number;
  /** WRITE_BUFFER asks refused because the cap was reached. */
  writeBuffersRefused: number;
  commits: number;
  /** COMMITs refused: length or crc32 did not match the write buffer. */
  commitsRefused: number;
}

class RmaServer implements KvRmaServer {
  private readonly arenas = new Map<UcxRuntime, SharedRegion>();
  private readonly buffers = new Map<Connection, LocalRegion>();
  private closed = false;
  private commits = 0;
  private refused = 0;
  private bufferBytes = 0;
  private buffersRefused = 0;
  private readonly totalCap: number;

  constructor(
    private readonly store: KvStore,
    private readonly opts: RmaServerOptions,
  ) {
    const cap = opts.writeBufferTotalBytes ?? DEFAULT_WRITE_BUFFER_TOTAL_BYTES;
    if (!Number.isSafeInteger(cap) || cap < 0) throw new UsageError(`kv server: writeBufferTotalBytes ${String(cap)} must be an integer ≥ 0`);
    this.totalCap = cap;
  }

  onHello(conn: Connection): KvHelloOffer | null {
    if (this.closed || conn.transport !== "ucx" || !conn.caps.rma) return null;
    const ucx = conn as UcxConnection;
    let arena = this.arenas.get(ucx.rt);
    if (arena === undefined || arena.closed) {
      arena = SharedRegion.register(ucx.rt, this.store.arena);
      this.arenas.set(ucx.rt, arena);
    }
    // The write buffer's size only: the client asks for the buffer itself (onWriteBuffer) when it needs it.
    const size = this.opts.writeBufferBytes <= this.totalCap ? this.opts.writeBufferBytes : 0;
    return { arenaDesc: arena.descriptor(), writeBufDesc: EMPTY, writeBufBytes: size };
  }

  onWriteBuffer(conn: Connection): { desc: Uint8Array; bytes: number } | null {
    if (this.closed || conn.transport !== "ucx" || !conn.caps.rma || conn.closed || this.opts.writeBufferBytes <= 0) return null;
    let buf = this.buffers.get(conn);
    if (buf === undefined || buf.closed) {
      if (buf !== undefined) this.forget(conn);
      if (this.bufferBytes + this.opts.writeBufferBytes > this.totalCap) {
        this.buffersRefused++;
        return null;
      }
      buf = (conn as UcxConnection).registerMemory(this.opts.writeBufferBytes);
      this.buffers.set(conn, buf);
      this.bufferBytes += buf.lenBytes;
    }
    return { desc: buf.descriptor(), bytes: buf.lenBytes };
  }

  private forget(conn: Connection): void {
    const buf = this.buffers.get(conn);
    if (buf === undefined) return;
    buf.close();
    this.buffers.delete(conn);
    this.bufferBytes -= buf.lenBytes;
  }

  onCommit(conn: Connection, req: CommitRequest): number {
    const buf = this.buffers.get(conn);
    if (buf === undefined || buf.closed) throw new UsageError(`kv COMMIT from ${conn.peer}: this connection has no write buffer (ask for one with WRITE_BUFFER)`);
    if (req.valueLen > buf.lenBytes) {
      this.refused++;
      throw new UsageError(`kv COMMIT from ${conn.peer}: value of ${req.valueLen} bytes, the write buffer holds ${buf.lenBytes}`);
    }
    const value = buf.view.subarray(0, req.valueLen);
    const crc = Bun.hash.crc32(value) >>> 0;
    if (crc !== req.crc >>> 0) {
      this.refused++;
      throw new UsageError(`kv COMMIT from ${conn.peer}: crc32 0x${(req.crc >>> 0).toString(16)} does not match the ${req.valueLen} bytes in the write buffer (0x${crc.toString(16)}); nothing stored`);
    }
    const version = this.store.put(req.key, value);
    this.commits++;
    return version;
  }

  onConnectionClose(conn: Connection): void {
    // The connection deregisters its regions itself as it closes; forget ours.
    this.forget(conn);
  }

  close(): void {
    this.closed = true;
    for (const b of this.buffers.values()) b.close();
    this.buffers.clear();
    this.bufferBytes = 0;
    for (const a of this.arenas.values()) a.close();
    this.arenas.clear();
  }

  stats(): RmaServerStats {
    let open = 0;
    for (const a of this.arenas.values()) if (!a.closed) open++;
    return {
      arenaRegistrations: open,
      writeBuffers: this.buffers.size,
      writeBufferBytes: this.bufferBytes,
      writeBufferTotalBytes: this.totalCap,
      writeBuffersRefused: this.buffersRefused,
      commits: this.commits,
      commitsRefused: this.refused,
    };
  }
}

/**
 * The one-sided part of a kv server over `store` (its arena must stay allocated until close()).
 * Owned by the server, which calls close() before it frees the arena. Thread: the server's.
 */
export function createRmaServer(store: KvStore, opts: RmaServerOptions): KvRmaServer & { stats(): RmaServerStats } {
  return new RmaServer(store, opts);
}
