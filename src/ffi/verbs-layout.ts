/**
 * libibverbs / librdmacm struct layouts and constants (x86-64, rdma-core 44 headers), declared
 * once, as data. Each struct entry is [offset, size] of a field ("struct.field", nested fields
 * dotted as in C), or [0, sizeof] for the struct itself; struct names are written without
 * "struct ". test/ffi/verbs-layout.test.ts compiles test/ffi/verbs-probe.c against the real
 * <infiniband/verbs.h> and <rdma/rdma_cma.h> and checks every entry and constant here, so a
 * header that differs fails a test instead of corrupting memory. Fields that depend on each
 * other (the data-path ops as slots of ibv_context.ops, nested structs as their parts) are
 * asserted at load.
 *
 * Example:
 *   const wc = new DataView(new ArrayBuffer(size("ibv_wc") * 16));
 *   const status = wc.getUint32(i * size("ibv_wc") + off("ibv_wc.status"), true);
 *   if (status !== IBV.IBV_WC_SUCCESS) ...
 */

export const VERBS_LAYOUT = {
  "ibv_device_attr": [0, 232], "ibv_device_attr.fw_ver": [0, 64], "ibv_device_attr.node_guid": [64, 8],
  "ibv_device_attr.max_mr_size": [80, 8], "ibv_device_attr.max_qp": [108, 4], "ibv_device_attr.max_qp_wr": [112, 4],
  "ibv_device_attr.device_cap_flags": [116, 4], "ibv_device_attr.max_sge": [120, 4],
  "ibv_device_attr.max_cq": [128, 4], "ibv_device_attr.max_cqe": [132, 4], "ibv_device_attr.max_mr": [136, 4],
  "ibv_device_attr.max_pd": [140, 4], "ibv_device_attr.max_qp_rd_atom": [144, 4],
  "ibv_device_attr.max_qp_init_rd_atom": [156, 4], "ibv_device_attr.atomic_cap": [164, 4],
  "ibv_device_attr.max_srq": [212, 4], "ibv_device_attr.max_srq_wr": [216, 4],
  "ibv_device_attr.max_srq_sge": [220, 4], "ibv_device_attr.phys_port_cnt": [227, 1],
  "ibv_port_attr": [0, 52], "ibv_port_attr.state": [0, 4], "ibv_port_attr.max_mtu": [4, 4],
  "ibv_port_attr.active_mtu": [8, 4], "ibv_port_attr.gid_tbl_len": [12, 4], "ibv_port_attr.port_cap_flags": [16, 4],
  "ibv_port_attr.max_msg_sz": [20, 4], "ibv_port_attr.lid": [34, 2], "ibv_port_attr.sm_lid": [36, 2],
  "ibv_port_attr.phys_state": [45, 1], "ibv_port_attr.link_layer": [46, 1],
  "ibv_gid": [0, 16], "ibv_gid.raw": [0, 16],
  "ibv_context.device": [0, 8], "ibv_context.ops": [8, 256], "ibv_context.ops.poll_cq": [96, 8],
  "ibv_context.ops.req_notify_cq": [104, 8], "ibv_context.ops.post_srq_recv": [168, 8],
  "ibv_context.ops.post_send": [208, 8], "ibv_context.ops.post_recv": [216, 8], "ibv_context.cmd_fd": [264, 4],
  "ibv_context.async_fd": [268, 4], "ibv_context.num_comp_vectors": [272, 4],
  "ibv_comp_channel": [0, 16], "ibv_comp_channel.context": [0, 8], "ibv_comp_channel.fd": [8, 4],
  "ibv_comp_channel.refcnt": [12, 4],
  "ibv_cq.context": [0, 8], "ibv_cq.channel": [8, 8], "ibv_cq.cq_context": [16, 8], "ibv_cq.handle": [24, 4],
  "ibv_cq.cqe": [28, 4],
  "ibv_pd.context": [0, 8], "ibv_pd.handle": [8, 4],
  "ibv_mr": [0, 48], "ibv_mr.context": [0, 8], "ibv_mr.pd": [8, 8], "ibv_mr.addr": [16, 8], "ibv_mr.length": [24, 8],
  "ibv_mr.handle": [32, 4], "ibv_mr.lkey": [36, 4], "ibv_mr.rkey": [40, 4],
  "ibv_srq.context": [0, 8], "ibv_srq.srq_context": [8, 8], "ibv_srq.pd": [16, 8], "ibv_srq.handle": [24, 4],
  "ibv_qp.context": [0, 8], "ibv_qp.qp_context": [8, 8], "ibv_qp.pd": [16, 8], "ibv_qp.send_cq": [24, 8],
  "ibv_qp.recv_cq": [32, 8], "ibv_qp.srq": [40, 8], "ibv_qp.handle": [48, 4], "ibv_qp.qp_num": [52, 4],
  "ibv_qp.state": [56, 4], "ibv_qp.qp_type": [60, 4],
  "ibv_sge": [0, 16], "ibv_sge.addr": [0, 8], "ibv_sge.length": [8, 4], "ibv_sge.lkey": [12, 4],
  "ibv_send_wr": [0, 128], "ibv_send_wr.wr_id": [0, 8], "ibv_send_wr.next": [8, 8], "ibv_send_wr.sg_list": [16, 8],
  "ibv_send_wr.num_sge": [24, 4], "ibv_send_wr.opcode": [28, 4], "ibv_send_wr.send_flags": [32, 4],
  "ibv_send_wr.imm_data": [36, 4], "ibv_send_wr.wr.rdma.remote_addr": [40, 8], "ibv_send_wr.wr.rdma.rkey": [48, 4],
  "ibv_send_wr.wr.atomic.remote_addr": [40, 8], "ibv_send_wr.wr.atomic.compare_add": [48, 8],
  "ibv_send_wr.wr.atomic.swap": [56, 8], "ibv_send_wr.wr.atomic.rkey": [64, 4],
  "ibv_recv_wr": [0, 32], "ibv_recv_wr.wr_id": [0, 8], "ibv_recv_wr.next": [8, 8], "ibv_recv_wr.sg_list": [16, 8],
  "ibv_recv_wr.num_sge": [24, 4],
  "ibv_wc": [0, 48], "ibv_wc.wr_id": [0, 8], "ibv_wc.status": [8, 4], "ibv_wc.opcode": [12, 4],
  "ibv_wc.vendor_err": [16, 4], "ibv_wc.byte_len": [20, 4], "ibv_wc.imm_data": [24, 4], "ibv_wc.qp_num": [28, 4],
  "ibv_wc.src_qp": [32, 4], "ibv_wc.wc_flags": [36, 4], "ibv_wc.pkey_index": [40, 2], "ibv_wc.slid": [42, 2],
  "ibv_qp_cap": [0, 20], "ibv_qp_cap.max_send_wr": [0, 4], "ibv_qp_cap.max_recv_wr": [4, 4],
  "ibv_qp_cap.max_send_sge": [8, 4], "ibv_qp_cap.max_recv_sge": [12, 4], "ibv_qp_cap.max_inline_data": [16, 4],
  "ibv_qp_init_attr": [0, 64], "ibv_qp_init_attr.qp_context": [0, 8], "ibv_qp_init_attr.send_cq": [8, 8],
  "ibv_qp_init_attr.recv_cq": [16, 8], "ibv_qp_init_attr.srq": [24, 8], "ibv_qp_init_attr.cap": [32, 20],
  "ibv_qp_init_attr.cap.max_send_wr": [32, 4], "ibv_qp_init_attr.cap.max_recv_wr": [36, 4],
  "ibv_qp_init_attr.cap.max_send_sge": [40, 4], "ibv_qp_init_attr.cap.max_recv_sge": [44, 4],
  "ibv_qp_init_attr.cap.max_inline_data": [48, 4], "ibv_qp_init_attr.qp_type": [52, 4],
  "ibv_qp_init_attr.sq_sig_all": [56, 4],
  "ibv_global_route": [0, 24], "ibv_global_route.dgid": [0, 16], "ibv_global_route.flow_label": [16, 4],
  "ibv_global_route.sgid_index": [20, 1], "ibv_global_route.hop_limit": [21, 1],
  "ibv_global_route.traffic_class": [22, 1],
  "ibv_ah_attr": [0, 32], "ibv_ah_attr.grh": [0, 24], "ibv_ah_attr.dlid": [24, 2], "ibv_ah_attr.sl": [26, 1],
  "ibv_ah_attr.src_path_bits": [27, 1], "ibv_ah_attr.static_rate": [28, 1], "ibv_ah_attr.is_global": [29, 1],
  "ibv_ah_attr.port_num": [30, 1],
  "ibv_qp_attr": [0, 144], "ibv_qp_attr.qp_state": [0, 4], "ibv_qp_attr.cur_qp_state": [4, 4],
  "ibv_qp_attr.path_mtu": [8, 4], "ibv_qp_attr.qkey": [16, 4], "ibv_qp_attr.rq_psn": [20, 4],
  "ibv_qp_attr.sq_psn": [24, 4], "ibv_qp_attr.dest_qp_num": [28, 4], "ibv_qp_attr.qp_access_flags": [32, 4],
  "ibv_qp_attr.cap": [36, 20], "ibv_qp_attr.cap.max_inline_data": [52, 4], "ibv_qp_attr.ah_attr": [56, 32],
  "ibv_qp_attr.ah_attr.grh.dgid": [56, 16], "ibv_qp_attr.ah_attr.grh.flow_label": [72, 4],
  "ibv_qp_attr.ah_attr.grh.sgid_index": [76, 1], "ibv_qp_attr.ah_attr.grh.hop_limit": [77, 1],
  "ibv_qp_attr.ah_attr.grh.traffic_class": [78, 1], "ibv_qp_attr.ah_attr.dlid": [80, 2],
  "ibv_qp_attr.ah_attr.sl": [82, 1], "ibv_qp_attr.ah_attr.src_path_bits": [83, 1],
  "ibv_qp_attr.ah_attr.is_global": [85, 1], "ibv_qp_attr.ah_attr.port_num": [86, 1],
  "ibv_qp_attr.pkey_index": [120, 2], "ibv_qp_attr.max_rd_atomic": [126, 1],
  "ibv_qp_attr.max_dest_rd_atomic": [127, 1], "ibv_qp_attr.min_rnr_timer": [128, 1],
  "ibv_qp_attr.port_num": [129, 1], "ibv_qp_attr.timeout": [130, 1], "ibv_qp_attr.retry_cnt": [131, 1],
  "ibv_qp_attr.rnr_retry": [132, 1],
  "ibv_srq_attr": [0, 12], "ibv_srq_attr.max_wr": [0, 4], "ibv_srq_attr.max_sge": [4, 4],
  "ibv_srq_attr.srq_limit": [8, 4],
  "ibv_srq_init_attr": [0, 24], "ibv_srq_init_attr.srq_context": [0, 8], "ibv_srq_init_attr.attr": [8, 12],
  "ibv_srq_init_attr.attr.max_wr": [8, 4], "ibv_srq_init_attr.attr.max_sge": [12, 4],
  "ibv_srq_init_attr.attr.srq_limit": [16, 4],
  "ibv_async_event": [0, 16], "ibv_async_event.element.cq": [0, 8], "ibv_async_event.element.qp": [0, 8],
  "ibv_async_event.element.srq": [0, 8], "ibv_async_event.element.port_num": [0, 4],
  "ibv_async_event.event_type": [8, 4],
  "rdma_event_channel": [0, 4], "rdma_event_channel.fd": [0, 4],
  "rdma_cm_id": [0, 416], "rdma_cm_id.verbs": [0, 8], "rdma_cm_id.channel": [8, 8], "rdma_cm_id.context": [16, 8],
  "rdma_cm_id.qp": [24, 8], "rdma_cm_id.route.addr.src_sin": [32, 16], "rdma_cm_id.route.addr.dst_sin": [160, 16],
  "rdma_cm_id.ps": [344, 4], "rdma_cm_id.port_num": [348, 1], "rdma_cm_id.event": [352, 8],
  "rdma_cm_id.send_cq_channel": [360, 8], "rdma_cm_id.send_cq": [368, 8], "rdma_cm_id.recv_cq_channel": [376, 8],
  "rdma_cm_id.recv_cq": [384, 8], "rdma_cm_id.srq": [392, 8], "rdma_cm_id.pd": [400, 8],
  "rdma_cm_id.qp_type": [408, 4],
  "rdma_conn_param": [0, 24], "rdma_conn_param.private_data": [0, 8], "rdma_conn_param.private_data_len": [8, 1],
  "rdma_conn_param.responder_resources": [9, 1], "rdma_conn_param.initiator_depth": [10, 1],
  "rdma_conn_param.flow_control": [11, 1], "rdma_conn_param.retry_count": [12, 1],
  "rdma_conn_param.rnr_retry_count": [13, 1], "rdma_conn_param.srq": [14, 1], "rdma_conn_param.qp_num": [16, 4],
  "rdma_cm_event": [0, 80], "rdma_cm_event.id": [0, 8], "rdma_cm_event.listen_id": [8, 8],
  "rdma_cm_event.event": [16, 4], "rdma_cm_event.status": [20, 4], "rdma_cm_event.param.conn": [24, 24],
  "rdma_cm_event.param.conn.private_data": [24, 8], "rdma_cm_event.param.conn.private_data_len": [32, 1],
  "rdma_cm_event.param.conn.responder_resources": [33, 1], "rdma_cm_event.param.conn.initiator_depth": [34, 1],
  "rdma_cm_event.param.conn.flow_control": [35, 1], "rdma_cm_event.param.conn.retry_count": [36, 1],
  "rdma_cm_event.param.conn.rnr_retry_count": [37, 1], "rdma_cm_event.param.conn.srq": [38, 1],
  "rdma_cm_event.param.conn.qp_num": [40, 4],
  "sockaddr_in": [0, 16], "sockaddr_in.sin_family": [0, 2], "sockaddr_in.sin_port": [2, 2],
  "sockaddr_in.sin_addr": [4, 4],
  "sockaddr_storage": [0, 128],
} as const satisfies Record<string, readonly [number, number]>;

export type VerbsField = keyof typeof VERBS_LAYOUT;

/** Offset of a field, by its "struct.field" name. */
export const off = (f: VerbsField): number => VERBS_LAYOUT[f][0];
/** sizeof a struct (or of a field). */
export const size = (f: VerbsField): number => VERBS_LAYOUT[f][1];

/** libibverbs' constants (enum values and flag bits), and AF_INET for rdma_cm's addresses. */
export const IBV = {
  IBV_WR_RDMA_WRITE: 0, IBV_WR_RDMA_WRITE_WITH_IMM: 1, IBV_WR_SEND: 2, IBV_WR_SEND_WITH_IMM: 3, IBV_WR_RDMA_READ: 4,
  IBV_WR_ATOMIC_CMP_AND_SWP: 5, IBV_WR_ATOMIC_FETCH_AND_ADD: 6,
  IBV_WC_SUCCESS: 0, IBV_WC_LOC_LEN_ERR: 1, IBV_WC_LOC_QP_OP_ERR: 2, IBV_WC_LOC_EEC_OP_ERR: 3,
  IBV_WC_LOC_PROT_ERR: 4, IBV_WC_WR_FLUSH_ERR: 5, IBV_WC_MW_BIND_ERR: 6, IBV_WC_BAD_RESP_ERR: 7,
  IBV_WC_LOC_ACCESS_ERR: 8, IBV_WC_REM_INV_REQ_ERR: 9, IBV_WC_REM_ACCESS_ERR: 10, IBV_WC_REM_OP_ERR: 11,
  IBV_WC_RETRY_EXC_ERR: 12, IBV_WC_RNR_RETRY_EXC_ERR: 13, IBV_WC_LOC_RDD_VIOL_ERR: 14, IBV_WC_REM_INV_RD_REQ_ERR: 15,
  IBV_WC_REM_ABORT_ERR: 16, IBV_WC_INV_EECN_ERR: 17, IBV_WC_INV_EEC_STATE_ERR: 18, IBV_WC_FATAL_ERR: 19,
  IBV_WC_RESP_TIMEOUT_ERR: 20, IBV_WC_GENERAL_ERR: 21, IBV_WC_SEND: 0, IBV_WC_RDMA_WRITE: 1, IBV_WC_RDMA_READ: 2,
  IBV_WC_COMP_SWAP: 3, IBV_WC_FETCH_ADD: 4, IBV_WC_BIND_MW: 5, IBV_WC_RECV: 128, IBV_WC_RECV_RDMA_WITH_IMM: 129,
  IBV_WC_GRH: 1, IBV_WC_WITH_IMM: 2,
  IBV_SEND_FENCE: 1, IBV_SEND_SIGNALED: 2, IBV_SEND_SOLICITED: 4, IBV_SEND_INLINE: 8,
  IBV_ACCESS_LOCAL_WRITE: 1, IBV_ACCESS_REMOTE_WRITE: 2, IBV_ACCESS_REMOTE_READ: 4, IBV_ACCESS_REMOTE_ATOMIC: 8,
  IBV_QP_STATE: 1, IBV_QP_CUR_STATE: 2, IBV_QP_EN_SQD_ASYNC_NOTIFY: 4, IBV_QP_ACCESS_FLAGS: 8, IBV_QP_PKEY_INDEX: 16,
  IBV_QP_PORT: 32, IBV_QP_QKEY: 64, IBV_QP_AV: 128, IBV_QP_PATH_MTU: 256, IBV_QP_TIMEOUT: 512,
  IBV_QP_RETRY_CNT: 1024, IBV_QP_RNR_RETRY: 2048, IBV_QP_RQ_PSN: 4096, IBV_QP_MAX_QP_RD_ATOMIC: 8192,
  IBV_QP_ALT_PATH: 16384, IBV_QP_MIN_RNR_TIMER: 32768, IBV_QP_SQ_PSN: 65536, IBV_QP_MAX_DEST_RD_ATOMIC: 131072,
  IBV_QP_PATH_MIG_STATE: 262144, IBV_QP_CAP: 524288, IBV_QP_DEST_QPN: 1048576,
  IBV_QPS_RESET: 0, IBV_QPS_INIT: 1, IBV_QPS_RTR: 2, IBV_QPS_RTS: 3, IBV_QPS_SQD: 4, IBV_QPS_SQE: 5, IBV_QPS_ERR: 6,
  IBV_QPT_RC: 2,
  IBV_MTU_256: 1, IBV_MTU_512: 2, IBV_MTU_1024: 3, IBV_MTU_2048: 4, IBV_MTU_4096: 5,
  IBV_EVENT_CQ_ERR: 0, IBV_EVENT_QP_FATAL: 1, IBV_EVENT_QP_REQ_ERR: 2, IBV_EVENT_QP_ACCESS_ERR: 3,
  IBV_EVENT_COMM_EST: 4, IBV_EVENT_SQ_DRAINED: 5, IBV_EVENT_PATH_MIG: 6, IBV_EVENT_PATH_MIG_ERR: 7,
  IBV_EVENT_DEVICE_FATAL: 8, IBV_EVENT_PORT_ACTIVE: 9, IBV_EVENT_PORT_ERR: 10, IBV_EVENT_LID_CHANGE: 11,
  IBV_EVENT_PKEY_CHANGE: 12, IBV_EVENT_SM_CHANGE: 13, IBV_EVENT_SRQ_ERR: 14, IBV_EVENT_SRQ_LIMIT_REACHED: 15,
  IBV_EVENT_QP_LAST_WQE_REACHED: 16, IBV_EVENT_CLIENT_REREGISTER: 17, IBV_EVENT_GID_CHANGE: 18,
  IBV_PORT_NOP: 0, IBV_PORT_DOWN: 1, IBV_PORT_INIT: 2, IBV_PORT_ARMED: 3, IBV_PORT_ACTIVE: 4,
  IBV_PORT_ACTIVE_DEFER: 5,
  IBV_LINK_LAYER_UNSPECIFIED: 0, IBV_LINK_LAYER_INFINIBAND: 1, IBV_LINK_LAYER_ETHERNET: 2,
  IBV_SRQ_MAX_WR: 1, IBV_SRQ_LIMIT: 2,
  IBV_ATOMIC_NONE: 0, IBV_ATOMIC_HCA: 1, IBV_ATOMIC_GLOB: 2,
  IBV_FORK_DISABLED: 0, IBV_FORK_ENABLED: 1, IBV_FORK_UNNEEDED: 2,
  AF_INET: 2,
} as const;

/** librdmacm's constants. */
export const RDMA = {
  RDMA_CM_EVENT_ADDR_RESOLVED: 0,
  RDMA_CM_EVENT_ADDR_ERROR: 1,
  RDMA_CM_EVENT_ROUTE_RESOLVED: 2,
  RDMA_CM_EVENT_ROUTE_ERROR: 3,
  RDMA_CM_EVENT_CONNECT_REQUEST: 4,
  RDMA_CM_EVENT_CONNECT_RESPONSE: 5,
  RDMA_CM_EVENT_CONNECT_ERROR: 6,
  RDMA_CM_EVENT_UNREACHABLE: 7,
  RDMA_CM_EVENT_REJECTED: 8,
  RDMA_CM_EVENT_ESTABLISHED: 9,
  RDMA_CM_EVENT_DISCONNECTED: 10,
  RDMA_CM_EVENT_DEVICE_REMOVAL: 11,
  RDMA_CM_EVENT_MULTICAST_JOIN: 12,
  RDMA_CM_EVENT_MULTICAST_ERROR: 13,
  RDMA_CM_EVENT_ADDR_CHANGE: 14,
  RDMA_CM_EVENT_TIMEWAIT_EXIT: 15,
  RDMA_PS_TCP: 262,
} as const;

/**
 * The name of a constant of IBV or RDMA by its value, for messages: the first key starting
 * with `prefix` (and passing `pick`, where a prefix spans groups) whose value is `value`, or
 * `${prefix}? (${value})` for a value the headers do not name.
 */
export function constName(prefix: string, value: number, pick: (name: string) => boolean = () => true): string {
  for (const table of [IBV, RDMA] as Record<string, number>[]) {
    for (const name in table) if (name.startsWith(prefix) && table[name] === value && pick(name)) return name;
  }
  return `${prefix}? (${value})`;
}

/** A work completion's status by name ("IBV_WC_REM_ACCESS_ERR"); the IBV_WC_ prefix also holds opcodes and flags. */
export const wcStatusName = (status: number): string => constName("IBV_WC_", status, (n) => n === "IBV_WC_SUCCESS" || n.endsWith("_ERR"));

/** Slots of struct ibv_context_ops (8-byte function pointers) the data path calls, in the header's order. */
export const OPS_SLOT = { poll_cq: 11, req_notify_cq: 12, post_srq_recv: 20, post_send: 25, post_recv: 26 } as const;

// Fields that depend on each other, asserted at load: a layout edited by hand in one place only
// fails here, before any struct is handed to C.
function layoutDrift(): string | null {
  const ops = off("ibv_context.ops");
  for (const [name, slot] of Object.entries(OPS_SLOT)) {
    if (off(`ibv_context.ops.${name}` as VerbsField) !== ops + slot * 8) return `ibv_context.ops.${name}`;
  }
  const fixed: Array<[VerbsField, number]> = [
    ["ibv_context.ops.poll_cq", 96], ["ibv_context.ops.req_notify_cq", 104], ["ibv_context.ops.post_srq_recv", 168],
    ["ibv_context.ops.post_send", 208], ["ibv_context.ops.post_recv", 216],
  ];
  for (const [f, at] of fixed) if (off(f) !== at) return f;
  const nested: Array<[string, string, string[]]> = [
    ["ibv_qp_attr.ah_attr", "ibv_ah_attr", ["dlid", "sl", "src_path_bits", "is_global", "port_num"]],
    ["ibv_qp_attr.ah_attr.grh", "ibv_global_route", ["dgid", "flow_label", "sgid_index", "hop_limit", "traffic_class"]],
    ["ibv_qp_init_attr.cap", "ibv_qp_cap", ["max_send_wr", "max_recv_wr", "max_send_sge", "max_recv_sge", "max_inline_data"]],
    ["ibv_srq_init_attr.attr", "ibv_srq_attr", ["max_wr", "max_sge", "srq_limit"]],
    ["rdma_cm_event.param.conn", "rdma_conn_param", ["private_data", "private_data_len", "responder_resources", "initiator_depth", "flow_control", "retry_count", "rnr_retry_count", "srq", "qp_num"]],
  ];
  const at = (f: string): number => {
    if (f === "ibv_qp_attr.ah_attr.grh") return off("ibv_qp_attr.ah_attr") + off("ibv_ah_attr.grh");
    return off(f as VerbsField);
  };
  for (const [outer, inner, fields] of nested) {
    for (const f of fields) {
      if (at(`${outer}.${f}`) !== at(outer) + off(`${inner}.${f}` as VerbsField)) return `${outer}.${f}`;
    }
  }
  if (off("ibv_qp_attr.cap.max_inline_data") !== off("ibv_qp_attr.cap") + off("ibv_qp_cap.max_inline_data")) return "ibv_qp_attr.cap";
  if (size("ibv_sge") !== 16 || size("ibv_wc") !== 48 || size("ibv_gid") !== 16 || size("ibv_recv_wr") !== 32) return "sizes";
  if (off("ibv_send_wr.wr.atomic.rkey") + 4 > size("ibv_send_wr") || size("ibv_qp_attr.ah_attr") !== size("ibv_ah_attr")) return "ibv_send_wr";
  if (size("sockaddr_in") !== 16 || size("ibv_async_event") !== 16) return "sockaddr_in / ibv_async_event";
  return null;
}
const drift = layoutDrift();
if (drift !== null) throw new Error(`verbs layout drifted: ${drift}`);
