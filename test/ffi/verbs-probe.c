/* Prints the layout of every libibverbs / librdmacm struct field and constant hotpath's bun:ffi
 * bindings use, as JSON, from the real <infiniband/verbs.h> and <rdma/rdma_cma.h> (Debian
 * libibverbs-dev, librdmacm-dev). test/ffi/verbs-layout.test.ts compares it with
 * src/ffi/verbs-layout.ts. Struct names are printed without "struct ". */
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#define F(T, f) printf("  \"%s.%s\": [%zu, %zu],\n", #T, #f, offsetof(struct T, f), sizeof(((struct T *)0)->f))
#define S(T) printf("  \"%s\": [0, %zu],\n", #T, sizeof(struct T))
#define K(c) printf("  \"%s\": [%lld, 0],\n", #c, (long long)(c))

int main(void) {
  printf("{\n");
  S(ibv_device_attr); F(ibv_device_attr, fw_ver); F(ibv_device_attr, node_guid); F(ibv_device_attr, max_mr_size);
  F(ibv_device_attr, max_qp); F(ibv_device_attr, max_qp_wr); F(ibv_device_attr, device_cap_flags); F(ibv_device_attr, max_sge);
  F(ibv_device_attr, max_cq); F(ibv_device_attr, max_cqe); F(ibv_device_attr, max_mr); F(ibv_device_attr, max_pd);
  F(ibv_device_attr, max_qp_rd_atom); F(ibv_device_attr, max_qp_init_rd_atom); F(ibv_device_attr, atomic_cap);
  F(ibv_device_attr, max_srq); F(ibv_device_attr, max_srq_wr); F(ibv_device_attr, max_srq_sge); F(ibv_device_attr, phys_port_cnt);
  S(ibv_port_attr); F(ibv_port_attr, state); F(ibv_port_attr, max_mtu); F(ibv_port_attr, active_mtu); F(ibv_port_attr, gid_tbl_len);
  F(ibv_port_attr, port_cap_flags); F(ibv_port_attr, max_msg_sz); F(ibv_port_attr, lid); F(ibv_port_attr, sm_lid);
  F(ibv_port_attr, phys_state); F(ibv_port_attr, link_layer);
  printf("  \"ibv_gid\": [0, %zu],\n", sizeof(union ibv_gid));
  printf("  \"ibv_gid.raw\": [%zu, %zu],\n", offsetof(union ibv_gid, raw), sizeof(((union ibv_gid *)0)->raw));
  F(ibv_context, device); F(ibv_context, ops); F(ibv_context, ops.poll_cq); F(ibv_context, ops.req_notify_cq);
  F(ibv_context, ops.post_srq_recv); F(ibv_context, ops.post_send); F(ibv_context, ops.post_recv);
  F(ibv_context, cmd_fd); F(ibv_context, async_fd); F(ibv_context, num_comp_vectors);
  S(ibv_comp_channel); F(ibv_comp_channel, context); F(ibv_comp_channel, fd); F(ibv_comp_channel, refcnt);
  F(ibv_cq, context); F(ibv_cq, channel); F(ibv_cq, cq_context); F(ibv_cq, handle); F(ibv_cq, cqe);
  F(ibv_pd, context); F(ibv_pd, handle);
  S(ibv_mr); F(ibv_mr, context); F(ibv_mr, pd); F(ibv_mr, addr); F(ibv_mr, length); F(ibv_mr, handle); F(ibv_mr, lkey); F(ibv_mr, rkey);
  F(ibv_srq, context); F(ibv_srq, srq_context); F(ibv_srq, pd); F(ibv_srq, handle);
  F(ibv_qp, context); F(ibv_qp, qp_context); F(ibv_qp, pd); F(ibv_qp, send_cq); F(ibv_qp, recv_cq); F(ibv_qp, srq);
  F(ibv_qp, handle); F(ibv_qp, qp_num); F(ibv_qp, state); F(ibv_qp, qp_type);
  S(ibv_sge); F(ibv_sge, addr); F(ibv_sge, length); F(ibv_sge, lkey);
  S(ibv_send_wr); F(ibv_send_wr, wr_id); F(ibv_send_wr, next); F(ibv_send_wr, sg_list); F(ibv_send_wr, num_sge);
  F(ibv_send_wr, opcode); F(ibv_send_wr, send_flags); F(ibv_send_wr, imm_data);
  F(ibv_send_wr, wr.rdma.remote_addr); F(ibv_send_wr, wr.rdma.rkey);
  F(ibv_send_wr, wr.atomic.remote_addr); F(ibv_send_wr, wr.atomic.compare_add); F(ibv_send_wr, wr.atomic.swap); F(ibv_send_wr, wr.atomic.rkey);
  S(ibv_recv_wr); F(ibv_recv_wr, wr_id); F(ibv_recv_wr, next); F(ibv_recv_wr, sg_list); F(ibv_recv_wr, num_sge);
  S(ibv_wc); F(ibv_wc, wr_id); F(ibv_wc, status); F(ibv_wc, opcode); F(ibv_wc, vendor_err); F(ibv_wc, byte_len);
  F(ibv_wc, imm_data); F(ibv_wc, qp_num); F(ibv_wc, src_qp); F(ibv_wc, wc_flags); F(ibv_wc, pkey_index); F(ibv_wc, slid);
  S(ibv_qp_cap); F(ibv_qp_cap, max_send_wr); F(ibv_qp_cap, max_recv_wr); F(ibv_qp_cap, max_send_sge);
  F(ibv_qp_cap, max_recv_sge); F(ibv_qp_cap, max_inline_data);
  S(ibv_qp_init_attr); F(ibv_qp_init_attr, qp_context); F(ibv_qp_init_attr, send_cq); F(ibv_qp_init_attr, recv_cq);
  F(ibv_qp_init_attr, srq); F(ibv_qp_init_attr, cap); F(ibv_qp_init_attr, cap.max_send_wr);
  F(ibv_qp_init_attr, cap.max_recv_wr); F(ibv_qp_init_attr, cap.max_send_sge); F(ibv_qp_init_attr, cap.max_recv_sge);
  F(ibv_qp_init_attr, cap.max_inline_data); F(ibv_qp_init_attr, qp_type); F(ibv_qp_init_attr, sq_sig_all);
  S(ibv_global_route); F(ibv_global_route, dgid); F(ibv_global_route, flow_label); F(ibv_global_route, sgid_index);
  F(ibv_global_route, hop_limit); F(ibv_global_route, traffic_class);
  S(ibv_ah_attr); F(ibv_ah_attr, grh); F(ibv_ah_attr, dlid); F(ibv_ah_attr, sl); F(ibv_ah_attr, src_path_bits);
  F(ibv_ah_attr, static_rate); F(ibv_ah_attr, is_global); F(ibv_ah_attr, port_num);
  S(ibv_qp_attr); F(ibv_qp_attr, qp_state); F(ibv_qp_attr, cur_qp_state); F(ibv_qp_attr, path_mtu); F(ibv_qp_attr, qkey);
  F(ibv_qp_attr, rq_psn); F(ibv_qp_attr, sq_psn); F(ibv_qp_attr, dest_qp_num); F(ibv_qp_attr, qp_access_flags);
  F(ibv_qp_attr, cap); F(ibv_qp_attr, cap.max_inline_data); F(ibv_qp_attr, ah_attr);
  F(ibv_qp_attr, ah_attr.grh.dgid); F(ibv_qp_attr, ah_attr.grh.flow_label); F(ibv_qp_attr, ah_attr.grh.sgid_index);
  F(ibv_qp_attr, ah_attr.grh.hop_limit); F(ibv_qp_attr, ah_attr.grh.traffic_class); F(ibv_qp_attr, ah_attr.dlid);
  F(ibv_qp_attr, ah_attr.sl); F(ibv_qp_attr, ah_attr.src_path_bits); F(ibv_qp_attr, ah_attr.is_global);
  F(ibv_qp_attr, ah_attr.port_num); F(ibv_qp_attr, pkey_index); F(ibv_qp_attr, max_rd_atomic);
  F(ibv_qp_attr, max_dest_rd_atomic); F(ibv_qp_attr, min_rnr_timer); F(ibv_qp_attr, port_num); F(ibv_qp_attr, timeout);
  F(ibv_qp_attr, retry_cnt); F(ibv_qp_attr, rnr_retry);
  S(ibv_srq_attr); F(ibv_srq_attr, max_wr); F(ibv_srq_attr, max_sge); F(ibv_srq_attr, srq_limit);
  S(ibv_srq_init_attr); F(ibv_srq_init_attr, srq_context); F(ibv_srq_init_attr, attr); F(ibv_srq_init_attr, attr.max_wr);
  F(ibv_srq_init_attr, attr.max_sge); F(ibv_srq_init_attr, attr.srq_limit);
  S(ibv_async_event); F(ibv_async_event, element.cq); F(ibv_async_event, element.qp); F(ibv_async_event, element.srq);
  F(ibv_async_event, element.port_num); F(ibv_async_event, event_type);
  S(rdma_event_channel); F(rdma_event_channel, fd);
  S(rdma_cm_id); F(rdma_cm_id, verbs); F(rdma_cm_id, channel); F(rdma_cm_id, context); F(rdma_cm_id, qp);
  F(rdma_cm_id, route.addr.src_sin); F(rdma_cm_id, route.addr.dst_sin); F(rdma_cm_id, ps); F(rdma_cm_id, port_num);
  F(rdma_cm_id, event); F(rdma_cm_id, send_cq_channel); F(rdma_cm_id, send_cq); F(rdma_cm_id, recv_cq_channel);
  F(rdma_cm_id, recv_cq); F(rdma_cm_id, srq); F(rdma_cm_id, pd); F(rdma_cm_id, qp_type);
  S(rdma_conn_param); F(rdma_conn_param, private_data); F(rdma_conn_param, private_data_len);
  F(rdma_conn_param, responder_resources); F(rdma_conn_param, initiator_depth); F(rdma_conn_param, flow_control);
  F(rdma_conn_param, retry_count); F(rdma_conn_param, rnr_retry_count); F(rdma_conn_param, srq); F(rdma_conn_param, qp_num);
  S(rdma_cm_event); F(rdma_cm_event, id); F(rdma_cm_event, listen_id); F(rdma_cm_event, event); F(rdma_cm_event, status);
  F(rdma_cm_event, param.conn); F(rdma_cm_event, param.conn.private_data); F(rdma_cm_event, param.conn.private_data_len);
  F(rdma_cm_event, param.conn.responder_resources); F(rdma_cm_event, param.conn.initiator_depth);
  F(rdma_cm_event, param.conn.flow_control); F(rdma_cm_event, param.conn.retry_count);
  F(rdma_cm_event, param.conn.rnr_retry_count); F(rdma_cm_event, param.conn.srq); F(rdma_cm_event, param.conn.qp_num);
  S(sockaddr_in); F(sockaddr_in, sin_family); F(sockaddr_in, sin_port); F(sockaddr_in, sin_addr);
  S(sockaddr_storage);

  K(IBV_WR_RDMA_WRITE); K(IBV_WR_RDMA_WRITE_WITH_IMM); K(IBV_WR_SEND); K(IBV_WR_SEND_WITH_IMM); K(IBV_WR_RDMA_READ);
  K(IBV_WR_ATOMIC_CMP_AND_SWP); K(IBV_WR_ATOMIC_FETCH_AND_ADD);
  K(IBV_WC_SUCCESS); K(IBV_WC_LOC_LEN_ERR); K(IBV_WC_LOC_QP_OP_ERR); K(IBV_WC_LOC_EEC_OP_ERR); K(IBV_WC_LOC_PROT_ERR);
  K(IBV_WC_WR_FLUSH_ERR); K(IBV_WC_MW_BIND_ERR); K(IBV_WC_BAD_RESP_ERR); K(IBV_WC_LOC_ACCESS_ERR); K(IBV_WC_REM_INV_REQ_ERR);
  K(IBV_WC_REM_ACCESS_ERR); K(IBV_WC_REM_OP_ERR); K(IBV_WC_RETRY_EXC_ERR); K(IBV_WC_RNR_RETRY_EXC_ERR);
  K(IBV_WC_LOC_RDD_VIOL_ERR); K(IBV_WC_REM_INV_RD_REQ_ERR); K(IBV_WC_REM_ABORT_ERR); K(IBV_WC_INV_EECN_ERR);
  K(IBV_WC_INV_EEC_STATE_ERR); K(IBV_WC_FATAL_ERR); K(IBV_WC_RESP_TIMEOUT_ERR); K(IBV_WC_GENERAL_ERR);
  K(IBV_WC_SEND); K(IBV_WC_RDMA_WRITE); K(IBV_WC_RDMA_READ); K(IBV_WC_COMP_SWAP); K(IBV_WC_FETCH_ADD); K(IBV_WC_BIND_MW);
  K(IBV_WC_RECV); K(IBV_WC_RECV_RDMA_WITH_IMM);
  K(IBV_WC_GRH); K(IBV_WC_WITH_IMM);
  K(IBV_SEND_FENCE); K(IBV_SEND_SIGNALED); K(IBV_SEND_SOLICITED); K(IBV_SEND_INLINE);
  K(IBV_ACCESS_LOCAL_WRITE); K(IBV_ACCESS_REMOTE_WRITE); K(IBV_ACCESS_REMOTE_READ); K(IBV_ACCESS_REMOTE_ATOMIC);
  K(IBV_QP_STATE); K(IBV_QP_CUR_STATE); K(IBV_QP_EN_SQD_ASYNC_NOTIFY); K(IBV_QP_ACCESS_FLAGS); K(IBV_QP_PKEY_INDEX);
  K(IBV_QP_PORT); K(IBV_QP_QKEY); K(IBV_QP_AV); K(IBV_QP_PATH_MTU); K(IBV_QP_TIMEOUT); K(IBV_QP_RETRY_CNT);
  K(IBV_QP_RNR_RETRY); K(IBV_QP_RQ_PSN); K(IBV_QP_MAX_QP_RD_ATOMIC); K(IBV_QP_ALT_PATH); K(IBV_QP_MIN_RNR_TIMER);
  K(IBV_QP_SQ_PSN); K(IBV_QP_MAX_DEST_RD_ATOMIC); K(IBV_QP_PATH_MIG_STATE); K(IBV_QP_CAP); K(IBV_QP_DEST_QPN);
  K(IBV_QPS_RESET); K(IBV_QPS_INIT); K(IBV_QPS_RTR); K(IBV_QPS_RTS); K(IBV_QPS_SQD); K(IBV_QPS_SQE); K(IBV_QPS_ERR);
  K(IBV_QPT_RC);
  K(IBV_MTU_256); K(IBV_MTU_512); K(IBV_MTU_1024); K(IBV_MTU_2048); K(IBV_MTU_4096);
  K(IBV_EVENT_CQ_ERR); K(IBV_EVENT_QP_FATAL); K(IBV_EVENT_QP_REQ_ERR); K(IBV_EVENT_QP_ACCESS_ERR); K(IBV_EVENT_COMM_EST);
  K(IBV_EVENT_SQ_DRAINED); K(IBV_EVENT_PATH_MIG); K(IBV_EVENT_PATH_MIG_ERR); K(IBV_EVENT_DEVICE_FATAL);
  K(IBV_EVENT_PORT_ACTIVE); K(IBV_EVENT_PORT_ERR); K(IBV_EVENT_LID_CHANGE); K(IBV_EVENT_PKEY_CHANGE);
  K(IBV_EVENT_SM_CHANGE); K(IBV_EVENT_SRQ_ERR); K(IBV_EVENT_SRQ_LIMIT_REACHED); K(IBV_EVENT_QP_LAST_WQE_REACHED);
  K(IBV_EVENT_CLIENT_REREGISTER); K(IBV_EVENT_GID_CHANGE);
  K(IBV_PORT_NOP); K(IBV_PORT_DOWN); K(IBV_PORT_INIT); K(IBV_PORT_ARMED); K(IBV_PORT_ACTIVE); K(IBV_PORT_ACTIVE_DEFER);
  K(IBV_LINK_LAYER_UNSPECIFIED); K(IBV_LINK_LAYER_INFINIBAND); K(IBV_LINK_LAYER_ETHERNET);
  K(IBV_SRQ_MAX_WR); K(IBV_SRQ_LIMIT);
  K(IBV_ATOMIC_NONE); K(IBV_ATOMIC_HCA); K(IBV_ATOMIC_GLOB);
  K(IBV_FORK_DISABLED); K(IBV_FORK_ENABLED); K(IBV_FORK_UNNEEDED);
  K(AF_INET);
  K(RDMA_CM_EVENT_ADDR_RESOLVED); K(RDMA_CM_EVENT_ADDR_ERROR); K(RDMA_CM_EVENT_ROUTE_RESOLVED); K(RDMA_CM_EVENT_ROUTE_ERROR);
  K(RDMA_CM_EVENT_CONNECT_REQUEST); K(RDMA_CM_EVENT_CONNECT_RESPONSE); K(RDMA_CM_EVENT_CONNECT_ERROR);
  K(RDMA_CM_EVENT_UNREACHABLE); K(RDMA_CM_EVENT_REJECTED); K(RDMA_CM_EVENT_ESTABLISHED); K(RDMA_CM_EVENT_DISCONNECTED);
  K(RDMA_CM_EVENT_DEVICE_REMOVAL); K(RDMA_CM_EVENT_MULTICAST_JOIN); K(RDMA_CM_EVENT_MULTICAST_ERROR);
  K(RDMA_CM_EVENT_ADDR_CHANGE); K(RDMA_CM_EVENT_TIMEWAIT_EXIT);
  K(RDMA_PS_TCP);
  printf("  \"end\": [0, 0]\n}\n");
  return 0;
}
