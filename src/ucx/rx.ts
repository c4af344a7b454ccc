/**
 * Received ucx messages (data path): reusable RxMessage objects, and where their bytes live.
 *
 * Contract (Transport item 4): `head` and `body` are valid until release(); release is
 * idempotent until the message object is handed out again (objects are pooled, as shm's are
 * per ring slot: a holder must not call release() on a message it already released after
 * newer messages arrived). A connection's close revokes the in-place messages its receiver
 * still holds (revoke: UCX's buffer goes back, the body reads as empty) without pooling them:
 * the object returns to the pool at its holder's release() only. Where a body lives, by how
 * it arrived:
 *   - eager, small, or without UCP_AM_RECV_ATTR_FLAG_DATA (UCX's buffer is valid during the
 *     callback only): copied, with one memcpy, into the message's own JS buffer (pooled, no
 *     allocation up to POOLED_BODY_BYTES; a fresh array above);
 *   - eager with UCP_AM_RECV_ATTR_FLAG_DATA and at least IN_PLACE_MIN_BYTES: in place, a view
 *     of UCX's receive buffer. The AM callback returns UCS_INPROGRESS when the receiver still
 *     holds the message at its end, and release() calls ucp_am_data_release. A released view
 *     is detached first (ArrayBuffer.transfer(0)): it reads as empty (length 0), never UCX
 *     memory that UCX reuses. Bounded: at most MAX_IN_PLACE_HELD messages of one worker hold
 *     UCX buffers at a time (UCX's eager receive buffers are a pool; a receiver that holds many
 *     messages must not starve it); past that bound bodies are copied;
 *   - rendezvous: received (ucp_am_recv_data_nbx) straight into a fresh array the message owns.
 * The head is always copied into the message's buffer (up to POOLED_HEAD_BYTES without an
 * allocation): it is small, and the layer above parses it in place (`headBuf`, `headOffset`).
 * An eager message's head and body, adjacent in UCX's buffer, are copied with one memcpy.
 *
 * Example (inside an AM callback):
 *   const m = pool.take();  m.fill(header, hlen, data, len, inPlace);  receiver.onMessage(m);
 *   return m.endCallback(); // UCS_INPROGRESS while an in-place message is still held
 *
 * Threading: the runtime's thread; a pool belongs to one UcxRuntime (one worker).
 */

import { addressOf, copyInto, copyToAddress, toView } from "../ffi/ucp.ts";
import { UCP } from "../ffi/ucp-layout.ts";
import type { RxMessage } from "../contract/transport.ts";

/**
 * Bodies at least this large that UCX lends (FLAG_DATA) are used in place. Below it a copy is
 * cheaper in Bun: an external ArrayBuffer over UCX memory plus its detach on release cost
 * about as much as a memcpy of 4 KiB into a pooled buffer (measured: ~1.4 µs vs ~0.06 µs at
 * 32 B, the two meeting at a few KiB; UCX's shared-memory eager limit is 8 KiB).
 */
export const IN_PLACE_MIN_BYTES = 4096;
/**
 * In-place messages one worker may hold before bodies are copied: UCX replaces each held
 * receive buffer from its memory pool, so this bounds what a slow receiver keeps of UCX's
 * memory to 64 eager buffers (64 × 8 KiB over shared memory).
 */
export const MAX_IN_PLACE_HELD = 64;
/** Bodies up to this size are copied into the message's own buffer without an allocation (RPC requests and replies of a few hundred bytes). */
export const POOLED_BODY_BYTES = 1024;
/** Heads up to this size likewise (the RPC wire header is 24 bytes plus the application header). */
export const POOLED_HEAD_BYTES = 256;
/** Free message objects kept for reuse: more than one window of held messages is garbage-collected instead. */
const POOL_MAX = 1024;

const EMPTY = new Uint8Array(0);

/** What a message needs of its pool (UcxRxPool): the worker's data release and the in-place count. */
interface PoolHooks {
  put(m: UcxRxMessage): void;
  held(m: UcxRxMessage): void;
  lent(): void;
  releaseData(m: UcxRxMessage, desc: number): void;
}

export class UcxRxMessage implements RxMessage {
  headBuf: Uint8Array;
  headOffset = 0;
  headLength = 0;
  bodyLength = 0;
  /** Released (or never filled): release() does nothing. */
  released = true;
  // Each over an ArrayBuffer of its own: its storage never moves, so the address taken once
  // (addressOf) stays right. A small `new Uint8Array(n)` may move when a view of it is made.
  private readonly headStore = new Uint8Array(new ArrayBuffer(POOLED_HEAD_BYTES));
  private readonly bodyStore = new Uint8Array(new ArrayBuffer(POOLED_BODY_BYTES));
  /** The last views handed out, reused while the length stays the same (no allocation per message). */
  private headView: Uint8Array = EMPTY;
  /** Which store headView is a view of, and where. */
  private headViewOf: Uint8Array = EMPTY;
  private headViewAt = 0;
  private bodyView = EMPTY;
  /** A body that is not bodyStore: fresh (large copy, rendezvous) or in place. */
  private ownBody: Uint8Array | null = null;
  /** In place: UCX's data descriptor and the external buffer over it (detached on release). */
  private desc = 0;
  private external: ArrayBuffer | null = null;
  /** Inside the AM callback that filled it: UCX frees the buffer itself if it is released by then. */
  private inCallback = false;
  /** In place: the connection it arrived on (its close releases the message). */
  owner: object | null = null;

  /** Addresses of the two stores (addressOf: stable while this message lives). */
  private readonly headAddr: number;
  private readonly bodyAddr: number;

  constructor(private readonly pool: PoolHooks) {
    this.headBuf = this.headStore;
    this.headAddr = addressOf(this.headStore);
    this.bodyAddr = addressOf(this.bodyStore);
  }

  get head(): Uint8Array {
    const n = this.headLength;
    const at = this.headOffset;
    if (this.headBuf !== this.headStore && this.headBuf !== this.bodyStore) return this.headBuf;
    if (this.headViewOf !== this.headBuf || this.headViewAt !== at || this.headView.length !== n) {
      this.headView = this.headBuf.subarray(at, at + n);
      this.headViewOf = this.headBuf;
      this.headViewAt = at;
    }
    return this.headView;
  }

  get body(): Uint8Array {
    if (this.ownBody !== null) return this.ownBody;
    const n = this.bodyLength;
    if (this.bodyView.length !== n) this.bodyView = this.bodyStore.subarray(0, n);
    return this.bodyView;
  }

  /** True while the body is a view of UCX's receive buffer. */
  get inPlace(): boolean {
    return this.external !== null;
  }

  /** Copies the head at native `header` (UCX memory, valid during the callback) into this message. */
  setHead(header: number, hlen: number): void {
    this.headOffset = 0;
    if (hlen <= POOLED_HEAD_BYTES) {
      this.headBuf = this.headStore;
      if (hlen > 0) copyToAddress(this.headAddr, header, hlen);
    } else {
      this.headBuf = new Uint8Array(hlen);
      copyInto(this.headBuf, header, hlen);
    }
    this.headLength = hlen;
    this.released = false;
  }

  /**
   * Body and head in one memcpy, when UCX delivered them adjacent (its eager messages carry the
   * AM header right after the data: `header === data + len`) and both fit the pooled buffer:
   * the body at [0, len), the head at headOffset `len`.
   */
  copyTogether(data: number, len: number, hlen: number): void {
    copyToAddress(this.bodyAddr, data, len + hlen);
    this.headBuf = this.bodyStore;
    this.headOffset = len;
    this.headLength = hlen;
    this.bodyLength = len;
    this.released = false;
  }

  /** The body: copied from `data` (valid during the callback only). */
  copyBody(data: number, len: number): void {
    this.bodyLength = len;
    if (len <= POOLED_BODY_BYTES) {
      if (len > 0) copyToAddress(this.bodyAddr, data, len);
      return;
    }
    const own = new Uint8Array(len);
    copyInto(own, data, len);
    this.ownBody = own;
  }

  /** The body: `buffer`, which the message owns (a rendezvous receive's target). */
  ownBodyOf(buffer: Uint8Array): void {
    this.bodyLength = buffer.length;
    this.ownBody = buffer;
  }

  /** The body: in place, UCX's buffer `data` of descriptor-holding eager message (FLAG_DATA). */
  lendBody(data: number, len: number, owner: object): void {
    this.bodyLength = len;
    this.owner = owner;
    this.desc = data;
    this.external = toView(data, len);
    this.ownBody = new Uint8Array(this.external);
    this.inCallback = true;
    this.pool.lent();
  }

  /**
   * At the end of the AM callback that filled this message: the status for UCX. UCS_INPROGRESS
   * keeps UCX's buffer for an in-place message still held (released later by release()).
   */
  endCallback(): number {
    if (!this.inCallback) return UCP.UCS_OK;
    this.inCallback = false;
    if (this.released) {
      this.pool.put(this); // kept out of the pool until now: this call still read it
      return UCP.UCS_OK;
    }
    // Revoked inside its callback (its connection closed): UCX frees the buffer at UCS_OK; the
    // object stays the holder's until its release().
    if (this.external === null) return UCP.UCS_OK;
    this.pool.held(this);
    return UCP.UCS_INPROGRESS;
  }

  /**
   * The connection it arrived on closed while the receiver still holds it: UCX's buffer goes
   * back now (the view detaches and the body reads as empty, length 0), but the object stays
   * the holder's: only the holder's own release() returns it to the pool, so a message of
   * another connection never arrives in an object someone still holds. The head (a copy)
   * stays readable.
   */
  revoke(): void {
    const ext = this.external;
    if (this.released || ext === null) return;
    ext.transfer(0); // detached before UCX may reuse the memory (ucp_am_data_release below)
    this.external = null;
    if (!this.inCallback) this.pool.releaseData(this, this.desc);
    this.desc = 0;
    this.owner = null;
    this.ownBody = null;
    this.bodyLength = 0;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    const ext = this.external;
    if (ext !== null) {
      // The view is detached before UCX may reuse the memory (at the callback's return, or in
      // ucp_am_data_release): a holder of it reads length 0 from then on.
      ext.transfer(0);
      this.external = null;
      if (!this.inCallback) this.pool.releaseData(this, this.desc);
      this.desc = 0;
      this.owner = null;
    }
    this.ownBody = null;
    this.headBuf = this.headStore;
    this.headOffset = 0;
    if (!this.inCallback) this.pool.put(this);
  }
}

/**
 * The message objects of one runtime, and the count of in-place messages its worker's receive
 * buffers are lent to. Thread: the runtime's.
 */
export class UcxRxPool implements PoolHooks {
  private readonly free: UcxRxMessage[] = [];
  /** In-place messages held past their callback (each holds one UCX receive buffer). */
  private readonly heldSet = new Set<UcxRxMessage>();
  /** Messages whose body was used in place so far (a counter for tests and stats). */
  inPlaceTotal = 0;

  constructor(private readonly release: (desc: number) => void) {}

  /** A message object to fill (reused when one is free). */
  take(): UcxRxMessage {
    return this.free.pop() ?? new UcxRxMessage(this);
  }

  /** Whether a FLAG_DATA body of `len` bytes is used in place now (size and the held bound). */
  lends(recvAttr: number, len: number): boolean {
    return (recvAttr & UCP.UCP_AM_RECV_ATTR_FLAG_DATA) !== 0 && len >= IN_PLACE_MIN_BYTES && this.heldSet.size < MAX_IN_PLACE_HELD;
  }

  /** In-place messages held past their callback now (each holds one of UCX's receive buffers). */
  get heldInPlace(): number {
    return this.heldSet.size;
  }

  /**
   * Revokes the in-place messages that arrived on `owner` (a closing connection) and that its
   * receiver still holds: their views detach, UCX gets its buffers back, and each object stays
   * with its holder (pooled at the holder's release(), never here).
   */
  revokeOwnedBy(owner: object): void {
    if (this.heldSet.size === 0) return;
    for (const m of [...this.heldSet]) if (m.owner === owner) m.revoke();
  }

  /** @internal a body is used in place. */
  lent(): void {
    this.inPlaceTotal++;
  }

  /** @internal an in-place message outlived its callback (UCS_INPROGRESS was returned for it). */
  held(m: UcxRxMessage): void {
    this.heldSet.add(m);
  }

  /** @internal */
  put(m: UcxRxMessage): void {
    if (this.free.length < POOL_MAX) this.free.push(m);
  }

  /** @internal an in-place message held past its callback was released: UCX gets its buffer back. */
  releaseData(m: UcxRxMessage, desc: number): void {
    this.heldSet.delete(m);
    this.release(desc);
  }
}
