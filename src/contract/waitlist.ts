/**
 * WaitList: promises that resolve true when woken or false at their deadline, with one timer
 * for the whole list instead of a setTimeout + clearTimeout per wait (that pair costs about a
 * microsecond, a visible share of a TCP round trip). A woken list leaves its timer armed but
 * unref'd; it fires at most once per earliest deadline and finds nothing to expire.
 *
 * Example:
 *   const w = new WaitList();
 *   const ready = await w.wait(100);   // elsewhere: w.wake(true)
 */

export class WaitList {
  private resolvers: Array<(ready: boolean) => void> = [];
  private deadlines: number[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = Infinity;
  private readonly onTimer = () => this.expire();

  get size(): number {
    return this.resolvers.length;
  }

  wait(timeoutMs: number): Promise<boolean> {
    this.nextAt = performance.now() + Math.max(0, timeoutMs);
    return new Promise(this.enlist);
  }

  /** wait()'s executor, made once: a closure per wait would be two more objects per wait. */
  private nextAt = 0;
  private readonly enlist = (resolve: (ready: boolean) => void): void => {
    const at = this.nextAt;
    this.resolvers.push(resolve);
    this.deadlines.push(at);
    if (at < this.timerAt) this.arm(at);
    else this.timer?.ref();
  };

  /** Resolves every waiter with `ready`. */
  wake(ready: boolean): void {
    const rs = this.resolvers;
    const n = rs.length;
    if (n === 0) return;
    this.timer?.unref();
    // Resolving only queues the waiters' continuations, so nothing re-enters wait() while this
    // loop runs and the arrays can be reused rather than reallocated per wake.
    for (let i = 0; i < n; i++) rs[i]!(ready);
    rs.length = 0;
    this.deadlines.length = 0;
  }

  private arm(at: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.onTimer, Math.max(0, at - performance.now()));
  }

  private expire(): void {
    this.timer = null;
    this.timerAt = Infinity;
    // Timers may fire a little early; treat deadlines within half a millisecond as due.
    const now = performance.now() + 0.5;
    const keepR: Array<(ready: boolean) => void> = [];
    const keepD: number[] = [];
    const due: Array<(ready: boolean) => void> = [];
    let next = Infinity;
    for (let i = 0; i < this.resolvers.length; i++) {
      const d = this.deadlines[i]!;
      if (d <= now) due.push(this.resolvers[i]!);
      else {
        keepR.push(this.resolvers[i]!);
        keepD.push(d);
        if (d < next) next = d;
      }
    }
    this.resolvers = keepR;
    this.deadlines = keepD;
    if (next !== Infinity) this.arm(next);
    for (const r of due) r(false);
  }
}
