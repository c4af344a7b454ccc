/*
 * softrc (TEST FIXTURE, never shipped): the per-process engine thread, started by the first
 * ibv_open_device. It drains every local QP's inbox (softrc.h) in order and acts as
 *   responder: SEND / SEND_WITH_IMM / WRITE_WITH_IMM consume a receive (QP or SRQ; none ->
 *     RNR NAK, later requests dropped until the NAKed one is resent), WRITE / READ / CAS run
 *     against this process's MRs after the rkey, access and bounds checks (failure -> NAK,
 *     both QPs to ERR), bulk bytes moved with process_vm_readv / process_vm_writev;
 *   requester: ACKs complete send WRs in order (CAS writes the old value locally), RNR NAKs
 *     rewind the send queue and resend after the responder's min_rnr_timer, up to rnr_retry
 *     (7: forever), then IBV_WC_RNR_RETRY_EXC_ERR; a silent peer past 4.096 us * 2^timeout *
 *     (retry_cnt + 1) completes with IBV_WC_RETRY_EXC_ERR;
 *   watchdog: a peer whose process died or whose QP is gone moves the QP to ERR (outstanding
 *     WRs flushed, IBV_EVENT_QP_FATAL) and a dead peer's segments are unlinked.
 * Idle, it sleeps on its doorbell futex (softrc_bell): 2 ms while a WR is outstanding (timers),
 * else 20 ms (the watchdog).
 */
#include "softrc.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

struct softrc_bell *softrc_own_bell; /* SYNC: set by softrc_bell_ref, read by the engine */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pid_t bell_pid;
static int bell_refs; /* live QPs; under softrc_qlist_lock */

/* The doorbell file exists while this process has QPs (a process that exits without running
 * destructors, as Bun does, then leaves nothing behind once its QPs are destroyed). Each
 * 0 -> 1 creates a fresh file; the previous mapping stays mapped (one page per generation) so
 * a stale peer or a sleeping engine never touches unmapped memory. softrc_qlist_lock held. */
void softrc_bell_ref(int delta) {
  char path[256];
  bell_pid = getpid();
  softrc_path(path, sizeof path, "bell", (unsigned)bell_pid);
  if (delta > 0 && bell_refs++ == 0) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, sizeof(struct softrc_bell)) != 0) { perror("softrc: bell"); abort(); }
    void *b = mmap(NULL, sizeof(struct softrc_bell), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (b == MAP_FAILED) { perror("softrc: bell mmap"); abort(); }
    __atomic_store_n(&softrc_own_bell, (struct softrc_bell *)b, __ATOMIC_RELEASE);
  } else if (delta < 0 && --bell_refs == 0) {
    unlink(path);
  }
}

void softrc_ring(struct softrc_bell *b) {
  __atomic_add_fetch(&b->seq, 1, __ATOMIC_SEQ_CST);          /* SYNC: futex word */
  if (__atomic_load_n(&b->sleeping, __ATOMIC_SEQ_CST))        /* SYNC */
    syscall(SYS_futex, &b->seq, FUTEX_WAKE, 1, NULL, NULL, 0); /* SYNC: wakes the peer's engine */
}

/* q->lock held. Single producer into the peer's inbox (softrc.h). Requests may fill the ring
 * only up to SOFTRC_RING - SOFTRC_MAX_QP_WR slots (stale copies dropped after an RNR NAK may
 * still sit there when the resends go out), so the responses, at most one per request of the
 * peer's, always find room. Returns 0, or -1 when a request must wait for room. */
int softrc_send_msg(struct softrc_qp *q, const struct softrc_msg *m) {
  struct softrc_seg *p = q->peer;
  if (!p || __atomic_load_n(&p->state, __ATOMIC_ACQUIRE) == SEG_GONE) return 0; /* SYNC: lost, as on a wire */
  uint64_t h = p->head; /* SYNC: only we write it (plain read of our own store) */
  uint64_t used = h - __atomic_load_n(&p->tail, __ATOMIC_ACQUIRE); /* SYNC */
  if (used >= (m->type <= M_CAS ? SOFTRC_RING - SOFTRC_MAX_QP_WR : SOFTRC_RING)) return -1;
  size_t n = offsetof(struct softrc_msg, data) + (m->inl ? m->len : 0);
  memcpy(&p->slot[h % SOFTRC_RING], m, n); /* SYNC: a free slot (h - tail < RING); the consumer reads it after head */
  __atomic_store_n(&p->head, h + 1, __ATOMIC_RELEASE); /* SYNC: publishes the slot */
  softrc_ring(q->peer_bell);
  return 0;
}

/* q->lock held. Sends what is posted and not yet sent, while the peer's ring has room (the
 * engine calls it again each pass). */
void softrc_kick_sq(struct softrc_qp *q) {
  if (q->qp.state != IBV_QPS_RTS || q->rnr_resend_at_ns) return;
  uint64_t now = softrc_now_ns();
  for (; q->sq_sent != q->sq_posted; q->sq_sent++) {
    struct softrc_swqe *w = &q->sq[q->sq_sent % q->cap_send];
    w->sent_ns = now;
    if (softrc_send_msg(q, &w->msg) != 0) break;
  }
}

static const uint32_t rnr_us[32] = {655360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280,
  1920, 2560, 3840, 5120, 7680, 10240, 15360, 20480, 30720, 40960, 61440, 81920, 122880, 163840, 245760, 327680, 491520};

static void respond(struct softrc_qp *q, const struct softrc_msg *req, uint32_t type, uint64_t old) {
  struct softrc_msg r;
  memset(&r, 0, offsetof(struct softrc_msg, data));
  r.type = type; r.psn = req->psn; r.old = old;
  r.len = type == M_NAK_RNR ? (uint32_t)q->min_rnr_timer : req->len;
  softrc_send_msg(q, &r);
}

static void recv_wc(struct softrc_qp *q, uint64_t wr_id, enum ibv_wc_status st, enum ibv_wc_opcode op, uint32_t len, const struct softrc_msg *m, int imm) {
  struct ibv_wc wc;
  memset(&wc, 0, sizeof wc);
  wc.wr_id = wr_id; wc.status = st; wc.opcode = op; wc.byte_len = len;
  wc.qp_num = q->qp.qp_num; wc.src_qp = q->dest_qpn;
  if (imm) { wc.imm_data = m->imm; wc.wc_flags = IBV_WC_WITH_IMM; }
  softrc_cq_push((struct softrc_cq *)q->qp.recv_cq, &wc);
}

static void vm_refused(const char *what) {
  static int said;
  if ((errno == EPERM || errno == ENOSYS) && !__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
    fprintf(stderr, "softrc: %s refused (%s): the fixture moves bulk bytes between same-uid processes this way; "
      "it needs Yama ptrace_scope <= 1 and no seccomp filter on it\n", what, strerror(errno));
}

/* Moves m's payload into local memory dst (iovecs). 0 or -1. */
static int pull(const struct softrc_msg *m, struct iovec *dst, int ndst) {
  if (m->inl) {
    uint32_t off = 0;
    for (int i = 0; i < ndst && off < m->len; i++) {
      size_t n = dst[i].iov_len < m->len - off ? dst[i].iov_len : m->len - off;
      memcpy(dst[i].iov_base, m->data + off, n);
      off += (uint32_t)n;
    }
    return 0;
  }
  struct iovec src[SOFTRC_MAX_SGE];
  for (uint32_t i = 0; i < m->nsge; i++) { src[i].iov_base = (void *)(uintptr_t)m->sge[i].addr; src[i].iov_len = m->sge[i].len; }
  ssize_t n = process_vm_readv(m->src_pid, dst, (unsigned long)ndst, src, m->nsge, 0);
  if (n < 0) vm_refused("process_vm_readv");
  return n == (ssize_t)m->len ? 0 : -1;
}

/* Checks [addr, addr+len) against the MR of rkey for the access bit; NULL when refused. */
static void *remote_ok(struct softrc_qp *q, uint32_t rkey, uint64_t addr, uint32_t len, int bit) {
  struct softrc_mr *mr = softrc_mr_find(rkey, q->qp.pd);
  if (!mr || !(mr->access & bit) || !(q->access & bit)) return NULL;
  uintptr_t lo = (uintptr_t)mr->mr.addr;
  if (addr < lo || addr + len > lo + mr->mr.length || addr + len < addr) return NULL;
  return (void *)(uintptr_t)addr;
}

static void access_fail(struct softrc_qp *q, const struct softrc_msg *m, uint32_t nak) {
  respond(q, m, nak, 0);
  softrc_qp_to_err(q, 0);
}

static void on_request(struct softrc_qp *q, const struct softrc_msg *m) {
  if (q->qp.state != IBV_QPS_RTR && q->qp.state != IBV_QPS_RTS) return; /* silently dropped */
  /* The first packet on a QP that rdma_cm accepted but saw no RTU for (the kernel raises it in RTR) */
  if (__atomic_exchange_n(&q->comm_est_armed, 0, __ATOMIC_ACQ_REL)) softrc_async(q->qp.context, IBV_EVENT_COMM_EST, &q->qp);
  if (__atomic_load_n(&softrc_faults.drop_peer, __ATOMIC_ACQUIRE)) return;
  if (q->drop_until_psn_valid) {
    if (m->psn != q->drop_until_psn) return; /* after an RNR NAK: wait for the resend */
    q->drop_until_psn_valid = 0;
  }
  int after = __atomic_load_n(&softrc_faults.qp_err_after, __ATOMIC_ACQUIRE);
  if (after > 0 && __atomic_sub_fetch(&softrc_faults.qp_err_after, 1, __ATOMIC_ACQ_REL) == 0) {
    softrc_qp_to_err(q, 0);
    return;
  }
  struct ibv_recv_wr rwr;
  struct ibv_sge rsge[SOFTRC_MAX_SGE];
  int needs_recv = m->type == M_SEND || m->type == M_SEND_IMM || m->type == M_WRITE_IMM;
  if (needs_recv) {
    int storm = __atomic_load_n(&softrc_faults.rnr_storm, __ATOMIC_ACQUIRE);
    if ((storm > 0 && __atomic_sub_fetch(&softrc_faults.rnr_storm, 1, __ATOMIC_ACQ_REL) >= 0) || !softrc_recv_take(q, &rwr, rsge)) {
      q->drop_until_psn = m->psn; q->drop_until_psn_valid = 1;
      COUNT(C_RNR_NAK);
      respond(q, m, M_NAK_RNR, 0);
      return;
    }
  }
  if (m->type == M_SEND || m->type == M_SEND_IMM) {
    struct iovec dst[SOFTRC_MAX_SGE];
    uint32_t cap = 0;
    for (int i = 0; i < rwr.num_sge; i++) {
      struct softrc_mr *mr = softrc_mr_find(rsge[i].lkey, q->qp.pd);
      uintptr_t lo = mr ? (uintptr_t)mr->mr.addr : 0;
      if (!mr || !(mr->access & IBV_ACCESS_LOCAL_WRITE) || rsge[i].addr < lo || rsge[i].addr + rsge[i].length > lo + mr->mr.length) {
        recv_wc(q, rwr.wr_id, IBV_WC_LOC_PROT_ERR, IBV_WC_RECV, 0, m, 0);
        access_fail(q, m, M_NAK_INVREQ);
        return;
      }
      dst[i].iov_base = (void *)(uintptr_t)rsge[i].addr;
      dst[i].iov_len = rsge[i].length;
      cap += rsge[i].length;
    }
    if (cap < m->len) { recv_wc(q, rwr.wr_id, IBV_WC_LOC_LEN_ERR, IBV_WC_RECV, 0, m, 0); access_fail(q, m, M_NAK_INVREQ); return; }
    int nd = 0;
    for (uint32_t left = m->len; nd < rwr.num_sge && left; nd++) {
      if (dst[nd].iov_len > left) dst[nd].iov_len = left;
      left -= (uint32_t)dst[nd].iov_len;
    }
    if (pull(m, dst, nd) != 0) { recv_wc(q, rwr.wr_id, IBV_WC_REM_OP_ERR, IBV_WC_RECV, 0, m, 0); access_fail(q, m, M_NAK_INVREQ); return; }
    COUNT(C_RX_SEND);
    recv_wc(q, rwr.wr_id, IBV_WC_SUCCESS, IBV_WC_RECV, m->len, m, m->type == M_SEND_IMM);
    respond(q, m, M_ACK, 0);
  } else if (m->type == M_WRITE || m->type == M_WRITE_IMM) {
    if (m->len) {
      void *dst = remote_ok(q, m->rkey, m->raddr, m->len, IBV_ACCESS_REMOTE_WRITE);
      struct iovec d = {dst, m->len};
      if (!dst || pull(m, &d, 1) != 0) {
        if (m->type == M_WRITE_IMM) recv_wc(q, rwr.wr_id, IBV_WC_REM_ACCESS_ERR, IBV_WC_RECV_RDMA_WITH_IMM, 0, m, 0);
        access_fail(q, m, M_NAK_ACCESS);
        return;
      }
    }
    if (m->type == M_WRITE_IMM) {
      COUNT(C_RX_WRITE_IMM);
      recv_wc(q, rwr.wr_id, IBV_WC_SUCCESS, IBV_WC_RECV_RDMA_WITH_IMM, m->len, m, 1);
    }
    respond(q, m, M_ACK, 0);
  } else if (m->type == M_READ) {
    void *src = m->len ? remote_ok(q, m->rkey, m->raddr, m->len, IBV_ACCESS_REMOTE_READ) : (void *)1;
    if (!src) { access_fail(q, m, M_NAK_ACCESS); return; }
    if (m->len) {
      struct iovec s = {src, m->len}, d[SOFTRC_MAX_SGE];
      for (uint32_t i = 0; i < m->nsge; i++) { d[i].iov_base = (void *)(uintptr_t)m->sge[i].addr; d[i].iov_len = m->sge[i].len; }
      ssize_t n = process_vm_writev(m->src_pid, &s, 1, d, m->nsge, 0);
      if (n < 0) vm_refused("process_vm_writev");
      if (n != (ssize_t)m->len) { access_fail(q, m, M_NAK_INVREQ); return; }
    }
    respond(q, m, M_ACK, 0);
  } else if (m->type == M_CAS) {
    if (m->raddr & 7) { access_fail(q, m, M_NAK_INVREQ); return; }
    uint64_t *t = remote_ok(q, m->rkey, m->raddr, 8, IBV_ACCESS_REMOTE_ATOMIC);
    if (!t) { access_fail(q, m, M_NAK_ACCESS); return; }
    uint64_t expect = m->compare;
    __atomic_compare_exchange_n(t, &expect, m->swap, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    respond(q, m, M_ACK, expect); /* expect now holds the old value */
  }
}

/* Completes the oldest outstanding WR; a completion frees its slot and all before it. */
static void complete(struct softrc_qp *q, enum ibv_wc_status st) {
  struct softrc_swqe *w = &q->sq[q->sq_acked++ % q->cap_send];
  if (st == IBV_WC_SUCCESS && !w->signaled) return;
  q->sq_freed = q->sq_acked;
  struct ibv_wc wc;
  memset(&wc, 0, sizeof wc);
  wc.wr_id = w->wr_id; wc.status = st; wc.opcode = w->wc_op; wc.qp_num = q->qp.qp_num;
  wc.byte_len = (w->wc_op == IBV_WC_RDMA_READ || w->wc_op == IBV_WC_COMP_SWAP) ? w->msg.len : 0;
  softrc_cq_push((struct softrc_cq *)q->qp.send_cq, &wc);
}

static void on_response(struct softrc_qp *q, const struct softrc_msg *m) {
  if (q->qp.state != IBV_QPS_RTS) return;
  uint32_t i;
  for (i = q->sq_acked; i != q->sq_sent; i++) if (q->sq[i % q->cap_send].msg.psn == m->psn) break;
  if (i == q->sq_sent) return; /* stale (a response to a dropped copy) */
  while (q->sq_acked != i) complete(q, IBV_WC_SUCCESS);
  struct softrc_swqe *w = &q->sq[i % q->cap_send];
  if (m->type == M_ACK) {
    if (w->cas_dst) memcpy((void *)(uintptr_t)w->cas_dst, &m->old, 8);
    q->rnr_left = q->rnr_retry;
    complete(q, IBV_WC_SUCCESS);
  } else if (m->type == M_NAK_RNR) {
    if (q->rnr_retry != 7 && q->rnr_left-- <= 0) {
      complete(q, IBV_WC_RNR_RETRY_EXC_ERR);
      softrc_qp_to_err(q, 0);
      return;
    }
    q->sq_sent = i; /* rewind: everything from the NAKed request is resent */
    q->rnr_resend_at_ns = softrc_now_ns() + 1000ull * rnr_us[m->len & 31];
  } else {
    complete(q, m->type == M_NAK_ACCESS ? IBV_WC_REM_ACCESS_ERR : IBV_WC_REM_INV_REQ_ERR);
    softrc_qp_to_err(q, 0);
  }
}

void softrc_unlink_dead(uint32_t qpn, pid_t pid) {
  char path[256];
  softrc_path(path, sizeof path, "qp", qpn);
  unlink(path);
  softrc_path(path, sizeof path, "bell", (unsigned)pid);
  unlink(path);
}

/* q->lock held. Returns the number of messages handled. */
static int service(struct softrc_qp *q, uint64_t now, int watchdog) {
  struct softrc_seg *s = q->seg;
  uint64_t t = s->tail, h = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE); /* SYNC */
  int n = 0;
  for (; t != h && n < 256; t++, n++) {
    const struct softrc_msg *m = &s->slot[t % SOFTRC_RING]; /* SYNC: published by the acquire of head */
    if (m->type <= M_CAS) on_request(q, m); else on_response(q, m);
  }
  __atomic_store_n(&s->tail, t, __ATOMIC_RELEASE); /* SYNC: frees the slots */
  if (q->rnr_resend_at_ns && now >= q->rnr_resend_at_ns) q->rnr_resend_at_ns = 0;
  if (q->sq_sent != q->sq_posted) softrc_kick_sq(q);
  if (q->qp.state == IBV_QPS_RTS && q->timeout && q->sq_acked != q->sq_sent && !q->rnr_resend_at_ns) {
    uint64_t limit = (4096ull << q->timeout) * (uint64_t)(q->retry_cnt + 1);
    struct softrc_swqe *w = &q->sq[q->sq_acked % q->cap_send];
    /* `now` was read before this pass; a kick since then stamps sent_ns later (no unsigned wrap). */
    if (now > w->sent_ns && now - w->sent_ns > limit) {
      complete(q, IBV_WC_RETRY_EXC_ERR);
      softrc_qp_to_err(q, 0);
    }
  }
  if (watchdog && q->peer && !q->peer_dead) {
    pid_t pid = q->peer->owner_pid; /* SYNC: written before the peer's magic, never again */
    int gone = __atomic_load_n(&q->peer->state, __ATOMIC_ACQUIRE) == SEG_GONE; /* SYNC */
    if (!softrc_pid_alive(pid)) { softrc_unlink_dead(q->dest_qpn, pid); q->peer_dead = gone = 1; }
    if (gone && (q->qp.state == IBV_QPS_RTR || q->qp.state == IBV_QPS_RTS)) softrc_qp_to_err(q, 1);
  }
  return n;
}

/* One engine pass from an application thread that found its CQ empty (poll_cq): a consumer
 * busy-polling on a small machine would otherwise starve the engine thread of CPU (measured:
 * milliseconds per round trip on two cores). Try-locks only, so it never waits on the engine. */
int softrc_progress(void) {
  if (pthread_mutex_trylock(&softrc_qlist_lock) != 0) return 0;
  uint64_t now = softrc_now_ns();
  int work = 0;
  for (struct softrc_qp *q = softrc_qps; q; q = q->next) {
    if (pthread_mutex_trylock(&q->lock) != 0) continue;
    work += service(q, now, 0);
    pthread_mutex_unlock(&q->lock);
  }
  pthread_mutex_unlock(&softrc_qlist_lock);
  return work;
}

static void *engine(void *arg) {
  (void)arg;
  uint64_t last_watch = 0;
  for (;;) {
    int flush = __atomic_exchange_n(&softrc_faults.flush, 0, __ATOMIC_ACQ_REL), timers = 0;
    if (__atomic_load_n(&softrc_faults.engine_off, __ATOMIC_ACQUIRE)) {
      struct timespec off = {0, 2000000};
      nanosleep(&off, NULL);
      continue;
    }
    struct softrc_bell *bell = __atomic_load_n(&softrc_own_bell, __ATOMIC_ACQUIRE);
    uint32_t seen = bell ? __atomic_load_n(&bell->seq, __ATOMIC_SEQ_CST) : 0; /* SYNC */
    uint64_t now = softrc_now_ns();
    int watchdog = now - last_watch > 20000000ull, work = 0; /* 20 ms: peer-death check period */
    if (watchdog) last_watch = now;
    pthread_mutex_lock(&softrc_qlist_lock);
    for (struct softrc_qp *q = softrc_qps; q; q = q->next) {
      pthread_mutex_lock(&q->lock);
      if (flush) softrc_qp_to_err(q, 0);
      work += service(q, now, watchdog);
      timers |= q->sq_acked != q->sq_posted || q->rnr_resend_at_ns;
      pthread_mutex_unlock(&q->lock);
    }
    pthread_mutex_unlock(&softrc_qlist_lock);
    if (work) continue;
    /* 2 ms while a WR is outstanding (RNR resends, transport timeout), else the watchdog's 20 ms */
    struct timespec ts = {0, timers ? 2000000 : 20000000};
    if (!bell) { nanosleep(&ts, NULL); continue; } /* no QP yet */
    __atomic_store_n(&bell->sleeping, 1, __ATOMIC_SEQ_CST); /* SYNC */
    if (__atomic_load_n(&bell->seq, __ATOMIC_SEQ_CST) == seen)
      syscall(SYS_futex, &bell->seq, FUTEX_WAIT, seen, &ts, NULL, 0); /* SYNC: peers' softrc_ring wakes it */
    __atomic_store_n(&bell->sleeping, 0, __ATOMIC_SEQ_CST); /* SYNC */
  }
  return NULL;
}

/* Unlinks this process's segments at a normal exit (a killed one is cleaned by its peer). */
__attribute__((destructor)) static void softrc_unload(void) {
  if (!bell_refs || bell_pid != getpid()) return;
  char path[256];
  for (struct softrc_qp *q = softrc_qps; q; q = q->next) {
    __atomic_store_n(&q->seg->state, SEG_GONE, __ATOMIC_RELEASE); /* SYNC */
    softrc_path(path, sizeof path, "qp", q->qp.qp_num);
    unlink(path);
  }
  softrc_path(path, sizeof path, "bell", (unsigned)bell_pid);
  unlink(path);
}

/* Unlinks segments left by dead processes of this uid (killed with no live peer to clean). */
static void sweep(void) {
  char prefix[64], path[512];
  snprintf(prefix, sizeof prefix, "softrc-%u-", (unsigned)getuid());
  DIR *d = opendir(softrc_dir());
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));) {
    if (strncmp(e->d_name, prefix, strlen(prefix))) continue;
    const char *rest = e->d_name + strlen(prefix);
    snprintf(path, sizeof path, "%s/%s", softrc_dir(), e->d_name);
    if (!strncmp(rest, "bell-", 5)) {
      if (!softrc_pid_alive((pid_t)atoi(rest + 5))) unlink(path);
    } else if (!strncmp(rest, "qp-", 3)) {
      struct softrc_seg *s = softrc_seg_map((uint32_t)strtoul(rest + 3, NULL, 10), 0);
      if (!s) continue;
      /* SYNC: a segment still being created has no magic yet: left alone */
      if (__atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) == SOFTRC_MAGIC && !softrc_pid_alive(s->owner_pid)) unlink(path); /* SYNC */
      munmap(s, sizeof *s);
    }
  }
  closedir(d);
}

static void start(void) {
  sweep();
  pthread_t th;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&th, &at, engine, NULL) != 0) { perror("softrc: engine"); abort(); }
  pthread_attr_destroy(&at);
}

void softrc_engine_start(void) { pthread_once(&once, start); }
