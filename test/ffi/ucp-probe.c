/* Prints the layout of every UCP struct field and constant hotpath's bun:ffi bindings use, as
 * JSON, from the real <ucp/api/ucp.h>. test/ffi/ucp-layout.test.ts compares it with
 * src/ffi/ucp-layout.ts. */
#include <stddef.h>
#include <stdio.h>
#include <netinet/in.h>
#include <ucp/api/ucp.h>

#define F(T, f) printf("  \"%s.%s\": [%zu, %zu],\n", #T, #f, offsetof(T, f), sizeof(((T *)0)->f))
#define S(T) printf("  \"%s\": [0, %zu],\n", #T, sizeof(T))
#define K(c) printf("  \"%s\": [%lld, 0],\n", #c, (long long)(c))

int main(void) {
  printf("{\n");
  S(ucp_params_t); F(ucp_params_t, field_mask); F(ucp_params_t, features);
  S(ucp_worker_params_t); F(ucp_worker_params_t, field_mask); F(ucp_worker_params_t, thread_mode);
  S(ucp_listener_params_t); F(ucp_listener_params_t, field_mask); F(ucp_listener_params_t, sockaddr.addr);
  F(ucp_listener_params_t, sockaddr.addrlen); F(ucp_listener_params_t, conn_handler.cb); F(ucp_listener_params_t, conn_handler.arg);
  S(ucp_listener_attr_t); F(ucp_listener_attr_t, field_mask); F(ucp_listener_attr_t, sockaddr);
  S(ucp_ep_params_t); F(ucp_ep_params_t, field_mask); F(ucp_ep_params_t, address); F(ucp_ep_params_t, err_mode); F(ucp_ep_params_t, err_handler.cb);
  F(ucp_ep_params_t, err_handler.arg); F(ucp_ep_params_t, user_data); F(ucp_ep_params_t, flags);
  F(ucp_ep_params_t, sockaddr.addr); F(ucp_ep_params_t, sockaddr.addrlen); F(ucp_ep_params_t, conn_request);
  S(ucp_request_param_t); F(ucp_request_param_t, op_attr_mask); F(ucp_request_param_t, flags); F(ucp_request_param_t, request);
  F(ucp_request_param_t, cb); F(ucp_request_param_t, datatype); F(ucp_request_param_t, user_data);
  F(ucp_request_param_t, reply_buffer); F(ucp_request_param_t, memory_type); F(ucp_request_param_t, recv_info);
  S(ucp_am_handler_param_t); F(ucp_am_handler_param_t, field_mask); F(ucp_am_handler_param_t, id);
  F(ucp_am_handler_param_t, flags); F(ucp_am_handler_param_t, cb); F(ucp_am_handler_param_t, arg);
  S(ucp_am_recv_param_t); F(ucp_am_recv_param_t, recv_attr); F(ucp_am_recv_param_t, reply_ep);
  S(ucp_mem_map_params_t); F(ucp_mem_map_params_t, field_mask); F(ucp_mem_map_params_t, address);
  F(ucp_mem_map_params_t, length); F(ucp_mem_map_params_t, flags); F(ucp_mem_map_params_t, memory_type);
  S(ucp_mem_attr_t); F(ucp_mem_attr_t, field_mask); F(ucp_mem_attr_t, address); F(ucp_mem_attr_t, length);
  S(struct sockaddr_in); F(struct sockaddr_in, sin_family); F(struct sockaddr_in, sin_port); F(struct sockaddr_in, sin_addr);
  S(struct sockaddr_storage);
  K(UCP_API_MAJOR); K(UCP_API_MINOR);
  K(UCP_PARAM_FIELD_FEATURES); K(UCP_FEATURE_AM); K(UCP_FEATURE_RMA); K(UCP_FEATURE_AMO64); K(UCP_FEATURE_WAKEUP);
  K(UCP_WORKER_PARAM_FIELD_THREAD_MODE); K(UCS_THREAD_MODE_SINGLE);
  K(UCP_LISTENER_PARAM_FIELD_SOCK_ADDR); K(UCP_LISTENER_PARAM_FIELD_CONN_HANDLER); K(UCP_LISTENER_ATTR_FIELD_SOCKADDR);
  K(UCP_EP_PARAM_FIELD_REMOTE_ADDRESS); K(UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE); K(UCP_EP_PARAM_FIELD_ERR_HANDLER); K(UCP_EP_PARAM_FIELD_USER_DATA);
  K(UCP_EP_PARAM_FIELD_SOCK_ADDR); K(UCP_EP_PARAM_FIELD_FLAGS); K(UCP_EP_PARAM_FIELD_CONN_REQUEST);
  K(UCP_EP_PARAMS_FLAGS_CLIENT_SERVER); K(UCP_ERR_HANDLING_MODE_NONE); K(UCP_ERR_HANDLING_MODE_PEER);
  K(UCP_OP_ATTR_FIELD_FLAGS); K(UCP_OP_ATTR_FIELD_DATATYPE); K(UCP_OP_ATTR_FIELD_REPLY_BUFFER); K(UCP_OP_ATTR_FIELD_MEMORY_TYPE);
  K(UCP_OP_ATTR_FIELD_CALLBACK); K(UCP_OP_ATTR_FIELD_USER_DATA); K(UCP_OP_ATTR_FLAG_NO_IMM_CMPL); K(UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL);
  K(UCP_AM_SEND_FLAG_REPLY); K(UCP_AM_SEND_FLAG_EAGER); K(UCP_AM_SEND_FLAG_RNDV);
  K(UCP_AM_HANDLER_PARAM_FIELD_ID); K(UCP_AM_HANDLER_PARAM_FIELD_FLAGS); K(UCP_AM_HANDLER_PARAM_FIELD_CB); K(UCP_AM_HANDLER_PARAM_FIELD_ARG);
  K(UCP_AM_FLAG_WHOLE_MSG); K(UCP_AM_FLAG_PERSISTENT_DATA);
  K(UCP_AM_RECV_ATTR_FIELD_REPLY_EP); K(UCP_AM_RECV_ATTR_FLAG_DATA); K(UCP_AM_RECV_ATTR_FLAG_RNDV);
  K(UCP_MEM_MAP_PARAM_FIELD_ADDRESS); K(UCP_MEM_MAP_PARAM_FIELD_LENGTH); K(UCP_MEM_MAP_PARAM_FIELD_FLAGS);
  K(UCP_MEM_MAP_ALLOCATE); K(UCP_MEM_ATTR_FIELD_ADDRESS); K(UCP_MEM_ATTR_FIELD_LENGTH);
  K(UCP_ATOMIC_OP_CSWAP); K(UCP_DATATYPE_CONTIG); K(UCP_DATATYPE_SHIFT);
  K(UCS_OK); K(UCS_INPROGRESS); K(UCS_ERR_NO_RESOURCE); K(UCS_ERR_CANCELED); K(UCS_ERR_CONNECTION_RESET);
  K(UCS_ERR_ENDPOINT_TIMEOUT); K(UCS_ERR_UNREACHABLE); K(UCS_ERR_REJECTED); K(UCS_ERR_NOT_CONNECTED); K(UCS_ERR_IO_ERROR); K(UCS_ERR_BUSY); K(UCS_ERR_INVALID_PARAM);
  K(UCP_EP_CLOSE_FLAG_FORCE);
  printf("  \"end\": [0, 0]\n}\n");
  return 0;
}
