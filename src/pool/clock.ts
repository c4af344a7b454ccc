/**
 * Time for the pool, injected: every timer the pool arms goes through a Clock, so tests drive
 * backoff, TTL, idle timeout and keepalive with a ManualClock instead of waiting.
 *
 * Contract: `setTimeout(fn, ms)` runs `fn` once, no earlier than `now() + ms`; `clearTimeout`
 * of a fired or cleared handle does nothing. The real clock's timers are unref'd, so a pool
 * never keeps a process alive.
 *
 *   const clock = new ManualClock();
 *   clock.setTimeout(() => fired++, 100);
 *   clock.advance(100); // fired === 1
 */

export type TimerHandle = unknown;

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** Wall-clock time with unref'd timers. Safe from any thread (each thread uses its own). */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    (t as { unref?: () => void }).unref?.();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

interface ManualTimer {
  at: number;
  seq: number;
  fn: () => void;
}

/**
 * A clock that moves only when told: advance(ms) runs every timer due by then, in time order
 * (ties in the order they were armed), timers armed meanwhile included. Single-threaded.
 */
export class ManualClock implements Clock {
  private t = 0;
  private seq = 0;
  private readonly timers = new Set<ManualTimer>();

  constructor(start = 0) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.add(timer);
    return timer;
  }
  clearTimeout(handle: TimerHandle): void {
    this.timers.delete(handle as ManualTimer);
  }
  /** Timers armed and not yet fired. */
  get pending(): number {
    return this.timers.size;
  }
  /** Moves time forward by `ms`, firing due timers one by one. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: ManualTimer | null = null;
      for (const x of this.timers) if (x.at <= end && (next === null || x.at < next.at || (x.at === next.at && x.seq < next.seq))) next = x;
      if (next === null) break;
      this.timers.delete(next);
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}
