/**
 * StreamTimer: a stream's deadline timer that holds for deadlines past setTimeout's limit
 * (MAX_TIMER_MS, ~24.8 days): it waits at most that long at a time and arms again until it is
 * within a millisecond of the deadline, then runs `fire` once.
 *
 * Contract: `atMs` is a performance.now() time; clear() stops it (idempotent). The owner's thread.
 *
 * Example: const t = new StreamTimer(performance.now() + timeoutMs, () => s.fail(timedOut)); ... t.clear();
 */

import { MAX_TIMER_MS } from "../pending.ts";

export class StreamTimer {
  private id: ReturnType<typeof setTimeout> | undefined = undefined;

  constructor(
    private readonly atMs: number,
    private readonly fire: () => void,
  ) {
    // Always from a timer, never inline: the owner is still being built.
    this.id = setTimeout(this.arm, Math.min(Math.max(0, Math.ceil(atMs - performance.now())), MAX_TIMER_MS));
  }

  private readonly arm = (): void => {
    const leftMs = this.atMs - performance.now();
    if (leftMs <= 1) {
      this.id = undefined;
      return this.fire();
    }
    this.id = setTimeout(this.arm, Math.min(Math.ceil(leftMs), MAX_TIMER_MS));
  };

  clear(): void {
    clearTimeout(this.id);
    this.id = undefined;
  }
}
