/**
 * The rdma data path (src/rdma/runtime.ts, endpoint.ts, connection.ts, zones.ts) over the
 * softrc TEST FIXTURE, with connections brought up by hand (no setup.ts): two RdmaEndpoints,
 * their hellos exchanged in one process or as JSON lines between two processes
 * (test/rdma/conn-child.ts, spawned with the fixture's environment and killed by pid),
 * connectQp, open. Every child ends with the fixture's live objects (softrc_live) at zero and
 * every test with its SOFTRC_DIR registry empty.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { startJsonChild } from "./softrc/json-child.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const CHILD = new URL("./conn-child.ts", import.meta.url).pathname;
/** Watchdog for one child (a hang fails the test instead of blocking it). */
const CHILD_WATCHDOG_MS = 90_000;
const NOTHING_LIVE = { context: 0, pd: 0, mr: 0, channel: 0, cq: 0, srq: 0, qp: 0 };
const SIZES = [100, 2000, 3000, 50, 1 << 20, 4000, 16 << 20, 2 << 20, 0, 4076];

const fx = useSoftRc();

function start(args: string[], dir: string, stdin: "pipe" | "ignore" = "ignore") {
  return startJsonChild(fx, ["bun", CHILD, ...args], dir, { label: args.join(" "), watchdogMs: CHILD_WATCHDOG_MS, stdin });
}

/** Two `end` children with their hellos crossed over stdin. */
async function crossPair(dir: string, a: string[], b: string[]) {
  const A = start(["end", ...a], dir, "pipe");
  const B = start(["end", ...b], dir, "pipe");
  const [ha, hb] = await Promise.all([A.line("hello"), B.line("hello")]);
  expect(ha.pid).not.toBe(hb.pid);
  (A.proc.stdin as any).write(hb.hello + "\n");
  (B.proc.stdin as any).write(ha.hello + "\n");
  (A.proc.stdin as any).flush();
  (B.proc.stdin as any).flush();
  await Promise.all([A.line("open"), B.line("open")]);
  for (const p of [A, B]) {
    (p.proc.stdin as any).write("go\n");
    (p.proc.stdin as any).flush();
  }
  return [A, B] as const;
}

/** Every message whole and in order; small ones (a receive slot) offer headWords over their slot, large ones (the zone) none. */
function expectMessages(got: Array<Record<string, unknown>>): void {
  expect(got).toEqual(SIZES.map((len, i) => ({ head: `m${i}`, len, ok: true, words: len + 14 > 4096 ? "none" : "yes" })));
}

test("one process: inline, copied, zero-copy and large (1 MiB, 16 MiB, zero-copy 2 MiB) messages arrive whole and in order; the landing zone grew; nothing left", async () => {
  const dir = fx.registry();
  const { by } = await start(["pair", "messages"], dir).lines();
  expectMessages(by.messages!.got);
  expect(by.messages!.kinds).toEqual({ inline: 2, copied: 3, "zero-copy": 1, "zero-copy-inline": 1, "large-1MiB": 1, "large-16MiB": 1, "large-zero-copy": 1 });
  expect(by.messages!.largeDelivered).toBe(3);
  expect(by.messages!.zoneGrown).toBe(2); // 1 MiB zone → 2 MiB (1 MiB + header + head) → 32 MiB (16 MiB + …)
  expect(by.messages!.inline).toBe(256 - 12); // the fixture's inline limit minus the transport header
  expect(by.messages!.sameRuntime).toBe(true);
  expect(by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(readdirSync(dir)).toEqual([]);
}, 120_000);

test("two processes: the same messages with their bytes, in order; the receiver's close reaches the sender as TransportClosedError", async () => {
  const dir = fx.registry();
  const [S, R] = await crossPair(dir, ["send", "messages"], ["recv", "messages"]);
  const [s, r] = await Promise.all([S.lines(), R.lines()]);
  expectMessages(r.by.received!.got);
  expect(r.by.received!.zoneGrown).toBe(2);
  expect(r.by.received!.largeDelivered).toBe(3);
  expect(s.by["send-done"]!.closeError).toBe("TransportClosedError");
  expect(s.by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(r.by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(readdirSync(dir)).toEqual([]);
}, 120_000);

test("credits: a receiver that holds every message makes the sender see Full (window - 1 in flight), never an RNR or a closed connection; releasing resumes it", async () => {
  const dir = fx.registry();
  const { by } = await start(["pair", "credits"], dir).lines();
  const c = by.credits!;
  expect(c.sentBeforeRelease).toBe(15); // window 16: the last credit is kept for a credit-returning message
  expect(c.heldBefore).toBe(15);
  expect(c.full).toBe(200 - 15);
  expect(c.after).toBe(100);
  expect(c.delivered).toBe(115);
  expect(c.closed).toEqual([false, false]);
  expect(c.closeErr).toBeNull();
  // The holder's peer closes while down to its last credit: the GOODBYE takes it and the holder hears.
  const last = by["last-credit"]!;
  expect(last).toMatchObject({ aCredits: 1, aOwed: 0, held: last.refill, bClose: "TransportClosedError" });
  expect(last.refill).toBeGreaterThan(0);
  expect(last.bCloseMessage).toContain("the peer closed"); // its GOODBYE, not the QP going away
  expect(by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(readdirSync(dir)).toEqual([]);
}, 120_000);

test("signal batching: a send queue of 4 under a window of 16 moves 10,000 messages in order (spin mode)", async () => {
  const dir = fx.registry();
  const { by } = await start(["pair", "sq"], dir).lines();
  expect(by.sq).toMatchObject({ delivered: 10_000, bad: 0, closed: [false, false] });
  expect(by.sq!.full).toBeGreaterThan(0); // the send queue, not the credits, held the sender back at times
  expect(by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(readdirSync(dir)).toEqual([]);
}, 120_000);

test("trySendWords arrives as its 24-byte head (headWords too); close in one process: the closer's onClose gets null, the peer's TransportClosedError, once each; later sends are Closed", async () => {
  const dir = fx.registry();
  const { by } = await start(["pair", "close"], dir).lines();
  expect(by.close!.wordsSent).toBe(0);
  const le = (v: number) => [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255];
  expect(by.close!.words).toEqual([{ head: [1, -2, 0x01020304, 0, 0x7fffffff, 6].flatMap(le), body: [9, 8, 7], hw: [1, -2, 0x01020304, 0, 0x7fffffff, 6] }]);
  expect(by.close!.closes.sort()).toEqual(["A:null", "B:TransportClosedError"]);
  expect(by.close!.afterSend).toBe(2); // SEND_CLOSED
  expect(by.close!.waitAfter).toBe(false);
  expect(by.close!.policy).toEqual([["spin", false], ["blocking", false], ["async", true], ["adaptive", true]]);
  expect(by.close!.refused).toEqual(["UsageError", "UsageError"]);
  expect(by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(readdirSync(dir)).toEqual([]);
}, 120_000);

for (const closer of ["a", "b"] as const) {
  test(`close across processes from side ${closer}: the other side's onClose runs once with TransportClosedError; nothing left on either side`, async () => {
    const dir = fx.registry();
    // Side "a" closes; which process plays it is the parameter.
    const [X, Y] = closer === "a" ? await crossPair(dir, ["a", "close"], ["b", "close"]) : await crossPair(dir, ["b", "close"], ["a", "close"]);
    const [x, y] = await Promise.all([X.lines(), Y.lines()]);
    const closerOut = closer === "a" ? x : y;
    const otherOut = closer === "a" ? y : x;
    expect(closerOut.all.filter((l) => l.step === "onClose")).toEqual([{ step: "onClose", n: 1, error: null, message: null }]);
    const other = otherOut.all.filter((l) => l.step === "onClose");
    expect(other.map((l) => [l.n, l.error])).toEqual([[1, "TransportClosedError"]]);
    expect(x.by.closed!.afterSend).toBe(2);
    expect(y.by.closed!.afterSend).toBe(2);
    expect(x.by.leaks!.live).toEqual(NOTHING_LIVE);
    expect(y.by.leaks!.live).toEqual(NOTHING_LIVE);
    expect(readdirSync(dir)).toEqual([]);
  }, 120_000);
}

test("a hostile peer's frames: an oversized body skipped and reported to onOversized (the next message delivered), an unknown kind, lengths that disagree with the receive, an oversized body without the hook, a large write with another zone generation or a header that is not LARGE: ProtocolError; no fd or verbs object left", async () => {
  const dir = fx.registry();
  const { by } = await start(["pair", "hostile"], dir).lines();
  const h = by.hostile!;
  expect(h.skip.events.slice(0, 2)).toEqual(["oversized hhh 2000", "message hh 10"]);
  expect(h.skip.events[2]).toStartWith("close ProtocolError: ");
  expect(h.skip.events[2]).toContain("kind 99");
  expect(h.lengths.events).toEqual([expect.stringMatching(/^close ProtocolError: .*DATA header says 2 \+ 500 bytes, the receive has 12/)]);
  expect(h.noHook.events).toEqual([expect.stringMatching(/^close ProtocolError: .*body of 2000 bytes exceeds maxMessageBytes 1000/)]);
  expect(h.badImm.events).toEqual([expect.stringMatching(/^close ProtocolError: .*immediate 0x4c415240, expected 0x4c415247 \(zone generation 0\)/)]);
  expect(h.notLarge.events).toEqual([expect.stringMatching(/^close ProtocolError: .*large message header \(DATA, 2 \+ 100 bytes\)/)]);
  expect([h.skip.closed, h.lengths.closed, h.noHook.closed, h.badImm.closed, h.notLarge.closed]).toEqual([true, true, true, true, true]);
  expect(h.fdsAfter).toBe(h.fdsBefore); // completion channel, async fd, the waiter's eventfd: all closed
  expect(by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(readdirSync(dir)).toEqual([]);
}, 120_000);

for (const mode of ["spin", "blocking", "async", "adaptive"] as const) {
  test(`wait mode ${mode}: 200 round trips across processes against an echo delivering from the event loop, bytes checked`, async () => {
    const dir = fx.registry();
    const [P, E] = await crossPair(dir, ["ping", `ping-${mode}`], ["echo", `ping-${mode}`]);
    const [p, e] = await Promise.all([P.lines(), E.lines()]);
    expect(p.by.ping).toMatchObject({ mode, rounds: 200, bad: 0, waitsOnEventLoop: mode === "async" || mode === "adaptive" });
    expect(p.by.leaks!.live).toEqual(NOTHING_LIVE);
    expect(e.by.leaks!.live).toEqual(NOTHING_LIVE);
    expect(readdirSync(dir)).toEqual([]);
  }, 120_000);
}

test("a wait() after Full resolves true when the room came back before it was called (the wake-up went out with no one waiting)", async () => {
  const dir = fx.registry();
  const { by } = await start(["pair", "wake"], dir).lines();
  expect(by.wake).toMatchObject({ first: 0, second: 1, stageAfter: 0, woke: true, third: 0 });
  expect(by.leaks!.live).toEqual(NOTHING_LIVE);
}, 120_000);

test("the fd waiter: handlers run on this thread while their fd is readable (level-triggered), a fd watched while the helper polls is seen, an unwatched one is not; stop() ends the helper and its eventfd", async () => {
  const { FdWaiter } = await import("../../src/rdma/fd-waiter.ts");
  const { eventfdCreate, closeFd } = await import("../../src/ffi/libc.ts");
  const { readSync, writeSync } = await import("node:fs");
  const fdsBefore = readdirSync("/proc/self/fd").length;
  const w = new FdWaiter();
  const a = eventfdCreate();
  const b = eventfdCreate();
  const hits: string[] = [];
  const drain = (fd: number) => {
    try {
      readSync(fd, new BigUint64Array(1));
    } catch {
      // EAGAIN: empty
    }
  };
  const one = new BigUint64Array([1n]);
  const until = async (cond: () => boolean) => {
    for (let i = 0; i < 2000 && !cond(); i++) await Bun.sleep(1);
  };
  const unwatchA = w.watch(a, () => {
    hits.push("a");
    drain(a);
  });
  writeSync(a, one);
  await until(() => hits.length >= 1);
  expect(hits).toEqual(["a"]);
  // Watched while the helper already polls `a`: the interrupt makes it poll `b` too.
  let bReads = 0;
  w.watch(b, () => {
    hits.push("b");
    // Level-triggered: the first call leaves the counter unread, so the handler runs again.
    if (++bReads >= 2) drain(b);
  });
  writeSync(b, one);
  await until(() => bReads >= 2);
  expect(hits).toEqual(["a", "b", "b"]);
  unwatchA();
  unwatchA();
  writeSync(a, one);
  writeSync(b, one);
  await until(() => hits.length >= 4);
  await Bun.sleep(20);
  expect(hits).toEqual(["a", "b", "b", "b"]); // `a` is readable but no longer watched
  expect(() => w.watch(b, () => {})).toThrow("already watched");
  w.stop();
  w.stop();
  expect(() => w.watch(a, () => {})).toThrow("stopped");
  closeFd(a);
  closeFd(b);
  await until(() => readdirSync("/proc/self/fd").length <= fdsBefore);
  expect(readdirSync("/proc/self/fd").length).toBeLessThanOrEqual(fdsBefore); // the helper closed its eventfd
}, 30_000);

test("a completion callback that throws (a one-sided op's done) closes its connection with that error; the rest of the poll batch and the runtime's other connections go on", async () => {
  const dir = fx.registry();
  const { by } = await start(["pair", "throw"], dir).lines();
  expect(by.throw).toMatchObject({ escaped: null, aClosed: true, after: 0, dGot: 2 });
  expect(by.throw!.aClose).toContain("callback failed");
  expect(by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(readdirSync(dir)).toEqual([]);
}, 120_000);

test("the SRQ: a reservation past its 2048 receives is refused (busy); a peer that holds 1999 of them trips the SRQ limit event, which is re-armed; nothing fails", async () => {
  const dir = fx.registry();
  const { by } = await start(["pair", "srq"], dir).lines();
  expect(by.srq).toMatchObject({ refused: true, full: 1, reservedRecv: 2016, again: 0, closed: [false, false] });
  expect(by.srq!.srqLimitEvents).toBeGreaterThanOrEqual(1);
  expect(by.srq!.rearmed).toBe(2048 >> 4);
  expect(by.leaks!.live).toEqual(NOTHING_LIVE);
  expect(readdirSync(dir)).toEqual([]);
}, 120_000);

test("a dead peer's QP_FATAL still pending when setup drops the connection (peerGone) leaves a new pair on the same runtime undisturbed; nothing left", async () => {
  const dir = fx.registry();
  const [V, D] = await crossPair(dir, ["victim", "stale"], ["doomed", "stale"]);
  await V.line("ready");
  D.proc.kill(9);
  await D.proc.exited;
  (V.proc.stdin as any).write("killed\n");
  (V.proc.stdin as any).flush();
  const v = await V.lines();
  expect(v.by.stale).toMatchObject({ closed: [false, false], error: null, got: 5 });
  expect(v.by.leaks!.live).toEqual(NOTHING_LIVE);
}, 120_000);
