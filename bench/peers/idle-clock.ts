/**
 * The shared clock and the connection stamps of the idle-wake benchmark (bench/idle-wake.bench.ts
 * and its peers): CLOCK_MONOTONIC, which every process of the host reads alike, as
 * Bun.nanoseconds() (monotonic too, but counted from each process's start) plus this process's
 * offset to it; and a wrap of a segment connection's doorbell entry and ring function.
 *
 *   const off = clockOffsetNs(); const clock = () => Bun.nanoseconds() + off;
 *   stampConnection(client.conn, clock, (ns) => woken.push(ns), (start, end) => rang.push(start));
 */

import { monotonicNs } from "../../src/ffi/libc.ts";

/** Bun.nanoseconds() + clockOffsetNs() reads CLOCK_MONOTONIC (best of 50 bracketed reads: within ~0.3 µs). */
export function clockOffsetNs(): number {
  let best = Infinity;
  let off = 0;
  for (let i = 0; i < 50; i++) {
    const a = Bun.nanoseconds();
    const m = monotonicNs();
    const b = Bun.nanoseconds();
    if (b - a < best) {
      best = b - a;
      off = m - (a + b) / 2;
    }
  }
  return off;
}

/**
 * Wraps `conn`'s doorbell entry and its ring function so that `onWoken(ns)` / `onRing(startNs,
 * endNs)` see each, on the shared clock. Works on a SegmentConnection (shm, inproc); returns
 * false (and leaves it alone) for any other connection.
 */
export function stampConnection(conn: unknown, clock: () => number, onWoken: (ns: number) => void, onRing: (startNs: number, endNs: number) => void): boolean {
  const c = conn as { onDoorbell?: () => void; ringEventLoop?: (offset: number) => void; __stamped?: boolean };
  if (c.__stamped || typeof c.onDoorbell !== "function" || typeof c.ringEventLoop !== "function") return false;
  c.__stamped = true;
  const door = c.onDoorbell.bind(c);
  const ring = c.ringEventLoop;
  c.onDoorbell = () => {
    onWoken(clock());
    door();
  };
  c.ringEventLoop = (offset: number) => {
    const t = clock();
    ring(offset);
    onRing(t, clock());
  };
  return true;
}
