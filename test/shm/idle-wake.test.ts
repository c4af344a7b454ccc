/**
 * When a segment connection on the event loop rings a peer parked on its own event loop for the
 * replies of one pump (src/segment/connection.ts deferRing): the reply to the last request queued
 * rings at once, inside the handler's reply, instead of at the end of the pump (an idle server's
 * answer reaches the client sooner: bench/idle-wake.bench.ts); a batch of requests still costs
 * one ring, at the end of the pump; a pump rings at most twice. A side that owes its parked peer a
 * ring (deferred to the end of the tick) does not spin for input before it rang. The order of events is recorded
 * through the connection's Signals (two connections over one ArrayBuffer in this thread); nothing
 * here is timed.
 */

import { describe, expect, test } from "bun:test";
import { IDLE_AFTER_SEND, type IdleCause, type IdleStrategy } from "../../src/segment/idle.ts";
import { microtasks, segmentPair, settle } from "../helpers/segment-pair.ts";

/**
 * A client (A) and a server (B) over one ArrayBuffer, each ring delivered to the peer parked in its
 * event loop; event-loop mode without spinning. `log` gets "ring A→B" / "ring B→A" as each side rings.
 */
const pair = (log: string[]) => segmentPair({ log });

/** Both sides parked; B answers every request inside onMessage (as serve() does with a synchronous handler), logging around it. */
async function parkedPair() {
  const log: string[] = [];
  const { a, b } = pair(log);
  const replies: number[] = [];
  a.setReceiver({
    onMessage: (m) => {
      replies.push(m.head[0]!);
      m.release();
    },
    onClose() {},
  });
  b.setReceiver({
    onMessage: (m) => {
      const n = m.head[0]!;
      m.release();
      log.push(`handle ${n}`);
      expect(b.trySend(new Uint8Array([n, 0, 0, 0]), null)).toBe(0);
      log.push(`handled ${n}`);
    },
    onClose() {},
  });
  await settle();
  log.length = 0;
  return { a, b, log, replies };
}

describe("the ring for a reply made while a pump delivers", () => {
  test("the reply to the only request queued rings the parked client at once, inside the reply, not at the end of the pump", async () => {
    const { a, b, log, replies } = await parkedPair();
    const before = { ...b.idleStats() };
    expect(a.trySend(new Uint8Array([1, 0, 0, 0]), null)).toBe(0);
    for (let i = 0; i < 20 && replies.length === 0; i++) await settle();
    expect(replies).toEqual([1]);
    expect(log).toEqual(["ring A→B", "handle 1", "ring B→A", "handled 1"]);
    expect(b.idleStats().rings - before.rings).toBe(1);
    expect(b.idleStats().earlyRings - before.earlyRings).toBe(1);
    a.close();
    b.close();
  });

  test("a batch of requests delivered in one pump still costs the client one ring, at the end of the pump", async () => {
    const { a, b, log, replies } = await parkedPair();
    const before = { ...b.idleStats() };
    // Three requests in one go: the first rings the server, the others find it rung already.
    for (const n of [1, 2, 3]) expect(a.trySend(new Uint8Array([n, 0, 0, 0]), null)).toBe(0);
    for (let i = 0; i < 20 && replies.length < 3; i++) await settle();
    expect(replies).toEqual([1, 2, 3]);
    expect(log).toEqual(["ring A→B", "handle 1", "handled 1", "handle 2", "handled 2", "handle 3", "handled 3", "ring B→A"]);
    expect(b.idleStats().rings - before.rings).toBe(1);
    expect(b.idleStats().earlyRings - before.earlyRings).toBe(0);
    a.close();
    b.close();
  });

  test("calls one at a time, each after both sides parked again: one ring each way per call, every reply's ring at once", async () => {
    const { a, b, log, replies } = await parkedPair();
    const before = { ...b.idleStats() };
    for (let n = 1; n <= 5; n++) {
      log.length = 0;
      expect(a.trySend(new Uint8Array([n, 0, 0, 0]), null)).toBe(0);
      for (let i = 0; i < 20 && replies.length < n; i++) await settle();
      expect(log).toEqual(["ring A→B", `handle ${n}`, "ring B→A", `handled ${n}`]);
    }
    expect(replies).toEqual([1, 2, 3, 4, 5]);
    expect(b.idleStats().earlyRings - before.earlyRings).toBe(5);
    a.close();
    b.close();
  });
});

/** Records the spins a connection asks its strategy for, granting `grant` ns; never looks again after a delivery. */
class SpinLog implements IdleStrategy {
  constructor(
    private readonly grant: number,
    private readonly log: string[],
  ) {}
  spinBudgetNs(c: IdleCause): number {
    this.log.push(`budget ${c}`);
    return this.grant;
  }
  onSpinEnd(c: IdleCause, paid: boolean): void {
    this.log.push(`spun ${c} ${paid ? "paid" : "missed"}`);
  }
  onParkedInput(): void {}
  followUp(): boolean {
    return false;
  }
  onFollowUp(): void {}
}

describe("a spin while a ring is still owed to the peer", () => {
  test("a send whose ring waits for the end of the tick (the peer parked again within it) is followed by no spin: the side parks, and the ring goes at the end of the tick", async () => {
    const log: string[] = [];
    const { a, b } = pair(log);
    a.setIdleStrategy(new SpinLog(2_000, log));
    b.setIdleStrategy(new SpinLog(0, []));
    const got: number[] = [];
    a.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    b.setReceiver({
      onMessage: (m) => {
        got.push(m.head[0]!);
        m.release();
      },
      onClose() {},
    });
    await settle();
    // First send of this tick: it rings at once. The peer takes it and parks again, all in microtasks.
    log.length = 0;
    expect(a.trySend(new Uint8Array([1, 0, 0, 0]), null)).toBe(0);
    await microtasks(30);
    expect(got).toEqual([1]);
    expect(log[0]).toBe("ring A→B");
    // A spin was asked for after that send (its ring went out), and it missed (nothing answers).
    expect(log).toContain(`spun ${IDLE_AFTER_SEND} missed`);
    // Second send of the same tick: the peer is parked, the ring waits for the end of the tick.
    log.length = 0;
    const spins = a.idleStats().spins;
    expect(a.trySend(new Uint8Array([2, 0, 0, 0]), null)).toBe(0);
    await microtasks(30);
    // No spin after it (onSent may look at the budget; no spin follows), and the pump it scheduled
    // does not ring either: the ring waits for the end of the tick (idle-wake-tick.test.ts).
    expect(log.filter((l) => !l.startsWith("budget"))).toEqual([]);
    expect(a.idleStats().spins).toBe(spins);
    await settle();
    expect(log.filter((l) => !l.startsWith("budget"))).toEqual(["ring A→B"]);
    expect(got).toEqual([1, 2]);
    a.close();
    b.close();
  });
});
