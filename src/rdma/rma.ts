/**
 * One-sided memory access over rdma:// (the `rma` capability): RDMA READ, RDMA WRITE and 64-bit
 * ATOMIC_CMP_AND_SWP on memory the peer registered, with the API of src/ucx/rma.ts.
 *
 * The owner registers a region (`conn.registerMemory(len)`: JS memory registered with the
 * runtime's PD for remote read, write and atomics), sends its `descriptor()` to the peer over the
 * RPC channel, and keeps it; the peer attaches (`conn.attachRegion(desc)`) and reads, writes and
 * compare-and-swaps without the owner's CPU:
 *
 *   const remote = conn.attachRegion(await client.request(GET_REGION));
 *   await remote.put(0, bytes);  const back = await remote.get(0, bytes.length);
 *   const { swapped, value } = await remote.cas(64, 0n, 42n);
 *
 * Descriptor (RMA_DESC_BYTES = 20, little-endian):
 *
 *   0        8        16       20
 *   | u64 addr | u64 len | u32 rkey |
 *
 * Contract:
 * - Every access is checked against the descriptor's length before anything is posted
 *   (UsageError); a CAS needs an 8-byte aligned remote address; one operation moves at most
 *   MAX_OP_BYTES. A descriptor of another length is a ProtocolError.
 * - Operations share the connection's send queue with its messages (RdmaConnection.postOneSided);
 *   when it is full they wait in a FIFO here and are posted, in order, as slots free.
 * - The peer refusing an access (a bad or revoked rkey, bytes outside its MR: IBV_WC_REM_ACCESS_ERR,
 *   or another error completion) fails that operation with RdmaAccessError and closes the
 *   connection with it (RC moves both QPs to ERR; nothing more can be posted on it).
 * - When the connection closes, operations in flight or queued fail with TransportClosedError
 *   (readTo / readInto: their callback gets IBV_WC_WR_FLUSH_ERR), and every region the
 *   connection registered is deregistered, so the rkeys it handed out are refused from then on.
 *   `bytes` of a closed LocalRegion stay valid JS memory.
 * - Ordering: RC executes a connection's WRITEs, atomics and SENDs in order, so a message sent
 *   after a put() reaches the peer after the put's bytes; a put resolves once the peer acknowledged
 *   it, and flush() resolves once every operation issued before it completed.
 * - An rkey is valid for every QP of the runtime's PD (one per device context, shared by every
 *   connection and listener of the thread on that device): a descriptor is a bearer capability:
 *   any peer of that runtime (another client of the same listener too) that learns or guesses
 *   it can read, write and CAS the region while it is open; landing zones likewise (zones.ts).
 *   Not fixed: a PD per connection or type-2 memory windows would bind it to its QP.
 * - CAS compares and swaps the remote word in host byte order and reads the old value back in
 *   host order (the software provider does; an HCA that answers atomics big-endian would show
 *   byte-swapped values: `hotpath doctor --selftest rdma` checks it on a real device).
 *
 * Local memory: an operation of at most SCRATCH_SLOT_BYTES goes through a slot of a small
 * registered scratch buffer per connection (registered on first use) and a copy; a larger one
 * registers the caller's bytes for the time of the operation (get: a new buffer; put: a copy,
 * or the caller's bytes with `{ copy: false }`; readTo / readInto: the destination itself).
 *
 * Thread: the connection's; nothing here is shared between threads.
 */

import { type HotpathError, ProtocolError, TransportClosedError, UsageError } from "../errors.ts";
import { IBV, wcStatusName, type VerbsMr, type VerbsPd } from "../ffi/ibverbs.ts";

/** Bytes of a descriptor: u64 address, u64 length, u32 rkey. */
export const RMA_DESC_BYTES = 20;
/** Largest single operation: 1 GiB is mlx5's max_msg_sz, the smallest of the common HCAs. */
export const MAX_OP_BYTES = 1 << 30;
/** A full send queue with none of our operations in flight is tried again after this long at most (or at the connection's next send completion). */
export const RETRY_MS = 1;
/** Operations up to this size go through a scratch slot (a copy of up to 4 KiB costs less than registering memory). */
export const SCRATCH_SLOT_BYTES = 4096;
/** Scratch slots per connection (256 KiB registered); more small operations in flight register their own memory. */
const SCRATCH_SLOTS = 64;
/** What a region allows its peer: everything one-sided (atomics only where the device has them). */
const REGION_ACCESS = IBV.IBV_ACCESS_LOCAL_WRITE | IBV.IBV_ACCESS_REMOTE_READ | IBV.IBV_ACCESS_REMOTE_WRITE;

/** A decoded descriptor. */
export interface RmaDescriptor {
  address: bigint;
  lenBytes: number;
  rkey: number;
}

/** The 20 bytes a peer passes to attachRegion(). */
export function encodeRmaDescriptor(d: RmaDescriptor): Uint8Array {
  const out = new Uint8Array(RMA_DESC_BYTES);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt.asUintN(64, d.address), true);
  dv.setBigUint64(8, BigInt(d.lenBytes), true);
  dv.setUint32(16, d.rkey >>> 0, true);
  return out;
}

/** Reads a descriptor; ProtocolError when it is not RMA_DESC_BYTES long or its length is not a safe integer. */
export function decodeRmaDescriptor(bytes: Uint8Array): RmaDescriptor {
  if (!(bytes instanceof Uint8Array) || bytes.length !== RMA_DESC_BYTES) {
    throw new ProtocolError(`rdma region descriptor of ${bytes instanceof Uint8Array ? `${bytes.length} bytes` : typeof bytes}: expected ${RMA_DESC_BYTES} (u64 address, u64 length, u32 rkey)`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = dv.getBigUint64(8, true);
  if (len > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`rdma region descriptor: length ${len} is not a safe integer`);
  return { address: dv.getBigUint64(0, true), lenBytes: Number(len), rkey: dv.getUint32(16, true) };
}

/**
 * A one-sided operation the peer's device refused, or that failed with another error completion
 * than a flush: `status` is its IBV_WC_* status (IBV_WC_REM_ACCESS_ERR for a bad rkey or bytes
 * outside the peer's region). The connection is closed with this error.
 */
export class RdmaAccessError extends ProtocolError {
  readonly status: number;
  readonly statusName: string;
  constructor(
    readonly op: string,
    status: number,
    peer: string,
    detail: string,
  ) {
    super(`rdma ${op} on ${peer}: ${wcStatusName(status)} (${detail})`);
    this.status = status;
    this.statusName = wcStatusName(status);
  }
}

// Errors are named after their class; a bundler may rename the binding (errors.ts's note): pinned.
Object.defineProperty(RdmaAccessError, "name", { value: "RdmaAccessError" });

/** What a region needs of its connection (RdmaConnection implements it; declared here so rma.ts imports nothing of connection.ts). */
export interface RmaConnection {
  readonly closed: boolean;
  readonly closeError: HotpathError | null;
  readonly peer: string;
  /** See RdmaConnection.postOneSided: false when the send queue is full, TransportClosedError when closed. */
  postOneSided(op: number, localAddr: number, lkey: number, lenBytes: number, remoteAddr: bigint, rkey: number, compare: bigint, swap: bigint, done: (status: number) => void): boolean;
  /** Closes the connection at once with `error` (the contract's abort). */
  abort(error: HotpathError): void;
  /** Runs `f` once at the connection's next send-queue completion, whoever posted it (or at its close); `f` registered twice runs once. */
  onNextSendCompletion(f: () => void): void;
}

/** A destination of RdmaRemoteRegion.readTo: the bytes land at the start of `buf`, then `onRead(status)` runs. */
export interface RegionReadTarget {
  readonly buf: Uint8Array;
  onRead(status: number): void;
}

export interface CasResult {
  /** The swap happened (the word held the compare value). */
  swapped: boolean;
  /** The word's value before the operation. */
  value: bigint;
}

const K_GET = 0;
const K_PUT = 1;
const K_CAS = 2;
const K_READ_TO = 3;
const K_READ_INTO = 4;
const OP_NAMES = ["get", "put", "cas", "get", "get"];

/** One operation from issue to completion; pooled per connection, its `done` bound once. */
class RmaOp {
  kind = K_GET;
  remoteAddr = 0n;
  rkey = 0;
  lenBytes = 0;
  compare = 0n;
  swap = 0n;
  /** Scratch slot, or -1. */
  slot = -1;
  /** Memory registered for this operation only, or null. */
  tmp: VerbsMr | null = null;
  /** get: the result buffer; put: the bytes to write; readInto: the destination. */
  buf: Uint8Array | null = null;
  target: RegionReadTarget | null = null;
  cb: ((status: number) => void) | null = null;
  resolve: ((v: any) => void) | null = null;
  reject: ((e: unknown) => void) | null = null;
  readonly done = (status: number): void => this.owner.complete(this, status);
  constructor(private readonly owner: RdmaRma) {}
}

/**
 * A connection's one-sided state: its regions, scratch memory, queued and in-flight operations.
 * Made by the RdmaConnection on first use of registerMemory / attachRegion; the connection
 * calls close() once it closed (after its QP is in ERR or destroyed). Thread: the connection's.
 */
export class RdmaRma {
  private readonly locals = new Set<RdmaLocalRegion>();
  private scratch: VerbsMr | null = null;
  private readonly freeSlots: number[] = [];
  private readonly pool: RmaOp[] = [];
  private readonly queued: RmaOp[] = [];
  private readonly inFlight = new Set<RmaOp>();
  private issued = 0;
  private completed = 0;
  private flushes: Array<{ at: number; resolve: () => void; reject: (e: unknown) => void }> = [];
  /** A retry is due (scheduleRetry): this timer, or the connection's next send completion, runs it. */
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private isClosed = false;

  constructor(
    private readonly conn: RmaConnection,
    private readonly pd: VerbsPd,
    /** The device does 64-bit compare-and-swap (atomic_cap not IBV_ATOMIC_NONE). */
    readonly atomics = true,
  ) {}

  get closed(): boolean {
    return this.isClosed || this.conn.closed;
  }

  /** Registers `lenBytes` of new zeroed memory for the peer (UsageError for a length that is not a positive integer). */
  registerMemory(lenBytes: number): RdmaLocalRegion {
    if (this.closed) throw new TransportClosedError(`rdma registerMemory: the connection to ${this.conn.peer} is closed`);
    if (!Number.isSafeInteger(lenBytes) || lenBytes <= 0) throw new UsageError(`rdma registerMemory: length ${lenBytes} must be a positive integer`);
    const mr = this.pd.regMr(new Uint8Array(lenBytes), REGION_ACCESS | (this.atomics ? IBV.IBV_ACCESS_REMOTE_ATOMIC : 0));
    const region = new RdmaLocalRegion(mr, () => this.locals.delete(region));
    this.locals.add(region);
    return region;
  }

  /** A view of the peer's region named by `descriptor` (ProtocolError for a malformed one). */
  attachRegion(descriptor: Uint8Array): RdmaRemoteRegion {
    if (this.closed) throw new TransportClosedError(`rdma attachRegion: the connection to ${this.conn.peer} is closed`);
    return new RdmaRemoteRegion(this, decodeRmaDescriptor(descriptor));
  }

  /** @internal the peer's name for messages. */
  get peer(): string {
    return this.conn.peer;
  }

  /** @internal issues one operation (already bounds-checked); throws TransportClosedError when closed. */
  issue(kind: number, remoteAddr: bigint, rkey: number, lenBytes: number, fill: (op: RmaOp) => void): void {
    if (this.closed) throw new TransportClosedError(`rdma ${OP_NAMES[kind]}: the connection to ${this.conn.peer} is closed`);
    const op = this.pool.pop() ?? new RmaOp(this);
    op.kind = kind;
    op.remoteAddr = remoteAddr;
    op.rkey = rkey;
    op.lenBytes = lenBytes;
    fill(op);
    try {
      this.prepare(op);
    } catch (e) {
      this.recycle(op);
      throw e;
    }
    this.issued++;
    this.queued.push(op);
    if (this.queued.length === 1) this.pump();
  }

  /** Local memory for `op`: a scratch slot, or its bytes registered for the time of the operation. */
  private prepare(op: RmaOp): void {
    const len = op.kind === K_CAS ? 8 : op.lenBytes;
    if (len <= SCRATCH_SLOT_BYTES) {
      if (this.scratch === null) {
        this.scratch = this.pd.regMr(new Uint8Array(SCRATCH_SLOTS * SCRATCH_SLOT_BYTES), IBV.IBV_ACCESS_LOCAL_WRITE);
        for (let i = SCRATCH_SLOTS - 1; i >= 0; i--) this.freeSlots.push(i);
      }
      const slot = this.freeSlots.pop();
      if (slot !== undefined) {
        op.slot = slot;
        if (op.kind === K_PUT) this.scratch.view.set(op.buf!, slot * SCRATCH_SLOT_BYTES);
        return;
      }
    }
    let mem: Uint8Array;
    if (op.kind === K_GET) mem = op.buf = new Uint8Array(len);
    else if (op.kind === K_CAS) mem = new Uint8Array(8);
    else if (op.kind === K_READ_TO) mem = op.target!.buf.subarray(0, len);
    else mem = op.buf!;
    op.tmp = this.pd.regMr(mem, IBV.IBV_ACCESS_LOCAL_WRITE);
  }

  /** Posts queued operations in order until the send queue is full (then retries on the next completion or event-loop turn). */
  private pump(): void {
    while (this.queued.length > 0 && !this.closed) {
      const op = this.queued[0]!;
      const addr = op.tmp !== null ? op.tmp.address : this.scratch!.address + op.slot * SCRATCH_SLOT_BYTES;
      const lkey = op.tmp !== null ? op.tmp.lkey : this.scratch!.lkey;
      const wr = op.kind === K_PUT ? IBV.IBV_WR_RDMA_WRITE : op.kind === K_CAS ? IBV.IBV_WR_ATOMIC_CMP_AND_SWP : IBV.IBV_WR_RDMA_READ;
      let posted: boolean;
      try {
        posted = this.conn.postOneSided(wr, addr, lkey, op.kind === K_CAS ? 8 : op.lenBytes, op.remoteAddr, op.rkey, op.compare, op.swap, op.done);
      } catch (e) {
        if (!(e instanceof TransportClosedError)) throw e;
        break; // closed: close() fails what is queued
      }
      if (!posted) {
        this.scheduleRetry();
        return;
      }
      this.queued.shift();
      this.inFlight.add(op);
    }
    // Closed: what never reached the send queue fails now; what is in flight waits for its
    // flush (or close()), since the QP may still be reading or writing its memory.
    if (this.closed && this.queued.length > 0) this.failAll(this.queued.splice(0));
  }

  /** Settles `ops` (none of them posted, or their QP gone) as flushed. */
  private failAll(ops: RmaOp[]): void {
    for (const op of ops) {
      try {
        this.finish(op, IBV.IBV_WC_WR_FLUSH_ERR);
      } catch {
        // a callback threw: the others must still be failed
      }
    }
    this.settleFlushes();
  }

  private scheduleRetry(): void {
    // A full send queue frees slots as its completions are polled: with ours in flight, their
    // completion pumps; else the connection's next send completion or a RETRY_MS timer. Never
    // an event-loop turn: that spins a core (in spin / blocking modes nothing polls meanwhile).
    if (this.retryTimer !== null || this.inFlight.size > 0) return;
    this.conn.onNextSendCompletion(this.retry);
    this.retryTimer = setTimeout(this.retry, RETRY_MS);
  }

  private readonly retry = (): void => {
    if (this.retryTimer === null) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.pump();
  };

  /** @internal an operation's completion (its `done`). */
  complete(op: RmaOp, status: number): void {
    if (!this.inFlight.delete(op)) return; // already failed by close()
    this.completed++;
    this.finish(op, status);
    this.settleFlushes();
    if (this.queued.length > 0) this.pump();
  }

  /** Settles `op` with `status`, frees its memory and returns it to the pool. */
  private finish(op: RmaOp, status: number): void {
    const slotAt = op.slot * SCRATCH_SLOT_BYTES;
    const local = op.slot >= 0 ? this.scratch!.view : null;
    let error: HotpathError | null = null;
    if (status !== IBV.IBV_WC_SUCCESS) error = this.failure(op, status);
    try {
      switch (op.kind) {
        case K_GET:
          if (error !== null) op.reject!(error);
          else op.resolve!(local !== null ? local.slice(slotAt, slotAt + op.lenBytes) : op.buf!);
          break;
        case K_PUT:
          if (error !== null) op.reject!(error);
          else op.resolve!(undefined);
          break;
        case K_CAS: {
          if (error !== null) {
            op.reject!(error);
            break;
          }
          const mem = local !== null ? local.subarray(slotAt, slotAt + 8) : op.tmp!.view;
          const old = new DataView(mem.buffer, mem.byteOffset, 8).getBigUint64(0, true);
          op.resolve!({ swapped: old === op.compare, value: old } satisfies CasResult);
          break;
        }
        case K_READ_TO:
          if (error === null && local !== null) op.target!.buf.set(local.subarray(slotAt, slotAt + op.lenBytes));
          op.target!.onRead(status);
          break;
        case K_READ_INTO:
          if (error === null && local !== null) op.buf!.set(local.subarray(slotAt, slotAt + op.lenBytes));
          op.cb!(status);
          break;
      }
    } finally {
      this.recycle(op);
    }
  }

  /** The error for a failed completion; a refusal by the peer (not a flush) also closes the connection with it. */
  private failure(op: RmaOp, status: number): HotpathError {
    const name = OP_NAMES[op.kind]!;
    if (status === IBV.IBV_WC_WR_FLUSH_ERR || this.conn.closed) {
      return new TransportClosedError(`rdma ${name}: the connection to ${this.conn.peer} closed`, { cause: this.conn.closeError ?? undefined });
    }
    let error: HotpathError;
    if (status === IBV.IBV_WC_RETRY_EXC_ERR) error = new TransportClosedError(`rdma ${name}: ${this.conn.peer} stopped answering (${wcStatusName(status)})`);
    else {
      const detail = status === IBV.IBV_WC_REM_ACCESS_ERR ? `the peer refused access to ${op.lenBytes} bytes at 0x${op.remoteAddr.toString(16)} with rkey 0x${op.rkey.toString(16)}: a bad or revoked rkey, or bytes outside its region` : "the operation failed at the device";
      error = new RdmaAccessError(name, status, this.conn.peer, detail);
    }
    this.conn.abort(error);
    return error;
  }

  private recycle(op: RmaOp): void {
    if (op.slot >= 0) this.freeSlots.push(op.slot);
    if (op.tmp !== null) {
      try {
        op.tmp.close();
      } catch {
        // deregistration failed: the PD's close retries it
      }
    }
    op.slot = -1;
    op.tmp = null;
    op.buf = null;
    op.target = null;
    op.cb = null;
    op.resolve = null;
    op.reject = null;
    this.pool.push(op);
  }

  /** @internal resolves once every operation issued before the call has completed. */
  flush(): Promise<void> {
    if (this.closed) return Promise.reject(new TransportClosedError(`rdma flush: the connection to ${this.conn.peer} is closed`));
    if (this.completed >= this.issued) return Promise.resolve();
    return new Promise((resolve, reject) => this.flushes.push({ at: this.issued, resolve, reject }));
  }

  private settleFlushes(): void {
    if (this.flushes.length === 0) return;
    const keep: typeof this.flushes = [];
    for (const f of this.flushes) {
      if (this.closed) f.reject(new TransportClosedError(`rdma flush: the connection to ${this.conn.peer} closed`, { cause: this.conn.closeError ?? undefined }));
      else if (this.completed >= f.at) f.resolve();
      else keep.push(f);
    }
    this.flushes = keep;
  }

  /**
   * The connection closed: fails what is queued or in flight (TransportClosedError;
   * IBV_WC_WR_FLUSH_ERR to readTo / readInto callbacks), deregisters every region and the
   * scratch memory. Call once the QP can no longer touch them (ERR or destroyed). Twice is safe.
   */
  close(): void {
    this.isClosed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const pending = [...this.inFlight, ...this.queued.splice(0)];
    this.inFlight.clear();
    this.failAll(pending);
    for (const r of [...this.locals]) r.close();
    const s = this.scratch;
    this.scratch = null;
    this.freeSlots.length = 0;
    s?.close();
  }
}

/**
 * Memory this process registered for one-sided access by the connection's peer. Owned by the
 * connection that made it: deregistered when it closes (or earlier by close()). `bytes` is JS
 * memory the device reads and writes while the region is open; it stays valid memory after
 * close() (a stale view holds what was last written). Thread: the connection's.
 */
export class RdmaLocalRegion {
  private mr: VerbsMr | null;
  /** The registered bytes; the peer reads and writes them one-sided while the region is open. */
  readonly bytes: Uint8Array;
  readonly lenBytes: number;

  /** @internal made by RdmaRma.registerMemory. */
  constructor(
    mr: VerbsMr,
    private readonly forget: () => void,
  ) {
    this.mr = mr;
    this.bytes = mr.view;
    this.lenBytes = mr.lenBytes;
  }

  /** The same bytes as `bytes` (src/ucx/rma.ts's name). */
  get view(): Uint8Array {
    return this.bytes;
  }

  /** True once deregistered (the peer's rkey is refused). */
  get closed(): boolean {
    return this.mr === null;
  }

  /** The RMA_DESC_BYTES a peer passes to attachRegion(). */
  descriptor(): Uint8Array {
    if (this.mr === null) throw new UsageError("rdma region is closed");
    return encodeRmaDescriptor({ address: BigInt(this.mr.address), lenBytes: this.lenBytes, rkey: this.mr.rkey });
  }

  /** Deregisters the memory; `bytes` stays readable and writable. Twice is safe. */
  close(): void {
    const mr = this.mr;
    if (mr === null) return;
    this.mr = null;
    this.forget();
    mr.close();
  }
}

/** The peer's region, named by its descriptor; every call checks bounds first. Thread: the connection's. */
export class RdmaRemoteRegion {
  readonly address: bigint;
  readonly lenBytes: number;
  readonly rkey: number;

  /** @internal made by RdmaRma.attachRegion. */
  constructor(
    private readonly rma: RdmaRma,
    d: RmaDescriptor,
  ) {
    this.address = d.address;
    this.lenBytes = d.lenBytes;
    this.rkey = d.rkey;
  }

  /** True once the connection closed. */
  get closed(): boolean {
    return this.rma.closed;
  }

  private check(op: string, offset: number, len: number): bigint {
    if (this.rma.closed) throw new TransportClosedError(`rdma ${op}: the connection to ${this.rma.peer} is closed`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(len) || offset < 0 || len < 0 || offset + len > this.lenBytes) {
      throw new UsageError(`rdma ${op}: bytes [${offset}, ${offset + len}) are outside the remote region of ${this.lenBytes} bytes`);
    }
    if (len > MAX_OP_BYTES) throw new UsageError(`rdma ${op}: ${len} bytes in one operation (at most ${MAX_OP_BYTES}; split it)`);
    return this.address + BigInt(offset);
  }

  /** Reads `len` bytes at `offset` of the remote region into a new array. */
  get(offset: number, len: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const at = this.check("get", offset, len);
      if (len === 0) return resolve(new Uint8Array(0));
      this.rma.issue(K_GET, at, this.rkey, len, (op) => {
        op.resolve = resolve;
        op.reject = reject;
      });
    });
  }

  /**
   * Reads `len` bytes at `offset` into the start of `target.buf`, then `target.onRead(status)`
   * (IBV_WC_SUCCESS = 0, or the failed completion's status) runs: no promise, and for reads up to
   * SCRATCH_SLOT_BYTES nothing allocated per read. `target.buf` (ArrayBuffer-backed, at least
   * `len` long) must stay untouched until onRead, which runs from the connection's completion
   * processing and must not throw. Throws UsageError (bounds) / TransportClosedError like get().
   */
  readTo(offset: number, len: number, target: RegionReadTarget): void {
    const at = this.check("get", offset, len);
    if (len > target.buf.length) throw new UsageError(`rdma get: ${len} bytes do not fit the target's ${target.buf.length}-byte buffer`);
    if (len === 0) return target.onRead(IBV.IBV_WC_SUCCESS);
    this.rma.issue(K_READ_TO, at, this.rkey, len, (op) => {
      op.target = target;
    });
  }

  /** Reads `dst.length` bytes at `offset` into `dst`, then `done(status)`: readTo with a callback (a closure per read). */
  readInto(offset: number, dst: Uint8Array, done: (status: number) => void): void {
    const at = this.check("get", offset, dst.length);
    if (dst.length === 0) return done(IBV.IBV_WC_SUCCESS);
    this.rma.issue(K_READ_INTO, at, this.rkey, dst.length, (op) => {
      op.buf = dst;
      op.cb = done;
    });
  }

  /**
   * Writes `bytes` at `offset`; resolves once the peer acknowledged them (they are in its
   * memory). Copied before it returns, or with `{ copy: false }` (above SCRATCH_SLOT_BYTES)
   * registered in place: leave `bytes` untouched until the promise settles.
   */
  put(offset: number, bytes: Uint8Array, opts?: { copy?: boolean }): Promise<void> {
    return new Promise((resolve, reject) => {
      const at = this.check("put", offset, bytes.length);
      if (bytes.length === 0) return resolve();
      const own = bytes.length <= SCRATCH_SLOT_BYTES || opts?.copy === false ? bytes : bytes.slice();
      this.rma.issue(K_PUT, at, this.rkey, bytes.length, (op) => {
        op.buf = own;
        op.resolve = resolve;
        op.reject = reject;
      });
    });
  }

  /** 64-bit compare-and-swap of the word at `offset` (8-byte aligned remote address): the old value, and whether it was swapped. */
  cas(offset: number, compare: bigint, swap: bigint): Promise<CasResult> {
    return new Promise((resolve, reject) => {
      const at = this.check("cas", offset, 8);
      if (at % 8n !== 0n) throw new UsageError(`rdma cas: offset ${offset} (address 0x${at.toString(16)}) is not 8-byte aligned`);
      if (!this.rma.atomics) throw new UsageError("rdma cas: this device has no atomics (atomic_cap IBV_ATOMIC_NONE)");
      this.rma.issue(K_CAS, at, this.rkey, 8, (op) => {
        op.compare = BigInt.asUintN(64, compare);
        op.swap = BigInt.asUintN(64, swap);
        op.resolve = resolve;
        op.reject = reject;
      });
    });
  }

  /** Resolves once every operation this connection issued before the call has completed. */
  flush(): Promise<void> {
    return this.rma.flush();
  }

  /** Nothing to release (the rkey is the peer's); present for src/ucx/rma.ts's API. */
  close(): void {}
}
