/**
 * The rdma handshake messages (control path), little-endian: each end's hello (its limits, the
 * receives it reserved for the peer, its first landing zone and, in socket mode, how to reach
 * its QP), and a refusal. cm mode carries them as rdma_cm private data (the client's hello in
 * the REQ, at most 56 bytes; the server's in the REP; a refusal in the REJ); socket mode sends
 * them over the TCP socket, each after a u16 length (socket-mode.ts).
 *
 *   HELLO                                   REFUSAL
 *   0   u32 magic "HPRD"                    0   u32 magic "HPRD"
 *   4   u16 version (HELLO_VERSION)         4   u16 version
 *   6   u16 flags (0)                       6   u16 flags = HELLO_FLAG_REFUSED
 *   8   u32 maxMessageBytes                 8   u16 reason (REFUSED_BUSY, REFUSED_PROTOCOL)
 *   12  u32 recvSlotBytes                   10  u16 text length
 *   16  u16 window                          12  utf-8 text (at most REFUSAL_TEXT_MAX bytes)
 *   18  u16 reserved
 *   20  u64 zoneAddr
 *   28  u32 zoneRkey
 *   32  u32 zoneBytes
 *   36  end in cm mode (HELLO_CM_BYTES); socket mode goes on:
 *   36  u32 qpNum   40 u32 psn   44 u16 lid   46 u16 mtu (IBV_MTU_*)   48 gid[16]
 *   64  end in socket mode (HELLO_SOCKET_BYTES)
 *
 * A hello longer than its mode's size is accepted and the rest ignored: InfiniBand's CM pads
 * private data (a REQ's to 56 bytes, a REP's to 196), and a later version may append fields.
 * In cm mode the QP's number, PSN and address travel in rdma_cm's own REQ/REP: decodeHello
 * fills qpNum from the event (`cmQpNum`) and psn, lid, gid with zeros.
 *
 * Errors quote nothing the peer sent (numbers only), so hostile bytes never reach a log; a
 * refusal's text is the listener's own words and is shown (cut at REFUSAL_TEXT_MAX).
 *
 * Example:
 *   id.connect({ privateData: encodeHello(ep.local, "cm") });
 *   const peer = decodeHello(ev.privateData, "cm", ev.qpNum);   // ProtocolError when not one
 *
 * Threading: pure functions over bytes; any thread.
 */

import { ProtocolError, UsageError } from "../errors.ts";
import { PEER_RECV_SLOT_MAX, PEER_RECV_SLOT_MIN, PEER_WINDOW_MAX, PEER_WINDOW_MIN, type RdmaMode } from "./options.ts";

export type { RdmaMode };

/**
 * What a hello carries: endpoint.ts's LocalHello / PeerHello and, in part, data-path.ts's
 * PeerParams are this type (declared here, so the handshake's bytes are checked without the data
 * path).
 */
export interface HelloFields {
  /** Socket mode only (cm mode carries its own). */
  qpNum: number;
  psn: number;
  lid: number;
  /** 16 bytes. */
  gid: Uint8Array;
  /** Receives reserved for the peer (= the peer's send credits). */
  window: number;
  recvSlotBytes: number;
  maxMessageBytes: number;
  /** This end's first landing zone (registered). */
  zoneAddr: bigint;
  zoneRkey: number;
  zoneBytes: number;
  /**
   * Socket mode: this side's active path MTU (IBV_MTU_*); each side moves its QP to RTR with the
   * smaller of its own and the peer's. 0 or absent: not told (cm mode: rdma_cm negotiates it).
   */
  mtu?: number;
}

const MAGIC = 0x44525048; // "HPRD" read as a little-endian u32
/** 1: the first rdma hello. A peer of another version is refused. */
export const HELLO_VERSION = 1;
export const HELLO_FLAG_REFUSED = 1;
export const HELLO_CM_BYTES = 36;
export const HELLO_SOCKET_BYTES = 64;
export const REFUSED_BUSY = 1;
export const REFUSED_PROTOCOL = 2;
const REFUSAL_HEAD_BYTES = 12;
/** A REJ carries 148 bytes of private data over InfiniBand: a refusal's text fits in what is left. */
export const REFUSAL_TEXT_MAX = 148 - REFUSAL_HEAD_BYTES;
const GID_BYTES = 16;

// The cm hello must fit a REQ's private data (56 bytes on InfiniBand).
if (HELLO_CM_BYTES > 56 || HELLO_SOCKET_BYTES !== HELLO_CM_BYTES + 12 + GID_BYTES) throw new Error("rdma hello layout");

/** This end's hello for `mode` (a new buffer). UsageError when a field does not fit its width. */
export function encodeHello(h: HelloFields, mode: RdmaMode): Uint8Array {
  const out = new Uint8Array(mode === "cm" ? HELLO_CM_BYTES : HELLO_SOCKET_BYTES);
  const dv = new DataView(out.buffer);
  const u32 = (at: number, v: number, what: string) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new UsageError(`rdma hello: ${what} ${v} does not fit 32 bits`);
    dv.setUint32(at, v, true);
  };
  dv.setUint32(0, MAGIC, true);
  dv.setUint16(4, HELLO_VERSION, true);
  dv.setUint16(6, 0, true);
  u32(8, h.maxMessageBytes, "maxMessageBytes");
  u32(12, h.recvSlotBytes, "recvSlotBytes");
  if (!Number.isInteger(h.window) || h.window < 1 || h.window > 0xffff) throw new UsageError(`rdma hello: window ${h.window} does not fit 16 bits`);
  dv.setUint16(16, h.window, true);
  dv.setBigUint64(20, BigInt.asUintN(64, h.zoneAddr), true);
  u32(28, h.zoneRkey, "zoneRkey");
  u32(32, h.zoneBytes, "zoneBytes");
  if (mode === "socket") {
    u32(36, h.qpNum, "qpNum");
    u32(40, h.psn, "psn");
    if (!Number.isInteger(h.lid) || h.lid < 0 || h.lid > 0xffff) throw new UsageError(`rdma hello: lid ${h.lid} does not fit 16 bits`);
    dv.setUint16(44, h.lid, true);
    const mtu = h.mtu ?? 0;
    if (!Number.isInteger(mtu) || mtu < 0 || mtu > 0xffff) throw new UsageError(`rdma hello: mtu ${mtu} does not fit 16 bits`);
    dv.setUint16(46, mtu, true);
    if (h.gid.length !== GID_BYTES) throw new UsageError(`rdma hello: gid of ${h.gid.length} bytes, expected ${GID_BYTES}`);
    out.set(h.gid, 48);
  }
  return out;
}

/** Checks the fixed part every message starts with; ProtocolError when it is not ours (too short, wrong magic or version). */
function checkHead(b: Uint8Array, what: string): DataView {
  if (b.length < 8) throw new ProtocolError(`rdma ${what}: ${b.length} bytes, too short for a hotpath rdma hello (at least 8)`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw new ProtocolError(`rdma ${what}: no hotpath rdma magic (the peer is not a hotpath rdma endpoint)`);
  const v = dv.getUint16(4, true);
  if (v !== HELLO_VERSION) throw new ProtocolError(`rdma ${what}: the peer speaks version ${v}, this side version ${HELLO_VERSION}`);
  return dv;
}

/** True when `b` is a refusal (magic, version and the REFUSED flag): decodeRefusal reads it. */
export function isRefusal(b: Uint8Array): boolean {
  if (b.length < 8) return false;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return dv.getUint32(0, true) === MAGIC && dv.getUint16(4, true) === HELLO_VERSION && (dv.getUint16(6, true) & HELLO_FLAG_REFUSED) !== 0;
}

/**
 * The peer's hello: a new object (the gid copied). ProtocolError for bytes that are not a hello
 * of this version and mode: too short, wrong magic or version, a refusal, or a window or
 * receive slot the data path would refuse (options.ts PEER_WINDOW_* / PEER_RECV_SLOT_*).
 * `cmQpNum`: in cm mode, the QP number rdma_cm reported with the event.
 */
export function decodeHello(b: Uint8Array, mode: RdmaMode, cmQpNum = 0): HelloFields {
  const dv = checkHead(b, "hello");
  if ((dv.getUint16(6, true) & HELLO_FLAG_REFUSED) !== 0) throw new ProtocolError("rdma hello: a refusal where a hello was expected");
  const need = mode === "cm" ? HELLO_CM_BYTES : HELLO_SOCKET_BYTES;
  if (b.length < need) throw new ProtocolError(`rdma hello: ${b.length} bytes, a ${mode}-mode hello has ${need}`);
  const window = dv.getUint16(16, true);
  if (window === 0) throw new ProtocolError("rdma hello: the peer reserved no receives (window 0)");
  if (window < PEER_WINDOW_MIN || window > PEER_WINDOW_MAX) throw new ProtocolError(`rdma hello: the peer's window ${window} is out of range (${PEER_WINDOW_MIN}..${PEER_WINDOW_MAX})`);
  const slot = dv.getUint32(12, true);
  if (slot < PEER_RECV_SLOT_MIN || slot > PEER_RECV_SLOT_MAX) throw new ProtocolError(`rdma hello: receive slots of ${slot} bytes (${PEER_RECV_SLOT_MIN}..${PEER_RECV_SLOT_MAX})`);
  const socket = mode === "socket";
  return {
    maxMessageBytes: dv.getUint32(8, true),
    recvSlotBytes: slot,
    window,
    zoneAddr: dv.getBigUint64(20, true),
    zoneRkey: dv.getUint32(28, true),
    zoneBytes: dv.getUint32(32, true),
    qpNum: socket ? dv.getUint32(36, true) : cmQpNum,
    psn: socket ? dv.getUint32(40, true) : 0,
    lid: socket ? dv.getUint16(44, true) : 0,
    gid: socket ? b.slice(48, 48 + GID_BYTES) : new Uint8Array(GID_BYTES),
    mtu: socket ? dv.getUint16(46, true) : 0,
  };
}

/** A refusal for `reason` with `text` (cut to REFUSAL_TEXT_MAX bytes at a character boundary): a new buffer. */
export function encodeRefusal(reason: typeof REFUSED_BUSY | typeof REFUSED_PROTOCOL, text: string): Uint8Array {
  let t = new TextEncoder().encode(text);
  if (t.length > REFUSAL_TEXT_MAX) {
    let end = REFUSAL_TEXT_MAX;
    while (end > 0 && (t[end]! & 0xc0) === 0x80) end--; // not inside a character
    t = t.subarray(0, end);
  }
  const out = new Uint8Array(REFUSAL_HEAD_BYTES + t.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint16(4, HELLO_VERSION, true);
  dv.setUint16(6, HELLO_FLAG_REFUSED, true);
  dv.setUint16(8, reason, true);
  dv.setUint16(10, t.length, true);
  out.set(t, REFUSAL_HEAD_BYTES);
  return out;
}

/** A refusal's reason and text; ProtocolError when `b` is not a whole refusal of this version. */
export function decodeRefusal(b: Uint8Array): { reason: number; text: string } {
  const dv = checkHead(b, "refusal");
  if ((dv.getUint16(6, true) & HELLO_FLAG_REFUSED) === 0 || b.length < REFUSAL_HEAD_BYTES) throw new ProtocolError(`rdma refusal: ${b.length} bytes, not a refusal`);
  const len = dv.getUint16(10, true);
  if (len > REFUSAL_TEXT_MAX || b.length < REFUSAL_HEAD_BYTES + len) throw new ProtocolError(`rdma refusal: text of ${len} bytes in ${b.length - REFUSAL_HEAD_BYTES}`);
  return { reason: dv.getUint16(8, true), text: new TextDecoder("utf-8", { fatal: false }).decode(b.subarray(REFUSAL_HEAD_BYTES, REFUSAL_HEAD_BYTES + len)) };
}
