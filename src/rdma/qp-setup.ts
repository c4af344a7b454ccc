/**
 * Moving an RC QP through RESET → INIT → RTR → RTS by hand (socket mode: the peer's QP number,
 * LID/GID, PSN and MTU came over a TCP socket). cm mode lets rdma_cm do it with RNR_RETRY,
 * RETRY_COUNT and the READ/atomic depth in its conn param, then sets MIN_RNR_TIMER RTS → RTS
 * (cm-mode.ts: the kernel leaves it 0); its ACK timeout and path MTU are the kernel's.
 *
 * RNR: the transport's credits guarantee a posted receive for every message, so an RNR NAK
 * means a bug; RNR_RETRY 3 (not 7, which retries forever and would hide it) turns a lasting RNR
 * into IBV_WC_RNR_RETRY_EXC_ERR, which the connection reports as ProtocolError.
 *
 * Example:
 *   qpToInit(qp, rt.portNum);
 *   qpToRtr(qp, rt, { qpNum, psn, lid, gid });  qpToRts(qp, myPsn);
 *
 * Thread: the runtime's.
 */

import { IBV, type VerbsQp } from "../ffi/ibverbs.ts";

/** What the peer's QP may do to ours: write (landing zones), read and atomics (rma). */
export const QP_ACCESS = IBV.IBV_ACCESS_LOCAL_WRITE | IBV.IBV_ACCESS_REMOTE_WRITE | IBV.IBV_ACCESS_REMOTE_READ | IBV.IBV_ACCESS_REMOTE_ATOMIC;
/** RNR NAK timer 12 (0.64 ms): only reached on a bug (credits), then retried RNR_RETRY times. */
export const MIN_RNR_TIMER = 12;
/** Lasting RNR becomes an error (IBV_WC_RNR_RETRY_EXC_ERR → ProtocolError), never a silent stall. */
export const RNR_RETRY = 3;
/** Transport retries before IBV_WC_RETRY_EXC_ERR (the peer is gone): the IB maximum. */
export const RETRY_COUNT = 7;
/** Local ACK timeout 4.096 µs · 2^14 ≈ 67 ms: a dead peer is found within about half a second (7 retries). */
export const ACK_TIMEOUT = 14;
/** GRH hop limit for RoCE / routed IB. */
const HOP_LIMIT = 64;

/** What qpToRtr needs of the runtime. */
export interface QpPath {
  readonly portNum: number;
  readonly gidIndex: number;
  readonly linkLayer: number;
  readonly activeMtu: number;
  readonly maxRdAtomic: number;
}

/** The peer's half of the path (its hello in socket mode). */
export interface QpPeer {
  qpNum: number;
  psn: number;
  lid: number;
  gid: Uint8Array;
  /** The peer's active MTU (IBV_MTU_*); 0 or absent: not told (this side's own is used). */
  mtu?: number;
}

/** The path MTU both ends can carry: the smaller of this side's active MTU and the peer's (when it told it). */
export function pathMtuFor(localActiveMtu: number, peerMtu: number | undefined): number {
  return peerMtu !== undefined && peerMtu > 0 ? Math.min(localActiveMtu, peerMtu) : localActiveMtu;
}

/** RESET → INIT on `portNum` with QP_ACCESS. */
export function qpToInit(qp: VerbsQp, portNum: number): void {
  qp.modify({ qpState: IBV.IBV_QPS_INIT, pkeyIndex: 0, portNum, qpAccessFlags: QP_ACCESS });
}

/** INIT → RTR towards `peer`: by GID on Ethernet (RoCE) or when the peer has no LID, else by LID; the smaller MTU of the two ends. */
export function qpToRtr(qp: VerbsQp, path: QpPath, peer: QpPeer): void {
  const byGid = path.linkLayer === IBV.IBV_LINK_LAYER_ETHERNET || peer.lid === 0;
  qp.modify({
    qpState: IBV.IBV_QPS_RTR,
    pathMtu: pathMtuFor(path.activeMtu, peer.mtu),
    destQpNum: peer.qpNum,
    rqPsn: peer.psn,
    maxDestRdAtomic: path.maxRdAtomic,
    minRnrTimer: MIN_RNR_TIMER,
    ah: byGid
      ? { portNum: path.portNum, grh: { dgid: peer.gid, sgidIndex: path.gidIndex, hopLimit: HOP_LIMIT } }
      : { portNum: path.portNum, dlid: peer.lid },
  });
}

/** RTR → RTS with this side's send PSN. */
export function qpToRts(qp: VerbsQp, psn: number, maxRdAtomic: number): void {
  qp.modify({ qpState: IBV.IBV_QPS_RTS, sqPsn: psn, timeout: ACK_TIMEOUT, retryCnt: RETRY_COUNT, rnrRetry: RNR_RETRY, maxRdAtomic });
}
