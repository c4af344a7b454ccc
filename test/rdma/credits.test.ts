/**
 * Credit flow control (src/rdma/credits.ts) against a plain-array model of two connection ends:
 * each end's posted receive buffers are an array of buffer ids, the two links are arrays of
 * messages in order, the application's held messages are arrays. Seeded random steps send data,
 * deliver, release and send credit messages; the model asserts that a delivery always finds a
 * posted buffer (no RNR), that credits are conserved, and that after a drain both ends can send.
 */
import { describe, expect, test } from "bun:test";
import { ProtocolError, UsageError } from "../../src/errors.ts";
import { CreditFlow } from "../../src/rdma/credits.ts";
import { seededRandom } from "../../src/pool/backoff.ts";


interface Msg {
  kind: "data" | "credit";
  credits: number;
}

interface End {
  fc: CreditFlow;
  /** Buffers this end posted for the peer (ids), as the SRQ would hold them. */
  posted: number[];
  /** Buffers holding a received data message, still held by the application. */
  held: number[];
  /** Messages this end has sent that are not delivered yet. */
  out: Msg[];
  sentData: number;
  fullRefusals: number;
}

function makeEnd(window: number, peerWindow: number, batch: number): End {
  // `window` is what the peer posted for us; we post `peerWindow` buffers for the peer.
  return {
    fc: new CreditFlow({ window, peerWindow, returnBatch: batch }),
    posted: Array.from({ length: peerWindow }, (_, i) => i),
    held: [],
    out: [],
    sentData: 0,
    fullRefusals: 0,
  };
}

/** Deliver the oldest message from `from` to `to`: it must find a posted buffer (no RNR). */
function deliver(from: End, to: End): void {
  const m = from.out.shift()!;
  expect(to.posted.length).toBeGreaterThan(0);
  const buf = to.posted.pop()!;
  to.fc.onReceive(m.credits);
  if (m.kind === "data") to.held.push(buf);
  else {
    to.posted.push(buf); // a credit message's buffer is re-posted at once
    to.fc.onRelease();
  }
}

function release(e: End, pick: number): void {
  const buf = e.held.splice(pick % e.held.length, 1)[0]!;
  e.posted.push(buf);
  e.fc.onRelease();
}

function sendData(e: End): boolean {
  const back = e.fc.tryTakeForData();
  if (back < 0) {
    e.fullRefusals++;
    return false;
  }
  e.out.push({ kind: "data", credits: back });
  e.sentData++;
  return true;
}

function sendCreditIfDue(e: End): boolean {
  const c = e.fc.tryTakeForCreditMessage();
  if (c === 0) return false;
  expect(c).toBeGreaterThanOrEqual(e.fc.returnBatch);
  e.out.push({ kind: "credit", credits: c });
  return true;
}

/** Conservation: a's credits + messages of a in flight + b's held and owed + credits flying back = a's window. */
function checkInvariants(a: End, b: End): void {
  const flyingBack = b.out.reduce((s, m) => s + m.credits, 0);
  expect(a.fc.credits + a.out.length + b.fc.held + b.fc.owed + flyingBack).toBe(a.fc.window);
  // The model's arrays agree with the flow's counters: released buffers are re-posted at once.
  expect(b.fc.held).toBe(b.held.length);
  expect(b.posted.length).toBe(a.fc.window - b.held.length);
  // Safety: every message in flight to b will find a posted buffer (no RNR).
  expect(a.out.length).toBeLessThanOrEqual(b.posted.length);
  expect(a.fc.credits).toBeGreaterThanOrEqual(0);
}

function run(seed: number, wa: number, wb: number, batchA: number, batchB: number, steps: number): { a: End; b: End } {
  const r = seededRandom(seed);
  // a sends to b with wa credits (b posted wa buffers for a) and returns in batches of batchA.
  const a = makeEnd(wa, wb, batchA);
  const b = makeEnd(wb, wa, batchB);
  const ends: Array<[End, End]> = [
    [a, b],
    [b, a],
  ];
  // Skewed traffic per seed: sometimes one-way, sometimes both ways.
  const sendBias: [number, number] = [r(), r() < 0.3 ? 0 : r()];
  for (let i = 0; i < steps; i++) {
    const side = r() < 0.5 ? 0 : 1;
    const [me, peer] = ends[side]!;
    const x = r();
    if (x < 0.35 * (sendBias[side]! + 0.2)) sendData(me);
    else if (x < 0.6) {
      if (me.out.length > 0) deliver(me, peer);
    } else if (x < 0.85) {
      if (me.held.length > 0) release(me, Math.floor(r() * 1e9));
    } else sendCreditIfDue(me);
    checkInvariants(a, b);
    checkInvariants(b, a);
  }
  // Drain: the applications release everything; deliver and send due credit messages until quiet.
  for (let guard = 0; ; guard++) {
    expect(guard).toBeLessThan(100_000);
    let moved = false;
    for (const [me, peer] of ends) {
      while (me.held.length > 0) {
        release(me, 0);
        moved = true;
      }
      while (me.out.length > 0) {
        deliver(me, peer);
        moved = true;
      }
      if (sendCreditIfDue(me)) moved = true;
    }
    checkInvariants(a, b);
    checkInvariants(b, a);
    if (!moved) break;
  }
  // Liveness: neither end is stuck Full, and what is still owed is below the batch.
  expect(a.fc.canSendData()).toBe(true);
  expect(b.fc.canSendData()).toBe(true);
  expect(a.fc.owed).toBeLessThan(batchA);
  expect(b.fc.owed).toBeLessThan(batchB);
  expect(a.posted.length).toBe(wb);
  expect(b.posted.length).toBe(wa);
  return { a, b };
}

describe("CreditFlow model", () => {
  test("seeded random runs: no delivery without a posted buffer, credits conserved, both ends live after a drain", () => {
    let refusals = 0;
    let sent = 0;
    for (let seed = 1; seed <= 300; seed++) {
      const r = seededRandom(seed * 7919);
      const wa = 3 + Math.floor(r() * 14);
      const wb = 3 + Math.floor(r() * 14);
      const batchA = 2 + Math.floor(r() * (wb - 2)); // a owes b's messages: 2..wb-1
      const batchB = 2 + Math.floor(r() * (wa - 2));
      const { a, b } = run(seed, wa, wb, batchA, batchB, 2000);
      refusals += a.fullRefusals + b.fullRefusals;
      sent += a.sentData + b.sentData;
    }
    // The runs exercised both Full and sustained traffic.
    expect(refusals).toBeGreaterThan(100);
    expect(sent).toBeGreaterThan(10_000);
  });

  test("one-way traffic: window - 1 in flight, then Full; explicit credit messages restore the sender", () => {
    const a = makeEnd(8, 8, 3);
    const b = makeEnd(8, 8, 3);
    for (let i = 0; i < 7; i++) expect(sendData(a)).toBe(true);
    expect(sendData(a)).toBe(false); // last credit kept: a owes nothing to carry
    expect(a.fc.credits).toBe(1);
    while (a.out.length) deliver(a, b);
    release(b, 0);
    release(b, 0);
    expect(b.fc.tryTakeForCreditMessage()).toBe(0); // 2 owed < batch 3
    release(b, 0);
    expect(sendCreditIfDue(b)).toBe(true);
    deliver(b, a);
    expect(a.fc.credits).toBe(4);
    expect(a.fc.owed).toBe(1); // the credit message's buffer, owed back to b
    expect(a.fc.canSendData()).toBe(true);
  });

  test("credits piggybacked on a response need no credit message", () => {
    const a = makeEnd(4, 4, 2);
    const b = makeEnd(4, 4, 2);
    sendData(a);
    deliver(a, b);
    release(b, 0);
    expect(sendData(b)).toBe(true); // the response carries the credit
    expect(b.out[0]!.credits).toBe(1);
    expect(b.fc.tryTakeForCreditMessage()).toBe(0);
    deliver(b, a);
    expect(a.fc.credits).toBe(4);
  });

  test("the last credit goes to data only when it returns credits", () => {
    const fc = new CreditFlow({ window: 2, peerWindow: 4, returnBatch: 2 });
    expect(fc.tryTakeForData()).toBe(0);
    expect(fc.tryTakeForData()).toBe(-1);
    fc.onReceive(0);
    fc.onRelease();
    expect(fc.tryTakeForData()).toBe(1);
    expect(fc.credits).toBe(0);
    expect(fc.tryTakeForFlush()).toBe(0);
  });

  test("a peer that sends past its credits or returns too many is a ProtocolError", () => {
    const fc = new CreditFlow({ window: 4, peerWindow: 3, returnBatch: 2 });
    for (let i = 0; i < 3; i++) fc.onReceive(0);
    expect(() => fc.onReceive(0)).toThrow(ProtocolError);
    expect(() => fc.onReceive(1)).toThrow(ProtocolError); // 4 unused of 4 already
    expect(fc.held).toBe(3);
    expect(() => new CreditFlow({ window: 4, peerWindow: 3, returnBatch: 3 })).toThrow(UsageError);
    expect(() => new CreditFlow({ window: 1, returnBatch: 2 })).toThrow(UsageError);
    expect(() => new CreditFlow({ window: 8, returnBatch: 1 })).toThrow(UsageError);
  });

  test("piggyback is capped at the header width; the rest stays owed", () => {
    const fc = new CreditFlow({ window: 4, peerWindow: 10, returnBatch: 2, maxPiggyback: 3 });
    for (let i = 0; i < 5; i++) {
      fc.onReceive(0);
      fc.onRelease();
    }
    expect(fc.tryTakeForData()).toBe(3);
    expect(fc.owed).toBe(2);
    // A flush sends what is owed below the batch threshold, taking a credit for itself.
    fc.onReceive(0);
    fc.onRelease();
    expect(fc.tryTakeForCreditMessage()).toBe(3); // 3 owed >= batch 2
    fc.onReceive(0);
    fc.onRelease();
    expect(fc.tryTakeForCreditMessage()).toBe(0); // 1 owed < batch
    expect(fc.tryTakeForFlush()).toBe(1);
    expect([fc.owed, fc.credits]).toEqual([0, 1]);
  });

  test("maxPiggyback below returnBatch is refused (credit messages would answer each other forever)", () => {
    expect(() => new CreditFlow({ window: 8, returnBatch: 2, maxPiggyback: 1 })).toThrow(/maxPiggyback .*returnBatch 2 \(got 1\)/);
    expect(() => new CreditFlow({ window: 8, returnBatch: 4, maxPiggyback: 3 })).toThrow(UsageError);
    // At the bound, two idle ends settle: each credit message carries returnBatch credits and
    // costs the peer one, which stays owed below the batch.
    const opts = { window: 8, returnBatch: 2, maxPiggyback: 2 };
    const a = new CreditFlow(opts);
    const b = new CreditFlow(opts);
    for (let i = 0; i < 4; i++) {
      b.onReceive(a.tryTakeForData());
      b.onRelease();
    }
    let messages = 0;
    for (let round = 0; round < 100; round++) {
      let any = false;
      for (const [from, to] of [[b, a], [a, b]] as const) {
        const c = from.tryTakeForCreditMessage();
        if (c > 0) {
          messages++;
          any = true;
          to.onReceive(c);
          to.onRelease();
        }
      }
      if (!any) break;
    }
    expect(messages).toBeLessThan(10);
    expect(a.tryTakeForCreditMessage()).toBe(0);
    expect(b.tryTakeForCreditMessage()).toBe(0);
  });
});
