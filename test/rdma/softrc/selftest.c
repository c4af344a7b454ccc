/*
 * softrc selftest (TEST FIXTURE, never shipped): a C program linked against the fixture's
 * libibverbs.so.1, run as two processes by test/rdma/softrc.test.ts:
 *   selftest server <port>   selftest client <port>      (verbs)
 *   selftest cm-server        selftest cm-client <port>   (rdma_cm)
 *   selftest fault-server     selftest fault-client <port> (injected faults; the server runs
 *                                                          with SOFTRC_FAULTS=rnr_storm=3)
 *   selftest lone hold|exit|progress (one QP, then pause / destroy it and _exit: segment
 *                             lifetime; progress: a loopback send with the engine thread idle)
 * They exchange QP numbers, addresses and rkeys over a TCP socket on 127.0.0.1 (the way the
 * transport's ?mode=socket does) and run the checks below, printing "ok <name>" per check or
 * "FAIL <name>: why" (exit 1). The kill check: the server prints "killme" and waits for
 * SIGKILL; the client then reports how its outstanding WRs completed.
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int softrc_fault(const char *spec);
int softrc_live(const char *kind);

static int failed;
#define CHECK(name, cond, ...) do { if (cond) printf("ok %s\n", name); else { printf("FAIL %s: ", name); printf(__VA_ARGS__); printf("\n"); failed = 1; } fflush(stdout); } while (0)
#define DIE(...) do { printf("FAIL fatal: "); printf(__VA_ARGS__); printf(" (errno %d)\n", errno); fflush(stdout); exit(1); } while (0)

static int sock;
static void xsend(const void *p, size_t n) { if (send(sock, p, n, 0) != (ssize_t)n) DIE("send"); }
static void xrecv(void *p, size_t n) { size_t got = 0; while (got < n) { ssize_t r = recv(sock, (char *)p + got, n - got, 0); if (r <= 0) DIE("recv"); got += (size_t)r; } }
static void barrier(void) { char c = 'b'; xsend(&c, 1); xrecv(&c, 1); }

static struct ibv_context *ctx;
static struct ibv_pd *pd;
static struct ibv_comp_channel *chan;
static struct ibv_cq *scq, *rcq;
static struct ibv_srq *srq;
static struct ibv_mr *mr;
static uint8_t *buf;
#define BUF (2u << 20)

struct info { uint32_t qpn; uint64_t addr; uint32_t rkey; };
static struct info peer;

static struct ibv_qp *mkqp(int use_srq) {
  struct ibv_qp_init_attr a = {0};
  a.send_cq = scq; a.recv_cq = rcq; a.srq = use_srq ? srq : NULL; a.qp_type = IBV_QPT_RC;
  a.cap.max_send_wr = 64; a.cap.max_recv_wr = 64; a.cap.max_send_sge = 2; a.cap.max_recv_sge = 2;
  a.cap.max_inline_data = 128;
  struct ibv_qp *qp = ibv_create_qp(pd, &a);
  if (!qp) DIE("create_qp");
  return qp;
}

static int to_init(struct ibv_qp *qp) {
  struct ibv_qp_attr a = {0};
  a.qp_state = IBV_QPS_INIT; a.port_num = 1; a.pkey_index = 0;
  a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
  return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}
static int to_rtr(struct ibv_qp *qp, uint32_t dest) {
  struct ibv_qp_attr a = {0};
  a.qp_state = IBV_QPS_RTR; a.path_mtu = IBV_MTU_4096; a.dest_qp_num = dest; a.rq_psn = 0;
  a.max_dest_rd_atomic = 1; a.min_rnr_timer = 1; a.ah_attr.port_num = 1; a.ah_attr.is_global = 1;
  return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
}
static int to_rts(struct ibv_qp *qp, int rnr_retry, int timeout) {
  struct ibv_qp_attr a = {0};
  a.qp_state = IBV_QPS_RTS; a.timeout = (uint8_t)timeout; a.retry_cnt = 7; a.rnr_retry = (uint8_t)rnr_retry; a.sq_psn = 0; a.max_rd_atomic = 1;
  return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

/* Creates a QP and connects it to the peer's matching one over the socket. */
static struct ibv_qp *pair(int use_srq, int rnr_retry, int timeout) {
  struct ibv_qp *qp = mkqp(use_srq);
  struct info me = {qp->qp_num, (uintptr_t)buf, mr->rkey};
  xsend(&me, sizeof me); xrecv(&peer, sizeof peer);
  if (to_init(qp) || to_rtr(qp, peer.qpn) || to_rts(qp, rnr_retry, timeout)) DIE("connect");
  barrier();
  return qp;
}

static int wait_wc(struct ibv_cq *cq, struct ibv_wc *wc) {
  for (int i = 0; i < 100000; i++) { /* 10 s */
    int n = ibv_poll_cq(cq, 1, wc);
    if (n) return n;
    usleep(100);
  }
  return 0;
}

#define UNSIGNALED 0x80000000u /* selftest flag: post without IBV_SEND_SIGNALED */
static int post_send(struct ibv_qp *qp, enum ibv_wr_opcode op, void *addr, uint32_t len, uint64_t raddr, uint32_t rkey, uint32_t flags, uint64_t id) {
  struct ibv_sge sge = {(uintptr_t)addr, len, mr->lkey};
  struct ibv_send_wr wr = {0}, *bad;
  wr.wr_id = id; wr.opcode = op; wr.sg_list = &sge; wr.num_sge = 1;
  wr.send_flags = (flags & UNSIGNALED) ? flags & ~UNSIGNALED : IBV_SEND_SIGNALED | flags;
  wr.wr.rdma.remote_addr = raddr; wr.wr.rdma.rkey = rkey; wr.imm_data = htonl(0x12345678);
  return ibv_post_send(qp, &wr, &bad);
}
static int post_cas(struct ibv_qp *qp, uint64_t *dst, uint64_t raddr, uint64_t cmp, uint64_t swp) {
  struct ibv_sge sge = {(uintptr_t)dst, 8, mr->lkey};
  struct ibv_send_wr wr = {0}, *bad;
  wr.wr_id = 77; wr.opcode = IBV_WR_ATOMIC_CMP_AND_SWP; wr.sg_list = &sge; wr.num_sge = 1; wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.atomic.remote_addr = raddr; wr.wr.atomic.rkey = peer.rkey; wr.wr.atomic.compare_add = cmp; wr.wr.atomic.swap = swp;
  return ibv_post_send(qp, &wr, &bad);
}
static int post_recv(struct ibv_qp *qp, void *addr, uint32_t len, uint64_t id) {
  struct ibv_sge sge = {(uintptr_t)addr, len, mr->lkey};
  struct ibv_recv_wr wr = {0}, *bad;
  wr.wr_id = id; wr.sg_list = &sge; wr.num_sge = 1;
  return qp ? ibv_post_recv(qp, &wr, &bad) : ibv_post_srq_recv(srq, &wr, &bad);
}
static enum ibv_qp_state qstate(struct ibv_qp *qp) {
  struct ibv_qp_attr a; struct ibv_qp_init_attr i;
  ibv_query_qp(qp, &a, IBV_QP_STATE, &i);
  return a.qp_state;
}
static void fill(uint8_t *p, size_t n, uint8_t seed) { for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 31 + seed); }
static int same(const uint8_t *p, size_t n, uint8_t seed) { for (size_t i = 0; i < n; i++) if (p[i] != (uint8_t)(i * 31 + seed)) return 0; return 1; }

static void setup(void) {
  int n;
  struct ibv_device **l = ibv_get_device_list(&n);
  if (!l || n != 1 || strcmp(ibv_get_device_name(l[0]), "softrc0")) DIE("device list");
  ctx = ibv_open_device(l[0]);
  ibv_free_device_list(l);
  if (!ctx) DIE("open");
  struct ibv_port_attr pa;
  if (ibv_query_port(ctx, 1, &pa) || pa.state != IBV_PORT_ACTIVE || pa.link_layer != IBV_LINK_LAYER_ETHERNET) DIE("port");
  pd = ibv_alloc_pd(ctx);
  chan = ibv_create_comp_channel(ctx);
  scq = ibv_create_cq(ctx, 256, NULL, NULL, 0);
  rcq = ibv_create_cq(ctx, 256, (void *)0x5eed, chan, 0);
  struct ibv_srq_init_attr sa = {0};
  sa.attr.max_wr = 64; sa.attr.max_sge = 1;
  srq = ibv_create_srq(pd, &sa);
  buf = aligned_alloc(4096, BUF);
  memset(buf, 0, BUF);
  mr = ibv_reg_mr(pd, buf, BUF, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC);
  if (!pd || !chan || !scq || !rcq || !srq || !mr) DIE("setup");
}

static void state_machine(void) {
  struct ibv_qp *qp = mkqp(0);
  CHECK("post_send in RESET fails", post_send(qp, IBV_WR_SEND, buf, 8, 0, 0, 0, 1) == EINVAL, "accepted");
  CHECK("post_recv in RESET fails", post_recv(qp, buf, 8, 1) == EINVAL, "accepted");
  CHECK("RESET->RTR is EINVAL", to_rtr(qp, qp->qp_num) == EINVAL, "accepted");
  struct ibv_qp_attr a = {0};
  a.qp_state = IBV_QPS_INIT;
  CHECK("INIT without its mask is EINVAL", ibv_modify_qp(qp, &a, IBV_QP_STATE) == EINVAL, "accepted");
  CHECK("RESET->INIT", to_init(qp) == 0 && qstate(qp) == IBV_QPS_INIT, "refused");
  CHECK("post_send in INIT fails", post_send(qp, IBV_WR_SEND, buf, 8, 0, 0, 0, 1) == EINVAL, "accepted");
  CHECK("INIT->RTS is EINVAL", to_rts(qp, 0, 0) == EINVAL, "accepted");
  struct ibv_srq_init_attr sa = {0};
  sa.attr.max_wr = 4;
  struct ibv_pd *pd2 = ibv_alloc_pd(ctx);
  struct ibv_cq *cq2 = ibv_create_cq(ctx, 4, NULL, NULL, 0);
  struct ibv_srq *srq2 = ibv_create_srq(pd2, &sa);
  struct ibv_qp_init_attr qa = {.send_cq = cq2, .recv_cq = cq2, .srq = srq2, .qp_type = IBV_QPT_RC, .cap = {.max_send_wr = 4}};
  struct ibv_qp *qp2 = ibv_create_qp(pd2, &qa);
  int qps = softrc_live("qp");
  CHECK("live counts", qps == 2 && softrc_live("pd") == 2 && softrc_live("srq") == 2 && softrc_live("nonsense") == -1, "qp %d", qps);
  CHECK("busy PD, CQ, SRQ refuse destroy (EBUSY)", ibv_dealloc_pd(pd2) == EBUSY && ibv_destroy_cq(cq2) == EBUSY && ibv_destroy_srq(srq2) == EBUSY, "destroyed");
  ibv_destroy_qp(qp2);
  CHECK("then destroy in order", ibv_destroy_srq(srq2) == 0 && ibv_destroy_cq(cq2) == 0 && ibv_dealloc_pd(pd2) == 0, "refused");
  ibv_destroy_qp(qp);
  CHECK("live counts after destroy", softrc_live("qp") == 0 && softrc_live("pd") == 1 && softrc_live("cq") == 2, "qp %d", softrc_live("qp"));
}

static void server(void) {
  struct ibv_wc wc;
  struct ibv_qp *qp = pair(1, 7, 0);
  /* SEND into the SRQ, then back into the client's own RQ */
  post_recv(NULL, buf + 4096, 4096, 11);
  post_recv(NULL, buf + 65536, 65536, 12);
  barrier();
  CHECK("srq recv small", wait_wc(rcq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 11 && wc.byte_len == 5 && !memcmp(buf + 4096, "hello", 5) && wc.opcode == IBV_WC_RECV, "status %d len %u", wc.status, wc.byte_len);
  CHECK("srq recv 64 KiB", wait_wc(rcq, &wc) && wc.status == IBV_WC_SUCCESS && wc.byte_len == 65536 && same(buf + 65536, 65536, 3), "status %d len %u", wc.status, wc.byte_len);
  memcpy(buf, "world", 5);
  barrier();
  post_send(qp, IBV_WR_SEND, buf, 5, 0, 0, IBV_SEND_INLINE, 21);
  CHECK("send completes", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 21 && wc.opcode == IBV_WC_SEND, "status %d", wc.status);
  barrier(); /* client wrote 8 KiB at +1 MiB */
  barrier();
  CHECK("write landed", same(buf + (1u << 20), 8192, 9), "bytes differ");
  post_recv(NULL, buf, 0, 31);
  barrier(); /* client: write-with-imm 1 MiB at +1 MiB */
  CHECK("write_with_imm recv", wait_wc(rcq, &wc) && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM && (wc.wc_flags & IBV_WC_WITH_IMM) && ntohl(wc.imm_data) == 0x12345678 && wc.byte_len == (1u << 20) && wc.wr_id == 31, "status %d op %d imm %x", wc.status, wc.opcode, ntohl(wc.imm_data));
  CHECK("write_with_imm bytes", same(buf + (1u << 20), 1u << 20, 5), "bytes differ");
  fill(buf + 8192, 4096, 7);
  *(uint64_t *)(buf + 256) = 5;
  barrier(); /* client: READ and CAS */
  barrier();
  CHECK("cas swapped once", *(uint64_t *)(buf + 256) == 9, "value %llu", (unsigned long long)*(uint64_t *)(buf + 256));
  /* RNR: no receive posted; one arrives 30 ms later */
  barrier();
  usleep(30000);
  post_recv(NULL, buf + 4096, 64, 41);
  CHECK("recv after rnr", wait_wc(rcq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 41 && !memcmp(buf + 4096, "late", 4), "status %d", wc.status);
  /* completion channel on the client: we send after it armed */
  barrier();
  post_send(qp, IBV_WR_SEND, buf, 4, 0, 0, IBV_SEND_INLINE, 51);
  wait_wc(scq, &wc);
  /* SRQ limit: 3 posted, limit 2, the client sends 2 */
  for (int i = 0; i < 3; i++) post_recv(NULL, buf + 4096 * (i + 1), 64, 60 + (uint64_t)i);
  struct ibv_srq_attr sat = {.srq_limit = 2};
  ibv_modify_srq(srq, &sat, IBV_SRQ_LIMIT);
  barrier();
  wait_wc(rcq, &wc); wait_wc(rcq, &wc);
  struct pollfd pf = {ctx->async_fd, POLLIN, 0};
  struct ibv_async_event ev = {0};
  int ready = poll(&pf, 1, 5000) == 1 && ibv_get_async_event(ctx, &ev) == 0;
  CHECK("srq limit event", ready && ev.event_type == IBV_EVENT_SRQ_LIMIT_REACHED && ev.element.srq == srq, "ready %d type %d", ready, ev.event_type);
  if (ready) ibv_ack_async_event(&ev);
  wait_wc(rcq, &wc); /* the srq still holds one; drain it with the client's third send */
  barrier();
  /* RNR exhausted on a fresh pair (nothing posted, rnr_retry 2) */
  struct ibv_qp *q2 = pair(0, 2, 0);
  barrier();
  /* bad rkey on a fresh pair */
  struct ibv_qp *q3 = pair(0, 7, 0);
  barrier();
  barrier();
  CHECK("responder QP in ERR after bad rkey", qstate(q3) == IBV_QPS_ERR, "state %d", qstate(q3));
  struct ibv_qp *q5 = pair(0, 7, 0); /* the client's signal-batching check */
  barrier();
  (void)q5;
  /* peer death: this process stops answering, then is killed */
  struct ibv_qp *q4 = pair(0, 7, 0);
  softrc_fault("drop_peer=1");
  barrier();
  (void)q2; (void)q4;
  printf("killme\n");
  fflush(stdout);
  pause();
}

static void client(void) {
  struct ibv_wc wc;
  struct ibv_qp *qp = pair(0, 7, 0);
  post_recv(qp, buf + 8192, 4096, 101);
  barrier();
  memcpy(buf, "hello", 5);
  fill(buf + 65536, 65536, 3);
  int rc = post_send(qp, IBV_WR_SEND, buf, 5, 0, 0, IBV_SEND_INLINE, 1);
  CHECK("send inline posts", rc == 0, "rc %d", rc);
  CHECK("send inline completes", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 1 && wc.opcode == IBV_WC_SEND, "status %d", wc.status);
  post_send(qp, IBV_WR_SEND, buf + 65536, 65536, 0, 0, 0, 2);
  CHECK("send 64 KiB completes", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 2, "status %d", wc.status);
  CHECK("inline over max_inline is EINVAL", post_send(qp, IBV_WR_SEND, buf, 300, 0, 0, IBV_SEND_INLINE, 3) == EINVAL, "accepted");
  barrier();
  CHECK("rq recv", wait_wc(rcq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 101 && wc.byte_len == 5 && !memcmp(buf + 8192, "world", 5) && wc.src_qp == peer.qpn, "status %d", wc.status);
  fill(buf + 16384, 8192, 9);
  barrier();
  post_send(qp, IBV_WR_RDMA_WRITE, buf + 16384, 8192, peer.addr + (1u << 20), peer.rkey, 0, 4);
  CHECK("write completes", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RDMA_WRITE, "status %d", wc.status);
  barrier();
  barrier();
  fill(buf + (1u << 20), 1u << 20, 5);
  post_send(qp, IBV_WR_RDMA_WRITE_WITH_IMM, buf + (1u << 20), 1u << 20, peer.addr + (1u << 20), peer.rkey, 0, 5);
  CHECK("write_with_imm completes", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS, "status %d", wc.status);
  barrier();
  post_send(qp, IBV_WR_RDMA_READ, buf + 32768, 4096, peer.addr + 8192, peer.rkey, 0, 6);
  CHECK("read completes", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RDMA_READ && wc.byte_len == 4096, "status %d", wc.status);
  CHECK("read bytes", same(buf + 32768, 4096, 7), "bytes differ");
  uint64_t *old = (uint64_t *)(buf + 40960);
  post_cas(qp, old, peer.addr + 256, 5, 9);
  CHECK("cas returns old", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_COMP_SWAP && *old == 5, "status %d old %llu", wc.status, (unsigned long long)*old);
  post_cas(qp, old, peer.addr + 256, 5, 11);
  CHECK("cas mismatch keeps value", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && *old == 9, "old %llu", (unsigned long long)*old);
  barrier();
  barrier();
  memcpy(buf, "late", 4);
  post_send(qp, IBV_WR_SEND, buf, 4, 0, 0, 0, 7);
  CHECK("rnr retried until a recv was posted", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 7, "status %d", wc.status);
  /* completion channel */
  post_recv(qp, buf + 8192, 64, 102);
  ibv_req_notify_cq(rcq, 0);
  barrier();
  struct pollfd pf = {chan->fd, POLLIN, 0};
  struct ibv_cq *evcq = NULL; void *evctx = NULL;
  int ready = poll(&pf, 1, 5000) == 1 && ibv_get_cq_event(chan, &evcq, &evctx) == 0;
  CHECK("completion channel wakes", ready && evcq == rcq && evctx == (void *)0x5eed, "ready %d", ready);
  if (ready) ibv_ack_cq_events(rcq, 1);
  CHECK("completion after wake", wait_wc(rcq, &wc) && wc.wr_id == 102, "none");
  barrier(); /* the server posted 3 receives and armed the SRQ limit at 2 */
  for (int i = 0; i < 3; i++) { post_send(qp, IBV_WR_SEND, buf, 4, 0, 0, IBV_SEND_INLINE, 8); wait_wc(scq, &wc); }
  barrier();
  /* RNR exhausted */
  struct ibv_qp *q2 = pair(0, 2, 0);
  post_send(q2, IBV_WR_SEND, buf, 4, 0, 0, 0, 9);
  post_send(q2, IBV_WR_SEND, buf, 4, 0, 0, 0, 10);
  CHECK("rnr retry exceeded", wait_wc(scq, &wc) && wc.status == IBV_WC_RNR_RETRY_EXC_ERR && wc.wr_id == 9, "status %d", wc.status);
  CHECK("rest flushed", wait_wc(scq, &wc) && wc.status == IBV_WC_WR_FLUSH_ERR && wc.wr_id == 10, "status %d", wc.status);
  CHECK("QP in ERR after rnr", qstate(q2) == IBV_QPS_ERR, "state %d", qstate(q2));
  post_send(q2, IBV_WR_SEND, buf, 4, 0, 0, 0, 11);
  CHECK("post in ERR flushes", wait_wc(scq, &wc) && wc.status == IBV_WC_WR_FLUSH_ERR && wc.wr_id == 11, "status %d", wc.status);
  barrier();
  /* bad rkey */
  struct ibv_qp *q3 = pair(0, 7, 0);
  barrier();
  post_send(q3, IBV_WR_RDMA_WRITE, buf, 64, peer.addr, peer.rkey + 1, 0, 12);
  CHECK("bad rkey is REM_ACCESS_ERR", wait_wc(scq, &wc) && wc.status == IBV_WC_REM_ACCESS_ERR && wc.wr_id == 12, "status %d", wc.status);
  CHECK("requester QP in ERR after bad rkey", qstate(q3) == IBV_QPS_ERR, "state %d", qstate(q3));
  barrier();
  /* signal batching: unsignaled WRs hold their send-queue slots until a signaled one completes */
  struct ibv_qp *q5 = pair(0, 7, 0);
  int okpost = 1;
  for (int i = 0; i < 63; i++) okpost &= post_send(q5, IBV_WR_RDMA_WRITE, buf, 8, peer.addr, peer.rkey, UNSIGNALED, 200) == 0;
  okpost &= post_send(q5, IBV_WR_RDMA_WRITE, buf, 8, peer.addr, peer.rkey, 0, 201) == 0;
  CHECK("one signaled completion for 64 WRs", okpost && wait_wc(scq, &wc) && wc.wr_id == 201 && wc.status == IBV_WC_SUCCESS && ibv_poll_cq(scq, 1, &wc) == 0, "posted %d wr %llu", okpost, (unsigned long long)wc.wr_id);
  for (int i = 0; i < 64; i++) okpost &= post_send(q5, IBV_WR_RDMA_WRITE, buf, 8, peer.addr, peer.rkey, UNSIGNALED, 202) == 0;
  usleep(20000); /* all acked by now, yet no slot is free */
  CHECK("a send queue full of unsignaled WRs refuses the next post (ENOMEM)", okpost && post_send(q5, IBV_WR_RDMA_WRITE, buf, 8, peer.addr, peer.rkey, 0, 203) == ENOMEM, "posted %d", okpost);
  barrier();
  /* peer death with outstanding WRs (the server stops answering, then is killed) */
  struct ibv_qp *q4 = pair(0, 7, 0);
  barrier();
  for (int i = 0; i < 3; i++) post_send(q4, IBV_WR_SEND, buf, 4, 0, 0, 0, 20 + (uint64_t)i);
  printf("posted\n");
  fflush(stdout);
  int errs = 0, flushed = 0;
  for (int i = 0; i < 3; i++) if (wait_wc(scq, &wc) && wc.status != IBV_WC_SUCCESS) { errs++; flushed += wc.status == IBV_WC_WR_FLUSH_ERR; }
  CHECK("peer death fails outstanding WRs", errs == 3 && flushed >= 2, "errors %d flushed %d", errs, flushed);
  struct pollfd apf = {ctx->async_fd, POLLIN, 0};
  struct ibv_async_event aev = {0};
  int fatal = 0; /* every QP still connected to the dead peer gets one; q4's among them */
  for (int i = 0; i < 5 && !fatal && poll(&apf, 1, 5000) == 1 && ibv_get_async_event(ctx, &aev) == 0; i++)
    fatal = aev.event_type == IBV_EVENT_QP_FATAL && aev.element.qp == q4;
  CHECK("peer death raises IBV_EVENT_QP_FATAL", fatal, "last type %d", aev.event_type);
  CHECK("QP in ERR after peer death", qstate(q4) == IBV_QPS_ERR, "state %d", qstate(q4));
  struct ibv_qp *qs[] = {qp, q2, q3, q4, q5};
  for (int i = 0; i < 5; i++) ibv_destroy_qp(qs[i]);
}

/* ---- rdma_cm ---- */

static struct rdma_event_channel *cmch;

static struct rdma_cm_event *cm_wait(enum rdma_cm_event_type want, const char *name) {
  struct pollfd pf = {cmch->fd, POLLIN, 0};
  struct rdma_cm_event *ev = NULL;
  int ready = poll(&pf, 1, 10000) == 1 && rdma_get_cm_event(cmch, &ev) == 0;
  CHECK(name, ready && ev->event == want && (want != RDMA_CM_EVENT_REJECTED || ev->status == 28 || ev->status == 8),
    "got %s status %d", ready ? rdma_event_str(ev->event) : "nothing", ready ? ev->status : 0);
  if (!ready || ev->event != want) exit(1);
  return ev;
}

static struct ibv_qp_init_attr cm_attr(void) {
  struct ibv_qp_init_attr a = {0};
  a.qp_type = IBV_QPT_RC; a.cap.max_send_wr = 16; a.cap.max_recv_wr = 16; a.cap.max_send_sge = 1; a.cap.max_recv_sge = 1;
  return a;
}

static void cm_server(void) {
  struct rdma_cm_id *l;
  cmch = rdma_create_event_channel();
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (!cmch || rdma_create_id(cmch, &l, NULL, RDMA_PS_TCP) || rdma_bind_addr(l, (struct sockaddr *)&sa) || rdma_listen(l, 4)) DIE("cm listen");
  printf("port %d\n", ntohs(rdma_get_src_port(l)));
  struct rdma_cm_event *ev = cm_wait(RDMA_CM_EVENT_CONNECT_REQUEST, "cm connect request");
  struct rdma_cm_id *id = ev->id;
  CHECK("cm request private data", ev->listen_id == l && ev->param.conn.private_data_len == 8 && !memcmp(ev->param.conn.private_data, "hello-cm", 8), "len %d", ev->param.conn.private_data_len);
  rdma_ack_cm_event(ev);
  struct ibv_qp_init_attr a = cm_attr();
  if (rdma_create_qp(id, NULL, &a)) DIE("cm create_qp");
  struct ibv_mr *m = ibv_reg_mr(id->pd, buf, 4096, IBV_ACCESS_LOCAL_WRITE);
  struct ibv_sge sge = {(uintptr_t)buf, 64, m->lkey};
  struct ibv_recv_wr rw = {.wr_id = 1, .sg_list = &sge, .num_sge = 1}, *bad;
  ibv_post_recv(id->qp, &rw, &bad);
  struct rdma_conn_param p = {.private_data = "welcome", .private_data_len = 7, .responder_resources = 1, .initiator_depth = 1, .rnr_retry_count = 7};
  CHECK("cm accept", rdma_accept(id, &p) == 0, "errno %d", errno);
  rdma_ack_cm_event(cm_wait(RDMA_CM_EVENT_ESTABLISHED, "cm server established"));
  struct ibv_wc wc;
  CHECK("cm recv over the connected QP", wait_wc(id->recv_cq, &wc) && wc.status == IBV_WC_SUCCESS && !memcmp(buf, "ping", 4), "status %d", wc.status);
  ev = cm_wait(RDMA_CM_EVENT_CONNECT_REQUEST, "cm second request");
  struct rdma_cm_id *id2 = ev->id;
  rdma_ack_cm_event(ev);
  CHECK("cm reject", rdma_reject(id2, "nope", 4) == 0, "errno %d", errno);
  rdma_ack_cm_event(cm_wait(RDMA_CM_EVENT_DISCONNECTED, "cm server disconnected"));
  CHECK("cm QP in ERR after disconnect", qstate(id->qp) == IBV_QPS_ERR, "state %d", qstate(id->qp));
  ibv_dereg_mr(m);
  rdma_destroy_qp(id);
  rdma_destroy_id(id2);
  rdma_destroy_id(id);
  rdma_destroy_id(l);
  rdma_destroy_event_channel(cmch);
}

static struct rdma_cm_id *cm_dial(int port) {
  struct rdma_cm_id *id;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (rdma_create_id(cmch, &id, (void *)0xc0, RDMA_PS_TCP) || rdma_resolve_addr(id, NULL, (struct sockaddr *)&sa, 2000)) DIE("cm resolve");
  rdma_ack_cm_event(cm_wait(RDMA_CM_EVENT_ADDR_RESOLVED, "cm addr resolved"));
  if (rdma_resolve_route(id, 2000)) DIE("cm route");
  rdma_ack_cm_event(cm_wait(RDMA_CM_EVENT_ROUTE_RESOLVED, "cm route resolved"));
  struct ibv_qp_init_attr a = cm_attr();
  if (rdma_create_qp(id, NULL, &a)) DIE("cm create_qp");
  struct rdma_conn_param p = {.private_data = "hello-cm", .private_data_len = 8, .responder_resources = 1, .initiator_depth = 1, .retry_count = 7, .rnr_retry_count = 7};
  if (rdma_connect(id, &p)) DIE("cm connect");
  return id;
}

static void cm_client(int port) {
  cmch = rdma_create_event_channel();
  fcntl(cmch->fd, F_SETFL, O_NONBLOCK);
  struct rdma_cm_event *ev;
  CHECK("cm empty channel is EAGAIN", rdma_get_cm_event(cmch, &ev) == -1 && errno == EAGAIN, "errno %d", errno);
  struct rdma_cm_id *id = cm_dial(port);
  ev = cm_wait(RDMA_CM_EVENT_ESTABLISHED, "cm client established");
  CHECK("cm accept private data", ev->id == id && ev->param.conn.private_data_len == 7 && !memcmp(ev->param.conn.private_data, "welcome", 7), "len %d", ev->param.conn.private_data_len);
  rdma_ack_cm_event(ev);
  struct ibv_mr *m = ibv_reg_mr(id->pd, buf, 4096, IBV_ACCESS_LOCAL_WRITE);
  memcpy(buf, "ping", 4);
  struct ibv_sge sge = {(uintptr_t)buf, 4, m->lkey};
  struct ibv_send_wr sw = {.wr_id = 2, .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED}, *bad;
  struct ibv_wc wc;
  CHECK("cm send over the connected QP", ibv_post_send(id->qp, &sw, &bad) == 0 && wait_wc(id->send_cq, &wc) && wc.status == IBV_WC_SUCCESS, "status %d", wc.status);
  struct rdma_cm_id *id2 = cm_dial(port);
  ev = cm_wait(RDMA_CM_EVENT_REJECTED, "cm rejected");
  CHECK("cm reject private data", ev->id == id2 && ev->param.conn.private_data_len == 4 && !memcmp(ev->param.conn.private_data, "nope", 4), "len %d", ev->param.conn.private_data_len);
  rdma_ack_cm_event(ev);
  struct rdma_cm_id *id3;
  struct sockaddr_in far = {.sin_family = AF_INET, .sin_port = htons(1), .sin_addr.s_addr = htonl(0x0a000001)};
  rdma_create_id(cmch, &id3, NULL, RDMA_PS_TCP);
  rdma_resolve_addr(id3, NULL, (struct sockaddr *)&far, 100);
  rdma_ack_cm_event(cm_wait(RDMA_CM_EVENT_ADDR_ERROR, "cm non-loopback address error"));
  struct rdma_cm_id *id5;
  struct sockaddr_in lo = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  rdma_create_id(cmch, &id5, NULL, RDMA_PS_TCP);
  rdma_resolve_addr(id5, NULL, (struct sockaddr *)&lo, 100);
  rdma_ack_cm_event(cm_wait(RDMA_CM_EVENT_ADDR_RESOLVED, "cm addr resolved"));
  static const char big[57];
  struct rdma_conn_param bp = {.private_data = big, .private_data_len = 57};
  CHECK("cm REQ private data over 56 bytes is EINVAL", rdma_connect(id5, &bp) == -1 && errno == EINVAL, "errno %d", errno);
  rdma_destroy_id(id5);
  int probe = socket(AF_INET, SOCK_STREAM, 0); /* a port nothing listens on */
  struct sockaddr_in fr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t fl = sizeof fr;
  bind(probe, (struct sockaddr *)&fr, sizeof fr);
  getsockname(probe, (struct sockaddr *)&fr, &fl);
  close(probe);
  struct rdma_cm_id *id4 = cm_dial(ntohs(fr.sin_port));
  ev = cm_wait(RDMA_CM_EVENT_REJECTED, "cm no listener is rejected");
  CHECK("cm no listener: status 8 (invalid service id)", ev->id == id4 && ev->status == 8, "status %d", ev->status);
  rdma_ack_cm_event(ev);
  rdma_destroy_qp(id4);
  rdma_destroy_id(id4);
  CHECK("cm disconnect", rdma_disconnect(id) == 0, "errno %d", errno);
  rdma_ack_cm_event(cm_wait(RDMA_CM_EVENT_DISCONNECTED, "cm client disconnected"));
  ibv_dereg_mr(m);
  rdma_destroy_qp(id2);
  rdma_destroy_qp(id);
  rdma_destroy_id(id3);
  rdma_destroy_id(id2);
  rdma_destroy_id(id);
  rdma_destroy_event_channel(cmch);
}

/* ---- injected faults (the server side injects; SOFTRC_FAULTS=rnr_storm=3 at its load) ---- */

static void fault_server(void) {
  struct ibv_wc wc;
  struct ibv_qp *qa = pair(0, 7, 0), *qb = pair(0, 2, 0), *qc = pair(0, 7, 0), *qd = pair(0, 7, 0);
  post_recv(qa, buf, 64, 1);
  barrier(); /* the client sends on qa through the 3 RNR NAKs of SOFTRC_FAULTS */
  CHECK("fault: rnr storm absorbed", wait_wc(rcq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 1, "status %d", wc.status);
  softrc_fault("rnr_storm=5");
  post_recv(qb, buf, 64, 2);
  barrier(); /* the client (rnr_retry 2) gives up */
  barrier();
  softrc_fault("rnr_storm=0");
  post_recv(qc, buf, 64, 3);
  softrc_fault("qp_err_after=1");
  barrier(); /* the client's send moves qc to ERR here */
  barrier();
  CHECK("fault: qp_err_after moved the QP to ERR", qstate(qc) == IBV_QPS_ERR, "state %d", qstate(qc));
  CHECK("fault: QP to ERR flushed its posted receive", wait_wc(rcq, &wc) && wc.wr_id == 3 && wc.status == IBV_WC_WR_FLUSH_ERR, "wr %llu status %d", (unsigned long long)wc.wr_id, wc.status);
  softrc_fault("cq_overrun=1");
  post_recv(qd, buf, 64, 4);
  barrier(); /* the client's send overruns our recv CQ */
  barrier();
  struct pollfd pf = {ctx->async_fd, POLLIN, 0};
  struct ibv_async_event ev = {0};
  int ready = poll(&pf, 1, 5000) == 1 && ibv_get_async_event(ctx, &ev) == 0;
  CHECK("fault: cq overrun raises IBV_EVENT_CQ_ERR", ready && ev.event_type == IBV_EVENT_CQ_ERR && ev.element.cq == rcq, "ready %d type %d", ready, ev.event_type);
  if (ready) ibv_ack_async_event(&ev);
  CHECK("fault: the overrun completion is lost", ibv_poll_cq(rcq, 1, &wc) == 0, "got wr %llu", (unsigned long long)wc.wr_id);
  struct ibv_qp *qe = pair(0, 7, 0);
  softrc_fault("drop_peer=1");
  barrier(); /* the client's two sends stay outstanding; it flushes them */
  barrier();
  ibv_destroy_qp(qe);
  struct ibv_qp *qs[] = {qa, qb, qc, qd};
  for (int i = 0; i < 4; i++) ibv_destroy_qp(qs[i]);
}

static void fault_client(void) {
  struct ibv_wc wc;
  struct ibv_qp *qa = pair(0, 7, 0), *qb = pair(0, 2, 0), *qc = pair(0, 7, 10), *qd = pair(0, 7, 0);
  post_send(qa, IBV_WR_SEND, buf, 4, 0, 0, 0, 1);
  CHECK("fault: send through an rnr storm completes", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS && wc.wr_id == 1, "status %d", wc.status);
  barrier();
  post_send(qb, IBV_WR_SEND, buf, 4, 0, 0, 0, 2);
  CHECK("fault: rnr storm past rnr_retry is RNR_RETRY_EXC_ERR", wait_wc(scq, &wc) && wc.status == IBV_WC_RNR_RETRY_EXC_ERR, "status %d", wc.status);
  barrier();
  barrier();
  post_send(qc, IBV_WR_SEND, buf, 4, 0, 0, 0, 3);
  CHECK("fault: a peer QP in ERR is RETRY_EXC_ERR (timeout)", wait_wc(scq, &wc) && wc.status == IBV_WC_RETRY_EXC_ERR && wc.wr_id == 3, "status %d", wc.status);
  barrier();
  barrier();
  post_send(qd, IBV_WR_SEND, buf, 4, 0, 0, 0, 4);
  CHECK("fault: the sender of an overrun completion succeeds", wait_wc(scq, &wc) && wc.status == IBV_WC_SUCCESS, "status %d", wc.status);
  barrier();
  barrier();
  struct ibv_qp *qe = pair(0, 7, 0);
  barrier();
  post_send(qe, IBV_WR_SEND, buf, 4, 0, 0, 0, 5);
  post_send(qe, IBV_WR_SEND, buf, 4, 0, 0, 0, 6);
  usleep(10000);
  softrc_fault("flush=1");
  int f5 = wait_wc(scq, &wc) && wc.wr_id == 5 && wc.status == IBV_WC_WR_FLUSH_ERR;
  int f6 = wait_wc(scq, &wc) && wc.wr_id == 6 && wc.status == IBV_WC_WR_FLUSH_ERR;
  CHECK("fault: flush completes outstanding WRs with WR_FLUSH_ERR", f5 && f6, "wr5 %d wr6 %d", f5, f6);
  CHECK("fault: flush leaves the QP in ERR", qstate(qe) == IBV_QPS_ERR, "state %d", qstate(qe));
  barrier();
  ibv_destroy_qp(qe);
  struct ibv_qp *qs[] = {qa, qb, qc, qd};
  for (int i = 0; i < 4; i++) ibv_destroy_qp(qs[i]);
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: selftest [cm-|fault-]server|client <port>\n"); return 2; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  setup(); /* opens the device: the engine starts and sweeps dead processes' segments */
  if (!strcmp(argv[1], "lone")) { /* segment lifetime checks; exits without destructors */
    struct ibv_qp *qp = mkqp(0);
    if (!strcmp(argv[2], "hold")) { printf("held %u\n", qp->qp_num); pause(); }
    if (!strcmp(argv[2], "progress")) { /* two QPs of this process, the engine thread idle */
      struct ibv_qp *b = mkqp(0);
      if (to_init(qp) || to_init(b) || to_rtr(qp, b->qp_num) || to_rtr(b, qp->qp_num) || to_rts(qp, 7, 0) || to_rts(b, 7, 0)) DIE("loopback");
      softrc_fault("engine_off=1");
      post_recv(b, buf + 4096, 64, 1);
      post_send(qp, IBV_WR_SEND, buf, 8, 0, 0, 0, 2);
      struct ibv_wc wc;
      int r = wait_wc(rcq, &wc), s = wait_wc(scq, &wc);
      CHECK("poll_cq makes progress with the engine thread idle", r && s, "recv %d send %d", r, s);
      ibv_destroy_qp(b);
    }
    ibv_destroy_qp(qp);
    printf(failed ? "done FAIL\n" : "done ok\n");
    _exit(failed);
  }
  if (!strcmp(argv[1], "cm-server")) cm_server();
  else if (!strcmp(argv[1], "fault-client") || !strcmp(argv[1], "client")) {
    sock = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(sock, (struct sockaddr *)&sa, sizeof sa)) DIE("connect");
    if (argv[1][0] == 'f') fault_client(); else client();
  }
  else if (!strcmp(argv[1], "cm-client")) cm_client(atoi(argv[2]));
  else if (!strcmp(argv[1], "server") || !strcmp(argv[1], "fault-server")) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = sizeof sa;
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 1) || getsockname(l, (struct sockaddr *)&sa, &sl)) DIE("listen");
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    sock = accept(l, NULL, NULL);
    if (argv[1][0] == 'f') fault_server();
    else { state_machine(); server(); }
  } else return 2;
  printf(failed ? "done FAIL\n" : "done ok\n");
  return failed;
}
