/**
 * Large messages: a message whose 12 + head + body bytes exceed the peer's receive slot goes by
 * RDMA WRITE_WITH_IMM into a landing zone the peer registered and granted (1 RTT when a grant
 * is held: the first comes with the hello).
 *
 * Receiver (LandingZone): one registered zone per connection (REMOTE_WRITE), granted to the
 * peer at most once at a time. A large message is delivered as a view of the zone; its
 * release() grants the zone again (ZONE_GRANT, generation + 1). A ZONE_REQUEST for more bytes
 * than the zone holds voids the grant out there and re-registers a zone of the next power of two
 * (bounded by maxMessageBytes + 12 + maxHeadBytes; above: ProtocolError) once the zone is free;
 * a request the zone already fits changes nothing (its grant is out there or follows the
 * release). `grown` counts the re-registrations (a test reads it).
 *
 * Limitation (not fixed): the zone is registered REMOTE_WRITE with one rkey for the
 * connection's life, under the runtime's PD, which every connection and listener of the thread
 * on that device shares. An rkey is valid for every QP of that PD, so any peer of the runtime
 * (another client of the same listener) that learns or guesses the zone's address and rkey can
 * RDMA WRITE into it, also over a large message the receiver still holds as a view. The grant
 * protocol (generation in the immediate) only guards against the connection's own peer writing
 * out of turn. Binding the zone to its QP needs a PD per connection, type-2 memory windows, or
 * a new registration per grant. rma.ts's regions have the same bearer-capability property.
 *
 * Sender (LargeStage): at most one large message staged or in flight per connection. Header
 * and head go from a small registered buffer, the body from a registered staging buffer (grown
 * to the next power of two as needed) or straight from the caller's allocBuffer memory: two
 * SGEs gathered into one write. The stage is free again when the write completes.
 *
 * Example (receiver):
 *   const z = new LandingZone(pd, 1 << 20);      // z.addr / z.rkey / z.bytes go in the hello
 *   z.onArrival();  deliver(z.view);  ...  z.onRelease() → send ZONE_GRANT(z.addr, z.rkey, z.bytes)
 *
 * Thread: the connection's.
 */

import { IBV, type VerbsMr, type VerbsPd } from "../ffi/ibverbs.ts";
import { ProtocolError } from "../errors.ts";
import { HEADER_BYTES } from "./wire.ts";
import type { TxBuffer } from "./tx.ts";

/** A staging buffer up to this size stays registered for the next large message (registering costs more than copying); larger ones go after their write. */
export const STAGE_KEEP_BYTES = 16 << 20;

/** The next power of two >= n (n >= 1). */
export function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export class LandingZone {
  mr: VerbsMr;
  /** Generation of the current grant (0: the hello's). */
  gen = 0;
  /** The peer holds a grant to this zone (it may write one message). */
  granted = true;
  /** A delivered large message lives in the zone (not released yet). */
  held = false;
  /** Bytes the peer asked for (ZONE_REQUEST) and not yet granted; 0: none. */
  requested = 0;
  /** Times the zone was re-registered larger. */
  grown = 0;
  constructor(
    private readonly pd: VerbsPd,
    bytes: number,
    /** The most a zone may grow to. */
    readonly maxBytes: number,
  ) {
    this.mr = LandingZone.register(pd, bytes);
  }

  private static register(pd: VerbsPd, bytes: number): VerbsMr {
    return pd.regMr(new Uint8Array(bytes), IBV.IBV_ACCESS_LOCAL_WRITE | IBV.IBV_ACCESS_REMOTE_WRITE);
  }

  get addr(): bigint {
    return BigInt(this.mr.address);
  }
  get rkey(): number {
    return this.mr.rkey;
  }
  get bytes(): number {
    return this.mr.lenBytes;
  }
  get view(): Uint8Array {
    return this.mr.view;
  }

  /** A ZONE_REQUEST for `bytes`: ProtocolError above maxBytes; the grant follows when the zone is free (grantDue). */
  onRequest(bytes: number): void {
    if (!(bytes > HEADER_BYTES) || bytes > this.maxBytes) {
      throw new ProtocolError(`zone request for ${bytes} bytes (at most ${this.maxBytes}: maxMessageBytes + 12 + maxHeadBytes)`);
    }
    // A zone this big is granted or about to be (a grant may cross the request on the wire):
    // the peer uses that one. Only a larger zone voids the grant out there: the peer finds it
    // too small and waits for the grant of the new zone.
    if (bytes <= this.bytes) return;
    this.granted = false;
    if (bytes > this.requested) this.requested = bytes;
  }

  /** Whether a ZONE_GRANT should go out now: the zone is free and not granted. */
  get grantDue(): boolean {
    return !this.granted && !this.held;
  }

  /**
   * Prepares the next grant (call when grantDue and a ZONE_GRANT can be sent): re-registers a
   * larger zone for a pending request, bumps the generation, marks it granted.
   */
  nextGrant(): void {
    if (this.requested > this.bytes) {
      const want = Math.min(nextPow2(this.requested), this.maxBytes);
      const old = this.mr;
      this.mr = LandingZone.register(this.pd, want);
      old.close();
      this.grown++;
    }
    this.requested = 0;
    this.gen = (this.gen + 1) >>> 0;
    this.granted = true;
  }

  close(): void {
    this.mr.close();
  }
}

/** A grant the peer gave this side: where one large message may be written. */
export interface ZoneGrant {
  addr: bigint;
  rkey: number;
  bytes: number;
  gen: number;
}

/** The sender's one large message: staged (waiting for a grant / credits), then posted. */
export class LargeStage {
  /** Header + head (registered: 12 + maxHeadBytes). */
  readonly headMr: VerbsMr;
  readonly headDv: DataView;
  private bodyMr: VerbsMr | null = null;
  /** 0 none, 1 staged (not posted), 2 posted (waiting for its completion). */
  state = 0;
  headLen = 0;
  bodyLen = 0;
  bodyAddr = 0;
  bodyLkey = 0;
  /** The allocBuffer memory the body is sent from (given back when the write completes), or null. */
  txBuffer: TxBuffer | null = null;
  /** Sequence of the posted write (its signaled completion frees the stage). */
  seq = 0;
  /** A ZONE_REQUEST for this message went out (the grant it waits for is coming). */
  requested = false;
  constructor(
    private readonly pd: VerbsPd,
    maxHeadBytes: number,
  ) {
    this.headMr = pd.regMr(new Uint8Array(HEADER_BYTES + maxHeadBytes), IBV.IBV_ACCESS_LOCAL_WRITE);
    this.headDv = new DataView(this.headMr.view.buffer, this.headMr.view.byteOffset, this.headMr.view.byteLength);
  }

  /** Bytes the write puts into the zone. */
  get total(): number {
    return HEADER_BYTES + this.headLen + this.bodyLen;
  }

  /** Stages a copy of head and body (the staging buffer grows to the next power of two). */
  stageCopy(head: Uint8Array, body: Uint8Array | null): void {
    const bl = body === null ? 0 : body.length;
    this.headMr.view.set(head, HEADER_BYTES);
    if (bl > 0) {
      if (this.bodyMr === null || this.bodyMr.lenBytes < bl) {
        this.bodyMr?.close();
        this.bodyMr = this.pd.regMr(new Uint8Array(nextPow2(bl)), IBV.IBV_ACCESS_LOCAL_WRITE);
      }
      this.bodyMr.view.set(body!);
      this.bodyAddr = this.bodyMr.address;
      this.bodyLkey = this.bodyMr.lkey;
    }
    this.headLen = head.length;
    this.bodyLen = bl;
    this.txBuffer = null;
    this.state = 1;
    this.requested = false;
  }

  /** Stages head (copied) and a body in allocBuffer memory (sent as is). */
  stageBuffer(head: Uint8Array, b: TxBuffer, lenBytes: number): void {
    this.headMr.view.set(head, HEADER_BYTES);
    this.headLen = head.length;
    this.bodyLen = lenBytes;
    this.bodyAddr = b.mr.address;
    this.bodyLkey = b.mr.lkey;
    this.txBuffer = b;
    this.state = 1;
    this.requested = false;
  }

  /** The write completed: a staging buffer above STAGE_KEEP_BYTES is deregistered (smaller ones stay for the next message). */
  done(): void {
    this.state = 0;
    this.txBuffer = null;
    if (this.bodyMr !== null && this.bodyMr.lenBytes > STAGE_KEEP_BYTES) {
      this.bodyMr.close();
      this.bodyMr = null;
    }
  }

  /** Deregisters both buffers (after the QP is gone). */
  close(): void {
    this.headMr.close();
    this.bodyMr?.close();
    this.bodyMr = null;
  }
}
