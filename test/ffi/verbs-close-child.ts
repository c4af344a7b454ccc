/**
 * Child of test/rdma/verbs-close.test.ts: one scenario (argv[2]) against the softrc TEST FIXTURE
 * (HOTPATH_IBVERBS), printing one JSON line of what it saw. A crash (a post reaching the provider
 * with a closed handle) kills only this process and fails the test.
 *   after-close-qp | after-close-srq | after-close-cq | after-close-ctx: hot-path calls on closed objects.
 *   ebusy: closes refused with EBUSY keep the object; closing in order afterwards destroys everything.
 *   bad-wr: a successful post after a failed one reports no bad entry.
 */
import { IBV, RecvWorkRequests, SendWorkRequests, VerbsContext, WorkCompletions } from "../../src/ffi/ibverbs.ts";
import { softRcProbes } from "../rdma/softrc/probes.ts";

const liveOf = softRcProbes(process.env.HOTPATH_IBVERBS!).live;
const errName = (f: () => unknown) => {
  try {
    f();
    return "none";
  } catch (e) {
    return (e as Error).name;
  }
};

const which = process.argv[2];
const out: Record<string, unknown> = { which };
const ctx = VerbsContext.open("softrc0");
const pd = ctx.allocPd();
const ch = ctx.createCompChannel();
const cq = ctx.createCq(64, ch);
const srq = pd.createSrq({ maxWr: 8 });
const qp = pd.createQp({ sendCq: cq, recvCq: cq, maxSendWr: 8, maxRecvWr: 8 });
const mem = new Uint8Array(4096);
const mr = pd.regMr(mem, IBV.IBV_ACCESS_LOCAL_WRITE);
const s = new SendWorkRequests(1);
s.set(0, 1, IBV.IBV_WR_SEND, 0, mr.address, 8, mr.lkey);
const r = new RecvWorkRequests(1);
r.set(0, 1, mr.address, 8, mr.lkey);
const wcs = new WorkCompletions(4);

if (which === "after-close-qp") {
  qp.close();
  out.send = qp.tryPostSend(s);
  out.recv = qp.tryPostRecv(r);
} else if (which === "after-close-srq") {
  srq.close();
  out.recv = srq.tryPostRecv(r);
  out.arm = errName(() => srq.arm(1));
} else if (which === "after-close-cq") {
  qp.close();
  cq.close();
  out.notify = cq.tryReqNotify();
  out.poll = ctx.ops.tryPollCq(cq.handle, wcs);
  out.createQp = errName(() => pd.createQp({ sendCq: cq, recvCq: cq, maxSendWr: 4, maxRecvWr: 4 }));
  ch.close();
  out.createCq = errName(() => ctx.createCq(4, ch));
} else if (which === "after-close-ctx") {
  const cqHandle = cq.handle;
  ctx.close();
  out.send = qp.tryPostSend(s);
  out.recv = qp.tryPostRecv(r);
  out.srqRecv = srq.tryPostRecv(r);
  out.notify = cq.tryReqNotify();
  out.poll = ctx.ops.tryPollCq(cqHandle, wcs);
} else if (which === "ebusy") {
  const qp2 = pd.createQp({ sendCq: cq, recvCq: cq, srq, maxSendWr: 4, maxRecvWr: 4 });
  out.cqClose = errName(() => cq.close());
  out.cqKept = cq.handle !== 0;
  out.srqClose = errName(() => srq.close());
  out.srqKept = srq.handle !== 0;
  out.chClose = errName(() => ch.close());
  out.chKept = ch.handle !== 0;
  qp.close();
  qp2.close();
  cq.close();
  srq.close();
  ch.close();
  cq.close(); // twice: a no-op
  out.liveCq = liveOf("cq");
  out.liveSrq = liveOf("srq");
  out.liveChannel = liveOf("channel");
} else if (which === "bad-wr") {
  out.failed = qp.tryPostRecv(r); // RESET: EINVAL, bad_wr = entry 0
  out.badAfterFail = r.badIndex();
  qp.modify({ qpState: IBV.IBV_QPS_INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: IBV.IBV_ACCESS_LOCAL_WRITE });
  out.ok = qp.tryPostRecv(r);
  out.badAfterOk = r.badIndex();
} else {
  throw new Error(`unknown scenario ${which}`);
}
ctx.close();
out.liveAll = liveOf("all");
console.log(JSON.stringify(out));
