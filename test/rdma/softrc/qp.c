/*
 * softrc (TEST FIXTURE, never shipped): RC queue pairs. Creation picks a QP number by creating
 * its inbox segment with O_EXCL (see softrc.h for the layout); ibv_modify_qp enforces the RC
 * state machine with the attribute masks hardware requires (RESET->INIT->RTR->RTS, any->ERR,
 * any->RESET; anything else EINVAL); RTR maps the peer's inbox by dest_qp_num. post_send and
 * post_recv are the ops the header's static inline functions call. Moving to ERR flushes every
 * outstanding WR with IBV_WC_WR_FLUSH_ERR (a failed peer: the oldest gets RETRY_EXC_ERR) and,
 * for a QP on an SRQ, raises IBV_EVENT_QP_LAST_WQE_REACHED (as the kernel does once such a QP in
 * ERR will consume no more SRQ receives). Destroying a QP drops its completions still unpolled
 * in its receive CQ, as rdma-core's mlx5 does (__mlx5_cq_clean): a receive an SRQ lost that way
 * is never reported, so a consumer that destroys a QP before polling it loses those receives
 * (softrc_srq_posted(srq) shows the SRQ's real count).
 */
#include "softrc.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

pthread_mutex_t softrc_qlist_lock = PTHREAD_MUTEX_INITIALIZER;
struct softrc_qp *softrc_qps;

void softrc_path(char *buf, size_t n, const char *kind, unsigned id) {
  snprintf(buf, n, "%s/softrc-%u-%s-%u", softrc_dir(), (unsigned)getuid(), kind, id);
}

/* A process that is exiting (PF_EXITING: its fds, sockets included, close during exit, so a
 * survivor may hear of the death before the process is gone) or a zombie not yet reaped counts
 * as dead: kill(pid, 0) alone says both are alive. */
int softrc_pid_alive(pid_t pid) {
  if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM)) return 0;
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 1;
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
  char state = 0;
  unsigned long flags = 0;
  /* fields after the name: state ppid pgrp session tty_nr tpgid flags */
  if (!p || sscanf(p + 1, " %c %*d %*d %*d %*d %*d %lu", &state, &flags) != 2) return 1;
  return state != 'Z' && state != 'X' && !(flags & 0x4 /* PF_EXITING */);
}

/* Maps the inbox of qpn; create: O_EXCL (EEXIST when taken). */
struct softrc_seg *softrc_seg_map(uint32_t qpn, int create) {
  char path[256];
  softrc_path(path, sizeof path, "qp", qpn);
  int fd = open(path, create ? O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC : O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return NULL;
  if (create && ftruncate(fd, sizeof(struct softrc_seg)) != 0) { close(fd); unlink(path); return NULL; }
  void *p = mmap(NULL, sizeof(struct softrc_seg), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) { if (create) unlink(path); return NULL; }
  return p;
}

struct ibv_qp *ibv_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *a) {
  if (a->qp_type != IBV_QPT_RC || !a->send_cq || (!a->recv_cq && !a->srq) ||
      a->cap.max_send_wr > SOFTRC_MAX_QP_WR || a->cap.max_recv_wr > SOFTRC_MAX_QP_WR ||
      a->cap.max_send_sge > SOFTRC_MAX_SGE || a->cap.max_recv_sge > SOFTRC_MAX_SGE ||
      a->cap.max_inline_data > SOFTRC_MAX_INLINE) { errno = EINVAL; return NULL; }
  struct softrc_qp *q = calloc(1, sizeof *q);
  if (!q) { errno = ENOMEM; return NULL; }
  q->cap_send = a->cap.max_send_wr ? a->cap.max_send_wr : 1;
  q->cap_recv = a->srq ? 0 : (a->cap.max_recv_wr ? a->cap.max_recv_wr : 1);
  q->max_sge = SOFTRC_MAX_SGE;
  q->max_inline = SOFTRC_MAX_INLINE;
  q->sq = calloc(q->cap_send, sizeof *q->sq);
  q->rwr = calloc(q->cap_recv + 1, sizeof *q->rwr);
  q->rsge = calloc((size_t)(q->cap_recv + 1) * SOFTRC_MAX_SGE, sizeof *q->rsge);
  if (!q->sq || !q->rwr || !q->rsge) goto nomem;
  pid_t pid = getpid();
  for (unsigned i = 1; i < 256 && !q->seg; i++) {
    uint32_t qpn = ((uint32_t)(pid & 0xffff) << 8) | i;
    q->seg = softrc_seg_map(qpn, 1);
    if (!q->seg && errno == EEXIST) { /* stale from a dead process? take it over */
      struct softrc_seg *old = softrc_seg_map(qpn, 0);
      if (old) {
        /* SYNC: a dead owner wrote these long ago; a live one is left alone */
        int dead = __atomic_load_n(&old->magic, __ATOMIC_ACQUIRE) == SOFTRC_MAGIC && !softrc_pid_alive(old->owner_pid);
        munmap(old, sizeof *old);
        if (dead) { char path[256]; softrc_path(path, sizeof path, "qp", qpn); unlink(path); i--; }
      }
      continue;
    }
    if (q->seg) {
      q->seg->qpn = qpn; q->seg->owner_pid = pid; /* SYNC: published by the magic store below */
      /* SYNC: the peer checks magic/state; publish them last */
      __atomic_store_n(&q->seg->state, IBV_QPS_RESET, __ATOMIC_RELEASE);
      __atomic_store_n(&q->seg->magic, SOFTRC_MAGIC, __ATOMIC_RELEASE);
      q->qp.qp_num = qpn;
    }
  }
  if (!q->seg) goto nomem;
  pthread_mutex_init(&q->lock, NULL);
  q->qp.context = pd->context; q->qp.qp_context = a->qp_context; q->qp.pd = pd;
  q->qp.send_cq = a->send_cq; q->qp.recv_cq = a->recv_cq; q->qp.srq = a->srq;
  q->qp.state = IBV_QPS_RESET; q->qp.qp_type = IBV_QPT_RC;
  pthread_mutex_init(&q->qp.mutex, NULL);
  pthread_cond_init(&q->qp.cond, NULL);
  q->sq_sig_all = a->sq_sig_all;
  a->cap.max_inline_data = SOFTRC_MAX_INLINE;
  REF((struct softrc_pd *)pd, 1);
  REF((struct softrc_cq *)a->send_cq, 1);
  if (a->recv_cq) REF((struct softrc_cq *)a->recv_cq, 1);
  if (a->srq) REF((struct softrc_srq *)a->srq, 1);
  LIVE(L_QP, 1);
  pthread_mutex_lock(&softrc_qlist_lock);
  softrc_bell_ref(1);
  q->next = softrc_qps; softrc_qps = q;
  pthread_mutex_unlock(&softrc_qlist_lock);
  return &q->qp;
nomem:
  free(q->sq); free(q->rwr); free(q->rsge); free(q);
  errno = ENOMEM;
  return NULL;
}

static void unmap_peer(struct softrc_qp *q) {
  if (q->peer) munmap(q->peer, sizeof *q->peer);
  if (q->peer_bell) munmap(q->peer_bell, sizeof *q->peer_bell);
  q->peer = NULL; q->peer_bell = NULL; q->peer_dead = 0;
}

/* For tests: receives posted to `srq` now (what the device holds, whatever its user counts). */
int softrc_srq_posted(struct ibv_srq *srq) {
  struct softrc_srq *s = (struct softrc_srq *)srq;
  pthread_mutex_lock(&s->lock);
  int n = (int)((s->tail + s->cap - s->head) % s->cap);
  pthread_mutex_unlock(&s->lock);
  return n;
}

/* Drops qpn's completions from cq's ring (keeping the others in order), as mlx5's CQ clean on
 * QP destroy does. */
static void cq_clean(struct softrc_cq *c, uint32_t qpn) {
  pthread_mutex_lock(&c->lock);
  uint32_t w = c->head;
  for (uint32_t r = c->head; r != c->tail; r = (r + 1) % c->cap) {
    if (c->wc[r].qp_num == qpn) continue;
    if (w != r) c->wc[w] = c->wc[r];
    w = (w + 1) % c->cap;
  }
  c->tail = w;
  pthread_mutex_unlock(&c->lock);
}

int ibv_destroy_qp(struct ibv_qp *qp) {
  struct softrc_qp *q = (struct softrc_qp *)qp, **pp;
  char path[256];
  pthread_mutex_lock(&softrc_qlist_lock);
  for (pp = &softrc_qps; *pp; pp = &(*pp)->next) if (*pp == q) { *pp = q->next; break; }
  softrc_bell_ref(-1);
  pthread_mutex_unlock(&softrc_qlist_lock);
  /* Off the list: the engine delivers nothing more to it. Its unpolled receive completions go. */
  if (qp->srq && qp->recv_cq) cq_clean((struct softrc_cq *)qp->recv_cq, qp->qp_num);
  __atomic_store_n(&q->seg->state, SEG_GONE, __ATOMIC_RELEASE); /* SYNC: the peer sees it gone */
  softrc_path(path, sizeof path, "qp", qp->qp_num);
  unlink(path);
  munmap(q->seg, sizeof *q->seg);
  /* A dead peer's files go here too: a survivor that destroys its QP at once (its transport heard
   * of the death another way: rdma_cm, a socket) may beat the watchdog, which would remove them. */
  if (q->peer && !q->peer_dead) {
    pid_t pid = q->peer->owner_pid; /* SYNC: written before the peer's magic, never again */
    if (!softrc_pid_alive(pid)) softrc_unlink_dead(q->dest_qpn, pid);
  }
  unmap_peer(q);
  REF((struct softrc_pd *)qp->pd, -1);
  REF((struct softrc_cq *)qp->send_cq, -1);
  if (qp->recv_cq) REF((struct softrc_cq *)qp->recv_cq, -1);
  if (qp->srq) REF((struct softrc_srq *)qp->srq, -1);
  free(q->sq); free(q->rwr); free(q->rsge); free(q);
  LIVE(L_QP, -1);
  return 0;
}

static void set_state(struct softrc_qp *q, enum ibv_qp_state s) {
  q->qp.state = s;
  __atomic_store_n(&q->seg->state, (uint32_t)s, __ATOMIC_RELEASE); /* SYNC: read by the peer */
}

static void flush_wc(struct ibv_cq *cq, uint64_t wr_id, enum ibv_wc_status st, enum ibv_wc_opcode op, uint32_t qpn) {
  struct ibv_wc wc;
  memset(&wc, 0, sizeof wc);
  wc.wr_id = wr_id; wc.status = st; wc.opcode = op; wc.qp_num = qpn;
  softrc_cq_push((struct softrc_cq *)cq, &wc);
}

/* q->lock held. Flushes the send queue and the QP's own receive queue. */
void softrc_qp_to_err(struct softrc_qp *q, int peer_failed) {
  if (q->qp.state == IBV_QPS_ERR) return;
  set_state(q, IBV_QPS_ERR);
  q->rnr_resend_at_ns = 0;
  for (uint32_t i = q->sq_acked; i != q->sq_posted; i++) {
    struct softrc_swqe *w = &q->sq[i % q->cap_send];
    enum ibv_wc_status st = peer_failed && i == q->sq_acked ? IBV_WC_RETRY_EXC_ERR : IBV_WC_WR_FLUSH_ERR;
    flush_wc(q->qp.send_cq, w->wr_id, st, w->wc_op, q->qp.qp_num);
  }
  q->sq_freed = q->sq_acked = q->sq_sent = q->sq_posted;
  while (q->rq_head != q->rq_tail) {
    flush_wc(q->qp.recv_cq, q->rwr[q->rq_head].wr_id, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV, q->qp.qp_num);
    q->rq_head = (q->rq_head + 1) % (q->cap_recv + 1);
  }
  if (peer_failed) softrc_async(q->qp.context, IBV_EVENT_QP_FATAL, &q->qp);
  /* The engine takes SRQ receives for a QP only while it is not in ERR (q->lock held here). */
  if (q->qp.srq) softrc_async(q->qp.context, IBV_EVENT_QP_LAST_WQE_REACHED, &q->qp);
}

int softrc_recv_take(struct softrc_qp *q, struct ibv_recv_wr *out, struct ibv_sge *sges) {
  if (q->qp.srq) return softrc_srq_take((struct softrc_srq *)q->qp.srq, out, sges);
  if (q->rq_head == q->rq_tail) return 0;
  *out = q->rwr[q->rq_head];
  memcpy(sges, out->sg_list, (size_t)out->num_sge * sizeof *sges);
  out->sg_list = sges;
  q->rq_head = (q->rq_head + 1) % (q->cap_recv + 1);
  return 1;
}

#define NEED(m) if ((mask & (m)) != (m)) { rc = EINVAL; goto out; }
int ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *a, int mask) {
  struct softrc_qp *q = (struct softrc_qp *)qp;
  int rc = 0;
  pthread_mutex_lock(&q->lock);
  enum ibv_qp_state cur = qp->state, to = (mask & IBV_QP_STATE) ? a->qp_state : cur;
  if (to == IBV_QPS_ERR) { softrc_qp_to_err(q, 0); goto out; }
  if (to == IBV_QPS_RESET) {
    q->sq_freed = q->sq_acked = q->sq_sent = q->sq_posted = 0;
    q->rq_head = q->rq_tail = 0;
    q->rnr_resend_at_ns = 0; q->drop_until_psn_valid = 0;
    unmap_peer(q);
    set_state(q, IBV_QPS_RESET);
    goto out;
  }
  if (cur == IBV_QPS_RESET && to == IBV_QPS_INIT) {
    NEED(IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    if (a->port_num != 1 || a->pkey_index != 0) { rc = EINVAL; goto out; }
  } else if (cur == IBV_QPS_INIT && to == IBV_QPS_INIT) {
  } else if (cur == IBV_QPS_INIT && to == IBV_QPS_RTR) {
    NEED(IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    struct softrc_seg *p = softrc_seg_map(a->dest_qp_num, 0);
    if (!p || __atomic_load_n(&p->magic, __ATOMIC_ACQUIRE) != SOFTRC_MAGIC) { /* SYNC: pairs with create's release */
      if (p) munmap(p, sizeof *p);
      rc = EINVAL; goto out;
    }
    char path[256];
    softrc_path(path, sizeof path, "bell", (unsigned)p->owner_pid); /* SYNC: written before magic */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    void *b = fd >= 0 ? mmap(NULL, sizeof(struct softrc_bell), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (fd >= 0) close(fd);
    if (b == MAP_FAILED) { munmap(p, sizeof *p); rc = EINVAL; goto out; }
    unmap_peer(q);
    q->peer = p; q->peer_bell = b;
    q->dest_qpn = a->dest_qp_num; q->rq_psn = a->rq_psn;
  } else if (cur == IBV_QPS_RTR && to == IBV_QPS_RTS) {
    NEED(IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
  } else if (cur == IBV_QPS_RTS && to == IBV_QPS_RTS) {
  } else { rc = EINVAL; goto out; }
  if (mask & IBV_QP_ACCESS_FLAGS) q->access = (int)a->qp_access_flags;
  if (mask & IBV_QP_MIN_RNR_TIMER) q->min_rnr_timer = a->min_rnr_timer;
  if (mask & IBV_QP_RNR_RETRY) q->rnr_retry = q->rnr_left = a->rnr_retry;
  if (mask & IBV_QP_RETRY_CNT) q->retry_cnt = a->retry_cnt;
  if (mask & IBV_QP_TIMEOUT) q->timeout = a->timeout;
  if (mask & IBV_QP_SQ_PSN) q->sq_psn = a->sq_psn;
  if (mask & IBV_QP_PATH_MTU) q->path_mtu = (int)a->path_mtu;
  if (mask & IBV_QP_MAX_QP_RD_ATOMIC) q->max_rd_atomic = a->max_rd_atomic;
  if (mask & IBV_QP_MAX_DEST_RD_ATOMIC) q->max_dest_rd_atomic = a->max_dest_rd_atomic;
  set_state(q, to);
out:
  pthread_mutex_unlock(&q->lock);
  return rc;
}
#undef NEED

int ibv_query_qp(struct ibv_qp *qp, struct ibv_qp_attr *a, int mask, struct ibv_qp_init_attr *init) {
  struct softrc_qp *q = (struct softrc_qp *)qp;
  (void)mask;
  memset(a, 0, sizeof *a);
  pthread_mutex_lock(&q->lock);
  a->qp_state = a->cur_qp_state = qp->state;
  a->dest_qp_num = q->dest_qpn; a->sq_psn = q->sq_psn; a->rq_psn = q->rq_psn;
  a->min_rnr_timer = (uint8_t)q->min_rnr_timer; a->rnr_retry = (uint8_t)q->rnr_retry;
  a->retry_cnt = (uint8_t)q->retry_cnt; a->timeout = (uint8_t)q->timeout;
  a->max_rd_atomic = (uint8_t)q->max_rd_atomic; a->max_dest_rd_atomic = (uint8_t)q->max_dest_rd_atomic;
  a->qp_access_flags = (unsigned)q->access; a->port_num = 1;
  a->path_mtu = q->path_mtu ? (enum ibv_mtu)q->path_mtu : IBV_MTU_4096;
  a->cap.max_send_wr = q->cap_send; a->cap.max_recv_wr = q->cap_recv;
  a->cap.max_send_sge = a->cap.max_recv_sge = SOFTRC_MAX_SGE; a->cap.max_inline_data = SOFTRC_MAX_INLINE;
  pthread_mutex_unlock(&q->lock);
  if (init) {
    memset(init, 0, sizeof *init);
    init->send_cq = qp->send_cq; init->recv_cq = qp->recv_cq; init->srq = qp->srq;
    init->cap = a->cap; init->qp_type = IBV_QPT_RC; init->sq_sig_all = q->sq_sig_all;
  }
  return 0;
}

static enum ibv_wc_opcode wc_op_of(enum ibv_wr_opcode op) {
  switch (op) {
  case IBV_WR_RDMA_WRITE: case IBV_WR_RDMA_WRITE_WITH_IMM: return IBV_WC_RDMA_WRITE;
  case IBV_WR_RDMA_READ: return IBV_WC_RDMA_READ;
  case IBV_WR_ATOMIC_CMP_AND_SWP: return IBV_WC_COMP_SWAP;
  default: return IBV_WC_SEND;
  }
}

static int msg_type_of(enum ibv_wr_opcode op) {
  switch (op) {
  case IBV_WR_SEND: return M_SEND;
  case IBV_WR_SEND_WITH_IMM: return M_SEND_IMM;
  case IBV_WR_RDMA_WRITE: return M_WRITE;
  case IBV_WR_RDMA_WRITE_WITH_IMM: return M_WRITE_IMM;
  case IBV_WR_RDMA_READ: return M_READ;
  case IBV_WR_ATOMIC_CMP_AND_SWP: return M_CAS;
  default: return 0;
  }
}

/* Builds one request; returns 0, an errno for the post, or -1 for a local protection error. */
static int build(struct softrc_qp *q, struct ibv_send_wr *wr, struct softrc_swqe *w) {
  struct softrc_msg *m = &w->msg;
  int type = msg_type_of(wr->opcode);
  uint32_t total = 0;
  if (!type || wr->num_sge < 0 || (uint32_t)wr->num_sge > q->max_sge) return EINVAL;
  for (int i = 0; i < wr->num_sge; i++) total += wr->sg_list[i].length;
  int inl = (wr->send_flags & IBV_SEND_INLINE) && type != M_READ && type != M_CAS;
  if (inl && total > q->max_inline) return EINVAL;
  if (type == M_CAS && (wr->num_sge != 1 || total != 8)) return EINVAL;
  memset(m, 0, offsetof(struct softrc_msg, data));
  m->type = (uint32_t)type; m->wr_id = wr->wr_id; m->len = total; m->src_pid = getpid();
  m->imm = wr->imm_data;
  if (type == M_CAS) {
    m->raddr = wr->wr.atomic.remote_addr; m->rkey = wr->wr.atomic.rkey;
    m->compare = wr->wr.atomic.compare_add; m->swap = wr->wr.atomic.swap;
  } else { m->raddr = wr->wr.rdma.remote_addr; m->rkey = wr->wr.rdma.rkey; }
  for (int i = 0; i < wr->num_sge; i++) {
    struct ibv_sge *s = &wr->sg_list[i];
    if (!inl) {
      struct softrc_mr *mr = softrc_mr_find(s->lkey, q->qp.pd);
      if (!mr || s->addr < (uintptr_t)mr->mr.addr || s->addr + s->length > (uintptr_t)mr->mr.addr + mr->mr.length) return -1;
      if ((type == M_READ || type == M_CAS) && !(mr->access & IBV_ACCESS_LOCAL_WRITE)) return -1;
    }
    m->sge[i].addr = s->addr; m->sge[i].len = s->length;
  }
  m->nsge = (uint32_t)wr->num_sge;
  if ((inl || total <= SOFTRC_SLOT_DATA) && type != M_READ && type != M_CAS) {
    uint32_t off = 0;
    for (int i = 0; i < wr->num_sge; i++) {
      memcpy(m->data + off, (void *)(uintptr_t)wr->sg_list[i].addr, wr->sg_list[i].length);
      off += wr->sg_list[i].length;
    }
    m->inl = 1;
  }
  w->wr_id = wr->wr_id;
  w->signaled = q->sq_sig_all || (wr->send_flags & IBV_SEND_SIGNALED);
  w->wc_op = wc_op_of(wr->opcode);
  w->cas_dst = type == M_CAS ? wr->sg_list[0].addr : 0;
  return 0;
}

int softrc_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad) {
  struct softrc_qp *q = (struct softrc_qp *)qp;
  int rc = 0;
  pthread_mutex_lock(&q->lock);
  if (qp->state != IBV_QPS_RTS && qp->state != IBV_QPS_ERR) rc = EINVAL;
  for (; wr && !rc; wr = wr->next) {
    if (q->sq_posted - q->sq_freed >= q->cap_send) { rc = ENOMEM; break; }
    struct softrc_swqe *w = &q->sq[q->sq_posted % q->cap_send];
    int r = build(q, wr, w);
    if (r > 0) { rc = r; break; }
    if (r < 0) { /* local protection error: completes in error, QP to ERR */
      flush_wc(qp->send_cq, wr->wr_id, IBV_WC_LOC_PROT_ERR, wc_op_of(wr->opcode), qp->qp_num);
      softrc_qp_to_err(q, 0);
      continue;
    }
    w->msg.psn = q->sq_psn++ & 0xffffff;
    q->sq_posted++;
    if (qp->state == IBV_QPS_ERR) {
      flush_wc(qp->send_cq, w->wr_id, IBV_WC_WR_FLUSH_ERR, w->wc_op, qp->qp_num);
      q->sq_freed = q->sq_acked = q->sq_sent = q->sq_posted;
    }
  }
  if (!rc || rc == ENOMEM) softrc_kick_sq(q);
  pthread_mutex_unlock(&q->lock);
  if (rc && bad) *bad = wr;
  return rc;
}

int softrc_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad) {
  struct softrc_qp *q = (struct softrc_qp *)qp;
  int rc = 0;
  pthread_mutex_lock(&q->lock);
  if (qp->srq || qp->state == IBV_QPS_RESET) rc = EINVAL;
  for (; wr && !rc; wr = wr->next) {
    uint32_t n = q->cap_recv + 1;
    if ((q->rq_tail + 1) % n == q->rq_head) { rc = ENOMEM; break; }
    if (wr->num_sge < 0 || wr->num_sge > SOFTRC_MAX_SGE) { rc = EINVAL; break; }
    if (qp->state == IBV_QPS_ERR) { flush_wc(qp->recv_cq, wr->wr_id, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV, qp->qp_num); continue; }
    q->rwr[q->rq_tail] = *wr;
    q->rwr[q->rq_tail].sg_list = &q->rsge[q->rq_tail * SOFTRC_MAX_SGE];
    memcpy(q->rwr[q->rq_tail].sg_list, wr->sg_list, (size_t)wr->num_sge * sizeof *wr->sg_list);
    q->rq_tail = (q->rq_tail + 1) % n;
  }
  pthread_mutex_unlock(&q->lock);
  if (rc && bad) *bad = wr;
  return rc;
}
