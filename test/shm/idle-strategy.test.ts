/**
 * The idle strategies' decisions (src/segment/idle.ts), fed sequences of outcomes: what each
 * wait mode's strategy grants, how the adaptive one grows on spins that found input, shrinks
 * on spins that did not, never spins for a side whose input comes late or never, and probes
 * (with backoff) after wake-ups that a spin might have caught. Then the strategy object as a
 * connection uses it: chosen by the wait policy, swappable, and consulted on every idle.
 */

import { describe, expect, test } from "bun:test";
import {
  AdaptiveIdle,
  BusySpinIdle,
  FixedSpinIdle,
  IDLE_AFTER_INPUT,
  IDLE_AFTER_SEND,
  IDLE_WAIT,
  idleStrategyFor,
  MAX_FOLLOW_UP_SKIP,
  MAX_PROBE_WAIT,
  MIN_ADAPTIVE_SPIN_NS,
  PROBE_IDLES,
  WAKE_ALLOWANCE_NS,
  type IdleCause,
  type IdleStrategy,
} from "../../src/segment/idle.ts";
import { segmentPair, settle } from "../helpers/segment-pair.ts";

const MAX = 20_000;

describe("the strategy each wait mode stands for", () => {
  test("spin never parks, blocking and async spin their spinNs every time, adaptive starts with a probe", () => {
    expect(idleStrategyFor("spin", 5).spinBudgetNs(IDLE_WAIT)).toBe(Infinity);
    expect(idleStrategyFor("spin", 5)).toBeInstanceOf(BusySpinIdle);
    for (const mode of ["blocking", "async"] as const) {
      const s = idleStrategyFor(mode, 7_000);
      expect(s).toBeInstanceOf(FixedSpinIdle);
      for (let i = 0; i < 3; i++) {
        expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(7_000);
        s.onSpinEnd(IDLE_AFTER_SEND, false, 7_000);
      }
    }
    const a = idleStrategyFor("adaptive", MAX);
    expect(a).toBeInstanceOf(AdaptiveIdle);
    expect(a.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX); // a probe
    expect(a.spinBudgetNs(IDLE_AFTER_INPUT)).toBe(0);
    expect(a.spinBudgetNs(IDLE_WAIT)).toBe(0);
    expect(idleStrategyFor("adaptive", 0).spinBudgetNs(IDLE_AFTER_SEND)).toBe(0);
  });
});

describe("AdaptiveIdle", () => {
  /** A strategy whose first probe (IDLE_AFTER_SEND starts with one) ended without a paid spin. */
  function settled(): AdaptiveIdle {
    const s = new AdaptiveIdle(MAX);
    for (let i = 0; i < PROBE_IDLES; i++) {
      expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX);
      s.onSpinEnd(IDLE_AFTER_SEND, false, MAX);
    }
    for (const c of [IDLE_AFTER_SEND, IDLE_AFTER_INPUT, IDLE_WAIT] as IdleCause[]) expect(s.spinBudgetNs(c)).toBe(0);
    return s;
  }

  test("the wait after a send starts with a probe: PROBE_IDLES spins of the whole budget, then none if none paid; other causes start at 0", () => {
    settled();
  });

  test("a wake-up a spin would have caught earns a new probe; spins that pay keep the whole budget", () => {
    const s = settled();
    s.onParkedInput(IDLE_AFTER_SEND, 9_000);
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(0); // the first probe missed: the backoff is at 2
    s.onParkedInput(IDLE_AFTER_SEND, 9_000);
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX);
    for (let i = 0; i < 10; i++) {
      s.onSpinEnd(IDLE_AFTER_SEND, true, 3_000);
      expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX);
    }
    // The causes learn apart: a reply due after a send says nothing about input after a delivery.
    expect(s.spinBudgetNs(IDLE_AFTER_INPUT)).toBe(0);
  });

  test("outside a probe, spins that find nothing shrink the budget fast: half each time, then no spin at all", () => {
    const s = new AdaptiveIdle(MAX);
    s.onSpinEnd(IDLE_AFTER_SEND, true, 1_000); // paid: the probe is over, the budget stays whole
    const seen: number[] = [];
    for (let i = 0; i < 8; i++) {
      const b = s.spinBudgetNs(IDLE_AFTER_SEND);
      seen.push(b);
      if (b > 0) s.onSpinEnd(IDLE_AFTER_SEND, false, b);
    }
    expect(seen).toEqual([MAX, MAX / 2, MAX / 4, MAX / 8, MAX / 16, MAX / 32, 0, 0]);
    expect(MAX / 64).toBeLessThan(MIN_ADAPTIVE_SPIN_NS);
  });

  test("a budget that shrank grows back by doubling when spins pay again", () => {
    const s = new AdaptiveIdle(MAX);
    s.onSpinEnd(IDLE_AFTER_SEND, true, 1_000);
    s.onSpinEnd(IDLE_AFTER_SEND, false, MAX); // 10000
    s.onSpinEnd(IDLE_AFTER_SEND, false, MAX); // 5000
    s.onSpinEnd(IDLE_AFTER_SEND, true, 200); // 10000
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX / 2);
    s.onSpinEnd(IDLE_AFTER_SEND, true, 200);
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX);
  });

  test("no spin while the peer's turnaround exceeds the budget: late wake-ups never earn one", () => {
    const s = settled();
    // A server whose client sends again 2 ms after each reply; a peer that takes 60 µs.
    for (let i = 0; i < 1000; i++) {
      s.onParkedInput(IDLE_AFTER_SEND, 2_000_000);
      s.onParkedInput(IDLE_AFTER_INPUT, MAX + WAKE_ALLOWANCE_NS + 1);
      expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(0);
      expect(s.spinBudgetNs(IDLE_AFTER_INPUT)).toBe(0);
    }
  });

  test("a side that gets no input after going idle (one-way sends) spins through its first probe, then never again", () => {
    const s = new AdaptiveIdle(MAX);
    let spins = 0;
    for (let i = 0; i < 1000; i++) {
      const b = s.spinBudgetNs(IDLE_AFTER_SEND);
      if (b === 0) continue;
      spins++;
      s.onSpinEnd(IDLE_AFTER_SEND, false, b);
    }
    expect(spins).toBe(PROBE_IDLES);
  });

  test("probes that keep missing back off: each doubles the near wake-ups needed for the next, up to MAX_PROBE_WAIT", () => {
    const s = settled();
    const probesAt: number[] = [];
    // Wake-ups just past the budget (within the allowance for this side's own wake-up), and a
    // peer that never answers within the budget while this side spins.
    for (let i = 0; i < 800; i++) {
      if (s.spinBudgetNs(IDLE_AFTER_SEND) === 0) {
        s.onParkedInput(IDLE_AFTER_SEND, MAX + WAKE_ALLOWANCE_NS);
        continue;
      }
      probesAt.push(i);
      let n = 0;
      while (s.spinBudgetNs(IDLE_AFTER_SEND) > 0) (s.onSpinEnd(IDLE_AFTER_SEND, false, MAX), n++);
      expect(n).toBe(PROBE_IDLES);
    }
    // Near wake-ups between probes (the gap minus the probe's own iteration): 2, 4, 8, … 64.
    const waits = probesAt.slice(1).map((p, k) => p - probesAt[k]! - 1);
    expect([probesAt[0]!, ...waits.slice(0, 5)]).toEqual([2, 4, 8, 16, 32, 64]);
    expect(waits.slice(5).every((g) => g === MAX_PROBE_WAIT)).toBe(true);
  });

  test("a probe that pays resets the backoff", () => {
    const s = settled(); // backoff at 2
    s.onParkedInput(IDLE_AFTER_SEND, MAX);
    s.onParkedInput(IDLE_AFTER_SEND, MAX);
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX);
    s.onSpinEnd(IDLE_AFTER_SEND, false, MAX); // a probe's miss: the budget stays
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX);
    s.onSpinEnd(IDLE_AFTER_SEND, true, 4_000); // paid: the probe is over, the backoff back at 1
    while (s.spinBudgetNs(IDLE_AFTER_SEND) > 0) s.onSpinEnd(IDLE_AFTER_SEND, false, MAX); // halving to 0: backoff 2
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(0);
    s.onParkedInput(IDLE_AFTER_SEND, MAX);
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(0);
    s.onParkedInput(IDLE_AFTER_SEND, MAX);
    expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(MAX);
  });

  test("the look after a delivery: granted while looks find input; each empty look doubles the deliveries skipped, up to MAX_FOLLOW_UP_SKIP", () => {
    const s = new AdaptiveIdle(MAX);
    // A server at light load: nothing ever follows a delivery.
    const looksAt: number[] = [];
    for (let i = 0; i < 700; i++) {
      if (!s.followUp()) continue;
      looksAt.push(i);
      s.onFollowUp(false);
    }
    const gaps = looksAt.slice(1).map((p, k) => p - looksAt[k]!);
    expect(gaps.slice(0, 7)).toEqual([2, 3, 5, 9, 17, 33, 65]);
    expect(gaps.slice(7).every((g) => g === MAX_FOLLOW_UP_SKIP + 1)).toBe(true);
    // A front under load: replies keep coming. The first look that finds input restores it.
    while (!s.followUp());
    s.onFollowUp(true);
    for (let i = 0; i < 100; i++) {
      expect(s.followUp()).toBe(true);
      s.onFollowUp(true);
    }
    for (const fixed of [new FixedSpinIdle(0), new BusySpinIdle()] as IdleStrategy[]) {
      fixed.onFollowUp(false);
      expect(fixed.followUp()).toBe(true);
    }
  });

  test("spinNs 0 never spins, whatever it is told", () => {
    const s = new AdaptiveIdle(0);
    for (let i = 0; i < 10; i++) {
      s.onParkedInput(IDLE_AFTER_SEND, 100);
      s.onSpinEnd(IDLE_AFTER_SEND, true, 100);
      expect(s.spinBudgetNs(IDLE_AFTER_SEND)).toBe(0);
    }
  });
});

// ------------------------------------------------------------------ the connection's use of it

/** Records every call a connection makes on its strategy, granting `grant` ns each time. */
class Recorder implements IdleStrategy {
  readonly calls: string[] = [];
  constructor(private readonly grant: number) {}
  spinBudgetNs(c: IdleCause): number {
    this.calls.push(`budget ${c}`);
    return this.grant;
  }
  onSpinEnd(c: IdleCause, paid: boolean): void {
    this.calls.push(`spun ${c} ${paid ? "paid" : "missed"}`);
  }
  onParkedInput(c: IdleCause): void {
    this.calls.push(`woken ${c}`);
  }
  followUp(): boolean {
    this.calls.push("follow-up?");
    return false;
  }
  onFollowUp(found: boolean): void {
    this.calls.push(`follow-up ${found ? "found" : "empty"}`);
  }
}

/** Two connections over one ArrayBuffer in this thread; event-loop parks deliver via onDoorbell() (in a microtask). */
const pair = (mode: "async" | "adaptive" | "blocking") => segmentPair({ mode, spinNs: 50_000 });

describe("a connection asks its idle strategy", () => {
  test("after a send with nothing back it asks with IDLE_AFTER_SEND, spins what it was granted, reports the miss and parks", async () => {
    const { a, b } = pair("adaptive");
    const rec = new Recorder(1_000);
    a.setIdleStrategy(rec);
    expect(a.idleStrategy).toBe(rec);
    a.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    b.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    await settle();
    rec.calls.length = 0;
    const before = { ...a.idleStats() };
    expect(a.trySend(new Uint8Array(4), null)).toBe(0);
    await settle();
    expect(rec.calls[0]).toBe(`budget ${IDLE_AFTER_SEND}`);
    expect(rec.calls.find((c) => c.startsWith("spun"))).toBe(`spun ${IDLE_AFTER_SEND} missed`);
    expect(a.idleStats().spins - before.spins).toBe(1);
    expect(a.idleStats().spinNs - before.spinNs).toBeGreaterThanOrEqual(1_000);
    expect(a.idleStats().parks).toBeGreaterThan(before.parks);
    a.close();
    b.close();
  });

  test("after a delivery it asks whether to look again; refused, it parks at once and no look follows", async () => {
    const { a, b } = pair("adaptive");
    const rec = new Recorder(0);
    a.setIdleStrategy(rec);
    let got = 0;
    a.setReceiver({ onMessage: (m) => (got++, m.release()), onClose() {} });
    b.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    await settle();
    rec.calls.length = 0;
    const parks = a.idleStats().parks;
    expect(b.trySend(new Uint8Array(4), null)).toBe(0);
    for (let i = 0; i < 50 && got === 0; i++) await settle();
    await settle();
    expect(got).toBe(1);
    expect(rec.calls).toContain("follow-up?");
    expect(rec.calls.some((c) => c.startsWith("follow-up ") && c !== "follow-up?")).toBe(false);
    expect(a.idleStats().parks).toBeGreaterThan(parks);
    a.close();
    b.close();
  });

  test("input that wakes a parked side is reported with the cause it parked for; a 0 grant spins not at all, and a send while parked stays parked", async () => {
    const { a, b } = pair("adaptive");
    const rec = new Recorder(0);
    a.setIdleStrategy(rec);
    let got = 0;
    a.setReceiver({ onMessage: (m) => (got++, m.release()), onClose() {} });
    // b answers every message (a server), from its receiver.
    b.setReceiver({ onMessage: (m) => (m.release(), b.trySend(new Uint8Array(4), null)), onClose() {} });
    await settle();
    rec.calls.length = 0;
    const before = { ...a.idleStats() };
    expect(a.trySend(new Uint8Array(4), null)).toBe(0);
    for (let i = 0; i < 50 && got === 0; i++) await settle();
    expect(got).toBe(1);
    expect(rec.calls).toContain(`woken ${IDLE_AFTER_SEND}`);
    // a was parked when it sent: it stayed parked (no park of its own between) until the answer rang.
    expect(a.idleStats().parks - before.parks).toBeLessThanOrEqual(1);
    expect(rec.calls.some((c) => c.startsWith("spun"))).toBe(false);
    expect(a.idleStats().spins).toBe(before.spins);
    a.close();
    b.close();
  });

  test("setWaitPolicy puts the mode's own strategy back; blocking waits ask with IDLE_WAIT", async () => {
    const { a, b } = pair("blocking");
    const rec = new Recorder(2_000);
    a.setIdleStrategy(rec);
    a.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    expect(await a.wait(0.01)).toBe(false); // 10 µs: spins what it was granted (2 µs), then parks
    expect(rec.calls).toEqual([`budget ${IDLE_WAIT}`, `spun ${IDLE_WAIT} missed`]);
    a.setWaitPolicy({ mode: "async" });
    expect(a.idleStrategy).toBeInstanceOf(FixedSpinIdle);
    expect(a.idleStrategy.spinBudgetNs(IDLE_AFTER_SEND)).toBe(50_000);
    a.setWaitPolicy({ mode: "adaptive", spinNs: 3_000 });
    expect((a.idleStrategy as AdaptiveIdle).maxSpinNs).toBe(3_000);
    a.close();
    b.close();
  });
});
