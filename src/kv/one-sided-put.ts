/**
 * The large PUT of one-sided access (one-sided.ts's module comment: write buffer, flush,
 * KV_COMMIT, the lazy KV_WRITE_BUFFER ask, deadlines), apart from the GET path.
 *
 *   const version = await largePut(oneSidedClient.stats, conn, state, key, bigValue);
 *
 * Thread: the client's.
 */

import { sendLimit } from "../contract/transport.ts";
import { KvValueTooLargeError, TimeoutError, TransportClosedError } from "../errors.ts";
import type { RemoteRegion } from "../ucx/rma.ts";
import { decodeVersion, decodeWriteBuffer, encodeCommit, encodePut, KV_COMMIT, KV_PUT, KV_WRITE_BUFFER, REQUEST_OVERHEAD, type KvServerConn } from "./protocol.ts";

/** The deadline when a connection names none (KvClientOptions.timeoutMs's default). */
export const DEFAULT_TIMEOUT_MS = 5000;
const EMPTY = new Uint8Array(0);

/** The counters a large put moves (OneSidedStats). */
export interface PutStats {
  largePuts: number;
  largePutFallbacks: number;
  timeouts: number;
}

/** What a large put needs of a connection's one-sided state (one-sided.ts's ConnState). */
export interface WriteBufState {
  writeBuf: RemoteRegion | null;
  writeBufBytes: number;
  readonly offeredBytes: number;
  writeBusy: boolean;
  mayAsk: boolean;
  /** Unanswered operations given up at their deadline (the connection is suspect while > 0). */
  stuck: number;
  readonly timeoutMs: number;
}

/**
 * A large put on `conn` (its one-sided state `st`, null when HELLO offered nothing): by RMA put
 * into the write buffer + KV_COMMIT, asking for the buffer first on the connection's first one;
 * by KV_PUT when there is none, it is busy or too small, or the connection is suspect. Counts
 * into `stats`. Rejects with TimeoutError at the call's deadline. Thread: the client's.
 */
export async function largePut(stats: PutStats, conn: KvServerConn, st: WriteBufState | null, key: Uint8Array, value: Uint8Array): Promise<number> {
  const rpc = conn.rpc;
  if (rpc === null) throw new TransportClosedError(`kv put: not connected to ${conn.url}`);
  const timeoutMs = conn.timeoutMs > 0 ? conn.timeoutMs : DEFAULT_TIMEOUT_MS;
  const deadline = performance.now() + timeoutMs;
  if (st !== null && st.writeBuf === null && st.mayAsk && !st.writeBusy && st.stuck === 0 && value.length <= st.offeredBytes) {
    await askWriteBuffer(conn, st, rpc, deadline);
  }
  const wb = st?.writeBuf ?? null;
  if (st === null || wb === null || st.writeBusy || st.stuck > 0 || value.length > st.writeBufBytes) {
    const limit = sendLimit(rpc.conn.caps) - REQUEST_OVERHEAD - key.length;
    if (value.length > limit) {
      throw new KvValueTooLargeError(`kv put: value of ${value.length} bytes exceeds the ${limit} bytes a ${rpc.conn.transport} message to ${conn.url} can carry with this key, and the ${st?.writeBufBytes ?? 0}-byte write buffer (server maxValueBytes ${conn.hello?.maxValueBytes ?? "unknown"})`);
    }
    stats.largePutFallbacks++;
    return decodeVersion(await rpc.request(KV_PUT, encodePut(key, value), { timeoutMs: left(deadline, conn.url, timeoutMs, "PUT") }));
  }
  st.writeBusy = true;
  let held = true;
  try {
    const crc = Bun.hash.crc32(value) >>> 0;
    // The put's own completion is local; the flush is its remote completion (module comment).
    const landed = wb.put(0, value, { copy: false }).then(() => wb.flush());
    if (!(await beforeDeadline(landed, deadline))) {
      // No answer: the buffer stays busy and the connection suspect until the put and flush complete (or fail).
      held = false;
      st.stuck++;
      const done = () => {
        st.stuck--;
        st.writeBusy = false;
      };
      landed.then(done, done);
      stats.timeouts++;
      throw new TimeoutError(`kv PUT of ${value.length} bytes to ${conn.url}: its RMA put into the write buffer was not flushed within ${timeoutMs} ms (the server's worker serves RMA over UCX's tcp and shm transports; is it stopped or overloaded?)`);
    }
    const body = await rpc.request(KV_COMMIT, encodeCommit(key, value.length, crc), { timeoutMs: left(deadline, conn.url, timeoutMs, "COMMIT") });
    const version = decodeVersion(body, "kv COMMIT response");
    stats.largePuts++;
    return version;
  } finally {
    if (held) st.writeBusy = false;
  }
}

/**
 * Asks the server for this connection's write buffer (KV_WRITE_BUFFER, on the first large
 * put): attaches it, or, when the server has none to give (its cap on write-buffer bytes is
 * reached), leaves the connection on KV_PUT for its lifetime. A failed ask (timeout, closed)
 * rejects the put and may be retried by the next one.
 */
async function askWriteBuffer(conn: KvServerConn, st: WriteBufState, rpc: NonNullable<KvServerConn["rpc"]>, deadline: number): Promise<void> {
  st.mayAsk = false;
  st.writeBusy = true;
  try {
    const offer = decodeWriteBuffer(await rpc.request(KV_WRITE_BUFFER, EMPTY, { timeoutMs: left(deadline, conn.url, st.timeoutMs, "WRITE_BUFFER") }));
    const ucx = conn.ucx;
    if (offer.desc.length === 0 || ucx === null || ucx.closed || conn.rma !== st) return;
    const wb = ucx.attachRegion(offer.desc);
    st.writeBuf = wb;
    st.writeBufBytes = Math.min(offer.bytes, wb.lenBytes);
  } catch (e) {
    st.mayAsk = true;
    throw e;
  } finally {
    st.writeBusy = false;
  }
}

/** Milliseconds left before `deadline` for the next RPC step (at least 1), or TimeoutError when none are. */
function left(deadline: number, url: string, timeoutMs: number, step: string): number {
  const ms = Math.floor(deadline - performance.now());
  if (ms < 1) throw new TimeoutError(`kv large put to ${url}: no time left for its ${step} request within ${timeoutMs} ms`);
  return ms;
}

/** True when `p` settles before `deadline` (its rejection is passed on), false when the deadline comes first. */
async function beforeDeadline(p: Promise<void>, deadline: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((r) => {
    timer = setTimeout(() => r(false), Math.max(1, Math.ceil(deadline - performance.now())));
  });
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
