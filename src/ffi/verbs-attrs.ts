/**
 * The attribute structs of QP creation and ibv_modify_qp, as plain objects written into the C
 * structs of verbs-layout.ts: `ibv_qp_init_attr` from a QpInit, `ibv_qp_attr` and its attribute
 * mask from a QpAttr (a field present sets its IBV_QP_* bit, so the mask always matches what is
 * filled in), and which async events name a QP or an SRQ. Used by ibverbs.ts and rdmacm.ts.
 *
 * Example (an RC QP to RTR):
 *   qp.modify({ qpState: IBV.IBV_QPS_RTR, pathMtu: IBV.IBV_MTU_1024, destQpNum, rqPsn: 0,
 *               maxDestRdAtomic: 1, minRnrTimer: 12, ah: { dlid, portNum: 1 } });
 *
 * Thread: any; the structs are the caller's.
 */

import { IBV, off, size, type VerbsField } from "./verbs-layout.ts";
import { UsageError } from "../errors.ts";
import { NativeStruct } from "./verbs-lib.ts";

/** What a QP is created with (IBV_QPT_RC). CQs and the SRQ are owners with a native handle. */
export interface QpInit<Cq extends { handle: number } = { handle: number }, Srq extends { handle: number } = { handle: number }> {
  sendCq: Cq;
  recvCq: Cq;
  /** Receives come from this SRQ (maxRecvWr is then ignored by the provider). */
  srq?: Srq | null;
  maxSendWr: number;
  maxRecvWr: number;
  maxSendSge?: number;
  maxRecvSge?: number;
  /** Bytes a send may carry inline (IBV_SEND_INLINE); 0 for none. */
  maxInlineData?: number;
  /** Every send completes signaled (default false: only those with IBV_SEND_SIGNALED). */
  sqSigAll?: boolean;
}

/** The capabilities a provider granted a QP (ibv_qp_cap written back by ibv_create_qp). */
export interface QpCaps {
  maxSendWr: number;
  maxRecvWr: number;
  maxSendSge: number;
  maxRecvSge: number;
  maxInlineData: number;
}

/** The address vector of the remote side (ibv_ah_attr); `grh` for RoCE / routed IB (then isGlobal). */
export interface QpAh {
  dlid?: number;
  sl?: number;
  srcPathBits?: number;
  portNum: number;
  grh?: { dgid: Uint8Array; sgidIndex: number; hopLimit: number; flowLabel?: number; trafficClass?: number };
}

/** ibv_qp_attr fields by name; each one present sets its IBV_QP_* mask bit. */
export interface QpAttr {
  qpState?: number;
  curQpState?: number;
  pathMtu?: number;
  qkey?: number;
  rqPsn?: number;
  sqPsn?: number;
  destQpNum?: number;
  qpAccessFlags?: number;
  pkeyIndex?: number;
  portNum?: number;
  maxRdAtomic?: number;
  maxDestRdAtomic?: number;
  /** Encoded RNR NAK timer (IB spec table: 12 = 0.64 ms, 0 = 655 ms). */
  minRnrTimer?: number;
  /** Local ACK timeout, 4.096 µs · 2^timeout. */
  timeout?: number;
  retryCnt?: number;
  /** RNR retries; 7 means infinite. */
  rnrRetry?: number;
  ah?: QpAh;
}

/** Scalar QpAttr fields: the C field (its size says the width) and the mask bit. */
const QP_ATTR_FIELDS: ReadonlyArray<[Exclude<keyof QpAttr, "ah">, VerbsField, number]> = [
  ["qpState", "ibv_qp_attr.qp_state", IBV.IBV_QP_STATE],
  ["curQpState", "ibv_qp_attr.cur_qp_state", IBV.IBV_QP_CUR_STATE],
  ["pathMtu", "ibv_qp_attr.path_mtu", IBV.IBV_QP_PATH_MTU],
  ["qkey", "ibv_qp_attr.qkey", IBV.IBV_QP_QKEY],
  ["rqPsn", "ibv_qp_attr.rq_psn", IBV.IBV_QP_RQ_PSN],
  ["sqPsn", "ibv_qp_attr.sq_psn", IBV.IBV_QP_SQ_PSN],
  ["destQpNum", "ibv_qp_attr.dest_qp_num", IBV.IBV_QP_DEST_QPN],
  ["qpAccessFlags", "ibv_qp_attr.qp_access_flags", IBV.IBV_QP_ACCESS_FLAGS],
  ["pkeyIndex", "ibv_qp_attr.pkey_index", IBV.IBV_QP_PKEY_INDEX],
  ["portNum", "ibv_qp_attr.port_num", IBV.IBV_QP_PORT],
  ["maxRdAtomic", "ibv_qp_attr.max_rd_atomic", IBV.IBV_QP_MAX_QP_RD_ATOMIC],
  ["maxDestRdAtomic", "ibv_qp_attr.max_dest_rd_atomic", IBV.IBV_QP_MAX_DEST_RD_ATOMIC],
  ["minRnrTimer", "ibv_qp_attr.min_rnr_timer", IBV.IBV_QP_MIN_RNR_TIMER],
  ["timeout", "ibv_qp_attr.timeout", IBV.IBV_QP_TIMEOUT],
  ["retryCnt", "ibv_qp_attr.retry_cnt", IBV.IBV_QP_RETRY_CNT],
  ["rnrRetry", "ibv_qp_attr.rnr_retry", IBV.IBV_QP_RNR_RETRY],
];

function put(s: NativeStruct, f: VerbsField, v: number): void {
  const at = off(f);
  const width = size(f);
  if (width === 1) s.u8(at, v);
  else if (width === 2) s.u16(at, v);
  else s.u32(at, v);
}

/** Writes `attr` into `s` (an ibv_qp_attr, zeroed by the caller) and returns the IBV_QP_* mask of what it wrote. */
export function applyQpAttr(s: NativeStruct, attr: QpAttr): number {
  let mask = 0;
  for (const [key, field, bit] of QP_ATTR_FIELDS) {
    const v = attr[key];
    if (v === undefined) continue;
    put(s, field, v);
    mask |= bit;
  }
  const ah = attr.ah;
  if (ah !== undefined) {
    mask |= IBV.IBV_QP_AV;
    put(s, "ibv_qp_attr.ah_attr.dlid", ah.dlid ?? 0);
    put(s, "ibv_qp_attr.ah_attr.sl", ah.sl ?? 0);
    put(s, "ibv_qp_attr.ah_attr.src_path_bits", ah.srcPathBits ?? 0);
    put(s, "ibv_qp_attr.ah_attr.port_num", ah.portNum);
    if (ah.grh !== undefined) {
      if (ah.grh.dgid.length !== size("ibv_gid")) throw new RangeError(`ah.grh.dgid: ${ah.grh.dgid.length} bytes, a GID has ${size("ibv_gid")}`);
      put(s, "ibv_qp_attr.ah_attr.is_global", 1);
      s.bytes.set(ah.grh.dgid, off("ibv_qp_attr.ah_attr.grh.dgid"));
      put(s, "ibv_qp_attr.ah_attr.grh.sgid_index", ah.grh.sgidIndex);
      put(s, "ibv_qp_attr.ah_attr.grh.hop_limit", ah.grh.hopLimit);
      put(s, "ibv_qp_attr.ah_attr.grh.flow_label", ah.grh.flowLabel ?? 0);
      put(s, "ibv_qp_attr.ah_attr.grh.traffic_class", ah.grh.trafficClass ?? 0);
    }
  }
  return mask;
}

/** An ibv_qp_init_attr for an RC QP from `init`. */
export function writeQpInit(init: QpInit): NativeStruct {
  if (init.sendCq.handle === 0) throw new UsageError("QP init: send CQ is closed");
  if (init.recvCq.handle === 0) throw new UsageError("QP init: receive CQ is closed");
  if (init.srq !== undefined && init.srq !== null && init.srq.handle === 0) throw new UsageError("QP init: SRQ is closed");
  return new NativeStruct(size("ibv_qp_init_attr"))
    .ptrAt(off("ibv_qp_init_attr.send_cq"), init.sendCq.handle)
    .ptrAt(off("ibv_qp_init_attr.recv_cq"), init.recvCq.handle)
    .ptrAt(off("ibv_qp_init_attr.srq"), init.srq?.handle ?? 0)
    .u32(off("ibv_qp_init_attr.cap.max_send_wr"), init.maxSendWr)
    .u32(off("ibv_qp_init_attr.cap.max_recv_wr"), init.srq ? 0 : init.maxRecvWr)
    .u32(off("ibv_qp_init_attr.cap.max_send_sge"), init.maxSendSge ?? 1)
    .u32(off("ibv_qp_init_attr.cap.max_recv_sge"), init.srq ? 0 : (init.maxRecvSge ?? 1))
    .u32(off("ibv_qp_init_attr.cap.max_inline_data"), init.maxInlineData ?? 0)
    .u32(off("ibv_qp_init_attr.qp_type"), IBV.IBV_QPT_RC)
    .u32(off("ibv_qp_init_attr.sq_sig_all"), init.sqSigAll ? 1 : 0);
}

/** The caps a provider wrote back into an ibv_qp_init_attr. */
export function readCaps(s: NativeStruct): QpCaps {
  const u = (f: VerbsField) => s.dv.getUint32(off(f), true);
  return {
    maxSendWr: u("ibv_qp_init_attr.cap.max_send_wr"),
    maxRecvWr: u("ibv_qp_init_attr.cap.max_recv_wr"),
    maxSendSge: u("ibv_qp_init_attr.cap.max_send_sge"),
    maxRecvSge: u("ibv_qp_init_attr.cap.max_recv_sge"),
    maxInlineData: u("ibv_qp_init_attr.cap.max_inline_data"),
  };
}

/** Async events whose element is a QP. */
export const QP_EVENTS: ReadonlySet<number> = new Set([
  IBV.IBV_EVENT_QP_FATAL, IBV.IBV_EVENT_QP_REQ_ERR, IBV.IBV_EVENT_QP_ACCESS_ERR, IBV.IBV_EVENT_COMM_EST,
  IBV.IBV_EVENT_SQ_DRAINED, IBV.IBV_EVENT_PATH_MIG, IBV.IBV_EVENT_PATH_MIG_ERR, IBV.IBV_EVENT_QP_LAST_WQE_REACHED,
]);
/** Async events whose element is an SRQ. */
export const SRQ_EVENTS: ReadonlySet<number> = new Set([IBV.IBV_EVENT_SRQ_ERR, IBV.IBV_EVENT_SRQ_LIMIT_REACHED]);
/** Async events whose element is a port number. */
export const PORT_EVENTS: ReadonlySet<number> = new Set([
  IBV.IBV_EVENT_PORT_ACTIVE, IBV.IBV_EVENT_PORT_ERR, IBV.IBV_EVENT_LID_CHANGE, IBV.IBV_EVENT_PKEY_CHANGE,
  IBV.IBV_EVENT_SM_CHANGE, IBV.IBV_EVENT_CLIENT_REREGISTER, IBV.IBV_EVENT_GID_CHANGE,
]);
