/**
 * Idle strategies (in the style of Agrona's IdleStrategy): the object that decides how long a
 * connection busy-polls for input before it parks. One per connection, chosen by its wait policy
 * (`wait: { mode, spinNs }`: idleStrategyFor()) and swappable (a test sets its own). Nothing here
 * knows about shared memory or any transport: a connection asks for a budget whenever it goes
 * idle and reports what it found; how it spins and parks is its own business.
 *
 * Contract, per connection and on its thread:
 *   - `spinBudgetNs(cause)` when a look found no input: how many ns to busy-poll before parking
 *     (0: park at once; Infinity: never park, the wait's timeout bounds the spin). `cause` says
 *     what happened just before: IDLE_AFTER_SEND (this side sent since it last looked: an answer
 *     may be on its way), IDLE_AFTER_INPUT (it delivered input or was woken: more may follow),
 *     IDLE_WAIT (the caller waits explicitly, in a thread-holding mode).
 *   - `onSpinEnd(cause, paid, spentNs)` after every spin: whether it found input, after how long.
 *   - `onParkedInput(cause, gapNs)` when input woke a side that parked (after a spin or without
 *     one): `gapNs` from going idle to being woken, the peer's turnaround plus this side's own
 *     wake-up.
 *   - `followUp()` after a delivery on the event loop: look once more at the end of the tick
 *     before parking? `onFollowUp(found)` says what that look found.
 *
 * Strategies:
 *   - BusySpinIdle ("spin"): never parks.
 *   - FixedSpinIdle(spinNs) ("blocking", "async"): spins spinNs every time, then parks.
 *   - AdaptiveIdle(maxSpinNs) ("adaptive", the default): spins only while spinning has recently
 *     paid. Per cause a budget that doubles (to maxSpinNs) when a spin found input and halves
 *     (then 0, below MIN_ADAPTIVE_SPIN_NS) when it did not. A side whose budget is 0 parks; when input wakes it
 *     within maxSpinNs + WAKE_ALLOWANCE_NS of going idle, a spin might have caught it, so it
 *     probes: the next PROBE_IDLES idles of that cause spin the full budget whatever they find
 *     (IDLE_AFTER_SEND starts with one), and a probe in which no spin paid leaves the budget at 0 and
 *     doubles the number of such wake-ups needed before the next (up to MAX_PROBE_WAIT). So a
 *     server that just replied to a client that sends again only after milliseconds never spins
 *     (its wake-ups all come later than that), a side sending one-way messages never spins (no
 *     input follows), and two peers in a fast back-to-back exchange find their way to spinning.
 *     The one look after a delivery (followUp(), an immediate and a poll: cheaper than a ring)
 *     is granted while such looks find input; each look that finds nothing doubles the
 *     deliveries skipped before the next (up to MAX_FOLLOW_UP_SKIP). The other two look always.
 *
 * Example:
 *   const idle = new AdaptiveIdle(20_000);
 *   idle.spinBudgetNs(IDLE_AFTER_SEND);          // 20_000: the first probe
 *   for (let i = 0; i < PROBE_IDLES; i++) idle.onSpinEnd(IDLE_AFTER_SEND, false, 20_000);
 *   idle.spinBudgetNs(IDLE_AFTER_SEND);          // 0: spinning did not pay, park
 *   idle.onParkedInput(IDLE_AFTER_SEND, 9_000);  // the answer woke us 9 µs later: a spin might
 *   idle.onParkedInput(IDLE_AFTER_SEND, 9_000);  // have caught it (twice: the backoff is at 2)
 *   idle.spinBudgetNs(IDLE_AFTER_SEND);          // 20_000: a new probe
 */

/** This side sent since it last looked: an answer may be on its way. */
export const IDLE_AFTER_SEND = 0;
/** This side delivered input or was woken: more may follow. */
export const IDLE_AFTER_INPUT = 1;
/** The caller waits explicitly (wait() in a mode that holds the thread). */
export const IDLE_WAIT = 2;
export type IdleCause = typeof IDLE_AFTER_SEND | typeof IDLE_AFTER_INPUT | typeof IDLE_WAIT;
const CAUSES = 3;

/** Adaptive budgets below this stop spinning altogether (a spin this short rarely beats the look that preceded it). */
export const MIN_ADAPTIVE_SPIN_NS = 500;
/**
 * A parked side's own wake-up (event-loop readiness of a socket or eventfd, a futex wake) takes
 * 5–20 µs when its vCPU is awake and 50–120 µs when the vCPU went idle (measured on the
 * project's 2-core machine): input that woke a parked side up to this long after the spin
 * budget may still have been a spin's catch, so it earns a probe. With 20 µs, two peers in a
 * back-to-back exchange whose vCPUs had gone idle never probed again (async back-to-back p50
 * ~20 µs instead of ~2–8 µs); a peer whose input comes milliseconds apart is still never near.
 */
export const WAKE_ALLOWANCE_NS = 150_000;
/** Probes that keep missing come at most once per this many near wake-ups (a missed probe costs PROBE_IDLES full budgets). */
export const MAX_PROBE_WAIT = 64;
/**
 * A probe spins its full budget for this many idles before its misses count: in a back-to-back
 * exchange a spin pays only once the peer spins too, and the peer starts only when it sees this
 * side answer faster (its own wake-ups coming sooner).
 */
export const PROBE_IDLES = 16;

/**
 * How long a connection busy-polls before it parks. Called on the connection's thread only;
 * implementations keep no reference to the connection.
 */
export interface IdleStrategy {
  /** ns to busy-poll for input, now that a look found none after `cause`; 0 parks at once, Infinity never parks. */
  spinBudgetNs(cause: IdleCause): number;
  /** The spin that spinBudgetNs(cause) asked for ended: it found input (`paid`) after `spentNs`, or ran out. */
  onSpinEnd(cause: IdleCause, paid: boolean, spentNs: number): void;
  /** Input woke this side after it parked following `cause`, `gapNs` after it went idle. */
  onParkedInput(cause: IdleCause, gapNs: number): void;
  /**
   * After a delivery, on the event loop: whether to look once more at the end of the tick (an
   * immediate and a poll, no spin) before parking; a look that finds input saves the peer a ring.
   */
  followUp(): boolean;
  /** The look followUp() granted found input, or did not. */
  onFollowUp(found: boolean): void;
}

/** "spin": poll and never park; a wait spins until input or its timeout. For dedicated cores. */
export class BusySpinIdle implements IdleStrategy {
  spinBudgetNs(): number {
    return Infinity;
  }
  onSpinEnd(): void {}
  onParkedInput(): void {}
  followUp(): boolean {
    return true;
  }
  onFollowUp(): void {}
}

/** "blocking" / "async": spin `spinNs` every time a look finds nothing, then park. Learns nothing. */
export class FixedSpinIdle implements IdleStrategy {
  constructor(readonly spinNs: number) {}
  spinBudgetNs(): number {
    return this.spinNs;
  }
  onSpinEnd(): void {}
  onParkedInput(): void {}
  followUp(): boolean {
    return true;
  }
  onFollowUp(): void {}
}

/** "adaptive": spin only while spinning has recently paid (see the module comment for the rules). */
export class AdaptiveIdle implements IdleStrategy {
  private readonly budget = new Float64Array(CAUSES);
  /** Near wake-ups (input within maxSpinNs + WAKE_ALLOWANCE_NS) needed before the next probe. */
  private readonly probeWait = new Float64Array(CAUSES).fill(1);
  private readonly nearWakes = new Float64Array(CAUSES);
  /** Idles left in the current probe (0: none): a probe spins the full budget this many times before misses count. */
  private readonly probeLeft = new Float64Array(CAUSES);
  /** Follow-up looks to skip before the next, and how many the next miss makes it (1 … MAX_FOLLOW_UP_SKIP). */
  private followSkip = 0;
  private followBackoff = 0;

  constructor(readonly maxSpinNs: number) {
    // The wait after a send starts with a probe: two peers in a back-to-back exchange, both
    // spinning from the start, find out together whether it pays. Other causes start at 0.
    this.budget[IDLE_AFTER_SEND] = maxSpinNs > 0 ? maxSpinNs : 0;
    this.probeLeft[IDLE_AFTER_SEND] = PROBE_IDLES;
  }

  spinBudgetNs(cause: IdleCause): number {
    return this.budget[cause]!;
  }

  onSpinEnd(cause: IdleCause, paid: boolean, _spentNs?: number): void {
    const b = this.budget[cause]!;
    if (paid) {
      this.budget[cause] = Math.min(this.maxSpinNs, Math.max(2 * MIN_ADAPTIVE_SPIN_NS, 2 * b));
      this.probeWait[cause] = 1;
      this.nearWakes[cause] = 0;
      this.probeLeft[cause] = 0;
      return;
    }
    if (this.probeLeft[cause]! > 0) {
      // A probe keeps its full budget for PROBE_IDLES idles (the peer may only now start to spin).
      if (--this.probeLeft[cause]! > 0) return;
      this.budget[cause] = 0;
      this.probeWait[cause] = Math.min(MAX_PROBE_WAIT, 2 * this.probeWait[cause]!);
      return;
    }
    const next = b / 2;
    if (next >= MIN_ADAPTIVE_SPIN_NS) {
      this.budget[cause] = next;
      return;
    }
    this.budget[cause] = 0;
    this.probeWait[cause] = Math.min(MAX_PROBE_WAIT, 2 * this.probeWait[cause]!);
  }

  onParkedInput(cause: IdleCause, gapNs: number): void {
    // A budget above 0 already spun and missed; its shrinking is the answer to that.
    if (this.budget[cause]! > 0 || !(this.maxSpinNs > 0)) return;
    if (!(gapNs <= this.maxSpinNs + WAKE_ALLOWANCE_NS)) return;
    if (++this.nearWakes[cause]! < this.probeWait[cause]!) return;
    this.nearWakes[cause] = 0;
    this.budget[cause] = this.maxSpinNs;
    this.probeLeft[cause] = PROBE_IDLES;
  }

  followUp(): boolean {
    if (this.followSkip === 0) return true;
    this.followSkip--;
    return false;
  }

  onFollowUp(found: boolean): void {
    if (found) {
      this.followBackoff = 0;
      return;
    }
    this.followBackoff = Math.min(MAX_FOLLOW_UP_SKIP, Math.max(1, 2 * this.followBackoff));
    this.followSkip = this.followBackoff;
  }
}

/** Follow-up looks that keep finding nothing come at most once per this many deliveries (a look costs an immediate and a poll). */
export const MAX_FOLLOW_UP_SKIP = 64;

/** The strategy a wait mode stands for, with the policy's spinNs (its maximum, for "adaptive"). */
export function idleStrategyFor(mode: "spin" | "blocking" | "async" | "adaptive", spinNs: number): IdleStrategy {
  if (mode === "spin") return new BusySpinIdle();
  if (mode === "adaptive") return new AdaptiveIdle(spinNs);
  return new FixedSpinIdle(spinNs);
}
