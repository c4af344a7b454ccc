/**
 * A process for test/rdma/guard.test.ts: one rdma scenario over the softrc TEST FIXTURE
 * (HOTPATH_IBVERBS names it, SOFTRC_DIR its registry), both ends in this process (one runtime),
 * brought up by hand (RdmaEndpoint, connectQp, open in spin mode), some of them forged or
 * driven by raw work requests. Prints one JSON line per result and ends with the fixture's live
 * objects; exits non-zero (stderr says why) on the first failure.
 *
 * Scenarios (argv[2]): preopen, held, slab, staged, lost, oversend, badgrant, retire,
 * regfail-socket, regfail-cm (a listener and connect() in that mode; the fixture's
 * reg_mr_fail=1 armed just before the k-th ibv_reg_mr of one connection's setup, k = 1, 2, ...
 * until a setup makes fewer than k: the count only picks the moment, the fixture fails the call).
 */
import { dlopen, FFIType } from "bun:ffi";
import { softRcProbes } from "./softrc/probes.ts";
import { makeEnd, out, startWatchdog, type Tuning } from "./pair-kit.ts";
import { RdmaRuntime } from "../../src/rdma/runtime.ts";
import { RdmaEndpoint, type LocalHello } from "../../src/rdma/endpoint.ts";
import type { RdmaConnection } from "../../src/rdma/connection.ts";
import { SEND_OK, type RxMessage } from "../../src/contract/transport.ts";
import { TransportClosedError, type HotpathError } from "../../src/errors.ts";
import { IBV, SendWorkRequests, VerbsPd } from "../../src/ffi/ibverbs.ts";
import { connect, listen } from "../../src/connect/registry.ts";
import type { Connection } from "../../src/contract/transport.ts";

const { live, fault } = softRcProbes(process.env.HOTPATH_IBVERBS!);
startWatchdog("guard-child");

/** An open end: its received messages (held unless `release`), its close error, `gone` once onClosed ran. */
function open(end: { rt: RdmaRuntime; ep: RdmaEndpoint }, peer: LocalHello, name: string, release = true) {
  end.ep.connectQp(peer);
  let onClosed!: () => void;
  const gone = new Promise<void>((r) => (onClosed = r));
  const conn = end.ep.open(peer, name, { mode: "spin" }, () => {
    end.rt.release();
    onClosed();
  });
  const got: RxMessage[] = [];
  const lens: number[] = [];
  const state = { error: "open" as string | null };
  conn.setReceiver({
    onMessage(m) {
      lens.push(m.bodyLength);
      if (release) m.release();
      else got.push(m);
    },
    onClose(e: HotpathError | null) {
      state.error = e === null ? null : `${e.name}: ${e.message}`;
    },
  });
  return { conn, gone, got, lens, state };
}

function pair(t: Tuning = {}, holdB = false) {
  const a = makeEnd(t);
  const b = makeEnd(t);
  const A = open(a, b.ep.local, "b");
  const B = open(b, a.ep.local, "a", !holdB);
  return { a, b, A, B, rt: a.rt };
}

async function until(what: string, cond: () => boolean, conns: RdmaConnection[], ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(conns.map((c) => c.debugState()))}`);
    for (const c of conns) c.poll();
    await Bun.sleep(1);
  }
}

/** `n` SENDs of a 12-byte DATA header from `qp` (raw: no credits honoured), draining `rt`'s send CQ. */
function rawSends(rt: RdmaRuntime, qp: RdmaEndpoint["qp"], n: number, bytes = 12): void {
  const mem = new Uint8Array(bytes);
  const dv = new DataView(mem.buffer);
  dv.setUint8(0, 1); // KIND_DATA
  dv.setUint32(8, bytes - 12, true); // body length
  const mr = rt.pd.regMr(mem, IBV.IBV_ACCESS_LOCAL_WRITE);
  const wrs = new SendWorkRequests(1);
  let posted = 0;
  for (let id = 1; posted < n; id++) {
    wrs.set(0, id, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED | (bytes <= 256 ? IBV.IBV_SEND_INLINE : 0), mr.address, bytes, mr.lkey);
    if (qp.tryPostSend(wrs, 0) === 0) posted++;
    else rt.progress();
  }
  rawMrs.push(mr);
}
const rawMrs: Array<{ close(): void }> = [];

const scenario = process.argv[2];

if (scenario === "preopen") {
  // A peer that floods before this side opened: at most the window is kept, every slot comes back.
  const keep = RdmaRuntime.acquireDevice({ device: "softrc0", port: 1, gidIndex: 0 }); // a listener's reference
  const victim = makeEnd();
  const hostile = makeEnd({ sqDepth: 1024 });
  victim.ep.connectQp(hostile.ep.local);
  hostile.ep.connectQp(victim.ep.local);
  rawSends(keep, hostile.ep.qp, 500);
  const deadline = Date.now() + 10_000;
  while (keep.stats().recvHeld < 16 && Date.now() < deadline) {
    keep.progress();
    await Bun.sleep(1);
  }
  await Bun.sleep(50);
  keep.progress();
  const before = keep.stats();
  let closeError = "open";
  const conn = victim.ep.open(hostile.ep.local, "hostile", { mode: "spin" }, () => victim.rt.release());
  conn.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => (closeError = `${e?.name}`) });
  await until("the victim's close", () => conn.closed, [conn]);
  hostile.ep.close();
  hostile.rt.release();
  for (const m of rawMrs) m.close();
  await Bun.sleep(100);
  keep.progress();
  const after = keep.stats();
  out({ step: "preopen", heldBeforeOpen: before.recvHeld, closeError, heldAfter: after.recvHeld, postedAfter: after.recvPosted, reservedAfter: after.reservedRecv });
  keep.release();
} else if (scenario === "held") {
  // Views held across the close keep the reservation and the runtime until released.
  const run = async () => {
    const p = pair({}, true);
    for (let i = 0; i < 15; i++) if (p.A.conn.trySend(new Uint8Array(4), new Uint8Array(100)) !== SEND_OK) throw new Error(`send ${i} not Ok`);
    await until("15 held", () => p.B.got.length === 15, [p.A.conn, p.B.conn]);
    const before = p.rt.stats();
    p.A.conn.close();
    await until("B closed", () => p.B.conn.closed, [p.B.conn]);
    await Promise.all([p.A.gone, p.B.gone]);
    return { p, before };
  };
  const keep = RdmaRuntime.acquireDevice({ device: "softrc0", port: 1, gidIndex: 0 });
  const one = await run();
  const whileHeld = keep.stats();
  const firstView = one.p.B.got[0]!.body.length;
  for (const m of one.p.B.got) m.release();
  const released = keep.stats();
  keep.release();
  const two = await run();
  // No other user: the runtime goes with setup's last reference; the views stay readable and a release is a no-op.
  const heldAlone = { srq: live("srq"), pd: live("pd"), view: two.p.B.got[14]!.body.length };
  for (const m of two.p.B.got) m.release();
  out({ step: "held", before: one.before.reservedRecv, whileHeld, firstView, released, heldAlone, srqAfter: live("srq") });
} else if (scenario === "slab") {
  // A peer announcing 1 MiB receive slots: the send slab stays sqDepth × 4096; larger messages are written.
  const a = makeEnd();
  const b = makeEnd();
  const A = open(a, { ...b.ep.local, recvSlotBytes: 1 << 20 }, "b");
  const B = open(b, a.ep.local, "a");
  const body = new Uint8Array(8000).fill(7);
  const st = A.conn.trySend(new Uint8Array(4), body);
  await until("the 8000-byte message", () => B.lens.length === 1 || B.conn.closed, [A.conn, B.conn]);
  out({ step: "slab", st, sendSlabBytes: A.conn.debugState().sendSlabBytes, lens: B.lens, largeDelivered: B.conn.largeDelivered, bClosed: B.conn.closed, bError: B.state.error });
  A.conn.close();
  await Promise.all([A.gone, B.gone]);
} else if (scenario === "staged") {
  // close() right after a large trySend that is only staged (its grant not here yet): delivered before GOODBYE.
  const p = pair({ zoneBytes: 4096 });
  const st = p.A.conn.trySend(new Uint8Array(4), new Uint8Array(100_000).fill(3));
  const stage = p.A.conn.debugState().stage;
  p.A.conn.close();
  const sendAfterClose = p.A.conn.trySend(new Uint8Array(4));
  await until("B closed", () => p.B.conn.closed, [p.B.conn]);
  await Promise.all([p.A.gone, p.B.gone]);
  out({ step: "staged", st, stage, sendAfterClose, delivered: p.B.lens, bError: p.B.state.error, aError: p.A.state.error });
} else if (scenario === "lost") {
  // The peer never grants (it holds its zone): the close reports the staged message it could not send.
  const p = pair({ zoneBytes: 200_000 }, true);
  if (p.A.conn.trySend(new Uint8Array(4), new Uint8Array(100_000)) !== SEND_OK) throw new Error("first large not Ok");
  await until("first large held", () => p.B.got.length === 1, [p.A.conn, p.B.conn]);
  const st = p.A.conn.trySend(new Uint8Array(4), new Uint8Array(100_000));
  const stage = p.A.conn.debugState().stage;
  p.A.conn.close();
  await until("A closed", () => p.A.conn.closed, [p.A.conn, p.B.conn]);
  await until("B closed", () => p.B.conn.closed, [p.B.conn]);
  for (const m of p.B.got) m.release();
  await Promise.all([p.A.gone, p.B.gone]);
  out({ step: "lost", st, stage, aError: p.A.state.error, delivered: p.B.lens, bError: p.B.state.error });
} else if (scenario === "oversend") {
  // A peer SENDs 8000 bytes into a 4096-byte receive slot: ProtocolError, not a QP failure.
  const a = makeEnd();
  const b = makeEnd();
  const A = open(a, b.ep.local, "hostile");
  b.ep.connectQp(a.ep.local);
  rawSends(b.rt, b.ep.qp, 1, 8000);
  await until("A closed", () => A.conn.closed, [A.conn]);
  await A.gone;
  b.ep.close();
  b.rt.release();
  for (const m of rawMrs) m.close();
  await Bun.sleep(20);
  out({ step: "oversend", aError: A.state.error });
} else if (scenario === "badgrant") {
  // The peer's hello grants a zone under a bad rkey: our WRITE_WITH_IMM fails remotely → ProtocolError.
  const a = makeEnd();
  const b = makeEnd();
  const A = open(a, { ...b.ep.local, zoneRkey: (b.ep.local.zoneRkey ^ 0x5a5a00) >>> 0 }, "b");
  const B = open(b, a.ep.local, "a");
  const st = A.conn.trySend(new Uint8Array(4), new Uint8Array(100_000));
  await until("A closed", () => A.conn.closed, [A.conn, B.conn]);
  await until("B closed", () => B.conn.closed, [B.conn]);
  await Promise.all([A.gone, B.gone]);
  out({ step: "badgrant", st, aError: A.state.error });
} else if (scenario === "retire") {
  // Many connections closed with receives nobody polled: the slab's posted count matches the SRQ's.
  const { symbols: fx } = dlopen(process.env.HOTPATH_IBVERBS!, { softrc_srq_posted: { args: [FFIType.u64], returns: FFIType.i32 } });
  const keep = RdmaRuntime.acquireDevice({ device: "softrc0", port: 1, gidIndex: 0 });
  const srqPosted = () => fx.softrc_srq_posted(BigInt(keep.srq.handle));
  const start = { slab: keep.stats().recvPosted, srq: srqPosted() };
  for (let i = 0; i < 20; i++) {
    const p = pair();
    for (let k = 0; k < 10; k++) if (p.A.conn.trySend(new Uint8Array(4), new Uint8Array(32)) !== SEND_OK) throw new Error(`send ${k} not Ok`);
    await Bun.sleep(5); // delivered into B's receives; nobody polls the CQ
    p.B.conn.peerGone(new TransportClosedError("setup saw the peer go"));
    p.A.conn.peerGone(new TransportClosedError("setup saw the peer go"));
    await Promise.all([p.A.gone, p.B.gone]);
  }
  keep.progress();
  out({ step: "retire", start, slab: keep.stats().recvPosted, held: keep.stats().recvHeld, srq: srqPosted() });
  keep.release();
} else if (scenario === "regfail-socket" || scenario === "regfail-cm") {
  // The k-th registration of a connection's setup fails (ENOMEM): typed errors, nothing left.
  const mode = scenario === "regfail-socket" ? "socket" : "cm";
  const runtimes = (RdmaRuntime as unknown as { runtimes: Map<string, RdmaRuntime> }).runtimes;
  const reserved = () => [...runtimes.values()].reduce((a, r) => [a[0]! + r.stats().reservedRecv, a[1]! + r.stats().reservedSend], [0, 0]);
  let calls = 0;
  let armAt = 0;
  const regMr = VerbsPd.prototype.regMr;
  VerbsPd.prototype.regMr = function (this: VerbsPd, view: Uint8Array, access: number) {
    if (++calls === armAt) fault("reg_mr_fail=1");
    return regMr.call(this, view, access);
  };
  const named = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}${e.cause instanceof Error ? ` [cause ${e.cause.name}]` : ""}` : String(e));
  const l = await listen(`rdma://127.0.0.1:0${mode === "socket" ? "?mode=socket" : ""}`);
  const accepted: Connection[] = [];
  const refused: string[] = [];
  l.onConnection((c) => accepted.push(c));
  l.onRefused((e, why) => refused.push(`${why} ${named(e)}`));
  const settle = async (conns: Connection[], cond: () => boolean, ms = 5000) => {
    for (const end = Date.now() + ms; !cond() && Date.now() < end; ) {
      for (const c of conns) if (!c.closed) c.poll();
      await Bun.sleep(2);
    }
  };
  // One connection stays open throughout (the runtimes stay; the baseline includes it).
  const keepC = await connect(l.url);
  await settle([], () => accepted.length === 1);
  const keepS = accepted[0]!;
  const base = { mr: live("mr"), qp: live("qp"), reserved: reserved() };
  const cases: Array<Record<string, unknown>> = [];
  for (let k = 1; k <= 20; k++) {
    calls = 0;
    armAt = k;
    const before = { accepted: accepted.length, refused: refused.length };
    let clientError: string | null = null;
    let c: Connection | null = null;
    try {
      c = await connect(l.url, { connectTimeoutMs: 5000 });
    } catch (e) {
      clientError = named(e);
    }
    // Both sides done: the server accepted or refused (none when the client's first registration failed: it never reached the server).
    await settle(c ? [c] : [], () => accepted.length > before.accepted || refused.length > before.refused || (clientError !== null && calls <= 1));
    const setupCalls = calls;
    armAt = 0;
    const s = accepted.length > before.accepted ? accepted[accepted.length - 1]! : null;
    const opened = c !== null && s !== null;
    if (c !== null && s === null) await settle([c], () => c!.closed); // the server side failed: the client's connection closes
    const clientClosedAfter = c?.closed ?? null;
    c?.close();
    s?.close();
    await settle([], () => live("mr") === base.mr && live("qp") === base.qp && reserved().join() === base.reserved.join());
    cases.push({ k, setupCalls, opened, clientError, refused: refused.slice(before.refused), clientClosedAfter, mr: live("mr") - base.mr, qp: live("qp") - base.qp, reserved: reserved() });
    if (setupCalls < k) break; // the fault was never armed: a whole setup made fewer registrations
  }
  VerbsPd.prototype.regMr = regMr;
  // A later connection works.
  const after = await connect(l.url);
  await settle([], () => accepted.length > 0 && !accepted[accepted.length - 1]!.closed && accepted[accepted.length - 1] !== keepS);
  const srv = accepted[accepted.length - 1]!;
  const got: number[] = [];
  srv.setReceiver({ onMessage: (m) => (got.push(m.bodyLength), m.release()), onClose: () => {} });
  const st = after.trySend(new Uint8Array(4), new Uint8Array(100_000).fill(9));
  await settle([after, srv], () => got.length === 1);
  out({ step: scenario, base: { reserved: base.reserved }, cases, later: { st, got } });
  for (const x of [after, srv, keepC, keepS]) x.close();
  l.close(true);
  await settle([], () => live("qp") === 0 && live("mr") === 0);
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
// A retired QP's destroy may follow its close by a microtask or, without the provider's
// IBV_EVENT_QP_LAST_WQE_REACHED, by LAST_WQE_WAIT_MS.
for (const end = Date.now() + 2000; live("context") > 0 && Date.now() < end; ) await Bun.sleep(5);
out({ step: "leaks", live: { context: live("context"), pd: live("pd"), mr: live("mr"), channel: live("channel"), cq: live("cq"), srq: live("srq"), qp: live("qp") } });
process.exit(0);
