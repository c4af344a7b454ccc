/**
 * RdmaEndpoint: one end of an rdma connection before it is open, the control path's unit of
 * cleanup. create() reserves the connection's window of SRQ receives in the runtime (null when
 * it has no room: the listener refuses "busy"), makes the QP (socket mode; in cm mode rdma_cm
 * made it from rt.qpInit) and registers the first landing zone; `local` is what the hello tells
 * the peer. Completions for the QP that arrive before open() (the peer may send as soon as its
 * side is ready) are kept and handed to the connection in order when it opens: at most `window`
 * receives (the peer's credits); one past them is re-posted at once and the connection opens
 * only to close with ProtocolError. Every kept receive slot is re-posted whatever happens (the
 * connection closing midway, close()).
 *
 * Example (socket mode):
 *   const ep = RdmaEndpoint.create(rt, { maxMessageBytes, window: 16, sqDepth: 64, zoneBytes: 1 << 20 });
 *   if (ep === null) refuse("busy");
 *   send(encodeHello(ep.local, "socket"));  ep.connectQp(peerHello);
 *   const conn = ep.open(peerHello, url, wait, () => { socket.end(); rt.release(); });
 *
 * Ownership: until open() the endpoint owns its QP (unless rdma_cm does), zone and reservation;
 * close() gives them up (idempotent). After open() the connection owns them.
 * Thread: the runtime's.
 */

import { describeThrown, ProtocolError, TransportClosedError, type HotpathError } from "../errors.ts";
import type { VerbsQp } from "../ffi/ibverbs.ts";
import type { WaitPolicy } from "../contract/transport.ts";
import { DEFAULT_MAX_HEAD_BYTES } from "../contract/transport.ts";
import { RdmaConnection } from "./connection.ts";
import { qpToInit, qpToRtr, qpToRts } from "./qp-setup.ts";
import type { RdmaRuntime, RdmaSink } from "./runtime.ts";
import { LandingZone } from "./zones.ts";
import type { HelloFields } from "./hello.ts";
import { HEADER_BYTES } from "./wire.ts";

/** What this end tells the peer (hello.ts encodes it). */
export type LocalHello = HelloFields;
/** What the peer told this end (hello.ts decoded it). */
export type PeerHello = HelloFields;

export interface RdmaEndpointOptions {
  /** A QP rdma_cm made (cm mode, from rt.qpInit(sqDepth)); none in socket mode (made here, RESET → INIT). */
  qp?: VerbsQp;
  maxMessageBytes: number;
  window: number;
  sqDepth: number;
  zoneBytes: number;
}

/** A completion kept until open(): [0 send / 1 recv, wrId or slot, status, byteLen, opcode, imm, wcFlags]. */
type Early = [number, number, number, number, number, number, number];

export class RdmaEndpoint implements RdmaSink {
  readonly local: LocalHello;
  readonly qp: VerbsQp;
  readonly zone: LandingZone;
  /** The QP is rdma_cm's (its id destroys it when setup closes the id). */
  readonly cmOwned: boolean;
  private early: Early[] = [];
  /** Receives kept in `early` (each holds a slab slot). */
  private earlyRecvs = 0;
  private earlyError: HotpathError | null = null;
  private state: "new" | "open" | "closed" = "new";

  private constructor(
    readonly rt: RdmaRuntime,
    readonly opts: RdmaEndpointOptions,
    qp: VerbsQp,
    zone: LandingZone,
  ) {
    this.qp = qp;
    this.zone = zone;
    this.cmOwned = opts.qp !== undefined;
    this.local = {
      qpNum: qp.qpNum,
      psn: Math.floor(Math.random() * 0xffffff),
      lid: rt.lid,
      gid: rt.gid,
      window: opts.window,
      recvSlotBytes: rt.recvSlotBytes,
      maxMessageBytes: opts.maxMessageBytes,
      zoneAddr: zone.addr,
      zoneRkey: zone.rkey,
      zoneBytes: zone.bytes,
    };
    rt.sinks.set(qp.qpNum, this);
  }

  /**
   * Reserves the window (null when the runtime has no room: refuse "busy"), makes the QP when
   * none is given (RESET → INIT) and registers the first landing zone. Throws what the verbs
   * calls throw (NativeError), with everything made so far undone.
   */
  static create(rt: RdmaRuntime, opts: RdmaEndpointOptions): RdmaEndpoint | null {
    if (!rt.reserve(opts.window, opts.sqDepth)) return null;
    let qp: VerbsQp | null = null;
    try {
      qp = opts.qp ?? rt.pd.createQp(rt.qpInit(opts.sqDepth));
      if (opts.qp === undefined) qpToInit(qp, rt.portNum);
      const zone = new LandingZone(rt.pd, Math.max(opts.zoneBytes, HEADER_BYTES + 1), zoneLimit(opts.maxMessageBytes));
      return new RdmaEndpoint(rt, opts, qp, zone);
    } catch (e) {
      if (opts.qp === undefined) qp?.close();
      rt.unreserve(opts.window, opts.sqDepth);
      throw e;
    }
  }

  /** Socket mode: INIT → RTR → RTS towards the peer. NativeError when the device refuses a transition. */
  connectQp(peer: PeerHello): void {
    qpToRtr(this.qp, this.rt, peer);
    qpToRts(this.qp, this.local.psn, this.rt.maxRdAtomic);
  }

  /**
   * The open connection (the endpoint's QP, zone and reservation pass to it). `onClosed` runs
   * once after it closed and its verbs objects are gone. Throws ProtocolError for a peer hello
   * the data path cannot work with (window below 3, a receive slot out of range).
   */
  open(peer: PeerHello, peerUrl: string, wait: Partial<WaitPolicy> | undefined, onClosed: () => void): RdmaConnection {
    if (this.state !== "new") throw new TransportClosedError(`rdma endpoint for ${peerUrl} is ${this.state === "open" ? "already open" : "closed"}`);
    const conn = new RdmaConnection(this, peer, peerUrl, onClosed);
    this.state = "open";
    this.rt.sinks.set(this.qp.qpNum, conn);
    if (wait !== undefined) conn.setWaitPolicy(wait);
    const early = this.early;
    this.early = [];
    this.earlyRecvs = 0;
    let i = 0;
    try {
      for (; i < early.length && !conn.closed; i++) {
        const e = early[i]!;
        if (e[0] === 0) conn.onSendCompletion(e[1], e[2], e[4]);
        else conn.onRecvCompletion(e[1], e[2], e[3], e[4], e[5], e[6]);
      }
    } finally {
      // The connection closed midway (or a handler threw): the slots of the rest go back.
      for (; i < early.length; i++) {
        const e = early[i]!;
        if (e[0] === 1 && e[1] >= 0) this.rt.releaseSlot(e[1]);
      }
    }
    if (this.earlyError !== null) conn.fail(this.earlyError);
    return conn;
  }

  /** Setup failed before open(): destroys the QP (unless rdma_cm owns it: then only forgets it), the zone, the reservation. Idempotent. */
  close(): void {
    if (this.state !== "new") return;
    this.state = "closed";
    if (this.rt.sinks.get(this.qp.qpNum) === this) this.rt.sinks.delete(this.qp.qpNum);
    for (const e of this.early) if (e[0] === 1 && e[1] >= 0) this.rt.releaseSlot(e[1]);
    this.early = [];
    this.earlyRecvs = 0;
    const done = () => {
      this.zone.close();
      this.rt.unreserve(this.opts.window, this.opts.sqDepth);
    };
    if (this.cmOwned) {
      try {
        this.rt.drainAsyncEvents(); // before the QP's address can be reused (runtime.ts)
      } finally {
        done();
      }
      return;
    }
    // ERR, its last receives polled, destroyed (runtime.ts); the runtime stays alive until then.
    this.rt.retireQp(this.qp, (e) => {
      done();
      if (e !== null) console.error(`hotpath rdma: destroying an endpoint's QP: ${describeThrown(e)}`);
    });
  }

  // RdmaSink, until open(): completions are kept for the connection.
  onSendCompletion(wrId: number, status: number, opcode: number): void {
    this.early.push([0, wrId, status, 0, opcode, 0, 0]);
  }
  onRecvCompletion(slot: number, status: number, byteLen: number, opcode: number, imm: number, wcFlags: number): void {
    if (slot >= 0 && (this.earlyError !== null || this.earlyRecvs >= this.opts.window)) {
      // Past the peer's credits (or after that): the slot goes back, the connection will fail.
      this.rt.releaseSlot(slot);
      this.earlyError ??= new ProtocolError(`rdma peer sent past its ${this.opts.window} credits before the connection opened`);
      return;
    }
    if (slot >= 0) this.earlyRecvs++;
    this.early.push([1, slot, status, byteLen, opcode, imm, wcFlags]);
  }
  fail(error: HotpathError): void {
    this.earlyError ??= error;
  }
  get wantsEvents(): boolean {
    return false;
  }
}

/** The largest landing zone a peer may ask for: the largest message this side takes, with its header and head. */
export function zoneLimit(maxMessageBytes: number): number {
  return maxMessageBytes + HEADER_BYTES + DEFAULT_MAX_HEAD_BYTES;
}
