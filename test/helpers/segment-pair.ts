/**
 * Two SegmentConnections over one ArrayBuffer in this thread (A is side "A", B side "B"), for
 * tests of how a connection rings, parks and spins (test/shm/idle-*.test.ts). Rings are
 * recorded through the connections' Signals; nothing here is timed.
 */

import { SegmentConnection, type Signals, type WaitMode } from "../../src/segment/connection.ts";
import { ARMED_EVENT_LOOP, computeLayout, RING_ARMED, writeHeader } from "../../src/segment/layout.ts";

export interface SegmentPairOptions {
  /** Slots per ring (default 8). */
  ringSlots?: number;
  /** Both sides' wait mode (default "async": event-loop mode). */
  mode?: WaitMode;
  /** Both sides' spin budget (default 0: each side parks as soon as a look finds nothing). */
  spinNs?: number;
  /** Gets "ring A→B" / "ring B→A" as each side rings the other's event loop. */
  log?: string[];
  /** Log only the rings this side sends (default: both sides'). */
  logOnly?: "A" | "B";
  /**
   * Deliver each ring to the peer (its onDoorbell(), in a microtask, as a socket byte would come
   * later; default true). Off, rings are only logged: the test runs a side's pump itself.
   */
  deliver?: boolean;
}

export interface SegmentPair {
  a: SegmentConnection;
  b: SegmentConnection;
  /** A parks on its event loop: what its armEventLoop() stores into the B→A ring's armed word. */
  parkA: () => void;
  /** B parks on its event loop: what its armEventLoop() stores into the A→B ring's armed word. */
  parkB: () => void;
}

export function segmentPair(o: SegmentPairOptions = {}): SegmentPair {
  const { ringSlots = 8, mode = "async", spinNs = 0, log, logOnly, deliver = true } = o;
  const layout = computeLayout({ ringSlots, sizeClasses: [{ slotBytes: 1024, slotCount: 4 }] });
  const buffer = new ArrayBuffer(layout.totalBytes);
  writeHeader(new Uint32Array(buffer, 0, 32), layout, 1);
  const conns: SegmentConnection[] = [];
  const signals = (i: number): Signals => ({
    wakeBlocking() {},
    wakeEventLoop: () => {
      const side = i === 0 ? "A" : "B";
      if (log && (logOnly === undefined || logOnly === side)) log.push(i === 0 ? "ring A→B" : "ring B→A");
      if (deliver) queueMicrotask(() => conns[1 - i]!.onDoorbell());
    },
    waitBlocking() {},
    armEventLoop() {},
  });
  const policy = { mode, spinNs };
  conns.push(new SegmentConnection({ transport: "shm", buffer, layout, side: "A", signals: signals(0), peer: "B", policy }));
  conns.push(new SegmentConnection({ transport: "shm", buffer, layout, side: "B", signals: signals(1), peer: "A", policy }));
  const words = new Int32Array(buffer);
  const park = (ring: number) => () => Atomics.store(words, (layout.rings[ring]! + RING_ARMED) >> 2, ARMED_EVENT_LOOP);
  return { a: conns[0]!, b: conns[1]!, parkA: park(1), parkB: park(0) };
}

/** Microtasks only: the end-of-tick immediate does not run in between. */
export const microtasks = async (n = 20) => {
  for (let i = 0; i < n; i++) await Promise.resolve();
};

/** Five turns of the event loop (immediates): rings delivered, pumps run, sides parked. */
export const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};
