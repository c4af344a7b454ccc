/*
 * softrc: a TEST FIXTURE, never shipped. A userspace stand-in for libibverbs.so.1 (and, in
 * cm.c, librdmacm.so.1) that fabricates one RC device, "softrc0", so the transport's JS code
 * path runs for real between processes on a machine without an RDMA NIC.
 *
 * Contract: the real <infiniband/verbs.h> ABI. ibv_context.ops carries the fixture's own
 * post_send / post_recv / post_srq_recv / poll_cq / req_notify_cq, so the header's static
 * inline data-path functions (and FFI callers reading the ops offsets) land here.
 *
 * Model: every QP owns an inbox segment in shared memory, found by QP number; the connected
 * peer writes requests and responses into it, this process's engine thread (engine.c) reads
 * them and executes them against this process's own MRs, receive queues and CQs.
 * Bulk payloads (over SOFTRC_SLOT_DATA) are moved by the TARGET's engine with
 * process_vm_readv / process_vm_writev (same uid), the way a NIC DMAs into a registered
 * region: the requester's memory is never written by the requester's peer without a
 * valid rkey checked on the target. Small payloads travel in the ring slot itself.
 *
 *   /dev/shm/softrc-<uid>-qp-<qpn>   (one per QP, created by its owner, O_EXCL picks the qpn)
 *   +--------------------------------------------------------------+
 *   | struct softrc_seg header                                     |
 *   |   magic, qpn, owner_pid, state (owner's QP state, SYNC)      |
 *   |   head (producer = peer, SYNC)  tail (consumer = owner, SYNC)|
 *   +--------------------------------------------------------------+
 *   | slot[0]  struct softrc_msg { type, psn, op fields, sges,     |
 *   | slot[1]                      data[SOFTRC_SLOT_DATA] }        |
 *   | ...      SOFTRC_RING slots = 2 * max_qp_wr: responses      |
 *   | slot[N-1]                    always find room (see below)    |
 *   +--------------------------------------------------------------+
 *
 *   /dev/shm/softrc-<uid>-bell-<pid> (one per process while it has QPs: the engine's doorbell)
 *   +----------------------------------+
 *   | u32 seq (SYNC: futex word)       |
 *   | u32 sleeping (SYNC)              |
 *   +----------------------------------+
 *
 * A QP's inbox holds at most SOFTRC_RING - max_qp_wr requests (the sender waits for room:
 * after an RNR NAK, stale copies may still be queued when the resends go out) plus the
 * responses to our outstanding requests (<= max_qp_wr), hence SOFTRC_RING = 2 * max_qp_wr.
 * Single producer (the peer process, serialized by its local qp->lock), single consumer
 * (our engine): head/tail are published with release stores and read with acquire loads.
 *
 * SOFTRC_DIR overrides the registry directory (default /dev/shm).
 */
#ifndef SOFTRC_H
#define SOFTRC_H

#define _GNU_SOURCE
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#define SOFTRC_MAGIC 0x53525243u /* "SRRC" */
#define SOFTRC_MAX_QP_WR 1024
#define SOFTRC_MAX_SGE 4
#define SOFTRC_MAX_INLINE 256
#define SOFTRC_MAX_SRQ_WR 4096
#define SOFTRC_MAX_CQE 65536
#define SOFTRC_RING (2 * SOFTRC_MAX_QP_WR)
#define SOFTRC_SLOT_DATA 512 /* payloads up to this travel in the slot (>= max inline) */
#define SOFTRC_MAX_MR 4096   /* per process; key = index | generation << 12 */

enum softrc_msg_type {
  M_SEND = 1, M_SEND_IMM, M_WRITE, M_WRITE_IMM, M_READ, M_CAS, /* requests */
  M_ACK, M_NAK_RNR, M_NAK_ACCESS, M_NAK_INVREQ,                  /* responses */
};

struct softrc_sge { uint64_t addr; uint32_t len; uint32_t pad; };

struct softrc_msg {
  uint32_t type;
  uint32_t psn;        /* request sequence number; responses echo it */
  uint64_t wr_id;      /* informational */
  uint32_t len;        /* total payload length */
  uint32_t imm;        /* network order, as the app wrote it */
  uint64_t raddr;      /* WRITE/READ/CAS target address */
  uint32_t rkey;
  uint32_t inl;        /* 1: payload in data[] */
  uint64_t compare, swap, old; /* CAS (old: in the response) */
  int32_t src_pid;     /* requester's pid, for process_vm_* */
  uint32_t nsge;
  struct softrc_sge sge[SOFTRC_MAX_SGE]; /* requester's local buffers */
  uint8_t data[SOFTRC_SLOT_DATA];
};

struct softrc_seg {
  uint32_t magic;
  uint32_t qpn;
  int32_t owner_pid;
  uint32_t state;      /* SYNC: owner writes (release), peer reads; IBV_QPS_* or SEG_GONE */
  uint64_t head;       /* SYNC: written by the producer (peer) only */
  uint8_t pad1[40];
  uint64_t tail;       /* SYNC: written by the consumer (owner's engine) only */
  uint8_t pad2[56];
  struct softrc_msg slot[SOFTRC_RING];
};
#define SEG_GONE 0xdead

struct softrc_bell { uint32_t seq; uint32_t sleeping; };

/* ---- process-local objects (the public struct first, so casts work) ---- */

/* Live-object counts (softrc_live) and the references that make a destroy EBUSY, as the
 * kernel does: a PD held by MRs/SRQs/QPs, a CQ or SRQ held by QPs. Atomic. */
enum { L_CTX, L_PD, L_MR, L_CHAN, L_CQ, L_SRQ, L_QP, L_KINDS };
extern int softrc_live_n[L_KINDS];
#define LIVE(k, d) __atomic_add_fetch(&softrc_live_n[k], (d), __ATOMIC_RELAXED)
#define REF(o, d) __atomic_add_fetch(&(o)->refs, (d), __ATOMIC_ACQ_REL)

/* Event counts (softrc_count), for tests that prove something never happened (no RNR NAK in
 * normal operation) or that a path was taken (large messages by WRITE_WITH_IMM): what this
 * process's engine did as a responder since load. Atomic. */
enum { C_RNR_NAK, C_RX_SEND, C_RX_WRITE_IMM, C_KINDS };
extern long softrc_count_n[C_KINDS];
#define COUNT(k) __atomic_add_fetch(&softrc_count_n[k], 1, __ATOMIC_RELAXED)

struct softrc_pd { struct ibv_pd pd; int refs; };

struct softrc_cq {
  struct ibv_cq cq;
  int refs;
  pthread_mutex_t lock;
  struct ibv_wc *wc;   /* ring of capacity cap */
  uint32_t cap, head, tail; /* head: next to poll */
  int armed, overrun;
};

struct softrc_srq {
  struct ibv_srq srq;
  int refs;
  pthread_mutex_t lock;
  struct ibv_recv_wr *wr; struct ibv_sge *sge; /* ring: wr[i] uses sge[i*max_sge..] */
  uint32_t cap, max_sge, head, tail, limit;
};

struct softrc_swqe {          /* an outstanding send WR */
  struct softrc_msg msg;      /* as sent (kept for RNR resends) */
  uint64_t wr_id;
  int signaled;
  enum ibv_wc_opcode wc_op;
  uint64_t cas_dst;           /* local address for the CAS old value */
  uint64_t sent_ns;           /* for the transport timeout (a silent peer) */
};

struct softrc_qp {
  struct ibv_qp qp;
  pthread_mutex_t lock;       /* serializes posting, the engine's work on this QP */
  struct softrc_seg *seg;     /* own inbox */
  struct softrc_seg *peer;    /* peer's inbox (after RTR) */
  struct softrc_bell *peer_bell;
  uint32_t dest_qpn, sq_psn, rq_psn, cap_send, cap_recv, max_sge, max_inline;
  int access, sq_sig_all, min_rnr_timer, rnr_retry, rnr_left, retry_cnt, timeout, max_rd_atomic, max_dest_rd_atomic, path_mtu;
  int comm_est_armed; /* cm: accepted, no RTU yet: the first request raises IBV_EVENT_COMM_EST */
  /* send queue: swqe ring; [freed, acked) acked but unsignaled, held until a later signaled
   * WR completes (as hardware frees send queue slots only at a completion); [acked, sent)
   * outstanding; [sent, posted) not yet sent (RNR wait) */
  struct softrc_swqe *sq; uint32_t sq_freed, sq_acked, sq_sent, sq_posted;
  uint64_t rnr_resend_at_ns;  /* 0: none pending */
  int drop_until_psn_valid; uint32_t drop_until_psn; /* responder: after an RNR NAK */
  /* receive queue (when no SRQ) */
  struct ibv_recv_wr *rwr; struct ibv_sge *rsge; uint32_t rq_head, rq_tail;
  struct softrc_qp *next;     /* engine list */
  int peer_dead;              /* the watchdog found the peer's process gone */
};

struct softrc_mr { struct ibv_mr mr; int access; int used; };

struct softrc_ctx {           /* the verbs_context wrapper */
  struct verbs_context vctx;
  int async_w;                /* write end of the async event pipe */
};

/* verbs.c */
extern pthread_mutex_t softrc_glock;
extern struct softrc_qp *softrc_qps;
extern struct softrc_bell *softrc_own_bell;
struct softrc_mr *softrc_mr_find(uint32_t key, struct ibv_pd *pd);
int softrc_cq_push(struct softrc_cq *cq, const struct ibv_wc *wc);
void softrc_async(struct ibv_context *ctx, enum ibv_event_type type, void *element);
void softrc_qp_to_err(struct softrc_qp *q, int peer_failed);
int softrc_recv_take(struct softrc_qp *q, struct ibv_recv_wr *out, struct ibv_sge *sges); /* q->lock held */
int softrc_srq_take(struct softrc_srq *s, struct ibv_recv_wr *out, struct ibv_sge *sges);
extern pthread_mutex_t softrc_qlist_lock; /* lock order: qlist -> qp->lock -> glock/cq/srq */
struct softrc_seg *softrc_seg_map(uint32_t qpn, int create); /* create: O_EXCL */
void softrc_path(char *buf, size_t n, const char *kind, unsigned id);
int softrc_pid_alive(pid_t pid);
uint64_t softrc_now_ns(void);
const char *softrc_dir(void);
void softrc_ring(struct softrc_bell *b);
int softrc_fault(const char *spec);
int softrc_live(const char *kind); /* exported: live objects of a kind ("qp", "mr", ..., "all") */
long softrc_count(const char *kind); /* exported: events since load ("rnr_nak", "recv_send", "recv_write_imm") */

/* engine.c */
void softrc_engine_start(void);
int softrc_progress(void); /* one try-locked engine pass from an app thread; messages handled */
void softrc_bell_ref(int delta); /* +1 per QP created, -1 per QP destroyed; qlist lock held */
int softrc_send_msg(struct softrc_qp *q, const struct softrc_msg *m); /* q->lock held; -1: no room yet */
void softrc_kick_sq(struct softrc_qp *q);                             /* q->lock held */
void softrc_unlink_dead(uint32_t qpn, pid_t pid); /* a dead peer's QP segment and doorbell */

/* faults (verbs.c): counters set by SOFTRC_FAULTS or softrc_fault() */
struct softrc_faults {
  int rnr_storm;     /* NAK the next N SEND/WRITE_IMM requests with RNR */
  int qp_err_after;  /* move the QP to ERR after N more requests received (0: off) */
  int cq_overrun;    /* next completion overruns its CQ: IBV_EVENT_CQ_ERR */
  int drop_peer;     /* stop answering the peer (it sees RETRY_EXC_ERR) */
  int flush;         /* move every local QP to ERR now (outstanding WRs flushed) */
  int engine_off;    /* the engine thread idles: only poll_cq's passes make progress */
  int reg_mr_fail;   /* the next N ibv_reg_mr calls fail with ENOMEM */
  int lose_rtu;      /* cm: the next N RTUs this process would send are lost */
};
extern struct softrc_faults softrc_faults;

#endif
