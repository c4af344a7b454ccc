/*
 * softrc (TEST FIXTURE, never shipped): the control-path verbs of the fabricated device
 * "softrc0": device list, context, PD, MR (lkey == rkey, checked per PD), CQ ring with its
 * completion channel (a pipe carrying the CQ pointer), SRQ with its limit event, async
 * events (a pipe carrying struct ibv_async_event), fork status, the string helpers, and the
 * fault switches (SOFTRC_FAULTS="rnr_storm=N,qp_err_after=N,cq_overrun=1,drop_peer=1,flush=1,engine_off=1,reg_mr_fail=N,lose_rtu=N"
 * at load, or the exported softrc_fault("...") at run time, e.g. through bun:ffi). QPs and the data path are in qp.c, the engine in engine.c.
 *
 * Example: HOTPATH_IBVERBS=<dir>/libibverbs.so.1 makes the transport load this instead of
 * the system library; C tests link it with -L<dir> -libverbs and run with LD_LIBRARY_PATH.
 */
#include "softrc.h"
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#undef ibv_reg_mr
#undef ibv_reg_mr_iova
#undef ibv_query_port

pthread_mutex_t softrc_glock = PTHREAD_MUTEX_INITIALIZER;
int softrc_live_n[L_KINDS];

/* For tests: how many objects of a kind are alive in this process (-1: unknown kind). */
int softrc_live(const char *kind) {
  static const char *names[L_KINDS] = {"context", "pd", "mr", "channel", "cq", "srq", "qp"};
  int all = 0;
  for (int i = 0; i < L_KINDS; i++) {
    int n = __atomic_load_n(&softrc_live_n[i], __ATOMIC_RELAXED);
    if (kind && !strcmp(kind, names[i])) return n;
    all += n;
  }
  return kind && !strcmp(kind, "all") ? all : -1;
}

long softrc_count_n[C_KINDS];

/* For tests: how many times this process's engine, as a responder, sent an RNR NAK (injected
 * storms included), took a receive for a SEND / SEND_WITH_IMM, or for a WRITE_WITH_IMM
 * (-1: unknown kind). */
long softrc_count(const char *kind) {
  static const char *names[C_KINDS] = {"rnr_nak", "recv_send", "recv_write_imm"};
  for (int i = 0; i < C_KINDS; i++)
    if (kind && !strcmp(kind, names[i])) return __atomic_load_n(&softrc_count_n[i], __ATOMIC_RELAXED);
  return -1;
}
struct softrc_faults softrc_faults;
static struct softrc_mr mrs[SOFTRC_MAX_MR];
static uint32_t mr_gen = 1;

uint64_t softrc_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *softrc_dir(void) {
  const char *d = getenv("SOFTRC_DIR");
  return d && *d ? d : "/dev/shm";
}

/* ---- faults ---- */

int softrc_fault(const char *spec) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", spec ? spec : "");
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(t, '=');
    int v = eq ? atoi(eq + 1) : 1;
    if (eq) *eq = 0;
    /* SYNC: plain ints read by the engine thread; a test sets them before traffic */
    if (!strcmp(t, "rnr_storm")) __atomic_store_n(&softrc_faults.rnr_storm, v, __ATOMIC_RELEASE);
    else if (!strcmp(t, "qp_err_after")) __atomic_store_n(&softrc_faults.qp_err_after, v, __ATOMIC_RELEASE);
    else if (!strcmp(t, "cq_overrun")) __atomic_store_n(&softrc_faults.cq_overrun, v, __ATOMIC_RELEASE);
    else if (!strcmp(t, "drop_peer")) __atomic_store_n(&softrc_faults.drop_peer, v, __ATOMIC_RELEASE);
    else if (!strcmp(t, "lose_rtu")) __atomic_store_n(&softrc_faults.lose_rtu, v, __ATOMIC_RELEASE);
    else if (!strcmp(t, "reg_mr_fail")) __atomic_store_n(&softrc_faults.reg_mr_fail, v, __ATOMIC_RELEASE);
    else if (!strcmp(t, "flush")) __atomic_store_n(&softrc_faults.flush, v, __ATOMIC_RELEASE);
    else if (!strcmp(t, "engine_off")) __atomic_store_n(&softrc_faults.engine_off, v, __ATOMIC_RELEASE);
    else return -1;
  }
  return 0;
}

__attribute__((constructor)) static void softrc_load(void) {
  /* Peers' engines move bulk bytes with process_vm_readv/writev into this process: under
   * Yama ptrace_scope 1 that needs this opt-in (no effect, EINVAL, without Yama). */
  prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
  const char *f = getenv("SOFTRC_FAULTS");
  if (f && *f && softrc_fault(f) != 0) fprintf(stderr, "softrc: bad SOFTRC_FAULTS '%s'\n", f);
}

/* ---- device ---- */

static struct ibv_device softrc_dev = {
  .node_type = IBV_NODE_CA, .transport_type = IBV_TRANSPORT_IB,
  .name = "softrc0", .dev_name = "uverbs-softrc0",
  .dev_path = "/nonexistent/softrc0", .ibdev_path = "/nonexistent/softrc0",
};

struct ibv_device **ibv_get_device_list(int *num) {
  struct ibv_device **l = calloc(2, sizeof *l);
  if (!l) { errno = ENOMEM; return NULL; }
  l[0] = &softrc_dev;
  if (num) *num = 1;
  return l;
}
void ibv_free_device_list(struct ibv_device **list) { free(list); }
const char *ibv_get_device_name(struct ibv_device *d) { return d ? d->name : NULL; }
__be64 ibv_get_device_guid(struct ibv_device *d) { (void)d; return htobe64(0x50f7c0de00000001ull); }
int ibv_fork_init(void) { return 0; }
enum ibv_fork_status ibv_is_fork_initialized(void) { return IBV_FORK_UNNEEDED; }

static struct softrc_ctx *ctx_of(struct ibv_context *c) {
  return (struct softrc_ctx *)((char *)c - offsetof(struct softrc_ctx, vctx.context));
}

int ibv_query_device(struct ibv_context *c, struct ibv_device_attr *a) {
  (void)c;
  memset(a, 0, sizeof *a);
  snprintf(a->fw_ver, sizeof a->fw_ver, "softrc-fixture");
  a->node_guid = ibv_get_device_guid(&softrc_dev);
  a->max_mr_size = 1ull << 40; a->page_size_cap = 4096; a->vendor_id = 0x5f7;
  a->max_qp = 4096; a->max_qp_wr = SOFTRC_MAX_QP_WR; a->max_sge = SOFTRC_MAX_SGE;
  a->max_cq = 4096; a->max_cqe = SOFTRC_MAX_CQE; a->max_mr = SOFTRC_MAX_MR; a->max_pd = 4096;
  a->max_qp_rd_atom = 16; a->max_qp_init_rd_atom = 16; a->max_res_rd_atom = 4096;
  a->atomic_cap = IBV_ATOMIC_HCA; a->max_srq = 1024; a->max_srq_wr = SOFTRC_MAX_SRQ_WR;
  a->max_srq_sge = SOFTRC_MAX_SGE; a->max_pkeys = 1; a->phys_port_cnt = 1;
  a->device_cap_flags = IBV_DEVICE_SRQ_RESIZE | IBV_DEVICE_RC_RNR_NAK_GEN;
  return 0;
}

static int query_port(struct ibv_context *c, uint8_t port, struct ibv_port_attr *a, size_t len) {
  (void)c;
  if (port != 1) return EINVAL;
  struct ibv_port_attr p;
  memset(&p, 0, sizeof p);
  p.state = IBV_PORT_ACTIVE; p.max_mtu = IBV_MTU_4096; p.active_mtu = IBV_MTU_4096;
  p.gid_tbl_len = 1; p.max_msg_sz = 1u << 31; p.pkey_tbl_len = 1; p.lid = 0;
  p.link_layer = IBV_LINK_LAYER_ETHERNET; p.active_width = 2; p.active_speed = 32;
  p.phys_state = 5; /* LinkUp */
  memcpy(a, &p, len < sizeof p ? len : sizeof p);
  return 0;
}
/* the exported (compat) symbol the header's ibv_query_port falls back to */
int ibv_query_port(struct ibv_context *c, uint8_t port, struct _compat_ibv_port_attr *a) {
  /* old callers' struct ends before port_cap_flags2 */
  return query_port(c, port, (struct ibv_port_attr *)a, offsetof(struct ibv_port_attr, port_cap_flags2));
}

int ibv_query_gid(struct ibv_context *c, uint8_t port, int index, union ibv_gid *gid) {
  (void)c;
  if (port != 1 || index != 0) { errno = EINVAL; return -1; }
  memset(gid, 0, sizeof *gid);
  gid->raw[10] = 0xff; gid->raw[11] = 0xff; /* ::ffff:127.0.0.1 */
  gid->raw[12] = 127; gid->raw[15] = 1;
  return 0;
}
int ibv_query_pkey(struct ibv_context *c, uint8_t port, int index, __be16 *pkey) {
  (void)c;
  if (port != 1 || index != 0) { errno = EINVAL; return -1; }
  *pkey = htobe16(0xffff);
  return 0;
}

/* qp.c provides these ops */
int softrc_post_send(struct ibv_qp *, struct ibv_send_wr *, struct ibv_send_wr **);
int softrc_post_recv(struct ibv_qp *, struct ibv_recv_wr *, struct ibv_recv_wr **);
static int post_srq_recv(struct ibv_srq *, struct ibv_recv_wr *, struct ibv_recv_wr **);
static int poll_cq(struct ibv_cq *, int, struct ibv_wc *);
static int req_notify_cq(struct ibv_cq *, int);

struct ibv_context *ibv_open_device(struct ibv_device *d) {
  if (d != &softrc_dev) { errno = ENODEV; return NULL; }
  struct softrc_ctx *x = calloc(1, sizeof *x);
  int p[2];
  if (!x) { errno = ENOMEM; return NULL; }
  if (pipe2(p, O_CLOEXEC) != 0) { free(x); return NULL; }
  fcntl(p[1], F_SETFL, O_NONBLOCK);
  struct ibv_context *c = &x->vctx.context;
  c->device = d;
  c->ops.poll_cq = poll_cq;
  c->ops.req_notify_cq = req_notify_cq;
  c->ops.post_send = softrc_post_send;
  c->ops.post_recv = softrc_post_recv;
  c->ops.post_srq_recv = post_srq_recv;
  c->cmd_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  c->async_fd = p[0];
  x->async_w = p[1];
  c->num_comp_vectors = 1;
  pthread_mutex_init(&c->mutex, NULL);
  c->abi_compat = __VERBS_ABI_IS_EXTENDED;
  x->vctx.sz = sizeof x->vctx;
  x->vctx.query_port = query_port;
  softrc_engine_start();
  LIVE(L_CTX, 1);
  return c;
}

int ibv_close_device(struct ibv_context *c) {
  struct softrc_ctx *x = ctx_of(c);
  close(c->cmd_fd); close(c->async_fd); close(x->async_w);
  free(x);
  LIVE(L_CTX, -1);
  return 0;
}

/* ---- async events ---- */

void softrc_async(struct ibv_context *c, enum ibv_event_type type, void *element) {
  struct ibv_async_event e;
  memset(&e, 0, sizeof e);
  e.element.qp = element;
  e.event_type = type;
  if (write(ctx_of(c)->async_w, &e, sizeof e) != sizeof e) { /* full: dropped */ }
}

int ibv_get_async_event(struct ibv_context *c, struct ibv_async_event *e) {
  ssize_t n = read(c->async_fd, e, sizeof *e);
  return n == (ssize_t)sizeof *e ? 0 : -1;
}
void ibv_ack_async_event(struct ibv_async_event *e) { (void)e; }

/* ---- PD, MR ---- */

struct ibv_pd *ibv_alloc_pd(struct ibv_context *c) {
  struct softrc_pd *pd = calloc(1, sizeof *pd);
  if (!pd) { errno = ENOMEM; return NULL; }
  pd->pd.context = c;
  LIVE(L_PD, 1);
  return &pd->pd;
}
int ibv_dealloc_pd(struct ibv_pd *pd) {
  if (__atomic_load_n(&((struct softrc_pd *)pd)->refs, __ATOMIC_ACQUIRE)) return EBUSY;
  free(pd);
  LIVE(L_PD, -1);
  return 0;
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t len, uint64_t iova, unsigned int access) {
  if (iova != (uintptr_t)addr) { errno = EOPNOTSUPP; return NULL; } /* fixture: iova == addr */
  if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) && !(access & IBV_ACCESS_LOCAL_WRITE)) {
    errno = EINVAL; return NULL;
  }
  if (__atomic_load_n(&softrc_faults.reg_mr_fail, __ATOMIC_ACQUIRE) > 0 && __atomic_sub_fetch(&softrc_faults.reg_mr_fail, 1, __ATOMIC_ACQ_REL) >= 0) {
    errno = ENOMEM; return NULL; /* injected (reg_mr_fail=N) */
  }
  pthread_mutex_lock(&softrc_glock);
  for (int i = 0; i < SOFTRC_MAX_MR; i++) {
    if (mrs[i].used) continue;
    struct softrc_mr *m = &mrs[i];
    memset(m, 0, sizeof *m);
    m->used = 1; m->access = (int)access;
    m->mr.context = pd->context; m->mr.pd = pd; m->mr.addr = addr; m->mr.length = len;
    m->mr.handle = (uint32_t)i;
    m->mr.lkey = m->mr.rkey = (uint32_t)i | ((mr_gen++ & 0xfffffu) << 12);
    pthread_mutex_unlock(&softrc_glock);
    REF((struct softrc_pd *)pd, 1);
    LIVE(L_MR, 1);
    return &m->mr;
  }
  pthread_mutex_unlock(&softrc_glock);
  errno = ENOMEM;
  return NULL;
}
struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int access) {
  return ibv_reg_mr_iova2(pd, addr, len, (uintptr_t)addr, (unsigned)access);
}
struct ibv_mr *ibv_reg_mr_iova(struct ibv_pd *pd, void *addr, size_t len, uint64_t iova, int access) {
  return ibv_reg_mr_iova2(pd, addr, len, iova, (unsigned)access);
}
int ibv_dereg_mr(struct ibv_mr *mr) {
  pthread_mutex_lock(&softrc_glock);
  ((struct softrc_mr *)mr)->used = 0;
  pthread_mutex_unlock(&softrc_glock);
  REF((struct softrc_pd *)mr->pd, -1);
  LIVE(L_MR, -1);
  return 0;
}

/* Finds a live MR by key; pd NULL matches any. The caller checks bounds and access. */
struct softrc_mr *softrc_mr_find(uint32_t key, struct ibv_pd *pd) {
  struct softrc_mr *m = &mrs[key & 0xfff], *r = NULL;
  pthread_mutex_lock(&softrc_glock);
  if (m->used && m->mr.lkey == key && (!pd || m->mr.pd == pd)) r = m;
  pthread_mutex_unlock(&softrc_glock);
  return r;
}

/* ---- completion channel, CQ ---- */

struct ibv_comp_channel *ibv_create_comp_channel(struct ibv_context *c) {
  struct ibv_comp_channel *ch = calloc(1, sizeof *ch + sizeof(int));
  int p[2];
  if (!ch) { errno = ENOMEM; return NULL; }
  if (pipe2(p, O_CLOEXEC) != 0) { free(ch); return NULL; }
  fcntl(p[1], F_SETFL, O_NONBLOCK);
  ch->context = c; ch->fd = p[0];
  ((int *)(ch + 1))[0] = p[1];
  LIVE(L_CHAN, 1);
  return ch;
}
int ibv_destroy_comp_channel(struct ibv_comp_channel *ch) {
  if (ch->refcnt) return EBUSY;
  close(ch->fd); close(((int *)(ch + 1))[0]);
  free(ch);
  LIVE(L_CHAN, -1);
  return 0;
}

struct ibv_cq *ibv_create_cq(struct ibv_context *c, int cqe, void *cq_context, struct ibv_comp_channel *ch, int vec) {
  if (cqe < 1 || cqe > SOFTRC_MAX_CQE || vec != 0) { errno = EINVAL; return NULL; }
  struct softrc_cq *q = calloc(1, sizeof *q);
  if (!q || !(q->wc = calloc((size_t)cqe + 1, sizeof *q->wc))) { free(q); errno = ENOMEM; return NULL; }
  q->cap = (uint32_t)cqe + 1;
  pthread_mutex_init(&q->lock, NULL);
  q->cq.context = c; q->cq.channel = ch; q->cq.cq_context = cq_context; q->cq.cqe = cqe;
  pthread_mutex_init(&q->cq.mutex, NULL);
  pthread_cond_init(&q->cq.cond, NULL);
  if (ch) ch->refcnt++;
  LIVE(L_CQ, 1);
  return &q->cq;
}
int ibv_destroy_cq(struct ibv_cq *cq) {
  struct softrc_cq *q = (struct softrc_cq *)cq;
  if (__atomic_load_n(&q->refs, __ATOMIC_ACQUIRE)) return EBUSY;
  if (cq->channel) cq->channel->refcnt--;
  free(q->wc);
  free(q);
  LIVE(L_CQ, -1);
  return 0;
}

/* Called by the engine (and by flushes in app threads). Full CQ: overrun, IBV_EVENT_CQ_ERR. */
int softrc_cq_push(struct softrc_cq *q, const struct ibv_wc *wc) {
  int notify = 0, over = 0;
  pthread_mutex_lock(&q->lock);
  if (__atomic_exchange_n(&softrc_faults.cq_overrun, 0, __ATOMIC_ACQ_REL) || (q->tail + 1) % q->cap == q->head) {
    over = !q->overrun;
    q->overrun = 1;
  } else {
    q->wc[q->tail] = *wc;
    q->tail = (q->tail + 1) % q->cap;
    if (q->armed) { q->armed = 0; notify = 1; }
  }
  pthread_mutex_unlock(&q->lock);
  if (over) softrc_async(q->cq.context, IBV_EVENT_CQ_ERR, &q->cq);
  if (notify && q->cq.channel) {
    struct ibv_cq *p = &q->cq;
    if (write(((int *)(q->cq.channel + 1))[0], &p, sizeof p) != sizeof p) { /* full: dropped */ }
  }
  return over ? -1 : 0;
}

static int poll_once(struct softrc_cq *q, int n, struct ibv_wc *wc) {
  int got = 0;
  pthread_mutex_lock(&q->lock);
  while (got < n && q->head != q->tail) {
    wc[got++] = q->wc[q->head];
    q->head = (q->head + 1) % q->cap;
  }
  pthread_mutex_unlock(&q->lock);
  return got;
}

/* Empty: runs an engine pass here (softrc_progress), else yields the CPU to the engine. */
static int poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc) {
  struct softrc_cq *q = (struct softrc_cq *)cq;
  int got = poll_once(q, n, wc);
  if (got || n <= 0) return got;
  if (softrc_progress()) return poll_once(q, n, wc);
  sched_yield();
  return 0;
}

static int req_notify_cq(struct ibv_cq *cq, int solicited_only) {
  (void)solicited_only;
  struct softrc_cq *q = (struct softrc_cq *)cq;
  if (!cq->channel) return EINVAL;
  pthread_mutex_lock(&q->lock);
  q->armed = 1;
  pthread_mutex_unlock(&q->lock);
  return 0;
}

int ibv_get_cq_event(struct ibv_comp_channel *ch, struct ibv_cq **cq, void **cq_context) {
  struct ibv_cq *p;
  if (read(ch->fd, &p, sizeof p) != sizeof p) return -1;
  *cq = p;
  *cq_context = p->cq_context;
  return 0;
}
void ibv_ack_cq_events(struct ibv_cq *cq, unsigned int n) { (void)cq; (void)n; }

/* ---- SRQ ---- */

struct ibv_srq *ibv_create_srq(struct ibv_pd *pd, struct ibv_srq_init_attr *a) {
  uint32_t cap = a->attr.max_wr, sge = a->attr.max_sge ? a->attr.max_sge : 1;
  if (cap < 1 || cap > SOFTRC_MAX_SRQ_WR || sge > SOFTRC_MAX_SGE) { errno = EINVAL; return NULL; }
  struct softrc_srq *s = calloc(1, sizeof *s);
  if (!s) { errno = ENOMEM; return NULL; }
  s->wr = calloc(cap + 1, sizeof *s->wr);
  s->sge = calloc((size_t)(cap + 1) * sge, sizeof *s->sge);
  if (!s->wr || !s->sge) { free(s->wr); free(s->sge); free(s); errno = ENOMEM; return NULL; }
  s->cap = cap + 1; s->max_sge = sge; s->limit = a->attr.srq_limit;
  pthread_mutex_init(&s->lock, NULL);
  s->srq.context = pd->context; s->srq.pd = pd; s->srq.srq_context = a->srq_context;
  pthread_mutex_init(&s->srq.mutex, NULL);
  pthread_cond_init(&s->srq.cond, NULL);
  a->attr.max_wr = cap; a->attr.max_sge = sge;
  REF((struct softrc_pd *)pd, 1);
  LIVE(L_SRQ, 1);
  return &s->srq;
}

int ibv_modify_srq(struct ibv_srq *srq, struct ibv_srq_attr *a, int mask) {
  struct softrc_srq *s = (struct softrc_srq *)srq;
  if (mask & IBV_SRQ_MAX_WR) return EINVAL; /* resize: not supported by the fixture */
  if (mask & IBV_SRQ_LIMIT) {
    if (a->srq_limit >= s->cap) return EINVAL;
    pthread_mutex_lock(&s->lock);
    s->limit = a->srq_limit;
    pthread_mutex_unlock(&s->lock);
  }
  return 0;
}
int ibv_query_srq(struct ibv_srq *srq, struct ibv_srq_attr *a) {
  struct softrc_srq *s = (struct softrc_srq *)srq;
  a->max_wr = s->cap - 1; a->max_sge = s->max_sge; a->srq_limit = s->limit;
  return 0;
}
int ibv_destroy_srq(struct ibv_srq *srq) {
  struct softrc_srq *s = (struct softrc_srq *)srq;
  if (__atomic_load_n(&s->refs, __ATOMIC_ACQUIRE)) return EBUSY;
  REF((struct softrc_pd *)srq->pd, -1);
  free(s->wr); free(s->sge); free(s);
  LIVE(L_SRQ, -1);
  return 0;
}

static int post_srq_recv(struct ibv_srq *srq, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad) {
  struct softrc_srq *s = (struct softrc_srq *)srq;
  int rc = 0;
  pthread_mutex_lock(&s->lock);
  for (; wr; wr = wr->next) {
    if ((s->tail + 1) % s->cap == s->head) { rc = ENOMEM; break; }
    if (wr->num_sge < 0 || (uint32_t)wr->num_sge > s->max_sge) { rc = EINVAL; break; }
    s->wr[s->tail] = *wr;
    s->wr[s->tail].sg_list = &s->sge[s->tail * s->max_sge];
    memcpy(s->wr[s->tail].sg_list, wr->sg_list, (size_t)wr->num_sge * sizeof *wr->sg_list);
    s->tail = (s->tail + 1) % s->cap;
  }
  pthread_mutex_unlock(&s->lock);
  if (rc && bad) *bad = wr;
  return rc;
}

/* Takes one receive from the SRQ (engine thread); fires the limit event once when the count
 * drops below the armed limit (the limit then disarms, as on hardware). */
int softrc_srq_take(struct softrc_srq *s, struct ibv_recv_wr *out, struct ibv_sge *sges) {
  int fire = 0, ok = 0;
  pthread_mutex_lock(&s->lock);
  if (s->head != s->tail) {
    *out = s->wr[s->head];
    memcpy(sges, out->sg_list, (size_t)out->num_sge * sizeof *sges);
    out->sg_list = sges;
    s->head = (s->head + 1) % s->cap;
    ok = 1;
    uint32_t left = (s->tail + s->cap - s->head) % s->cap;
    if (s->limit && left < s->limit) { s->limit = 0; fire = 1; }
  }
  pthread_mutex_unlock(&s->lock);
  if (fire) softrc_async(s->srq.context, IBV_EVENT_SRQ_LIMIT_REACHED, &s->srq);
  return ok;
}

/* ---- strings ---- */

const char *ibv_wc_status_str(enum ibv_wc_status s) {
  static const char *n[] = {"success", "local length error", "local QP operation error",
    "local EE context operation error", "local protection error", "Work Request Flushed Error",
    "memory management operation error", "bad response error", "local access error",
    "remote invalid request error", "remote access error", "remote operation error",
    "transport retry counter exceeded", "RNR retry counter exceeded"};
  return (unsigned)s < sizeof n / sizeof *n ? n[s] : "unknown";
}
const char *ibv_event_type_str(enum ibv_event_type e) {
  switch (e) {
  case IBV_EVENT_CQ_ERR: return "CQ error";
  case IBV_EVENT_QP_FATAL: return "local work queue catastrophic error";
  case IBV_EVENT_SRQ_LIMIT_REACHED: return "SRQ limit reached";
  default: return "unknown";
  }
}
const char *ibv_port_state_str(enum ibv_port_state s) { return s == IBV_PORT_ACTIVE ? "PORT_ACTIVE" : "PORT_DOWN"; }
const char *ibv_node_type_str(enum ibv_node_type t) { return t == IBV_NODE_CA ? "InfiniBand channel adapter" : "unknown"; }
