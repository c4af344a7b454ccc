/**
 * A process for test/rdma/connection.test.ts: rdma connections over the softrc TEST FIXTURE
 * (HOTPATH_IBVERBS names it, SOFTRC_DIR its registry) brought up by hand: RdmaRuntime,
 * RdmaEndpoint, hellos exchanged in-process or as JSON lines over stdin/stdout, connectQp, open.
 * Prints one JSON line per result; exits non-zero (stderr says why) on the first failure.
 *
 * Roles (argv[2]):
 *   pair <scenario>       both ends in this process (scenarios: messages, credits, sq, close)
 *   end <side> <scenario> one end; prints {"step":"hello",...}, reads the peer's hello line from
 *                         stdin, then runs its side ("send" / "recv") of `messages` or `close-a` / `close-b`
 * Every role ends with a leak check: the fixture's live objects (softrc_live) after closing.
 */
import { softRcProbes } from "./softrc/probes.ts";
import { makeEnd, out, startWatchdog, type Tuning } from "./pair-kit.ts";
import { RdmaRuntime } from "../../src/rdma/runtime.ts";
import { RdmaEndpoint, type LocalHello } from "../../src/rdma/endpoint.ts";
import type { RdmaConnection } from "../../src/rdma/connection.ts";
import { SEND_CLOSED, SEND_FULL, SEND_OK, type RxMessage } from "../../src/contract/transport.ts";
import type { HotpathError } from "../../src/errors.ts";
import { IBV, SendWorkRequests } from "../../src/ffi/ibverbs.ts";
import { readdirSync } from "node:fs";

const { live } = softRcProbes(process.env.HOTPATH_IBVERBS!);
startWatchdog("conn-child");

const helloJson = (h: LocalHello) => JSON.stringify({ ...h, gid: [...h.gid], zoneAddr: String(h.zoneAddr) });
const helloParse = (s: string): LocalHello => {
  const o = JSON.parse(s);
  return { ...o, gid: new Uint8Array(o.gid), zoneAddr: BigInt(o.zoneAddr) };
};

/** Opens `ep` towards `peer`; resolves `closed` when onClosed ran. */
function open(rt: RdmaRuntime, ep: RdmaEndpoint, peer: LocalHello, name: string) {
  ep.connectQp(peer);
  let onClosed!: () => void;
  const gone = new Promise<void>((r) => (onClosed = r));
  const conn = ep.open(peer, name, undefined, () => {
    rt.release();
    onClosed();
  });
  return { conn, gone };
}

/** Two ends made with `t` (a first, then b), each QP connected to the other's and opened: A (peer "b") and B (peer "a"). */
function openPair(t: Tuning = {}) {
  const a = makeEnd(t);
  const b = makeEnd(t);
  const A = open(a.rt, a.ep, b.ep.local, "b");
  const B = open(b.rt, b.ep, a.ep.local, "a");
  return { a, b, A, B };
}

/** Deterministic body bytes of message `seq`. */
function pattern(seq: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (seq * 31 + i * 7) & 255;
  return b;
}
function matches(seq: number, body: Uint8Array): boolean {
  for (let i = 0; i < body.length; i++) if (body[i] !== ((seq * 31 + i * 7) & 255)) return false;
  return true;
}

/** The messages scenario: each kind of send with its size. */
const SIZES: Array<[string, number]> = [
  ["inline", 100], ["copied", 2000], ["zero-copy", 3000], ["zero-copy-inline", 50], ["large-1MiB", 1 << 20], ["copied", 4000],
  ["large-16MiB", 16 << 20], ["large-zero-copy", 2 << 20], ["inline", 0], ["copied", 4084 - 8],
];

async function until(what: string, cond: () => boolean, conns: RdmaConnection[]): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(conns.map((c) => c.debugState()))}`);
    const gone = conns.find((c) => c.closed && c.closeError !== null);
    if (gone !== undefined && what !== "the receiver's close" && what !== "the peer's close") throw new Error(`waiting for ${what}: closed with ${gone.closeError}`);
    for (const c of conns) c.poll();
    if (!cond()) await (conns[0]?.closed === false ? conns[0].wait(20) : Bun.sleep(5));
  }
}

/** Sends SIZES in order (retrying Full), each head naming its sequence. */
async function sendAll(c: RdmaConnection, pump: RdmaConnection[]): Promise<Record<string, number>> {
  const kinds: Record<string, number> = {};
  const deadline = Date.now() + 20_000;
  for (let seq = 0; seq < SIZES.length; seq++) {
    const [kind, len] = SIZES[seq]!;
    const head = new TextEncoder().encode(`m${seq}`);
    for (;;) {
      let st: number;
      if (kind.startsWith("zero-copy") || kind === "large-zero-copy") {
        const buf = c.allocBuffer(len)!;
        buf.set(pattern(seq, len));
        st = c.trySendBuffer(head, buf);
        if (st !== SEND_OK) c.releaseBuffer(buf);
      } else st = c.trySend(head, pattern(seq, len));
      if (st === SEND_OK) break;
      if (st === SEND_CLOSED) throw new Error(`closed while sending ${seq}: ${c.closeError?.message}`);
      if (Date.now() > deadline) throw new Error(`timed out sending ${seq}: ${JSON.stringify(c.debugState())}`);
      for (const p of pump) p.poll();
      await c.wait(20);
    }
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}

function receiveAll(c: RdmaConnection) {
  const got: Array<{ head: string; len: number; ok: boolean; words: string }> = [];
  c.setReceiver({
    onMessage(m: RxMessage) {
      const head = new TextDecoder().decode(m.head);
      const w = m.headWords;
      const words = w === undefined ? "none" : w.buffer === m.headBuf.buffer && w.byteOffset === m.headBuf.byteOffset && m.headOffset % 4 === 0 && m.headBuf.subarray(m.headOffset, m.headOffset + m.headLength).every((b, i) => b === m.head[i]) ? "yes" : "bad";
      got.push({ head, len: m.bodyLength, ok: matches(Number(head.slice(1)), m.body) && m.body.length === m.bodyLength, words });
      m.release();
    },
    onClose() {},
  });
  return got;
}

function leaks(): Record<string, number> {
  return Object.fromEntries(["context", "pd", "mr", "channel", "cq", "srq", "qp"].map((k) => [k, live(k)]));
}

async function pairMessages(): Promise<void> {
  const { a, b, A, B } = openPair();
  const got = receiveAll(B.conn);
  const kinds = await sendAll(A.conn, [B.conn]);
  await until("every message", () => got.length === SIZES.length, [A.conn, B.conn]);
  out({ step: "messages", got, kinds, zoneGrown: B.conn.zoneGrown, largeDelivered: B.conn.largeDelivered, inline: A.conn.caps.maxInlineBytes, sameRuntime: a.rt === b.rt });
  A.conn.close();
  await Promise.all([A.gone, B.gone]);
}

async function pairCredits(): Promise<void> {
  const { A, B } = openPair();
  const held: RxMessage[] = [];
  let closeErr: HotpathError | null = null;
  B.conn.setReceiver({ onMessage: (m) => held.push(m), onClose: (e) => (closeErr = e) });
  A.conn.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => (closeErr = e) });
  const body = pattern(1, 500);
  let sent = 0;
  let full = 0;
  // Send until Full, then keep trying for a while: Full stays, nothing fails.
  for (let i = 0; i < 200; i++) {
    const st = A.conn.trySend(new Uint8Array([sent & 255]), body);
    if (st === SEND_OK) sent++;
    else if (st === SEND_FULL) full++;
    else throw new Error(`send closed: ${A.conn.closeError?.message}`);
    A.conn.poll();
    B.conn.poll();
    if (full > 0) await Bun.sleep(1);
  }
  const sentBeforeRelease = sent;
  const heldBefore = held.length;
  for (const m of held.splice(0)) m.release();
  let after = 0;
  for (let i = 0; i < 2000 && after < 100; i++) {
    const st = A.conn.trySend(new Uint8Array([sent & 255]), body);
    if (st === SEND_OK) {
      sent++;
      after++;
    } else if (st !== SEND_FULL) throw new Error("closed");
    A.conn.poll();
    B.conn.poll();
    for (const m of held.splice(0)) m.release();
    if (st === SEND_FULL) await A.conn.wait(10);
  }
  await until("all delivered", () => B.conn.delivered === sent, [A.conn, B.conn]);
  out({ step: "credits", sentBeforeRelease, heldBefore, full, after, delivered: B.conn.delivered, closed: [A.conn.closed, B.conn.closed], closeErr: closeErr === null ? null : String(closeErr) });
  // Down to its last credit again (B holds everything), A closes: its GOODBYE takes that credit.
  let refill = 0;
  for (let i = 0; i < 100; i++) {
    if (A.conn.trySend(new Uint8Array([0]), body) === SEND_OK) refill++;
    A.conn.poll();
  }
  const aState = A.conn.debugState();
  let bClose: HotpathError | null = null;
  B.conn.setReceiver({ onMessage: (m) => held.push(m), onClose: (e) => (bClose = e) });
  A.conn.close();
  await until("B's close", () => B.conn.closed, [B.conn]);
  out({ step: "last-credit", refill, held: held.length, aCredits: aState.credits, aOwed: aState.owed, bClose: bClose === null ? null : (bClose as HotpathError).name, bCloseMessage: (bClose as HotpathError | null)?.message ?? null });
  for (const m of held.splice(0)) m.release();
  await Promise.all([A.gone, B.gone]);
}

async function pairSq(): Promise<void> {
  const { A, B } = openPair({ sqDepth: 4, window: 16 });
  for (const c of [A.conn, B.conn]) c.setWaitPolicy({ mode: "spin" });
  let next = 0;
  let bad = 0;
  B.conn.setReceiver({
    onMessage(m) {
      const v = new DataView(m.body.buffer, m.body.byteOffset, 4).getUint32(0, true);
      if (v !== next) bad++;
      next++;
      m.release();
    },
    onClose() {},
  });
  const N = 10_000;
  const body = new Uint8Array(64);
  const dv = new DataView(body.buffer);
  let full = 0;
  for (let i = 0; i < N; ) {
    dv.setUint32(0, i, true);
    const st = A.conn.trySend(new Uint8Array(4), body);
    if (st === SEND_OK) i++;
    else if (st === SEND_FULL) {
      full++;
      await A.conn.wait(5);
    } else throw new Error(`closed at ${i}: ${A.conn.closeError?.message}`);
  }
  await until("10000 delivered", () => next === N, [A.conn, B.conn]);
  out({ step: "sq", delivered: next, bad, full, closed: [A.conn.closed, B.conn.closed] });
  A.conn.close();
  await Promise.all([A.gone, B.gone]);
}

/** A Full whose room comes back before wait() is called (the runtime's own pump took the completion): that wait resolves true. */
async function pairWake(): Promise<void> {
  const { A, B } = openPair();
  B.conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
  const big = pattern(3, 64 << 10);
  const first = A.conn.trySend(new Uint8Array(1), big);
  const second = A.conn.trySend(new Uint8Array(1), big); // the first is in flight: Full
  // Let the runtime's pump run: it takes the write's completion, B's delivery and its new grant.
  for (let i = 0; i < 50 && A.conn.debugState().stage !== 0; i++) await Bun.sleep(1);
  const stageAfter = A.conn.debugState().stage;
  const woke = await A.conn.wait(10_000);
  const third = A.conn.trySend(new Uint8Array(1), big);
  out({ step: "wake", first, second, stageAfter, woke, third });
  A.conn.close();
  await Promise.all([A.gone, B.gone]);
}

/** A one-sided completion callback that throws: its connection closes with that error; the runtime and its other connections go on. */
async function pairThrow(): Promise<void> {
  const a = makeEnd();
  const b = makeEnd();
  const c = makeEnd();
  const d = makeEnd();
  const A = open(a.rt, a.ep, b.ep.local, "b");
  const B = open(b.rt, b.ep, a.ep.local, "a");
  const C = open(c.rt, c.ep, d.ep.local, "d");
  const D = open(d.rt, d.ep, c.ep.local, "c");
  for (const x of [A, B, C, D]) x.conn.setWaitPolicy({ mode: "spin" });
  let dGot = 0;
  D.conn.setReceiver({ onMessage: (m) => (dGot++, m.release()), onClose() {} });
  let aClose: HotpathError | null = null;
  A.conn.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => (aClose = e) });
  B.conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
  const local = a.rt.pd.regMr(new Uint8Array(new ArrayBuffer(64)), IBV.IBV_ACCESS_LOCAL_WRITE);
  class Boom extends Error {}
  // A one-sided write into B's landing zone (registered for remote write), and a message on C in the same progress round.
  A.conn.postOneSided(IBV.IBV_WR_RDMA_WRITE, local.address, local.lkey, 8, b.ep.local.zoneAddr, b.ep.local.zoneRkey, 0n, 0n, () => {
    throw new Boom("callback failed");
  });
  C.conn.trySend(new Uint8Array(1), new Uint8Array(10));
  let escaped: string | null = null;
  try {
    await until("A's close and D's message", () => A.conn.closed && dGot === 1, [C.conn]);
  } catch (e) {
    escaped = String(e);
  }
  const after = C.conn.trySend(new Uint8Array(1), new Uint8Array(10));
  await until("D's second message", () => dGot === 2, [C.conn]);
  out({ step: "throw", escaped, aClosed: A.conn.closed, aClose: aClose === null ? null : (aClose as Error).message, after, dGot });
  local.close();
  for (const x of [B, C]) x.conn.close();
  await Promise.all([A.gone, B.gone, C.gone, D.gone]);
}

/** A window as large as the SRQ allows: the runtime refuses the next reservation (busy); holding it all trips the SRQ limit, which is re-armed. */
async function pairSrq(): Promise<void> {
  const a = makeEnd();
  const b = makeEnd({ window: 2000 });
  const refused = RdmaEndpoint.create(b.rt, { maxMessageBytes: 1 << 20, window: 64, sqDepth: 64, zoneBytes: 1 << 16 });
  const A = open(a.rt, a.ep, b.ep.local, "b");
  const B = open(b.rt, b.ep, a.ep.local, "a");
  const held: RxMessage[] = [];
  B.conn.setReceiver({ onMessage: (m) => held.push(m), onClose() {} });
  A.conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
  let sent = 0;
  while (sent < 1999) {
    const st = A.conn.trySend(new Uint8Array(2), new Uint8Array(8));
    if (st === SEND_OK) sent++;
    else if (st === SEND_FULL) await A.conn.wait(10);
    else throw new Error(`closed: ${A.conn.closeError}`);
  }
  await until("1999 held", () => held.length === 1999, [A.conn, B.conn]);
  const full = A.conn.trySend(new Uint8Array(2), new Uint8Array(8));
  await until("the SRQ limit event", () => a.rt.srqLimitEvents > 0, [A.conn, B.conn]);
  const stats = a.rt.stats();
  for (const m of held.splice(0)) m.release();
  // The credits come back in CREDIT messages (the sender kept its last credit for one of its own).
  let again = A.conn.trySend(new Uint8Array(2), new Uint8Array(8));
  while (again === SEND_FULL) {
    B.conn.poll();
    await A.conn.wait(10);
    again = A.conn.trySend(new Uint8Array(2), new Uint8Array(8));
  }
  await until("the last one", () => held.length === 1, [A.conn, B.conn]);
  for (const m of held.splice(0)) m.release();
  out({ step: "srq", refused: refused === null, full, srqLimitEvents: a.rt.srqLimitEvents, rearmed: a.rt.srq.limit, reservedRecv: stats.reservedRecv, again, closed: [A.conn.closed, B.conn.closed] });
  A.conn.close();
  await Promise.all([A.gone, B.gone]);
}

async function pairClose(): Promise<void> {
  const { A, B } = openPair();
  const closes: string[] = [];
  const words: Array<{ head: number[]; body: number[]; hw: number[] | null }> = [];
  A.conn.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => closes.push(`A:${e === null ? "null" : e.name}`) });
  B.conn.setReceiver({
    onMessage: (m) => {
      const hw = m.headWords === undefined ? null : [...m.headWords.subarray(m.headOffset / 4, m.headOffset / 4 + 6)];
      words.push({ head: [...m.head], body: [...m.body], hw });
      m.release();
    },
    onClose: (e) => closes.push(`B:${e === null ? "null" : e.name}`),
  });
  // trySendWords: the six words arrive as the 24-byte head, little-endian.
  const wordsSent = A.conn.trySendWords(1, -2, 0x01020304, 0, 0x7fffffff, 6, new Uint8Array([9, 8, 7]));
  await until("the words message", () => words.length === 1, [A.conn, B.conn]);
  const policy: Array<[string, boolean]> = [];
  for (const mode of ["spin", "blocking", "async", "adaptive"] as const) {
    A.conn.setWaitPolicy({ mode });
    policy.push([mode, A.conn.waitsOnEventLoop]);
  }
  const refused: string[] = [];
  for (const bad of [{ mode: "nap" }, { spinNs: -1 }]) {
    try {
      A.conn.setWaitPolicy(bad as never);
    } catch (e) {
      refused.push((e as Error).name);
    }
  }
  A.conn.close();
  A.conn.close();
  await Promise.all([A.gone, B.gone]);
  const afterSend = B.conn.trySend(new Uint8Array(1));
  const waitAfter = await B.conn.wait(1000);
  out({ step: "close", wordsSent, words, closes, afterSend, waitAfter, closed: [A.conn.closed, B.conn.closed], policy, refused });
}


/** Open fds of this process (the runtime's channel, async fd and waiter eventfd must be gone after). */
const openFds = () => readdirSync("/proc/self/fd").length;

/**
 * A hostile peer: end B stays an endpoint (never opened) and posts raw SENDs with headers of
 * its own making at the real connection A: `frames` are [kind, headLen, bodyLen, claimed lengths].
 */
async function hostileRound(frames: Array<{ kind: number; hl: number; bl: number; claimHl?: number; claimBl?: number; imm?: number }>, hook: boolean) {
  const a = makeEnd({ maxMessageBytes: 1000 });
  const b = makeEnd();
  const A = open(a.rt, a.ep, b.ep.local, "hostile");
  b.ep.connectQp(a.ep.local);
  const events: string[] = [];
  A.conn.setReceiver({
    onMessage(m) {
      events.push(`message ${new TextDecoder().decode(m.head)} ${m.bodyLength}`);
      m.release();
    },
    onClose: (e) => events.push(`close ${e === null ? null : e.name}: ${e?.message ?? ""}`),
    ...(hook ? { onOversized: (head: Uint8Array, len: number) => events.push(`oversized ${new TextDecoder().decode(head)} ${len}`) } : {}),
  });
  const buf = new ArrayBuffer(4096);
  const mem = new Uint8Array(buf);
  const dv = new DataView(buf);
  const mr = b.rt.pd.regMr(mem, IBV.IBV_ACCESS_LOCAL_WRITE);
  const wrs = new SendWorkRequests(1);
  let id = 1;
  for (const f of frames) {
    dv.setUint8(0, f.kind);
    dv.setUint8(1, 0);
    dv.setUint16(2, 0, true);
    dv.setUint32(4, f.claimHl ?? f.hl, true);
    dv.setUint32(8, f.claimBl ?? f.bl, true);
    mem.set(new TextEncoder().encode("h".repeat(f.hl)), 12);
    if (f.imm === undefined) wrs.set(0, id++, IBV.IBV_WR_SEND, IBV.IBV_SEND_SIGNALED, mr.address, 12 + f.hl + f.bl, mr.lkey);
    else {
      // A large message written into A's landing zone (the grant its hello gave), with immediate `imm`.
      wrs.set(0, id++, IBV.IBV_WR_RDMA_WRITE_WITH_IMM, IBV.IBV_SEND_SIGNALED, mr.address, 12 + f.hl + f.bl, mr.lkey);
      wrs.setRdma(0, a.ep.local.zoneAddr, a.ep.local.zoneRkey);
      wrs.setImm(0, f.imm);
    }
    if (b.ep.qp.tryPostSend(wrs, 0) !== 0) throw new Error("raw post failed");
    await Bun.sleep(5);
    A.conn.poll();
  }
  await until("the hostile frames", () => A.conn.closed || events.length >= frames.length, [A.conn]);
  await Bun.sleep(20);
  A.conn.poll();
  const closed = A.conn.closed;
  if (!closed) A.conn.close();
  await A.gone;
  b.ep.close();
  mr.close();
  b.rt.release();
  return { events, closed };
}

async function pairHostile(): Promise<void> {
  const fdsBefore = openFds();
  // With the hook: an oversized body is skipped and reported, the next message delivered, then a bad kind aborts.
  const skip = await hostileRound([{ kind: 1, hl: 3, bl: 2000 }, { kind: 1, hl: 2, bl: 10 }, { kind: 99, hl: 0, bl: 0 }], true);
  // Lengths in the header that disagree with the bytes received.
  const lengths = await hostileRound([{ kind: 1, hl: 2, bl: 10, claimBl: 500 }], true);
  // Without the hook an oversized body aborts.
  const noHook = await hostileRound([{ kind: 1, hl: 2, bl: 2000 }], false);
  // A large message whose immediate names another zone generation, then one whose header is not LARGE.
  const badImm = await hostileRound([{ kind: 6, hl: 2, bl: 100, imm: 0x4c415247 ^ 7 }], true);
  const notLarge = await hostileRound([{ kind: 1, hl: 2, bl: 100, imm: 0x4c415247 }], true);
  await Bun.sleep(200); // the waiter's helper closes its eventfd as it exits
  out({ step: "hostile", skip, lengths, noHook, badImm, notLarge, fdsBefore, fdsAfter: openFds() });
}

/** Ping-pong across processes in wait mode `mode` (side "ping"), against an echo that delivers from the event loop. */
async function ping(c: RdmaConnection, mode: string): Promise<Record<string, unknown>> {
  c.setWaitPolicy({ mode: mode as "spin" });
  let reply: Uint8Array | null = null;
  c.setReceiver({
    onMessage(m) {
      reply = m.body.slice();
      m.release();
    },
    onClose() {},
  });
  let bad = 0;
  let falseWakes = 0;
  const N = 200;
  for (let i = 0; i < N; i++) {
    const body = pattern(i, 64 + (i % 7) * 300);
    while (c.trySend(new Uint8Array([1]), body) !== SEND_OK) await c.wait(10);
    reply = null;
    const deadline = Date.now() + 10_000;
    while (reply === null) {
      if (Date.now() > deadline) throw new Error(`no reply to ${i} in mode ${mode}: ${JSON.stringify(c.debugState())}`);
      if (!(await c.wait(100))) falseWakes++;
      if (mode === "spin" || mode === "blocking") c.poll();
    }
    if (!matches(i, reply!) || (reply as Uint8Array).length !== body.length) bad++;
  }
  return { mode, rounds: N, bad, waitsOnEventLoop: c.waitsOnEventLoop };
}

function echo(c: RdmaConnection): void {
  const backlog: Uint8Array[] = [];
  const flush = () => {
    while (backlog.length > 0 && c.trySend(new Uint8Array([2]), backlog[0]!) === SEND_OK) backlog.shift();
    if (backlog.length > 0) setTimeout(flush, 1);
  };
  c.setReceiver({
    onMessage(m) {
      backlog.push(m.body.slice());
      m.release();
      flush();
    },
    onClose() {},
  });
}

let stdinReader: { read(): Promise<{ value?: Uint8Array; done?: boolean }> } | null = null;
let stdinBuf = "";
async function readLine(): Promise<string> {
  const reader = (stdinReader ??= Bun.stdin.stream().getReader());
  const dec = new TextDecoder();
  for (;;) {
    const nl = stdinBuf.indexOf("\n");
    if (nl >= 0) {
      const line = stdinBuf.slice(0, nl);
      stdinBuf = stdinBuf.slice(nl + 1);
      return line;
    }
    const { value, done } = await reader.read();
    if (done) throw new Error("stdin closed before the line expected");
    stdinBuf += dec.decode(value, { stream: true });
  }
}

async function end(side: string, scenario: string): Promise<void> {
  const me = makeEnd();
  out({ step: "hello", hello: helloJson(me.ep.local), pid: process.pid });
  const peer = helloParse(await readLine());
  const E = open(me.rt, me.ep, peer, `peer-${side}`);
  const c = E.conn;
  // Both QPs are in RTS before anything is sent (setup's READY does this for real connections).
  out({ step: "open" });
  if ((await readLine()) !== "go") throw new Error("expected go");
  if (scenario === "stale") {
    if (side === "doomed") {
      await Bun.sleep(60_000); // killed by the test
      return;
    }
    // victim: the test kills the peer; this thread does not look at its async events until the
    // provider has raised QP_FATAL for the QP, then drops the connection (as setup does when the
    // socket goes) and makes a new pair on the same runtime (held by an extra user).
    const keep = RdmaRuntime.acquireDevice({ device: "softrc0", port: 1, gidIndex: 0 });
    c.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    out({ step: "ready" });
    if ((await readLine()) !== "killed") throw new Error("expected killed");
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
    c.peerGone(new (await import("../../src/errors.ts")).TransportClosedError("the test killed the peer"));
    await E.gone;
    const x = makeEnd();
    const y = makeEnd();
    const X = open(x.rt, x.ep, y.ep.local, "y");
    const Y = open(y.rt, y.ep, x.ep.local, "x");
    let got = 0;
    Y.conn.setReceiver({ onMessage: (m) => (got++, m.release()), onClose() {} });
    X.conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    for (let i = 0; i < 5; i++) X.conn.trySend(new Uint8Array(1), new Uint8Array(8));
    await until("5 messages", () => got === 5, [X.conn, Y.conn]);
    await Bun.sleep(100); // the async fd's handler runs meanwhile
    out({ step: "stale", closed: [X.conn.closed, Y.conn.closed], error: X.conn.closeError?.message ?? Y.conn.closeError?.message ?? null, got });
    X.conn.close();
    await Promise.all([X.gone, Y.gone]);
    keep.release();
    out({ step: "after" });
    return;
  }
  if (scenario.startsWith("ping-")) {
    if (side === "ping") {
      out({ step: "ping", ...(await ping(c, scenario.slice(5))) });
      c.close();
    } else {
      echo(c);
      await until("the pinger's close", () => c.closed, []);
    }
  } else if (scenario === "messages") {
    if (side === "send") {
      c.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
      const kinds = await sendAll(c, []);
      out({ step: "sent", kinds });
      // The receiver closes once it has everything.
      await until("the receiver's close", () => c.closed, [c]);
      out({ step: "send-done", closeError: c.closeError?.name ?? null });
    } else {
      const got = receiveAll(c);
      await until(`every message (got ${got.map((g) => g.head).join(",")})`, () => got.length === SIZES.length, [c]);
      out({ step: "received", got, zoneGrown: c.zoneGrown, largeDelivered: c.largeDelivered });
      c.close();
    }
  } else {
    // close: side "a" closes at once; side "b" waits for it.
    let n = 0;
    c.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => out({ step: "onClose", n: ++n, error: e === null ? null : e.name, message: e?.message ?? null }) });
    if (side === "a") {
      await Bun.sleep(100);
      c.close();
    } else await until("the peer's close", () => c.closed, [c]);
    const st = c.trySend(new Uint8Array(1));
    out({ step: "closed", afterSend: st });
  }
  await E.gone;
  await Bun.sleep(50);
  out({ step: "after", onCloseCalls: undefined });
}

const role = process.argv[2];
try {
  if (role === "pair") {
    const s = process.argv[3];
    if (s === "messages") await pairMessages();
    else if (s === "credits") await pairCredits();
    else if (s === "sq") await pairSq();
    else if (s === "close") await pairClose();
    else if (s === "hostile") await pairHostile();
    else if (s === "wake") await pairWake();
    else if (s === "throw") await pairThrow();
    else if (s === "srq") await pairSrq();
    else throw new Error(`unknown scenario ${s}`);
  } else if (role === "end") await end(process.argv[3]!, process.argv[4]!);
  else throw new Error(`unknown role ${role}`);
  out({ step: "leaks", live: leaks() });
  out({ step: "done" });
  process.exit(0);
} catch (e) {
  console.error(`conn-child ${process.argv.slice(2).join(" ")}:`, e);
  process.exit(1);
}
