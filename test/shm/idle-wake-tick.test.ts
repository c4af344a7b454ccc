/**
 * Rings a side owes its parked peer for sends made outside a pump wait for the end of the tick
 * (src/segment/connection.ts deferRing / flushPumpRing): a pump that runs in between (each send
 * schedules one; a reply that arrives starts one) sends only the ring its own sends owe. Before,
 * the pump's end sent every ring owed, so a Bun.serve front whose calls of one tick were
 * interleaved with replies rang its backend once per pump instead of once per tick. Two
 * connections over one ArrayBuffer in this thread; the peer "parks" by storing its armed word,
 * as a parked peer does. Counts only, nothing timed.
 */

import { describe, expect, test } from "bun:test";
import { microtasks, segmentPair, settle } from "../helpers/segment-pair.ts";

// Rings are logged and delivered (in a microtask); the peer "parks" by storing its armed word.
const pair = (log: string[]) => segmentPair({ ringSlots: 16, log });

describe("rings owed by sends outside a pump wait for the end of the tick", () => {
  test("calls of one tick with replies arriving between them ring the parked peer twice (at once, then at the tick's end), not once per pump", async () => {
    const log: string[] = [];
    const { a, b, parkB } = pair(log);
    let replies = 0;
    a.setReceiver({
      onMessage: (m) => {
        replies++;
        m.release();
      },
      onClose() {},
    });
    const received: number[] = [];
    await settle(); // A parked
    const before = a.idleStats().rings;
    for (let i = 0; i < 5; i++) {
      parkB();
      expect(a.trySend(new Uint8Array([i]))).toBe(0);
      // A reply reaches A (it rings A, whose pump delivers it), and A's own pump after the send runs.
      expect(b.trySend(new Uint8Array([100 + i]))).toBe(0);
      await microtasks();
    }
    const inTick = log.filter((l) => l === "ring A→B").length;
    await settle();
    const all = log.filter((l) => l === "ring A→B").length;
    // The first call rang at once; the other four owe one ring, sent at the end of the tick.
    expect(inTick).toBe(1);
    expect(all).toBe(2);
    expect(a.idleStats().rings - before).toBe(2);
    expect(replies).toBe(5);
    // Nothing is stranded: B finds all five calls.
    b.setReceiver({
      onMessage: (m) => {
        received.push(m.head[0]!);
        m.release();
      },
      onClose() {},
    });
    await settle();
    expect(received).toEqual([0, 1, 2, 3, 4]);
    a.close();
    b.close();
  });

  test("a ring owed by a send made inside a pump (a reply) still goes at that pump's end", async () => {
    const log: string[] = [];
    const { a, b, parkB } = pair(log);
    // B answers each request inside onMessage, as serve() does with a synchronous handler.
    b.setReceiver({
      onMessage: (m) => {
        const n = m.head[0]!;
        m.release();
        b.trySend(new Uint8Array([n]));
      },
      onClose() {},
    });
    const got: number[] = [];
    a.setReceiver({
      onMessage: (m) => {
        got.push(m.head[0]!);
        m.release();
      },
      onClose() {},
    });
    await settle();
    parkB();
    for (let i = 0; i < 3; i++) a.trySend(new Uint8Array([i]));
    await microtasks();
    // A's one ring at once woke B; B's replies to the batch rang A inside the tick (its pump's end), before any immediate.
    expect(log.filter((l) => l === "ring B→A").length).toBe(1);
    expect(got).toEqual([0, 1, 2]);
    await settle();
    a.close();
    b.close();
  });
});

test("a ring owed to the end of the tick does not hold back a pump's reply to its last request (it rings at once)", async () => {
  // Doorbells are logged, not delivered: the test runs B's pump itself (onDoorbell).
  const log: string[] = [];
  // Only B's rings to A are logged (A's request rings B too: that is not under test).
  const { a, b, parkA } = segmentPair({ ringSlots: 16, log, logOnly: "B", deliver: false });
  const replied: number[] = [];
  b.setReceiver({
    onMessage(m) {
      const head = m.head.slice();
      m.release();
      parkA();
      replied.push(head[0]!);
      b.trySend(head);
    },
    onClose() {},
  });
  await settle();
  // B sends twice outside any pump while A is parked: the first rings at once, the second owes the tick's ring.
  parkA();
  b.trySend(new Uint8Array([1]));
  parkA();
  b.trySend(new Uint8Array([2]));
  expect(log).toEqual(["ring B→A"]);
  // A's request reaches B's pump; B's reply to it (the last request queued) rings at once.
  a.trySend(new Uint8Array([9]));
  b.onDoorbell();
  await microtasks();
  expect(replied).toEqual([9]);
  expect(log).toEqual(["ring B→A", "ring B→A"]);
  expect(b.idleStats().earlyRings).toBe(1);
  await settle(); // the reply's ring covered the tick's: nothing more is owed
  expect(log).toEqual(["ring B→A", "ring B→A"]);
  a.close();
  b.close();
});
