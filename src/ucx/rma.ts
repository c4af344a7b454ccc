/**
 * One-sided memory access over UCX (the `rma` capability).
 *
 * The owner registers a region (`conn.registerMemory(len)`), sends its `descriptor()` to the
 * peer over the RPC channel, and keeps it alive; the peer attaches (`conn.attachRegion(desc)`)
 * and then reads, writes and compare-and-swaps without involving the owner's CPU:
 *
 *   const remote = conn.attachRegion(await client.request(GET_REGION));
 *   await remote.put(0, bytes);  const back = await remote.get(0, bytes.length);
 *   const { swapped, value } = await remote.cas(64, 0n, 42n);
 *
 * Hot-path reads: `remote.readTo(offset, len, target)` reads into `target.buf` and calls
 * `target.onRead(status)`, allocating nothing per read (a kv one-sided GET's reads);
 * `readInto(offset, dst, done)` is the same with a callback (a closure per read).
 *
 * Every access is checked against the advertised length before it reaches UCX (UsageError),
 * CAS needs an 8-byte aligned offset. Descriptor layout: u64 address, u64 length, u32 rkey
 * length, packed rkey bytes (little-endian).
 *
 * Only connections with RMA have regions (`ucx: { rma: true }` on both sides; otherwise
 * registerMemory / attachRegion throw UsageError). A region belongs to the connection that
 * registered it and is deregistered (ucp_mem_unmap) when that connection closes, whether it
 * closed itself, its peer closed, or its peer died. What that protects depends on the UCX
 * transport: a NIC that enforces memory keys (InfiniBand / RoCE) refuses an rkey once its
 * memory is deregistered, but UCX's tcp and shared-memory transports check nothing (software
 * RMA writes and reads the address a peer names; CMA reaches any address of a process of the
 * same uid): there a descriptor is a bearer capability that outlives deregistration, and every
 * peer of an RMA runtime can reach every address of this process, registered or not.
 *
 * Shared regions: memory this process already has (a kv store's arena) is registered once per
 * RMA runtime (`SharedRegion.register(rt, bytes)`: one ucp_mem_map of those very bytes, no
 * allocation, the rkey packed once) and every connection of that runtime hands out the same
 * descriptor; its owner (not a connection) deregisters it with close(). Ordering: a put's own
 * completion is local; `remote.flush()` (ucp_ep_flush_nbx) resolves once every earlier put of
 * the connection has landed at the target, which is what a message that announces the bytes
 * must wait for (ucp_worker_fence in UCX 1.13 orders within one transport interface only).
 */

import { ProtocolError, TransportClosedError, UsageError } from "../errors.ts";
import { UCP } from "../ffi/ucp-layout.ts";
import { UcxError, type UcpEndpoint, type UcpMemory, type UcpRkey } from "../ffi/ucp.ts";
import type { UcxRuntime } from "./runtime.ts";

/**
 * What a remote region needs of its connection (UcxConnection implements it). Declared here so
 * that this file imports nothing of connection.ts (connection.ts imports this one).
 */
export interface RegionConnection {
  readonly ep: UcpEndpoint;
  /** Counts completed operations (UcxRuntime.rmaCompleted), so a spin waiting for one stops. */
  readonly rt: { rmaCompleted: number };
  readonly closed: boolean;
  readonly peer: string;
  /** An operation went to UCX: let the runtime progress it. */
  sent(): void;
}

const DESC_FIXED = 20;

/**
 * Memory this process registers for one-sided access by its peer. Owned by the connection that
 * made it: closed with it, when its peer closes or dies too (or earlier by close()); see the
 * module comment for what deregistration revokes on which UCX transport. The bytes are JS memory that UCX only
 * registers (UcpContext.memMap), so `view` stays valid memory for as long as any JS code
 * holds it, after close() too (a stale view reads what was last written; the GC frees the
 * memory when the last view goes). Thread: the connection's.
 */
export class LocalRegion {
  private mem: UcpMemory | null;
  /** The registered bytes; the peer reads and writes them one-sided while the region is open. */
  readonly view: Uint8Array;
  readonly lenBytes: number;

  constructor(rt: UcxRuntime, lenBytes: number) {
    if (!Number.isInteger(lenBytes) || lenBytes <= 0) throw new UsageError(`ucx registerMemory: length ${lenBytes} must be a positive integer`);
    this.mem = rt.ctx.memMap(lenBytes);
    this.view = this.mem.view;
    this.lenBytes = lenBytes;
  }

  /** True once closed (the peer can no longer reach the memory). */
  get closed(): boolean {
    return this.mem === null;
  }

  /** Bytes a peer passes to attachRegion(). */
  descriptor(): Uint8Array {
    if (this.mem === null) throw new UsageError("ucx region is closed");
    return encodeDescriptor(this.mem.address, this.lenBytes, this.mem.packRkey());
  }

  /** Deregisters the memory; `view` stays readable and writable. Twice is safe. */
  close(): void {
    const mem = this.mem;
    this.mem = null;
    mem?.close();
  }
}

/**
 * Memory the caller already has (`view`), registered for one-sided access by every peer of one
 * RMA runtime: one registration (ucp_mem_map of those bytes in place) and one packed rkey per
 * runtime, whatever the number of connections. The region keeps `view` (and so the JS memory)
 * reachable; close() deregisters it, which closing a connection does not. What a closed region
 * still lets a peer do depends on the UCX transport (module comment). Thread: the runtime's.
 *
 *   const arena = SharedRegion.register(conn.rt, store.arena);  reply(arena.descriptor());  …  arena.close();
 */
export class SharedRegion {
  private mem: UcpMemory | null;
  private readonly desc: Uint8Array;
  readonly view: Uint8Array;
  readonly lenBytes: number;

  private constructor(
    /** The runtime whose connections may use it. */
    readonly rt: UcxRuntime,
    view: Uint8Array,
  ) {
    if (!rt.rma) throw new UsageError("ucx SharedRegion: this runtime has no RMA (listen with ucx: { rma: true })");
    if (view.length === 0) throw new UsageError("ucx SharedRegion: the memory is empty");
    this.mem = rt.ctx.memRegister(view);
    this.view = view;
    this.lenBytes = view.length;
    this.desc = encodeDescriptor(this.mem.address, this.lenBytes, this.mem.packRkey());
  }

  /** Registers `view` for the runtime `rt` (UsageError without RMA or for empty memory). */
  static register(rt: UcxRuntime, view: Uint8Array): SharedRegion {
    return new SharedRegion(rt, view);
  }

  get closed(): boolean {
    return this.mem === null;
  }

  /** The descriptor a peer passes to attachRegion(): the same bytes on every call (do not modify them). */
  descriptor(): Uint8Array {
    if (this.mem === null) throw new UsageError("ucx shared region is closed");
    return this.desc;
  }

  /** Deregisters the memory (ucp_mem_unmap); `view` stays the caller's memory. Twice is safe. */
  close(): void {
    const mem = this.mem;
    this.mem = null;
    mem?.close();
  }
}

function encodeDescriptor(address: number, lenBytes: number, rkey: Uint8Array): Uint8Array {
  const out = new Uint8Array(DESC_FIXED + rkey.length);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(address), true);
  dv.setBigUint64(8, BigInt(lenBytes), true);
  dv.setUint32(16, rkey.length, true);
  out.set(rkey, DESC_FIXED);
  return out;
}

export interface CasResult {
  /** The swap happened (the word held the compare value). */
  swapped: boolean;
  /** The word's value before the operation. */
  value: bigint;
}

/** A destination of RemoteRegion.readTo: the bytes land at the start of `buf`, then `onRead(status)` runs. */
export interface RegionReadTarget {
  readonly buf: Uint8Array;
  onRead(status: number): void;
}

export class RemoteRegion {
  readonly address: number;
  readonly lenBytes: number;
  private rkey: UcpRkey | null;

  constructor(
    private readonly conn: RegionConnection,
    descriptor: Uint8Array,
  ) {
    if (descriptor.length < DESC_FIXED) throw new ProtocolError(`ucx region descriptor of ${descriptor.length} bytes is too short`);
    const dv = new DataView(descriptor.buffer, descriptor.byteOffset, descriptor.byteLength);
    this.address = Number(dv.getBigUint64(0, true));
    this.lenBytes = Number(dv.getBigUint64(8, true));
    const rkeyLen = dv.getUint32(16, true);
    if (DESC_FIXED + rkeyLen !== descriptor.length) throw new ProtocolError(`ucx region descriptor: rkey of ${rkeyLen} bytes, descriptor has ${descriptor.length - DESC_FIXED}`);
    this.rkey = conn.ep.rkeyUnpack(descriptor.subarray(DESC_FIXED));
  }

  /** Operations of this region not yet completed. */
  private inFlight = 0;

  /**
   * After an operation's completion ran (inside worker progress; counted in rmaCompleted for
   * the runtime's spin, which stops at the first completion): if others of this region are
   * still in flight once the completions queued so far have run, the runtime is asked to
   * progress again at once, or the next would wait for an event-loop turn. Checked in a
   * microtask queued after those completions' continuations, so a spin never starts for
   * operations that completed in the same progress.
   */
  private completed(): void {
    if (--this.inFlight > 0) queueMicrotask(this.recheck);
  }

  private readonly recheck = (): void => {
    if (this.inFlight > 0) this.conn.sent();
  };

  private check(op: string, offset: number, len: number): UcpRkey {
    if (this.rkey === null || this.conn.closed) throw new TransportClosedError(`ucx ${op}: the connection to ${this.conn.peer} is closed`);
    if (!Number.isInteger(offset) || !Number.isInteger(len) || offset < 0 || len < 0 || offset + len > this.lenBytes) {
      throw new UsageError(`ucx ${op}: bytes [${offset}, ${offset + len}) are outside the remote region of ${this.lenBytes} bytes`);
    }
    return this.rkey;
  }

  private run(op: string, start: (done: (status: number) => void) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.inFlight++;
      start((status) => {
        this.conn.rt.rmaCompleted++;
        if (status === UCP.UCS_OK) resolve();
        else reject(this.conn.closed ? new TransportClosedError(`ucx ${op}: the connection to ${this.conn.peer} closed`) : new UcxError(`ucx ${op}`, status));
        this.completed();
      });
      this.conn.sent();
    });
  }

  /** Reads `len` bytes at `offset` of the remote region. */
  async get(offset: number, len: number): Promise<Uint8Array> {
    const rkey = this.check("get", offset, len);
    const buf = new Uint8Array(len);
    await this.run("get", (done) => this.conn.ep.get(buf, this.address + offset, rkey, done));
    return buf;
  }

  /**
   * Reads `dst.length` bytes at `offset` into `dst` and calls `done(status)` (UCS_OK, or a UCX
   * error status): the hot path's get, no promise and no allocation. `dst` must be an ArrayBuffer-backed array that stays
   * untouched until `done` (inside the call if UCX completes the read at once; over UCX
   * 1.13's tcp and shared-memory transports a read is emulated with Active Messages that the
   * peer's worker answers, so it completes in a later progress). Throws UsageError /
   * TransportClosedError like get().
   */
  readInto(offset: number, dst: Uint8Array, done: (status: number) => void): void {
    const rkey = this.check("get", offset, dst.length);
    this.inFlight++;
    this.conn.ep.get(dst, this.address + offset, rkey, (status) => {
      this.conn.rt.rmaCompleted++;
      done(status);
      this.completed();
    });
    this.conn.sent();
  }

  /**
   * Reads `len` bytes at `offset` into the start of `target.buf` and calls `target.onRead(status)`
   * (UCS_OK, or a UCX error status): readInto without a closure or a view per read, for a
   * target object reused from read to read (a one-sided GET's). `target.buf` must be
   * ArrayBuffer-backed, at least `len` long, and neither touched nor replaced until onRead
   * (the worker keeps `target`, and through it the buffer, reachable while the read is in
   * flight); onRead runs inside worker progress (or inside this call when UCX completes the
   * read at once) and must not throw. Throws UsageError / TransportClosedError like get().
   */
  readTo(offset: number, len: number, target: RegionReadTarget): void {
    const rkey = this.check("get", offset, len);
    if (len > target.buf.length) throw new UsageError(`ucx get: ${len} bytes do not fit the target's ${target.buf.length}-byte buffer`);
    this.inFlight++;
    this.conn.ep.getWith(target.buf, len, this.address + offset, rkey, this.targetDone, target);
    this.conn.sent();
  }

  /** readTo's completion: one function per region, the target passed as the worker's context. */
  private readonly targetDone = (status: number, target: RegionReadTarget): void => {
    this.conn.rt.rmaCompleted++;
    try {
      target.onRead(status);
    } finally {
      this.completed();
    }
  };

  /**
   * Resolves once every put (and CAS) this connection issued before the call has completed at
   * the target (ucp_ep_flush_nbx): then a message announcing those bytes cannot overtake them.
   */
  flush(): Promise<void> {
    if (this.rkey === null || this.conn.closed) return Promise.reject(new TransportClosedError(`ucx flush: the connection to ${this.conn.peer} is closed`));
    return this.run("flush", (done) => this.conn.ep.flush(done));
  }

  /** ucp_worker_fence (see UcpEndpoint.fence: in UCX 1.13 it does not order a put before an Active Message). */
  fence(): void {
    this.conn.ep.fence();
  }

  /**
   * Writes `bytes` at `offset` of the remote region: copied before it returns, or with
   * `{ copy: false }` read in place, so the caller must leave `bytes` untouched until the
   * promise settles (the large-put path: no copy of a 256 KiB value).
   */
  put(offset: number, bytes: Uint8Array, opts?: { copy?: boolean }): Promise<void> {
    let rkey: UcpRkey;
    try {
      rkey = this.check("put", offset, bytes.length);
    } catch (e) {
      return Promise.reject(e);
    }
    let own = bytes;
    if (opts?.copy === false) void bytes.buffer; // pins a GC-heap array's bytes before UCX takes their address
    else own = bytes.slice();
    return this.run("put", (done) => this.conn.ep.put(own, this.address + offset, rkey, done));
  }

  /** 64-bit compare-and-swap of the word at `offset` (8-byte aligned). */
  async cas(offset: number, compare: bigint, swap: bigint): Promise<CasResult> {
    const rkey = this.check("cas", offset, 8);
    if (offset % 8 !== 0) throw new UsageError(`ucx cas: offset ${offset} is not 8-byte aligned`);
    const cmp = new BigUint64Array([BigInt.asUintN(64, compare)]);
    const swapInOldOut = new BigUint64Array([BigInt.asUintN(64, swap)]);
    await this.run("cas", (done) => this.conn.ep.cas(cmp, swapInOldOut, this.address + offset, rkey, done));
    const old = swapInOldOut[0]!;
    return { swapped: old === cmp[0], value: old };
  }

  close(): void {
    this.rkey?.close();
    this.rkey = null;
  }
}
