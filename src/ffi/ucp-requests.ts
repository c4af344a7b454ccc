/**
 * The bookkeeping of a UcpWorker's requests (ucp.ts): each operation's completion, the memory
 * UCX uses for it, the request UCX returned and the endpoint it belongs to, by the id passed as
 * user_data; and the requests given up on that UCX has not completed yet.
 *
 * Contract: memory registered with a request stays reachable from this table until UCX reports
 * the request complete (its callback) or the worker is destroyed, whatever its owner does. A
 * request goes back to UCX (ucp_request_free, by the worker) only once its callback ran, or
 * right before ucp_worker_destroy. Pure data: no UCX call is made here. Ids are slots of
 * arrays reused through a free list (an id is reused only once its request is done or its
 * given-up request completed), so a steady stream of requests allocates nothing: no Map entry,
 * and no closure for a send made with a context (settleReserved).
 *
 *   const id = table.reserveId();  const sp = ucp_am_send_nbx(..., id as user_data);
 *   table.settleReserved(sp, id, ep, done, header, data, ctx);  // later: table.complete(id, status, 0)
 *
 * Threading: the JS thread that owns the worker; callbacks from UCX reach it inside progress.
 */

import type { UcpEndpoint } from "./ucp-endpoint.ts";
import { isStatusError } from "./ucp-lib.ts";
import { UCP } from "./ucp-layout.ts";

export type Completion = (status: number, length: number) => void;

/** Request ids are passed as user_data and written as u32: they stay below 2^31. */
const MAX_REQUEST_ID = 0x7fffffff;

/** Slot states. */
const FREE = 0;
/** Reserved for an *_nbx call under way (reserveId): its completion is registered only if it goes in flight. */
const RESERVED = 1;
const PENDING = 2;
/** Given up on (detach): UCX has not completed its request yet; the slot is reused once it has. */
const DETACHED = 3;

export class RequestTable {
  /** Per slot (the id): its state, completion, the context of a send made with one, memory UCX uses, request, owner. */
  private readonly state: number[] = [FREE];
  private readonly done: Array<Completion | undefined> = [undefined];
  /**
   * The context of an in-flight send made with one (settleReserved): its completion is then a
   * `(status, ctx)` function the owner binds once, so a send in flight adds no closure.
   */
  private readonly ctx: unknown[] = [undefined];
  /**
   * Memory UCX reads or writes until a request completes. Held here, as data: a closure that
   * merely mentions a buffer does not reliably keep it alive (measured: JSC collected buffers
   * referenced only as `void buf` inside a pending callback).
   */
  private readonly memory: unknown[] = [undefined];
  /** Requests UCX returned (0: none): freed once their callback ran (never before: a freed request gets no callback). */
  private readonly request: number[] = [0];
  /** The endpoint each request belongs to (see abandon()). */
  private readonly owner: Array<UcpEndpoint | null> = [null];
  /** Free slots (ids), reused last-freed first. */
  private readonly free: number[] = [];
  private pendingCount = 0;
  private retainedCount = 0;
  private requestCount = 0;
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
  /** The id whose *_nbx call is running, and a completion that arrived inside it. */
  private reserved = 0;
  private earlyStatus: number | null = null;

  /** Requests still in flight for their owners. */
  get inFlight(): number {
    return this.pendingCount;
  }

  /** UCX's callback for request `id` (or the end of an immediate operation). */
  complete(id: number, status: number, length: number): void {
    const st = this.state[id];
    if (st !== PENDING) {
      if (st === RESERVED && id === this.reserved) this.earlyStatus = status;
      else if (st === DETACHED) this.reattach(id);
      return;
    }
    const done = this.done[id]!;
    const ctx = this.ctx[id];
    const req = this.request[id]!;
    this.clear(id);
    if (req !== 0) this.finished.push(req);
    this.release(id);
    if (ctx !== undefined) (done as unknown as (status: number, ctx: unknown) => void)(status, ctx);
    else done(status, length);
  }

  /** Empties slot `id` of a pending request (the counts follow); its state is the caller's to set. */
  private clear(id: number): void {
    this.pendingCount--;
    if (this.memory[id] !== undefined) this.retainedCount--;
    if (this.request[id] !== 0) this.requestCount--;
    this.done[id] = undefined;
    this.ctx[id] = undefined;
    this.memory[id] = undefined;
    this.request[id] = 0;
    this.owner[id] = null;
  }

  /** Slot `id` is free for reuse. */
  private release(id: number): void {
    this.state[id] = FREE;
    this.free.push(id);
  }

  /** A given-up request's callback ran: UCX is done with it and its memory. */
  private reattach(id: number): void {
    const d = this.detached.get(id);
    if (d === undefined) return;
    this.detached.delete(id);
    this.detachedBytes -= bytesOf(d.memory);
    this.finished.push(d.req);
    this.release(id);
  }

  /** Gives up on the requests of `ep` still in flight (see UcpWorker.abandon); returns how many. */
  abandon(ep: UcpEndpoint): number {
    const ids: number[] = [];
    for (let id = 1; id < this.state.length; id++) if (this.state[id] === PENDING && this.owner[id] === ep) ids.push(id);
    for (const id of ids) this.detach(id);
    this.abandoned += ids.length;
    return ids.length;
  }

  /** Requests of `ep` UCX has not completed yet. */
  countOwnedBy(ep: UcpEndpoint): number {
    if (this.requestCount === 0) return 0;
    let n = 0;
    for (let id = 1; id < this.state.length; id++) if (this.state[id] === PENDING && this.owner[id] === ep && this.request[id] !== 0) n++;
    return n;
  }

  /** Gives up on every request still in flight (the worker is closing). */
  detachAll(): void {
    for (let id = 1; id < this.state.length; id++) if (this.state[id] === PENDING) this.detach(id);
  }

  /** Completes request `id` for its owner with UCS_ERR_CANCELED and keeps it, and its memory, in `detached`. */
  private detach(id: number): void {
    const done = this.done[id]!;
    const ctx = this.ctx[id];
    const req = this.request[id]!;
    const memory = this.memory[id];
    this.clear(id);
    if (req !== 0) {
      this.state[id] = DETACHED;
      this.detached.set(id, { req, memory });
      this.detachedBytes += bytesOf(memory);
    } else this.release(id);
    if (ctx !== undefined) (done as unknown as (status: number, ctx: unknown) => void)(UCP.UCS_ERR_CANCELED, ctx);
    else done(UCP.UCS_ERR_CANCELED, 0);
  }

  /** The given-up requests UCX has not completed (to free right before the worker is destroyed). */
  detachedRequests(): number[] {
    return [...this.detached.values()].map((d) => d.req);
  }

  /** The worker is destroyed: nothing of UCX uses the given-up requests' memory any more. */
  dropDetached(): void {
    for (const id of this.detached.keys()) this.release(id);
    this.detached.clear();
    this.detachedBytes = 0;
  }

  /** Registers a completion and the memory the request uses; returns the id to pass as user_data. */
  track(done: Completion, memory: unknown[]): number {
    const id = this.take();
    this.state[id] = PENDING;
    this.done[id] = done;
    this.pendingCount++;
    if (memory.length > 0) {
      this.memory[id] = memory;
      this.retainedCount++;
    }
    return id;
  }

  /** A free slot: the id of a request that is done (or of none yet). */
  private take(): number {
    const id = this.free.pop();
    if (id !== undefined) return id;
    const n = this.state.length;
    if (n > MAX_REQUEST_ID) throw new RangeError("ucx: too many requests in flight");
    this.state.push(FREE);
    this.done.push(undefined);
    this.ctx.push(undefined);
    this.memory.push(undefined);
    this.request.push(0);
    this.owner.push(null);
    return n;
  }

  /** An id for a request whose completion is registered only if it goes in flight. */
  reserveId(): number {
    const id = this.take();
    this.state[id] = RESERVED;
    this.reserved = id;
    this.earlyStatus = null;
    return id;
  }

  /**
   * After an *_nbx call made with a reserved id: done now (`done(status, ctx)`, nothing
   * allocated), or in flight, `ctx` (or, when it is null, `a` and `b`) retained until UCX
   * completes it; with a `ctx`, nothing is allocated for it either.
   */
  settleReserved(sp: number, id: number, owner: UcpEndpoint, done: (status: number, ctx: unknown) => void, a: unknown, b: unknown, ctx: unknown): void {
    this.reserved = 0;
    if (sp === 0 || isStatusError(sp)) {
      this.release(id);
      return done(sp === 0 ? UCP.UCS_OK : sp, ctx);
    }
    if (this.earlyStatus !== null) {
      // The callback ran inside the call: the request is done; free it.
      const st = this.earlyStatus;
      this.earlyStatus = null;
      this.release(id);
      this.finished.push(sp);
      return done(st, ctx);
    }
    this.state[id] = PENDING;
    this.pendingCount++;
    this.retainedCount++;
    this.requestCount++;
    this.request[id] = sp;
    this.owner[id] = owner;
    if (ctx === null) {
      this.done[id] = withNullContext(done);
      this.memory[id] = [a, b];
    } else {
      // No closure: the completion and its context are kept apart (complete() joins them).
      this.done[id] = done as unknown as Completion;
      this.ctx[id] = ctx;
      this.memory[id] = ctx;
    }
  }

  /** After an *_nbx call for a tracked id: immediate completion, error, or a request in flight. */
  settle(sp: number, id: number, owner: UcpEndpoint): void {
    if (sp === 0) return this.complete(id, UCP.UCS_OK, 0);
    if (isStatusError(sp)) return this.complete(id, sp, 0);
    // In flight: the callback runs when it completes; the request is freed after that. Had the
    // callback already run inside the call, the request is done: freed at once.
    if (this.state[id] !== PENDING || this.request[id] !== 0) {
      this.finished.push(sp);
      return;
    }
    this.request[id] = sp;
    this.owner[id] = owner;
    this.requestCount++;
  }

  /** Counters: see UcpWorker.stats(). */
  stats(): { inFlight: number; retained: number; requests: number; abandoned: number; detached: number; detachedBytes: number } {
    return {
      inFlight: this.pendingCount,
      retained: this.retainedCount,
      requests: this.requestCount,
      abandoned: this.abandoned,
      detached: this.detached.size,
      detachedBytes: this.detachedBytes,
    };
  }
}

/**
 * `done` as a Completion with a null context. A function of its own: a closure made inside
 * settleReserved would have it allocate a scope (JSLexicalEnvironment) on every call, in
 * flight or not (measured: 0.2 objects per round trip at 64 calls in flight).
 */
function withNullContext(done: (status: number, ctx: unknown) => void): Completion {
  return (st) => done(st, null);
}

/** Bytes of the typed arrays in a request's retained memory (a list of them, or one). */
function bytesOf(memory: unknown): number {
  if (ArrayBuffer.isView(memory)) return memory.byteLength;
  if (!Array.isArray(memory)) return 0;
  let n = 0;
  for (const m of memory) if (ArrayBuffer.isView(m)) n += m.byteLength;
  return n;
}
