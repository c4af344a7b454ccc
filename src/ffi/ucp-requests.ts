/**
 * The bookkeeping of a UcpWorker's requests (ucp.ts): each operation's completion, the memory
 * UCX uses for it, the request UCX returned and the endpoint it belongs to, by the id passed as
 * user_data; and the requests given up on that UCX has not completed yet.
 *
 * Contract: memory registered with a request stays reachable from this table until UCX reports
 * the request complete (its callback) or the worker is destroyed, whatever its owner does. A
 * request goes back to UCX (ucp_request_free, by the worker) only once its callback ran, or
 * right before ucp_worker_destroy. Pure data: no UCX call is made here.
 *
 * Threading: the JS thread that owns the worker; callbacks from UCX reach it inside progress.
 */

import type { UcpEndpoint } from "./ucp-endpoint.ts";
import { isStatusError } from "./ucp-lib.ts";
import { UCP } from "./ucp-layout.ts";

export type Completion = (status: number, length: number) => void;

/** Request ids are passed as user_data and written as u32: they stay below 2^31. */
const MAX_REQUEST_ID = 0x7fffffff;

export class RequestTable {
  /** Completion callbacks of in-flight requests, by the id passed as user_data. */
  private readonly pending = new Map<number, Completion>();
  /**
   * Memory UCX reads or writes until a request completes, by request id. Held here, as data:
   * a closure that merely mentions a buffer does not reliably keep it alive (measured: JSC
   * collected buffers referenced only as `void buf` inside a pending callback).
   */
  private readonly retained = new Map<number, unknown>();
  /** Requests UCX returned, by id: freed once their callback ran (never before: a freed
   * request gets no callback). */
  private readonly requests = new Map<number, number>();
  /** The endpoint each request in `requests` belongs to (see abandon()). */
  private readonly owners = new Map<number, UcpEndpoint>();
  /**
   * Requests given up on (abandon(), detachAll()) that UCX has not completed, by id: the request
   * and the memory it uses. UCX may still read or write that memory: ucp_request_free on an
   * incomplete request lets the operation go on internally with no callback ("communications
   * operations associated with this request will make progress internally", ucp.h), and a send
   * cannot be cancelled (ucp_request_cancel covers tag receives only). So a given-up request is
   * not freed and its memory stays reachable here until UCX completes it (its callback frees
   * both), or until the worker is destroyed. Bounded: what one failed endpoint had in flight (a
   * connection's maxInFlightBytes / maxInFlightSends of sends, plus the rendezvous receives it
   * had started), kept for as long as UCX keeps the request. UCX 1.13 keeps some for good: in
   * UCP_ERR_HANDLING_MODE_NONE a failed endpoint's lanes are discarded with a local flush, and
   * its requests purged only once every lane flushed, which a shared-memory lane to a dead peer
   * whose FIFO is full never does. That memory is then held until the worker goes: the price of
   * never letting UCX touch freed memory.
   */
  private readonly detached = new Map<number, { req: number; memory: unknown }>();
  /** Bytes of the memory in `detached` (typed arrays' byteLength). */
  private detachedBytes = 0;
  /** Requests given up so far. */
  private abandoned = 0;
  /** Requests whose callback ran: the worker frees them once UCX has returned. */
  readonly finished: number[] = [];
  private nextId = 1;
  /** The id whose *_nbx call is running, and a completion that arrived inside it. */
  private reserved = 0;
  private earlyStatus: number | null = null;

  /** Requests still in flight for their owners. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** UCX's callback for request `id` (or the end of an immediate operation). */
  complete(id: number, status: number, length: number): void {
    const done = this.pending.get(id);
    if (done === undefined) {
      if (id === this.reserved) this.earlyStatus = status;
      else this.reattach(id);
      return;
    }
    this.pending.delete(id);
    this.retained.delete(id);
    const req = this.requests.get(id);
    if (req !== undefined) {
      this.requests.delete(id);
      this.owners.delete(id);
      this.finished.push(req);
    }
    done(status, length);
  }

  /** A given-up request's callback ran: UCX is done with it and its memory. */
  private reattach(id: number): void {
    const d = this.detached.get(id);
    if (d === undefined) return;
    this.detached.delete(id);
    this.detachedBytes -= bytesOf(d.memory);
    this.finished.push(d.req);
  }

  /** Gives up on the requests of `ep` still in flight (see UcpWorker.abandon); returns how many. */
  abandon(ep: UcpEndpoint): number {
    const ids: number[] = [];
    for (const [id, owner] of this.owners) if (owner === ep) ids.push(id);
    for (const id of ids) this.detach(id);
    this.abandoned += ids.length;
    return ids.length;
  }

  /** Requests of `ep` UCX has not completed yet. */
  countOwnedBy(ep: UcpEndpoint): number {
    if (this.owners.size === 0) return 0;
    let n = 0;
    for (const owner of this.owners.values()) if (owner === ep) n++;
    return n;
  }

  /** Gives up on every request still in flight (the worker is closing). */
  detachAll(): void {
    for (const id of [...this.pending.keys()]) this.detach(id);
  }

  /** Completes request `id` for its owner with UCS_ERR_CANCELED and keeps it, and its memory, in `detached`. */
  private detach(id: number): void {
    const req = this.requests.get(id);
    const memory = this.retained.get(id);
    const done = this.pending.get(id);
    this.requests.delete(id);
    this.owners.delete(id);
    this.pending.delete(id);
    this.retained.delete(id);
    if (req !== undefined) {
      this.detached.set(id, { req, memory });
      this.detachedBytes += bytesOf(memory);
    }
    done?.(UCP.UCS_ERR_CANCELED, 0);
  }

  /** The given-up requests UCX has not completed (to free right before the worker is destroyed). */
  detachedRequests(): number[] {
    return [...this.detached.values()].map((d) => d.req);
  }

  /** The worker is destroyed: nothing of UCX uses the given-up requests' memory any more. */
  dropDetached(): void {
    this.detached.clear();
    this.detachedBytes = 0;
  }

  /** Registers a completion and the memory the request uses; returns the id to pass as user_data. */
  track(done: Completion, memory: unknown[]): number {
    const id = this.freshId();
    this.pending.set(id, done);
    if (memory.length > 0) this.retained.set(id, memory);
    return id;
  }

  /** The next request id that no request in flight or given up still has. */
  private freshId(): number {
    let id: number;
    do {
      id = this.nextId++;
      if (this.nextId > MAX_REQUEST_ID) this.nextId = 1;
    } while (this.pending.has(id) || this.detached.has(id));
    return id;
  }

  /** An id for a request whose completion is registered only if it goes in flight. */
  reserveId(): number {
    const id = this.freshId();
    this.reserved = id;
    this.earlyStatus = null;
    return id;
  }

  /**
   * After an *_nbx call made with a reserved id: done now (`done(status, ctx)`, nothing
   * allocated), or in flight, `ctx` (or, when it is null, `a` and `b`) retained until UCX completes it.
   */
  settleReserved(sp: number, id: number, owner: UcpEndpoint, done: (status: number, ctx: unknown) => void, a: unknown, b: unknown, ctx: unknown): void {
    this.reserved = 0;
    if (sp === 0) return done(UCP.UCS_OK, ctx);
    if (isStatusError(sp)) return done(sp, ctx);
    if (this.earlyStatus !== null) {
      // The callback ran inside the call: the request is done; free it.
      const st = this.earlyStatus;
      this.earlyStatus = null;
      this.finished.push(sp);
      return done(st, ctx);
    }
    this.pending.set(id, (st) => done(st, ctx));
    this.retained.set(id, ctx === null ? [a, b] : ctx);
    this.requests.set(id, sp);
    this.owners.set(id, owner);
  }

  /** After an *_nbx call for a tracked id: immediate completion, error, or a request in flight. */
  settle(sp: number, id: number, owner: UcpEndpoint): void {
    if (sp === 0) return this.complete(id, UCP.UCS_OK, 0);
    if (isStatusError(sp)) return this.complete(id, sp, 0);
    // In flight: the callback runs when it completes; the request is freed after that.
    this.requests.set(id, sp);
    this.owners.set(id, owner);
  }

  /** Counters: see UcpWorker.stats(). */
  stats(): { inFlight: number; retained: number; requests: number; abandoned: number; detached: number; detachedBytes: number } {
    return {
      inFlight: this.pending.size,
      retained: this.retained.size,
      requests: this.requests.size,
      abandoned: this.abandoned,
      detached: this.detached.size,
      detachedBytes: this.detachedBytes,
    };
  }
}

/** Bytes of the typed arrays in a request's retained memory (a list of them, or one). */
function bytesOf(memory: unknown): number {
  if (ArrayBuffer.isView(memory)) return memory.byteLength;
  if (!Array.isArray(memory)) return 0;
  let n = 0;
  for (const m of memory) if (ArrayBuffer.isView(m)) n += m.byteLength;
  return n;
}
