/*
 * softrc (TEST FIXTURE, never shipped): librdmacm.so.1 over the fixture's verbs. The "CM" is a
 * side TCP socket on the listen port (127.0.0.1 only): per connection one thread reads frames
 *   REQ (qpn, private data)  REP (qpn, private data)  REJ (private data)  RTU  DREQ
 * and turns them into events on the id's event channel (a pipe: one byte per queued event, so
 * its fd is readable exactly while events wait; O_NONBLOCK on it makes rdma_get_cm_event
 * fail with EAGAIN like the real one). rdma_accept and the client's REP handling move the QP
 * INIT->RTR->RTS with the peer's QP number, as the kernel CM does; rdma_disconnect moves it to
 * ERR. Events: ADDR_RESOLVED / ADDR_ERROR, ROUTE_RESOLVED, CONNECT_REQUEST, ESTABLISHED,
 * REJECTED (status 28, consumer reject, with the rejecter's private data; status 8, invalid
 * service ID, when nothing listens on the port, as the IB CM answers), DISCONNECTED (once per id: local disconnect, peer's DREQ, or the socket closing).
 * Private data limits are the InfiniBand CM's: REQ 56, REP 196, REJ 148 bytes.
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include "softrc.h" /* struct softrc_qp (comm_est_armed) and softrc_faults (lose_rtu), from the fixture's libibverbs */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { F_REQ = 1, F_REP, F_REJ, F_RTU, F_DREQ };
enum { PD_REQ = 56, PD_REP = 196, PD_REJ = 148, REJ_CONSUMER = 28, REJ_NO_LISTENER = 8 };

struct frame { uint8_t type, pdlen, resp_res, init_depth, rnr_retry, pad[3]; uint32_t qpn; uint8_t pd[256]; };

struct cm_ev { struct rdma_cm_event ev; uint8_t pd[256]; struct cm_ev *next; };
struct cm_chan { struct rdma_event_channel ch; int wfd; struct cm_ev *head, *tail; };

struct cm_id {
  struct rdma_cm_id id;
  int sock, listening, established, disconnected, rejected, own_pd, own_cq;
  uint32_t remote_qpn;
  uint8_t rnr_retry, resp_res, init_depth; /* this side's conn param (connect's; accept's) */
  pthread_t th; int has_th;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* channels' queues and ids' flags */
static struct ibv_context *shared_ctx;

static struct ibv_context *ctx(void) {
  pthread_mutex_lock(&lock);
  if (!shared_ctx) {
    struct ibv_device **l = ibv_get_device_list(NULL);
    if (l && l[0]) shared_ctx = ibv_open_device(l[0]);
    ibv_free_device_list(l);
  }
  pthread_mutex_unlock(&lock);
  return shared_ctx;
}

static void emit(struct cm_id *c, struct rdma_cm_id *listen, enum rdma_cm_event_type type, int status, const struct frame *f) {
  struct cm_chan *ch = (struct cm_chan *)c->id.channel;
  struct cm_ev *e = calloc(1, sizeof *e);
  if (!e) return;
  e->ev.id = &c->id; e->ev.listen_id = listen; e->ev.event = type; e->ev.status = status;
  if (f) {
    memcpy(e->pd, f->pd, f->pdlen);
    e->ev.param.conn.private_data = f->pdlen ? e->pd : NULL;
    e->ev.param.conn.private_data_len = f->pdlen;
    /* as the kernel CM reports them: the peer's initiator depth is our responder resources */
    e->ev.param.conn.responder_resources = f->init_depth;
    e->ev.param.conn.initiator_depth = f->resp_res;
    e->ev.param.conn.rnr_retry_count = f->rnr_retry;
    e->ev.param.conn.qp_num = f->qpn;
  }
  pthread_mutex_lock(&lock);
  if (ch->tail) ch->tail->next = e; else ch->head = e;
  ch->tail = e;
  pthread_mutex_unlock(&lock);
  char b = 1;
  if (write(ch->wfd, &b, 1) != 1) { /* the pipe holds 64 Ki events; a test never gets there */ }
}

struct rdma_event_channel *rdma_create_event_channel(void) {
  struct cm_chan *ch = calloc(1, sizeof *ch);
  int p[2];
  if (!ch) { errno = ENOMEM; return NULL; }
  if (pipe2(p, O_CLOEXEC) != 0) { free(ch); return NULL; }
  ch->ch.fd = p[0]; ch->wfd = p[1];
  return &ch->ch;
}
void rdma_destroy_event_channel(struct rdma_event_channel *c) {
  struct cm_chan *ch = (struct cm_chan *)c;
  close(ch->ch.fd); close(ch->wfd);
  for (struct cm_ev *e = ch->head, *n; e; e = n) { n = e->next; free(e); }
  free(ch);
}

int rdma_get_cm_event(struct rdma_event_channel *c, struct rdma_cm_event **ev) {
  struct cm_chan *ch = (struct cm_chan *)c;
  char b;
  if (read(ch->ch.fd, &b, 1) != 1) return -1; /* errno: EAGAIN when non-blocking */
  pthread_mutex_lock(&lock);
  struct cm_ev *e = ch->head;
  ch->head = e->next;
  if (!ch->head) ch->tail = NULL;
  pthread_mutex_unlock(&lock);
  *ev = &e->ev;
  return 0;
}
int rdma_ack_cm_event(struct rdma_cm_event *ev) { free(ev); return 0; }

const char *rdma_event_str(enum rdma_cm_event_type e) {
  static const char *n[] = {"RDMA_CM_EVENT_ADDR_RESOLVED", "RDMA_CM_EVENT_ADDR_ERROR", "RDMA_CM_EVENT_ROUTE_RESOLVED",
    "RDMA_CM_EVENT_ROUTE_ERROR", "RDMA_CM_EVENT_CONNECT_REQUEST", "RDMA_CM_EVENT_CONNECT_RESPONSE", "RDMA_CM_EVENT_CONNECT_ERROR",
    "RDMA_CM_EVENT_UNREACHABLE", "RDMA_CM_EVENT_REJECTED", "RDMA_CM_EVENT_ESTABLISHED", "RDMA_CM_EVENT_DISCONNECTED",
    "RDMA_CM_EVENT_DEVICE_REMOVAL", "RDMA_CM_EVENT_MULTICAST_JOIN", "RDMA_CM_EVENT_MULTICAST_ERROR",
    "RDMA_CM_EVENT_ADDR_CHANGE", "RDMA_CM_EVENT_TIMEWAIT_EXIT"};
  return (unsigned)e < sizeof n / sizeof *n ? n[e] : "UNKNOWN EVENT";
}

struct ibv_context **rdma_get_devices(int *num) {
  struct ibv_context **l = calloc(2, sizeof *l);
  if (!l) { errno = ENOMEM; return NULL; }
  l[0] = ctx();
  if (num) *num = l[0] ? 1 : 0;
  return l;
}
void rdma_free_devices(struct ibv_context **l) { free(l); }

int rdma_create_id(struct rdma_event_channel *ch, struct rdma_cm_id **id, void *context, enum rdma_port_space ps) {
  if (!ch || ps != RDMA_PS_TCP) { errno = EINVAL; return -1; }
  struct cm_id *c = calloc(1, sizeof *c);
  if (!c) { errno = ENOMEM; return -1; }
  c->id.channel = ch; c->id.context = context; c->id.ps = ps; c->id.qp_type = IBV_QPT_RC; c->sock = -1;
  *id = &c->id;
  return 0;
}

static int loopback(const struct sockaddr *a) {
  return a && a->sa_family == AF_INET && (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
}

int rdma_bind_addr(struct rdma_cm_id *id, struct sockaddr *addr) {
  struct cm_id *c = (struct cm_id *)id;
  const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
  if (!addr || addr->sa_family != AF_INET || (in->sin_addr.s_addr != 0 && !loopback(addr))) { errno = EADDRNOTAVAIL; return -1; }
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = *in;
  socklen_t sl = sizeof sa;
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) || getsockname(s, (struct sockaddr *)&sa, &sl)) { int e = errno; close(s); errno = e; return -1; }
  c->sock = s;
  id->route.addr.src_sin = sa;
  id->verbs = ctx(); id->port_num = 1;
  return 0;
}

int rdma_resolve_addr(struct rdma_cm_id *id, struct sockaddr *src, struct sockaddr *dst, int timeout_ms) {
  (void)src; (void)timeout_ms;
  struct cm_id *c = (struct cm_id *)id;
  if (!loopback(dst)) { emit(c, NULL, RDMA_CM_EVENT_ADDR_ERROR, -EHOSTUNREACH, NULL); return 0; }
  id->route.addr.dst_sin = *(struct sockaddr_in *)dst;
  id->route.addr.src_sin.sin_family = AF_INET;
  id->route.addr.src_sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  id->verbs = ctx(); id->port_num = 1;
  emit(c, NULL, id->verbs ? RDMA_CM_EVENT_ADDR_RESOLVED : RDMA_CM_EVENT_ADDR_ERROR, id->verbs ? 0 : -ENODEV, NULL);
  return 0;
}

int rdma_resolve_route(struct rdma_cm_id *id, int timeout_ms) {
  (void)timeout_ms;
  if (!id->verbs) { errno = EINVAL; return -1; }
  id->route.num_paths = 1;
  emit((struct cm_id *)id, NULL, RDMA_CM_EVENT_ROUTE_RESOLVED, 0, NULL);
  return 0;
}

int rdma_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_qp_init_attr *attr) {
  struct cm_id *c = (struct cm_id *)id;
  if (!id->verbs || id->qp) { errno = EINVAL; return -1; }
  if (!pd) { if (!id->pd && !(id->pd = ibv_alloc_pd(id->verbs))) return -1; pd = id->pd; c->own_pd = 1; }
  struct ibv_qp_init_attr a = *attr;
  if (!a.send_cq || (!a.recv_cq && !a.srq)) {
    id->send_cq = id->recv_cq = ibv_create_cq(id->verbs, (int)(a.cap.max_send_wr + a.cap.max_recv_wr + 1), NULL, NULL, 0);
    if (!id->send_cq) return -1;
    c->own_cq = 1;
    if (!a.send_cq) a.send_cq = id->send_cq;
    if (!a.recv_cq && !a.srq) a.recv_cq = id->recv_cq;
  }
  struct ibv_qp *qp = ibv_create_qp(pd, &a);
  if (!qp) return -1;
  struct ibv_qp_attr m = {0};
  m.qp_state = IBV_QPS_INIT; m.port_num = 1;
  m.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
  int rc = ibv_modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
  if (rc) { ibv_destroy_qp(qp); errno = rc; return -1; }
  attr->cap = a.cap;
  id->qp = qp;
  return 0;
}

void rdma_destroy_qp(struct rdma_cm_id *id) {
  struct cm_id *c = (struct cm_id *)id;
  pthread_mutex_lock(&lock); /* against disconnected() in the reader */
  struct ibv_qp *qp = id->qp;
  id->qp = NULL;
  pthread_mutex_unlock(&lock);
  if (qp) ibv_destroy_qp(qp);
  if (c->own_cq && id->send_cq) ibv_destroy_cq(id->send_cq);
  id->send_cq = id->recv_cq = NULL; c->own_cq = 0;
}

/* The kernel CM's part: INIT -> RTR -> RTS against the peer's QP, with what the kernel takes:
 * max_dest_rd_atomic from this side's responder_resources, max_rd_atomic from its
 * initiator_depth, rnr_retry from the conn param, and min_rnr_timer 0 (655 ms: the IB CM's
 * cm_init_qp_rtr_attr leaves it at 0; an application that wants less modifies RTS -> RTS). */
static int qp_connect(struct ibv_qp *qp, uint32_t remote, uint8_t rnr_retry, uint8_t resp_res, uint8_t init_depth) {
  struct ibv_qp_attr a = {0};
  a.qp_state = IBV_QPS_RTR; a.path_mtu = IBV_MTU_4096; a.dest_qp_num = remote; a.rq_psn = 0;
  a.max_dest_rd_atomic = resp_res; a.min_rnr_timer = 0; a.ah_attr.port_num = 1; a.ah_attr.is_global = 1;
  int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  if (rc) return rc;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTS; a.timeout = 14; a.retry_cnt = 7; a.rnr_retry = rnr_retry; a.sq_psn = 0; a.max_rd_atomic = init_depth;
  return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

static int send_frame(int s, uint8_t type, const struct rdma_conn_param *p, uint32_t qpn, const void *pd, uint8_t pdlen) {
  struct frame f;
  memset(&f, 0, sizeof f);
  f.type = type; f.qpn = qpn; f.pdlen = pdlen;
  if (p) { f.resp_res = p->responder_resources; f.init_depth = p->initiator_depth; f.rnr_retry = p->rnr_retry_count; }
  if (pdlen) memcpy(f.pd, pd, pdlen);
  size_t n = offsetof(struct frame, pd) + pdlen;
  return send(s, &f, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static int read_full(int s, void *p, size_t n) {
  size_t got = 0;
  while (got < n) { ssize_t r = recv(s, (char *)p + got, n - got, 0); if (r <= 0) return -1; got += (size_t)r; }
  return 0;
}
static int read_frame(int s, struct frame *f) {
  if (read_full(s, f, offsetof(struct frame, pd))) return -1;
  return f->pdlen ? read_full(s, f->pd, f->pdlen) : 0;
}

/* Once per id, from the app (rdma_disconnect) or the reader (DREQ, socket closed). The QP is
 * moved under the lock, so a concurrent rdma_destroy_qp never frees it under us. */
static void disconnected(struct cm_id *c) {
  pthread_mutex_lock(&lock);
  int first = !c->disconnected;
  c->disconnected = 1;
  if (first && c->id.qp) { struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR}; ibv_modify_qp(c->id.qp, &a, IBV_QP_STATE); }
  pthread_mutex_unlock(&lock);
  if (first) emit(c, NULL, RDMA_CM_EVENT_DISCONNECTED, 0, NULL);
}

/* One per connection, both sides: the frames after the REQ. */
static void *reader(void *arg) {
  struct cm_id *c = arg;
  struct frame f;
  while (read_frame(c->sock, &f) == 0) {
    if (f.type == F_REP && c->id.qp) {
      c->remote_qpn = f.qpn;
      int rc = qp_connect(c->id.qp, f.qpn, c->rnr_retry, c->resp_res, c->init_depth);
      if (rc) { emit(c, NULL, RDMA_CM_EVENT_CONNECT_ERROR, -rc, NULL); break; }
      int lose = __atomic_load_n(&softrc_faults.lose_rtu, __ATOMIC_ACQUIRE) > 0 && __atomic_sub_fetch(&softrc_faults.lose_rtu, 1, __ATOMIC_ACQ_REL) >= 0;
      if (!lose) send_frame(c->sock, F_RTU, NULL, 0, NULL, 0); /* lose_rtu=N: the fault */
      pthread_mutex_lock(&lock); c->established = 1; pthread_mutex_unlock(&lock);
      emit(c, NULL, RDMA_CM_EVENT_ESTABLISHED, 0, &f);
    } else if (f.type == F_REJ) {
      pthread_mutex_lock(&lock); c->rejected = 1; pthread_mutex_unlock(&lock);
      emit(c, NULL, RDMA_CM_EVENT_REJECTED, REJ_CONSUMER, &f);
      return NULL;
    } else if (f.type == F_RTU) {
      pthread_mutex_lock(&lock);
      int first = !c->established;
      c->established = 1;
      if (c->id.qp) __atomic_store_n(&((struct softrc_qp *)c->id.qp)->comm_est_armed, 0, __ATOMIC_RELEASE);
      pthread_mutex_unlock(&lock);
      if (first) emit(c, NULL, RDMA_CM_EVENT_ESTABLISHED, 0, NULL);
    } else if (f.type == F_DREQ) {
      disconnected(c);
    }
  }
  pthread_mutex_lock(&lock);
  int est = c->established, rej = c->rejected, closing = c->sock < 0 || c->disconnected;
  pthread_mutex_unlock(&lock);
  if (est) disconnected(c);
  else if (!rej && !closing && !c->listening) emit(c, NULL, RDMA_CM_EVENT_REJECTED, REJ_CONSUMER, NULL);
  return NULL;
}

struct accepted { struct cm_id *listen; int sock; };

/* Server side: the REQ becomes a new id and CONNECT_REQUEST, then the usual reader. */
static void *conn_thread(void *arg) {
  struct accepted a = *(struct accepted *)arg;
  free(arg);
  struct frame f;
  struct rdma_cm_id *nid;
  if (read_frame(a.sock, &f) || f.type != F_REQ || rdma_create_id(a.listen->id.channel, &nid, a.listen->id.context, RDMA_PS_TCP)) {
    close(a.sock);
    pthread_detach(pthread_self());
    return NULL;
  }
  struct cm_id *c = (struct cm_id *)nid;
  c->sock = a.sock; c->remote_qpn = f.qpn;
  nid->verbs = ctx(); nid->port_num = 1;
  nid->route.addr.src_sin = a.listen->id.route.addr.src_sin;
  socklen_t sl = sizeof nid->route.addr.dst_sin;
  getpeername(a.sock, (struct sockaddr *)&nid->route.addr.dst_sin, &sl);
  c->th = pthread_self(); c->has_th = 1;
  emit(c, &a.listen->id, RDMA_CM_EVENT_CONNECT_REQUEST, 0, &f);
  return reader(c);
}

static void *accept_thread(void *arg) {
  struct cm_id *l = arg;
  for (;;) {
    int s = accept4(l->sock, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0) { if (errno == EINTR || errno == ECONNABORTED) continue; return NULL; }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct accepted *a = malloc(sizeof *a);
    pthread_t th;
    if (!a) { close(s); continue; }
    a->listen = l; a->sock = s;
    if (pthread_create(&th, NULL, conn_thread, a) != 0) { free(a); close(s); continue; }
    /* joinable: the new id records it and rdma_destroy_id joins it (or it detaches itself) */
  }
}

int rdma_listen(struct rdma_cm_id *id, int backlog) {
  struct cm_id *c = (struct cm_id *)id;
  if (c->sock < 0 || listen(c->sock, backlog > 0 ? backlog : 16)) { errno = EINVAL; return -1; }
  c->listening = 1;
  if (pthread_create(&c->th, NULL, accept_thread, c) != 0) return -1;
  c->has_th = 1;
  return 0;
}

int rdma_connect(struct rdma_cm_id *id, struct rdma_conn_param *p) {
  struct cm_id *c = (struct cm_id *)id;
  if (!id->verbs || c->sock >= 0 || (p && p->private_data_len > PD_REQ)) { errno = EINVAL; return -1; }
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(s, (struct sockaddr *)&id->route.addr.dst_sin, sizeof id->route.addr.dst_sin)) {
    close(s);
    emit(c, NULL, RDMA_CM_EVENT_REJECTED, REJ_NO_LISTENER, NULL);
    return 0;
  }
  c->sock = s;
  c->rnr_retry = p ? p->rnr_retry_count : 7;
  c->resp_res = p ? p->responder_resources : 0;
  c->init_depth = p ? p->initiator_depth : 0;
  uint32_t qpn = id->qp ? id->qp->qp_num : (p ? p->qp_num : 0);
  if (send_frame(s, F_REQ, p, qpn, p ? p->private_data : NULL, p ? p->private_data_len : 0)) return -1;
  if (pthread_create(&c->th, NULL, reader, c) != 0) return -1;
  c->has_th = 1;
  return 0;
}

int rdma_accept(struct rdma_cm_id *id, struct rdma_conn_param *p) {
  struct cm_id *c = (struct cm_id *)id;
  if (c->sock < 0 || !id->qp || (p && p->private_data_len > PD_REP)) { errno = EINVAL; return -1; }
  c->resp_res = p ? p->responder_resources : 0;
  c->init_depth = p ? p->initiator_depth : 0;
  int rc = qp_connect(id->qp, c->remote_qpn, p ? p->rnr_retry_count : 7, c->resp_res, c->init_depth);
  if (rc) { errno = rc; return -1; }
  __atomic_store_n(&((struct softrc_qp *)id->qp)->comm_est_armed, 1, __ATOMIC_RELEASE);
  return send_frame(c->sock, F_REP, p, id->qp->qp_num, p ? p->private_data : NULL, p ? p->private_data_len : 0);
}

/* The application saw IBV_EVENT_COMM_EST (the RTU was lost): the id is ESTABLISHED now, as the
 * kernel CM makes it. */
int rdma_notify(struct rdma_cm_id *id, enum ibv_event_type event) {
  struct cm_id *c = (struct cm_id *)id;
  if (event != IBV_EVENT_COMM_EST) return 0;
  pthread_mutex_lock(&lock);
  int first = !c->established && !c->disconnected && c->sock >= 0;
  if (first) c->established = 1;
  pthread_mutex_unlock(&lock);
  if (first) emit(c, NULL, RDMA_CM_EVENT_ESTABLISHED, 0, NULL);
  return 0;
}

int rdma_reject(struct rdma_cm_id *id, const void *pd, uint8_t len) {
  struct cm_id *c = (struct cm_id *)id;
  if (c->sock < 0 || len > PD_REJ) { errno = EINVAL; return -1; }
  pthread_mutex_lock(&lock); c->rejected = 1; pthread_mutex_unlock(&lock);
  return send_frame(c->sock, F_REJ, NULL, 0, pd, len);
}

int rdma_disconnect(struct rdma_cm_id *id) {
  struct cm_id *c = (struct cm_id *)id;
  if (c->sock < 0) { errno = EINVAL; return -1; }
  send_frame(c->sock, F_DREQ, NULL, 0, NULL, 0);
  disconnected(c);
  return 0;
}

int rdma_destroy_id(struct rdma_cm_id *id) {
  struct cm_id *c = (struct cm_id *)id;
  int s = c->sock;
  pthread_mutex_lock(&lock); c->sock = -1; c->disconnected = 1; pthread_mutex_unlock(&lock);
  if (s >= 0) shutdown(s, SHUT_RDWR);
  /* the shutdown ends the id's thread (reader or accept loop); it sees disconnected set and
   * emits nothing more for this id */
  if (c->has_th && !pthread_equal(c->th, pthread_self())) pthread_join(c->th, NULL);
  if (s >= 0) close(s);
  if (c->own_pd && id->pd) ibv_dealloc_pd(id->pd);
  free(c);
  return 0;
}

__be16 rdma_get_src_port(struct rdma_cm_id *id) { return id->route.addr.src_sin.sin_port; }
__be16 rdma_get_dst_port(struct rdma_cm_id *id) { return id->route.addr.dst_sin.sin_port; }
