/**
 * A process for test/rdma/buffers.test.ts: a RecvSlab (src/rdma/buffers.ts) over the softrc TEST
 * FIXTURE's device (HOTPATH_IBVERBS names it; SOFTRC_DIR its registry). Two RC QPs of this
 * process: `a` sends (signals batched by a SignalBatcher over a send queue of 8), `b` receives
 * through an SRQ holding the slab's slots. Prints one JSON line per step; exits non-zero on the
 * first failed step. The fixture's live counts (softrc_live) show what is left after each close.
 */
import { ptr } from "bun:ffi";
import { softRcProbes } from "./softrc/probes.ts";
import { UsageError } from "../../src/errors.ts";
import { IBV, SendWorkRequests, VerbsContext, WorkCompletions, type VerbsCq, type VerbsQp } from "../../src/ffi/ibverbs.ts";
import { RecvSlab } from "../../src/rdma/buffers.ts";
import { SignalBatcher } from "../../src/rdma/signal.ts";

const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const WAIT_MS = 5000;
const SLOTS = 8;
const SLOT_BYTES = 256;
const SQ_DEPTH = 8;

const { live } = softRcProbes(process.env.HOTPATH_IBVERBS!);

const wcs = new WorkCompletions(16);
async function take(ctx: VerbsContext, cq: VerbsCq, n: number): Promise<Array<{ wrId: number; status: number; opcode: number; byteLen: number }>> {
  const got: Array<{ wrId: number; status: number; opcode: number; byteLen: number }> = [];
  const deadline = Date.now() + WAIT_MS;
  while (got.length < n) {
    const k = ctx.ops.tryPollCq(cq.handle, wcs, Math.min(16, n - got.length));
    if (k < 0) throw new Error(`poll_cq returned ${k}`);
    for (let i = 0; i < k; i++) got.push({ wrId: wcs.wrId(i), status: wcs.status(i), opcode: wcs.opcode(i), byteLen: wcs.byteLen(i) });
    if (got.length < n) {
      if (Date.now() > deadline) throw new Error(`waited for ${n} completions, got ${JSON.stringify(got)}`);
      await Bun.sleep(1);
    }
  }
  return got;
}

/** Nothing more arrives on `cq` within `ms`. */
async function quiet(ctx: VerbsContext, cq: VerbsCq, ms: number): Promise<number> {
  const until = Date.now() + ms;
  let n = 0;
  while (Date.now() < until) {
    n += ctx.ops.tryPollCq(cq.handle, wcs, 16);
    await Bun.sleep(2);
  }
  return n;
}

function connect(ctx: VerbsContext, qp: VerbsQp, peer: VerbsQp): void {
  qp.modify({ qpState: IBV.IBV_QPS_INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: IBV.IBV_ACCESS_LOCAL_WRITE });
  qp.modify({
    qpState: IBV.IBV_QPS_RTR, pathMtu: IBV.IBV_MTU_1024, destQpNum: peer.qpNum, rqPsn: 0, maxDestRdAtomic: 1, minRnrTimer: 12,
    ah: { portNum: 1, grh: { dgid: ctx.queryGid(1, 0), sgidIndex: 0, hopLimit: 1 } },
  });
  qp.modify({ qpState: IBV.IBV_QPS_RTS, sqPsn: 0, timeout: 14, retryCnt: 7, rnrRetry: 7, maxRdAtomic: 1 });
}

const ctx = VerbsContext.open("softrc0");
const pd = ctx.allocPd();
const cqA = ctx.createCq(64);
const cqB = ctx.createCq(64);
const srq = pd.createSrq({ maxWr: SLOTS });
const a = pd.createQp({ sendCq: cqA, recvCq: cqA, maxSendWr: SQ_DEPTH, maxRecvWr: 4, maxInlineData: 128 });
const b = pd.createQp({ sendCq: cqB, recvCq: cqB, srq, maxSendWr: 4, maxRecvWr: 4 });
connect(ctx, a, b);
connect(ctx, b, a);
const mrsBefore = live("mr");
const slab = new RecvSlab(pd, srq, { slotCount: SLOTS, slotBytes: SLOT_BYTES, wrIdBase: 1000 });
const mrsWith = live("mr");
const postRc = slab.postAll();
out({ step: "setup", mrsBefore, mrsWith, postRc, posted: slab.posted, held: slab.held, srqMaxWr: srq.maxWr });

const sig = new SignalBatcher(SQ_DEPTH, 4);
const send = new SendWorkRequests(1);
const payload = new Uint8Array(new ArrayBuffer(SLOT_BYTES));
/** Posts message `n` (its bytes: n, n+1, ... for n % 97 + 1 bytes) inline; returns the send flags used or -1 (send queue full). */
function sendMsg(n: number): number {
  const len = (n % 97) + 1;
  for (let i = 0; i < len; i++) payload[i] = (n + i) & 0xff;
  const flags = sig.tryPost();
  if (flags < 0) return -1;
  send.set(0, sig.lastSeq, IBV.IBV_WR_SEND, flags | IBV.IBV_SEND_INLINE, Number(ptr(payload)), len, 0);
  const rc = a.tryPostSend(send, 0);
  if (rc !== 0) throw new Error(`post_send: errno ${rc}`);
  return flags;
}
function bytesOk(slot: number, n: number, byteLen: number): boolean {
  const len = (n % 97) + 1;
  if (byteLen !== len) return false;
  const v = slab.views[slot]!;
  for (let i = 0; i < len; i++) if (v[i] !== ((n + i) & 0xff)) return false;
  return true;
}

// Round 1: fill every slot. Only every 4th send is signaled; the 9th finds the send queue full.
const flags: number[] = [];
for (let n = 0; n < SLOTS; n++) flags.push(sendMsg(n));
const sqFull = sendMsg(SLOTS);
const recvWc = await take(ctx, cqB, SLOTS);
const slots: number[] = [];
let allOk = true;
recvWc.forEach((wc, i) => {
  const slot = slab.onReceive(wc.wrId);
  slots.push(slot);
  if (wc.status !== IBV.IBV_WC_SUCCESS || !bytesOk(slot, i, wc.byteLen) || slab.slotAt(slab.addressOf(slot)) !== slot) allOk = false;
});
const sendWc = await take(ctx, cqA, 2);
const freed = sendWc.map((wc) => sig.onCompletion(wc.wrId));
const extraSendWc = await quiet(ctx, cqA, 50);
out({ step: "round1", flags, sqFull, slots, allOk, posted: slab.posted, held: slab.held, sendWc: sendWc.map((w) => [w.wrId, w.status]), freed, extraSendWc, free: sig.free });

// Every slot is held: one release re-posts a slot, and the next SEND lands there.
const releasedSlot = slots[3]!;
const releaseRc = slab.release(releasedSlot);
const postedAfterRelease = slab.posted;
sendMsg(SLOTS);
const [late] = await take(ctx, cqB, 1);
const lateSlot = slab.onReceive(late!.wrId);
out({ step: "repost", postedAfterRelease, releaseRc, releasedSlot, lateSlot, lateOk: late!.status === IBV.IBV_WC_SUCCESS && bytesOk(lateSlot, SLOTS, late!.byteLen) });

// Every slot held again: the next SEND finds no receive (RNR NAK, retried: rnr_retry 7) and waits; a release re-posts a slot and it lands there.
sendMsg(SLOTS + 1);
const rnrQuiet = await quiet(ctx, cqB, 50);
const rnrReleaseRc = slab.release(lateSlot);
const [waited] = await take(ctx, cqB, 1);
const waitedSlot = slab.onReceive(waited!.wrId);
out({ step: "rnr", rnrQuiet, rnrReleaseRc, waitedSlot, lateSlot, waitedOk: waited!.status === IBV.IBV_WC_SUCCESS && bytesOk(waitedSlot, SLOTS + 1, waited!.byteLen), qpState: a.state });

// Misuse is refused: releasing a slot twice, a completion for a slot not posted, a wr_id outside the slab.
const held = new Set(slots);
const refused: string[] = [];
const refuse = (f: () => unknown) => {
  try {
    f();
    refused.push("accepted");
  } catch (e) {
    refused.push(e instanceof UsageError ? "UsageError" : String(e));
  }
};
const s0 = slots[0]!;
const s1 = slots[1]!;
const firstRelease = slab.release(s0);
held.delete(s0);
refuse(() => slab.release(s0));
refuse(() => slab.onReceive(1000 + s1)); // s1 is held, not posted
refuse(() => slab.onReceive(5));
const postedBefore = slab.posted;
// Release everything still held; the SRQ is full again.
for (const s of held) if (slab.release(s) !== 0) throw new Error(`release ${s}`);
out({ step: "misuse", firstRelease, refused, postedBefore, posted: slab.posted, held: slab.held });

// Rounds 2..4: send, receive, release, with the send queue's slots coming back through signaled completions.
let roundsOk = true;
let next = SLOTS + 2;
for (let round = 0; round < 3; round++) {
  const first = next;
  for (let k = 0; k < SLOTS; k++) {
    while (sendMsg(next) < 0) {
      const k2 = ctx.ops.tryPollCq(cqA.handle, wcs, 16);
      for (let i = 0; i < k2; i++) sig.onCompletion(wcs.wrId(i));
      await Bun.sleep(1);
    }
    next++;
  }
  const got = await take(ctx, cqB, SLOTS);
  got.forEach((wc, i) => {
    const slot = slab.onReceive(wc.wrId);
    if (wc.status !== IBV.IBV_WC_SUCCESS || !bytesOk(slot, first + i, wc.byteLen)) roundsOk = false;
    if (slab.release(slot) !== 0) roundsOk = false;
  });
}
out({ step: "rounds", roundsOk, posted: slab.posted, held: slab.held, sent: next });

// Two slabs on one SRQ of 8 (all posted by the first): the second's post fails with ENOMEM and
// posts nothing; with one receive consumed, its chain of 2 posts 1; then the SRQ is full and the
// first slab's release fails, leaving its slot held.
const slab2 = new RecvSlab(pd, srq, { slotCount: 2, slotBytes: 64, wrIdBase: 2000 });
const full = slab2.postAll();
const posted2Full = slab2.posted;
while (sendMsg(next) < 0) {
  const k2 = ctx.ops.tryPollCq(cqA.handle, wcs, 16);
  for (let i = 0; i < k2; i++) sig.onCompletion(wcs.wrId(i));
  await Bun.sleep(1);
}
const [one] = await take(ctx, cqB, 1);
const oneSlot = slab.onReceive(one!.wrId);
const partial = slab2.postAll();
const posted2Partial = slab2.posted;
const releaseFull = slab.release(oneSlot);
out({ step: "shared", full, posted2Full, oneOk: one!.status === IBV.IBV_WC_SUCCESS && bytesOk(oneSlot, next, one!.byteLen), partial, posted2Partial, releaseFull, held: slab.held, posted: slab.posted });

// Close: QPs and SRQ first, then the slab's MR (twice is safe), then the rest.
a.close();
b.close();
srq.close();
slab.close();
slab.close();
slab2.close();
const mrsAfter = live("mr");
cqA.close();
cqB.close();
pd.close();
ctx.close();
out({ step: "closed", mrsAfter, all: live("all") });
