/**
 * A process for test/rdma/ffi-softrc.test.ts: drives the softrc TEST FIXTURE's device through
 * src/ffi's bindings only (HOTPATH_IBVERBS / HOTPATH_RDMACM name the fixture; SOFTRC_DIR its
 * registry) and prints one JSON line per result. Roles:
 *   local      two RC QPs of this process connected to each other: every verb, then close all
 *   cm-server  rdma_cm listener on 127.0.0.1:0 (prints its port), rejects one request, accepts the next
 *   cm-client  <port>: connects (rejected), connects again, sends, disconnects
 * Exits non-zero (stderr says why) on the first failed step; the test kills it by pid otherwise.
 */
import { IBV, RDMA, RecvWorkRequests, SendWorkRequests, VerbsContext, WorkCompletions, verbsDevices, forkSafety, ensureForkSafe, type VerbsCq, type VerbsPd, type VerbsQp } from "../../src/ffi/ibverbs.ts";
import { ptr } from "bun:ffi";
import { pollReadable } from "../../src/ffi/libc.ts";
import { RdmaEventChannel, type RdmaCmEvent } from "../../src/ffi/rdmacm.ts";
import { NativeError } from "../../src/errors.ts";

const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const ACCESS = IBV.IBV_ACCESS_LOCAL_WRITE | IBV.IBV_ACCESS_REMOTE_WRITE | IBV.IBV_ACCESS_REMOTE_READ | IBV.IBV_ACCESS_REMOTE_ATOMIC;
const WAIT_MS = 5000;

interface Wc {
  wrId: number;
  status: number;
  opcode: number;
  byteLen: number;
  imm: number;
  flags: number;
  qpNum: number;
}

const wcs = new WorkCompletions(16);
/** Polls `cq` through the context's ops until `n` completions came (a watchdog throws after WAIT_MS). */
async function take(ctx: VerbsContext, cq: VerbsCq, n: number): Promise<Wc[]> {
  const got: Wc[] = [];
  const deadline = Date.now() + WAIT_MS;
  while (got.length < n) {
    const k = ctx.ops.tryPollCq(cq.handle, wcs, n - got.length);
    if (k < 0) throw new Error(`poll_cq returned ${k}`);
    for (let i = 0; i < k; i++) {
      got.push({ wrId: wcs.wrId(i), status: wcs.status(i), opcode: wcs.opcode(i), byteLen: wcs.byteLen(i), imm: wcs.imm(i), flags: wcs.wcFlags(i), qpNum: wcs.qpNum(i) });
    }
    if (got.length < n) {
      if (Date.now() > deadline) throw new Error(`waited for ${n} completions, got ${JSON.stringify(got)}`);
      await Bun.sleep(1);
    }
  }
  return got;
}

function connect(ctx: VerbsContext, qp: VerbsQp, peer: VerbsQp): void {
  qp.modify({ qpState: IBV.IBV_QPS_INIT, pkeyIndex: 0, portNum: 1, qpAccessFlags: ACCESS });
  qp.modify({
    qpState: IBV.IBV_QPS_RTR, pathMtu: IBV.IBV_MTU_1024, destQpNum: peer.qpNum, rqPsn: 0, maxDestRdAtomic: 1, minRnrTimer: 12,
    ah: { portNum: 1, grh: { dgid: ctx.queryGid(1, 0), sgidIndex: 0, hopLimit: 1 } },
  });
  qp.modify({ qpState: IBV.IBV_QPS_RTS, sqPsn: 0, timeout: 14, retryCnt: 7, rnrRetry: 7, maxRdAtomic: 1 });
}

function expectRc(what: string, rc: number): void {
  if (rc !== 0) throw new Error(`${what}: errno ${rc}`);
}

async function local(): Promise<void> {
  const ctx = VerbsContext.open("softrc0");
  const dev = ctx.queryDevice();
  const port = ctx.queryPort(1);
  out({ step: "device", devices: verbsDevices().map((d) => d.name), fork: [forkSafety(), ensureForkSafe()], dev, port, gid: [...ctx.queryGid(1, 0)] });

  const pd = ctx.allocPd();
  const ch = ctx.createCompChannel();
  const cqA = ctx.createCq(64, ch);
  const cqB = ctx.createCq(64);
  const srq = pd.createSrq({ maxWr: 8, srqLimit: 0 });
  const a = pd.createQp({ sendCq: cqA, recvCq: cqA, maxSendWr: 32, maxRecvWr: 32, maxInlineData: 128 });
  const b = pd.createQp({ sendCq: cqB, recvCq: cqB, srq, maxSendWr: 32, maxRecvWr: 32 });
  const memA = new Uint8Array(65536);
  const memB = new Uint8Array(65536);
  const mrA = pd.regMr(memA, ACCESS);
  const mrB = pd.regMr(memB, ACCESS);
  const send = new SendWorkRequests(4);
  const recv = new RecvWorkRequests(10);

  // Posting in RESET fails; RESET → RTS is not a transition.
  send.set(0, 1, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED, mrA.address, 8, mrA.lkey);
  const resetPost = a.tryPostSend(send, 0);
  let badModify: { errno: number; message: string } | null = null;
  try {
    a.modify({ qpState: IBV.IBV_QPS_RTS, sqPsn: 0 });
  } catch (e) {
    if (e instanceof NativeError) badModify = { errno: e.errno, message: e.message };
  }
  connect(ctx, a, b);
  connect(ctx, b, a);
  out({ step: "qps", resetPost, badModify, states: [a.state, b.state], qpNums: [a.qpNum, b.qpNum], caps: a.caps, mr: [mrA.lkey, mrA.rkey, mrA.lenBytes] });

  // SEND a → b into the SRQ (inline, from unregistered JS memory), with the completion channel armed on cqA.
  recv.set(0, 500, mrB.address + 1024, 256, mrB.lkey);
  expectRc("post_srq_recv", srq.tryPostRecv(recv, 0));
  expectRc("req_notify_cq", cqA.tryReqNotify());
  const hello = new Uint8Array(new ArrayBuffer(11));
  hello.set(new TextEncoder().encode("hello srq!!"));
  send.set(0, 10, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED | IBV.IBV_SEND_INLINE, Number(ptr(hello)), hello.length, 0);
  expectRc("post_send", a.tryPostSend(send, 0));
  const sendWc = await take(ctx, cqA, 1);
  const srqWc = await take(ctx, cqB, 1);
  const woke = pollReadable(ch.fd, WAIT_MS);
  const evCq = ch.tryGetCqEvent();
  const evCqAgain = ch.tryGetCqEvent();
  const unacked = cqA.unackedEvents;
  cqA.ackEvents();
  out({ step: "send-srq", sendWc, srqWc, got: new TextDecoder().decode(memB.subarray(1024, 1024 + 11)), woke, evIsCqA: evCq === cqA, evCqAgain: evCqAgain === null, unacked, unackedAfter: cqA.unackedEvents });

  // SEND b → a into a's own receive queue; two receives chained in one post.
  recv.set(0, 600, mrA.address, 128, mrA.lkey);
  recv.set(1, 601, mrA.address + 128, 128, mrA.lkey);
  recv.chain(0, 1);
  expectRc("post_recv", a.tryPostRecv(recv, 0));
  memB.set(new TextEncoder().encode("to a"), 4096);
  send.set(0, 20, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED, mrB.address + 4096, 4, mrB.lkey);
  expectRc("post_send b", b.tryPostSend(send, 0));
  const bSend = await take(ctx, cqB, 1);
  const aRecv = await take(ctx, cqA, 1);
  out({ step: "send-rq", bSend, aRecv, got: new TextDecoder().decode(memA.subarray(0, 4)) });

  // RDMA WRITE a → b, then WRITE_WITH_IMM (consumes an SRQ receive), chained in one post.
  memA.set([1, 2, 3, 4, 5, 6, 7, 8], 8192);
  recv.set(0, 700, mrB.address + 2048, 64, mrB.lkey);
  expectRc("post_srq_recv", srq.tryPostRecv(recv, 0));
  send.set(0, 30, IBV.IBV_WR_RDMA_WRITE, 0, mrA.address + 8192, 8, mrA.lkey);
  send.setRdma(0, mrB.address + 16384, mrB.rkey);
  send.set(1, 31, IBV.IBV_WR_RDMA_WRITE_WITH_IMM, IBV.IBV_SEND_SIGNALED, mrA.address + 8192, 4, mrA.lkey);
  send.setRdma(1, mrB.address + 20000, mrB.rkey);
  send.setImm(1, 0xdeadbeef);
  send.chain(0, 1);
  expectRc("post_send chain", a.tryPostSend(send, 0));
  const writeWc = await take(ctx, cqA, 1);
  const immWc = await take(ctx, cqB, 1);
  out({ step: "write", writeWc, immWc, written: [...memB.subarray(16384, 16392)], immWritten: [...memB.subarray(20000, 20004)] });

  // RDMA READ a ← b, and CAS on b's 8-byte word (twice: the second compare misses).
  memB.set([9, 8, 7, 6], 30000);
  const word = new DataView(memB.buffer, 32768, 8);
  word.setBigUint64(0, 41n, true);
  send.set(0, 40, IBV.IBV_WR_RDMA_READ, IBV.IBV_SEND_SIGNALED, mrA.address + 12000, 4, mrA.lkey);
  send.setRdma(0, mrB.address + 30000, mrB.rkey);
  expectRc("post_send read", a.tryPostSend(send, 0));
  const readWc = await take(ctx, cqA, 1);
  const old = new DataView(memA.buffer, 40000, 8);
  const cas = async (compare: bigint, swap: bigint) => {
    send.set(0, 50, IBV.IBV_WR_ATOMIC_CMP_AND_SWP, IBV.IBV_SEND_SIGNALED, mrA.address + 40000, 8, mrA.lkey);
    send.setAtomic(0, mrB.address + 32768, mrB.rkey, compare, swap);
    expectRc("post_send cas", a.tryPostSend(send, 0));
    const wc = await take(ctx, cqA, 1);
    return { wc, old: String(old.getBigUint64(0, true)), now: String(word.getBigUint64(0, true)) };
  };
  const cas1 = await cas(41n, 2n ** 60n);
  const cas2 = await cas(41n, 5n);
  out({ step: "read-cas", readWc, read: [...memA.subarray(12000, 12004)], cas1, cas2 });

  // SRQ: full → ENOMEM with bad_wr at the first one that did not fit; the limit event, re-armed.
  for (let i = 0; i < 9; i++) {
    recv.set(i, 800 + i, mrB.address + 40000 + i * 64, 64, mrB.lkey);
    if (i > 0) recv.chain(i - 1, i);
  }
  const full = srq.tryPostRecv(recv, 0); // the SRQ is empty (both earlier receives consumed): 8 fit, the 9th does not
  const badAt = full === 0 ? -1 : recv.badIndex();
  srq.arm(7);
  const armed = srq.limit;
  memA.set(new TextEncoder().encode("x"), 0);
  send.set(0, 60, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED, mrA.address, 1, mrA.lkey);
  send.set(1, 61, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED, mrA.address, 1, mrA.lkey);
  send.chain(0, 1);
  expectRc("post_send x2", a.tryPostSend(send, 0));
  await take(ctx, cqA, 2);
  await take(ctx, cqB, 2);
  let event = null;
  for (const deadline = Date.now() + WAIT_MS; event === null && Date.now() < deadline; ) {
    event = ctx.tryGetAsyncEvent();
    if (event === null) await Bun.sleep(1);
  }
  const limitAfter = srq.limit;
  srq.arm(2);
  out({ step: "srq", full, badAt, armed, event: event && { name: event.name, isSrq: event.srq === srq }, limitAfter, rearmed: srq.limit });

  // Registration failures through the wrapper: access the device refuses (EINVAL), and ENOMEM
  // (the fixture's MR table is full; on hardware the locked-memory limit) naming RLIMIT_MEMLOCK.
  const regError = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      if (e instanceof NativeError) return { errno: e.errno, operation: e.operation, message: e.message };
      throw e;
    }
    return null;
  };
  const einval = regError(() => pd.regMr(memA, IBV.IBV_ACCESS_REMOTE_WRITE));
  const extra: Array<{ close(): void }> = [];
  let enomem = null;
  while (enomem === null && extra.length < 100_000) {
    enomem = regError(() => extra.push(pd.regMr(memA.subarray(0, 64), IBV.IBV_ACCESS_LOCAL_WRITE)));
  }
  for (const mr of extra) mr.close();
  out({ step: "reg-errors", einval, enomem, registered: extra.length });

  // CQ overrun (a CQ smaller than what completes into it): only an async event, naming that CQ.
  const cqTiny = ctx.createCq(2);
  const c = pd.createQp({ sendCq: cqTiny, recvCq: cqTiny, maxSendWr: 8, maxRecvWr: 1 });
  const d = pd.createQp({ sendCq: cqB, recvCq: cqB, maxSendWr: 1, maxRecvWr: 1 });
  connect(ctx, c, d);
  connect(ctx, d, c);
  for (let i = 0; i < 4; i++) {
    send.set(i, 90 + i, IBV.IBV_WR_RDMA_WRITE, IBV.IBV_SEND_SIGNALED, mrA.address, 8, mrA.lkey);
    send.setRdma(i, mrB.address, mrB.rkey);
    if (i > 0) send.chain(i - 1, i);
  }
  expectRc("post_send x4", c.tryPostSend(send, 0));
  let overrun = null;
  for (const deadline = Date.now() + WAIT_MS; overrun === null && Date.now() < deadline; ) {
    const ev = ctx.tryGetAsyncEvent();
    if (ev !== null && ev.type === IBV.IBV_EVENT_CQ_ERR) overrun = ev;
    else if (ev === null) await Bun.sleep(1);
  }
  out({ step: "cq-overrun", event: overrun && { name: overrun.name, isTiny: overrun.cq === cqTiny, cqe: cqTiny.cqe } });
  c.close();
  d.close();
  cqTiny.close();

  // A bad rkey: IBV_WC_REM_ACCESS_ERR at the requester, whose QP goes to ERR: its outstanding receive flushes.
  send.set(0, 70, IBV.IBV_WR_RDMA_WRITE, IBV.IBV_SEND_SIGNALED, mrA.address, 8, mrA.lkey);
  send.setRdma(0, mrB.address, mrB.rkey ^ 0x5a5a);
  expectRc("post_send bad rkey", a.tryPostSend(send, 0));
  const badWc = (await take(ctx, cqA, 2)).sort((x, y) => x.wrId - y.wrId); // and the receive still posted on a (601) flushes
  out({ step: "bad-rkey", badWc, state: a.state });

  // Close: children first, twice is safe; what was closed through the context stays closed.
  ctx.close();
  ctx.close();
  a.close();
  mrA.close();
  out({ step: "closed", handles: [ctx.handle, pd.handle, cqA.handle, cqB.handle, ch.handle, srq.handle, a.handle, b.handle, mrA.handle, mrB.handle] });
}

async function nextEvent(ch: RdmaEventChannel, want: number): Promise<RdmaCmEvent> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const ev = ch.tryGetEvent();
    if (ev !== null) {
      if (ev.type !== want) throw new Error(`rdma_cm: ${ev.name} (status ${ev.status}), wanted ${RDMA_NAMES[want]}`);
      return ev;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`rdma_cm: no ${RDMA_NAMES[want]} within ${WAIT_MS} ms`);
    pollReadable(ch.fd, Math.min(left, 50));
    await Bun.sleep(0);
  }
}
const RDMA_NAMES = Object.fromEntries(Object.entries(RDMA).map(([k, v]) => [v, k]));

function cmQueues(ctx: VerbsContext, pd: VerbsPd) {
  const cq = ctx.createCq(32);
  const mem = new Uint8Array(4096);
  const mr = pd.regMr(mem, ACCESS);
  return { cq, mem, mr };
}

async function cmServer(): Promise<void> {
  const ch = RdmaEventChannel.create();
  const listener = ch.createId();
  listener.bind("127.0.0.1", 0);
  listener.listen(4);
  out({ step: "listening", port: listener.localPort });
  // The first request is turned away with a reason; the client comes back on a new id.
  const first = await nextEvent(ch, RDMA.RDMA_CM_EVENT_CONNECT_REQUEST);
  first.id.reject(new TextEncoder().encode("busy, retry"));
  first.id.close();
  const req = await nextEvent(ch, RDMA.RDMA_CM_EVENT_CONNECT_REQUEST);
  const id = req.id;
  const ctx = id.verbsContext();
  const pd = ctx.allocPd();
  const { cq, mem, mr } = cmQueues(ctx, pd);
  const qp = id.createQp(pd, { sendCq: cq, recvCq: cq, maxSendWr: 8, maxRecvWr: 8 });
  const recv = new RecvWorkRequests(1);
  recv.set(0, 1, mr.address, 256, mr.lkey);
  expectRc("post_recv", qp.tryPostRecv(recv, 0));
  id.accept({ privateData: new TextEncoder().encode("welcome") });
  await nextEvent(ch, RDMA.RDMA_CM_EVENT_ESTABLISHED);
  const wc = await take(ctx, cq, 1);
  const qpState = qp.state; // before the ack below lets the client disconnect (which moves this QP to ERR)
  mem.set(new TextEncoder().encode("ack"), 512);
  const send = new SendWorkRequests(1);
  send.set(0, 3, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED, mr.address + 512, 3, mr.lkey);
  expectRc("post_send ack", qp.tryPostSend(send, 0));
  const ackWc = await take(ctx, cq, 1);
  out({ step: "server", privateData: new TextDecoder().decode(req.privateData), listenIsOurs: req.listenId === listener, qpState, wc: wc[0], ackWc: ackWc[0], got: new TextDecoder().decode(mem.subarray(0, wc[0]!.byteLen)), remoteHost: id.remote?.host });
  const disc = await nextEvent(ch, RDMA.RDMA_CM_EVENT_DISCONNECTED);
  ch.close();
  ch.close();
  out({ step: "server-closed", disconnected: disc.name, handles: [ch.handle, id.handle, listener.handle, qp.handle, pd.handle, ctx.handle] });
}

async function cmClient(port: number): Promise<void> {
  const ch = RdmaEventChannel.create();
  const resolved = async () => {
    const id = ch.createId();
    id.resolveAddr("127.0.0.1", port, 2000);
    await nextEvent(ch, RDMA.RDMA_CM_EVENT_ADDR_RESOLVED);
    id.resolveRoute(2000);
    await nextEvent(ch, RDMA.RDMA_CM_EVENT_ROUTE_RESOLVED);
    return id;
  };
  // Turned away first: REJECTED carries the server's private data; that id's QP goes with it.
  const refused = await resolved();
  const ctx = refused.verbsContext();
  const pd = ctx.allocPd();
  const { cq, mem, mr } = cmQueues(ctx, pd);
  const refusedQp = refused.createQp(pd, { sendCq: cq, recvCq: cq, maxSendWr: 8, maxRecvWr: 8 });
  refused.connect({ privateData: new TextEncoder().encode("first try") });
  const rej = await nextEvent(ch, RDMA.RDMA_CM_EVENT_REJECTED);
  refused.close();
  out({ step: "rejected", privateData: new TextDecoder().decode(rej.privateData), sameId: rej.id === refused, qpClosed: refusedQp.handle === 0 });
  const id = await resolved();
  const qp = id.createQp(pd, { sendCq: cq, recvCq: cq, maxSendWr: 8, maxRecvWr: 8 });
  const recv = new RecvWorkRequests(1);
  recv.set(0, 2, mr.address + 1024, 64, mr.lkey);
  expectRc("post_recv", qp.tryPostRecv(recv, 0));
  id.connect({ privateData: new TextEncoder().encode("hello from client") });
  const est = await nextEvent(ch, RDMA.RDMA_CM_EVENT_ESTABLISHED);
  mem.set(new TextEncoder().encode("over rdma_cm"), 0);
  const send = new SendWorkRequests(1);
  send.set(0, 9, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED, mr.address, 12, mr.lkey);
  expectRc("post_send", qp.tryPostSend(send, 0));
  const wcs2 = (await take(ctx, cq, 2)).sort((x, y) => x.wrId - y.wrId); // the ack (2) and the send (9)
  out({ step: "client", accepted: new TextDecoder().decode(est.privateData), qpState: qp.state, wc: wcs2[1], ackWc: wcs2[0], ack: new TextDecoder().decode(mem.subarray(1024, 1024 + wcs2[0]!.byteLen)) });
  id.disconnect();
  const disc = await nextEvent(ch, RDMA.RDMA_CM_EVENT_DISCONNECTED);
  ch.close();
  out({ step: "client-closed", disconnected: disc.name, handles: [ch.handle, id.handle, qp.handle, pd.handle] });
}

const role = process.argv[2];
try {
  if (role === "local") await local();
  else if (role === "cm-server") await cmServer();
  else if (role === "cm-client") await cmClient(Number(process.argv[3]));
  else throw new Error(`unknown role ${role}`);
  out({ step: "done" });
} catch (e) {
  console.error(`verbs-softrc-child ${role}:`, e);
  process.exit(1);
}
