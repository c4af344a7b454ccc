/**
 * SegmentConnection: the Transport contract over one session segment. The data path (send,
 * receive, release, close) is SegmentChannel's (channel.ts); this class adds how a side waits
 * (the modes in waiting.ts: the mode says whether it waits on the event loop or holds the
 * thread, its idle strategy (idle.ts) how long it spins before it parks and whether it looks
 * again after a delivery), how it rings a peer parked on its event loop (at most twice per pump
 * or tick, however many sends: deferRing) and how it notices that the peer went: poll() and every spin
 * or park read the peer's closed flag and, at most every PROBE_INTERVAL_NS, ask setup whether
 * the control socket hung up (the peer died), so spin and blocking loops that never return to
 * the event loop still see a dead peer and fail their calls with TransportClosedError.
 *
 * Threading: a connection belongs to the thread that created it.
 *
 * Example (blocking mode, a dedicated thread):
 *   conn.setWaitPolicy({ mode: "blocking" });
 *   for (;;) { if (conn.poll() === 0 && !(await conn.wait(100)) && conn.closed) break; }
 */

import { TransportClosedError, UsageError } from "../errors.ts";
import { WaitList } from "../contract/waitlist.ts";
import { SegmentChannel, type SegmentConnectionOptions } from "./channel.ts";
import { ARMED_AWAKE, ARMED_EVENT_LOOP, ARMED_FUTEX, RING_DOORBELL, type SegmentLayout } from "./layout.ts";
import { IDLE_AFTER_INPUT, IDLE_AFTER_SEND, IDLE_WAIT, idleStrategyFor, type IdleCause, type IdleStrategy } from "./idle.ts";
import {
  BLOCK_SLICE_NS,
  coalescing,
  DEFAULT_SPIN_NS,
  EVENT_LOOP_YIELD_NS,
  MAX_WAIT_MS,
  PROBE_INTERVAL_NS,
  PROBE_POLL_MASK,
  type SegmentWaitPolicy,
  type WaitMode,
} from "./waiting.ts";

export type { SegmentConnectionOptions } from "./channel.ts";

/**
 * What a connection's idle waits have cost: spins started, ns spent spinning, spins that found
 * input, event-loop parks, and event-loop doorbells rung for the peer (sends that found it parked
 * on its event loop, coalesced per tick).
 */
export interface IdleStats {
  spins: number;
  spinNs: number;
  paidSpins: number;
  parks: number;
  rings: number;
  /** Of `rings`: rung inside a pump by the reply to the last queued message, not at the pump's end. */
  earlyRings: number;
}
export { DEFAULT_SPIN_NS, type SegmentWaitPolicy, type Signals, type WaitMode } from "./waiting.ts";

const MODES: readonly string[] = ["spin", "blocking", "async", "adaptive"];

/**
 * Pumps that keep delivering without a park get the end-of-tick follow-up after this long even
 * when the idle strategy grants none: its immediate is what hands the thread back to the event
 * loop after EVENT_LOOP_YIELD_NS, so it must be queued well before that.
 */
const FOLLOW_UP_YIELD_NS = EVENT_LOOP_YIELD_NS / 2;

/**
 * The connection setup hands out for a session segment (shm and inproc). Belongs to the thread
 * that created it; wait() in spin and blocking modes blocks that thread for at most its timeout.
 */
export class SegmentConnection extends SegmentChannel {
  private readonly waiters = new WaitList();
  private policy: SegmentWaitPolicy = { mode: "adaptive", spinNs: DEFAULT_SPIN_NS };
  private idle: IdleStrategy = idleStrategyFor("adaptive", DEFAULT_SPIN_NS);
  /** Why the armed event-loop wait began (-1: none armed) and when (Bun.nanoseconds): the gap onParkedInput reports. */
  private parkedCause = -1;
  private parkedSinceNs = 0;
  private microQueued = false;
  /** The end-of-tick immediate is queued: it sends a deferred ring, then pumps if a follow-up is due. */
  private immediateQueued = false;
  /** The end-of-tick immediate pumps (more may follow a delivery). */
  private followUpDue = false;
  /** When the pending follow-up was asked for (Bun.nanoseconds). */
  private immediateSinceNs = 0;
  private pumping = false;
  /** A send happened since the last pump: its idle is IDLE_AFTER_SEND (an answer may be on its way). */
  private sentSincePump = false;
  private armedFor: number = ARMED_AWAKE;
  /** onPeerGone() is delivering the last messages: its poll() must not start another close. */
  private peerGoing = false;
  private idlePolls = 0;
  private lastProbeNs = 0;
  private readonly stats: IdleStats = { spins: 0, spinNs: 0, paidSpins: 0, parks: 0, rings: 0, earlyRings: 0 };
  private readonly onDoorbellCb = () => this.onDoorbell();
  private readonly microTask = () => {
    this.microQueued = false;
    // A chain of microtask pumps (send → pump → delivery → continuation → send …) never returns
    // to the event loop by itself: once the follow-up immediate has waited EVENT_LOOP_YIELD_NS,
    // the pump is left to it, so timers and I/O run in between.
    if (this.yieldDue()) return;
    this.pump();
  };
  private readonly immediateTask = () => {
    this.immediateQueued = false;
    this.rangThisTick = false;
    this.flushRing();
    if (!this.followUpDue) return;
    this.followUpDue = false;
    this.deliveringSinceNs = 0; // the event loop ran: a new run of deliveries starts here
    this.pump(true);
  };
  /** Since when pumps have delivered without parking or an end-of-tick immediate in between (0: not). */
  private deliveringSinceNs = 0;

  private readonly segment: { layout: SegmentLayout; side: "A" | "B" };

  /** The peer's event-loop doorbell is owed by a send made outside a pump: it goes out at the end of this tick. */
  private ringDueTick = false;
  /** Owed by a reply made inside the current pump: it goes out at that pump's end. */
  private ringDuePump = false;
  private get ringDue(): boolean {
    return this.ringDueTick || this.ringDuePump;
  }
  /** A ring went out at once in this tick (until the end-of-tick immediate): later ones are deferred. */
  private rangThisTick = false;
  /** The current pump rang at once (the reply to the last queued request): later rings wait for its end. */
  private rangThisPump = false;
  /** Setup's own wakeEventLoop; the channel calls the coalescing one below. */
  private readonly ringEventLoop: (offset: number) => void;
  private readonly txDoorbellOffset: number;

  constructor(o: SegmentConnectionOptions) {
    const hold: { conn: SegmentConnection | null } = { conn: null };
    super({ ...o, signals: coalescing(o.signals, hold) });
    hold.conn = this;
    const own = o.signals;
    this.ringEventLoop = (offset) => own.wakeEventLoop(offset);
    this.txDoorbellOffset = o.layout.rings[o.side === "A" ? 0 : 1]! + RING_DOORBELL;
    this.segment = { layout: o.layout, side: o.side };
    if (o.policy) this.setWaitPolicy(o.policy);
  }

  /**
   * A ring for a peer parked in its event loop. In the event-loop modes one made while a pump
   * delivers (a server's replies to one batch of requests) waits for the end of that pump, except
   * the first of a pump made when nothing more is queued for it (the reply to the last request),
   * which goes at once; else the first of a tick goes at once and later ones wait for the end of
   * the tick (setImmediate; a pump in between does not send them: flushPumpRing), so the sends of
   * one tick cost the peer at most two wake-ups (a Bun.serve handler calling a
   * backend sends once per HTTP request, many per tick, and the backend parks again between
   * them). A poll() that finds nothing, outside the pump, sends a waiting ring at once (a caller
   * spinning on poll() never returns to the event loop). Spin and blocking modes ring at once:
   * their thread may never return to it.
   * @internal called through the channel's Signals; same thread as the connection.
   */
  deferRing(offset: number): void {
    if (!this.autoPumps() || this.closed || offset !== this.txDoorbellOffset) {
      this.stats.rings++;
      return this.ringEventLoop(offset);
    }
    // Sends made while the pump delivers (a server's replies) ring when that pump ends, except the
    // reply to the last request queued, which rings at once (idle shm server: handler → doorbell
    // 15–22 µs at the pump's end, 11–17 µs at once): a pump rings at most twice, and a ring owed
    // to the end of the tick does not hold its replies back (ringing covers everything sent).
    if (this.pumping) {
      if (this.ringDuePump) return;
      if (!this.rangThisPump && this.rx.available() === 0) {
        this.rangThisPump = true;
        this.ringDueTick = false;
        this.stats.rings++;
        this.stats.earlyRings++;
        this.ringEventLoop(offset);
        return;
      }
      this.ringDuePump = true;
      return;
    }
    if (this.ringDue) return;
    // The first ring of a tick goes at once (a lone call pays no wait); later ones wait for its end.
    if (!this.rangThisTick) {
      this.rangThisTick = true;
      this.stats.rings++;
      this.ringEventLoop(offset);
      this.queueEndOfTick();
      return;
    }
    this.ringDueTick = true;
    this.queueEndOfTick();
  }

  /** Sends a deferred ring now (idempotent). */
  private flushRing(): void {
    if (!this.ringDue) return;
    this.ringDueTick = false;
    this.ringDuePump = false;
    this.stats.rings++;
    this.ringEventLoop(this.txDoorbellOffset);
  }

  /**
   * The pump's end: sends the ring owed by what it sent (its replies). One owed by sends made
   * outside it waits for the end of the tick (its immediate is queued): else the pump each send
   * schedules (onSent) would ring for every call of a tick that a reply came between. */
  private flushPumpRing(): void {
    if (this.ringDuePump) this.flushRing();
  }

  /**
   * @internal the segment as this side maps it, for the scripted hostile peer of the tests
   * (test/helpers/hostile-shm.ts), which writes into it what a hostile peer could; `ring()`
   * rings the peer however it sleeps. Same thread as the connection.
   */
  segmentForTests(): { bytes: Uint8Array; words: Int32Array; layout: SegmentLayout; side: "A" | "B"; ring(): void } {
    return { bytes: this.bytes, words: this.words, ...this.segment, ring: () => this.wakePeer() };
  }

  setWaitPolicy(policy: Partial<SegmentWaitPolicy>): void {
    const mode = policy.mode ?? this.policy.mode;
    if (!MODES.includes(mode)) throw new UsageError(`wait mode "${String(mode)}" is not spin, blocking, async or adaptive`);
    const spinNs = policy.spinNs ?? this.policy.spinNs;
    if (typeof spinNs !== "number" || !(spinNs >= 0) || spinNs === Infinity) throw new UsageError(`spinNs ${String(spinNs)} must be a finite number ≥ 0`);
    this.policy = { mode: mode as WaitMode, spinNs };
    this.idle = idleStrategyFor(mode as WaitMode, spinNs);
    // A thread-holding mode may never return to the event loop: a deferred ring goes now.
    if (!this.autoPumps()) this.flushRing();
    if (this.autoPumps() && this.receiver !== null) this.schedulePump();
  }

  /**
   * Replaces the idle strategy the wait policy chose (tests, and callers with a strategy of their
   * own); the mode still says whether waits hold the thread or the event loop. A later
   * setWaitPolicy() puts the mode's own strategy back. Same thread as the connection.
   */
  setIdleStrategy(strategy: IdleStrategy): void {
    this.idle = strategy;
  }

  /** The idle strategy in use (setIdleStrategy(), or the one the wait policy chose). */
  get idleStrategy(): IdleStrategy {
    return this.idle;
  }

  /** True in async / adaptive modes: wait() parks on the event loop. Spin and blocking waits hold the thread. */
  get waitsOnEventLoop(): boolean {
    return this.autoPumps();
  }

  get waitPolicy(): Readonly<SegmentWaitPolicy> {
    return this.policy;
  }

  // ---------------------------------------------------------------- hooks of the data path

  protected onReceiverSet(): void {
    if (this.autoPumps()) this.schedulePump();
  }

  protected onSent(): void {
    if (!this.autoPumps()) return;
    // Parked on the event loop with no spin granted after a send: stay parked (the peer rings
    // when it answers), now waiting for that answer. Otherwise the next pump looks for the
    // answer, spinning what the idle strategy grants.
    if (this.armedFor === ARMED_EVENT_LOOP && !this.pumping && !(this.idle.spinBudgetNs(IDLE_AFTER_SEND) > 0)) {
      this.parkedCause = IDLE_AFTER_SEND;
      this.parkedSinceNs = Bun.nanoseconds();
      return;
    }
    this.sentSincePump = true;
    this.schedulePump();
  }

  /** After an empty poll: the peer's closed flag, and now and then a liveness probe. */
  protected onIdlePoll(): void {
    if (this.ringDue && !this.pumping) this.flushRing();
    if (this.peerGoing) return;
    if (this.peerClosed()) return this.onPeerGone("closed by the peer");
    if ((++this.idlePolls & PROBE_POLL_MASK) === 0) this.probe(Bun.nanoseconds());
  }

  protected onShutdown(): void {
    // The peer is told now, before setup closes the control socket.
    this.flushRing();
    this.disarm();
    this.signals.disarmEventLoop?.(this.rxDoorbell);
    this.waiters.wake(false);
  }

  // ---------------------------------------------------------------- peer liveness

  /** Asks setup whether the peer is gone (rate-limited); closes the connection if so. Returns whether it closed. */
  private probe(nowNs: number): boolean {
    if (this.signals.peerGone === undefined || nowNs - this.lastProbeNs < PROBE_INTERVAL_NS) return false;
    this.lastProbeNs = nowNs;
    if (!this.signals.peerGone()) return false;
    this.onPeerGone("the peer is gone (its control socket hung up: the process or Worker ended)");
    return this.closed;
  }

  /** @internal the peer closed or died (setup saw the control socket close, or a probe or the flag did). */
  onPeerGone(why: string): void {
    if (this.closed || this.peerGoing) return;
    this.peerGoing = true;
    // Messages the peer sent before it went are still delivered, then the close.
    this.poll();
    if (this.closed) return;
    this.shutdown(new TransportClosedError(`${this.transport} connection to ${this.peer}: ${why}`), false);
  }

  // ---------------------------------------------------------------- event-loop modes

  private autoPumps(): boolean {
    return this.policy.mode === "async" || this.policy.mode === "adaptive";
  }

  /** Pump soon (a microtask): after a send, or when the doorbell rang. */
  private schedulePump(): void {
    if (this.microQueued || this.closed) return;
    this.microQueued = true;
    queueMicrotask(this.microTask);
  }

  /** Pump again after the receiver's continuations ran (setImmediate): more may follow a delivery. */
  private scheduleFollowUp(): void {
    if (this.followUpDue || this.closed) return;
    this.followUpDue = true;
    this.immediateSinceNs = Bun.nanoseconds();
    this.queueEndOfTick();
  }

  /** One immediate per tick carries both the deferred ring and the follow-up pump. */
  private queueEndOfTick(): void {
    if (this.immediateQueued) return;
    this.immediateQueued = true;
    setImmediate(this.immediateTask);
  }

  /** Deliveries made outside the event loop have kept the follow-up immediate waiting too long. */
  private yieldDue(): boolean {
    return this.followUpDue && Bun.nanoseconds() - this.immediateSinceNs > EVENT_LOOP_YIELD_NS;
  }

  // rx.available() !== 0 below means "poll() has something to look at": input, or a peer index
  // that is impossible (RING_FAULT), which the poll() that follows turns into the abort.

  /** @internal what this connection's spins and parks have cost so far (tests, benchmarks). */
  idleStats(): Readonly<IdleStats> {
    return this.stats;
  }

  /**
   * A look found nothing after `cause`: spins for the idle strategy's budget (never past
   * EVENT_LOOP_YIELD_NS: a pump must hand the thread back) and tells the strategy what it found.
   * Returns true when input is there.
   */
  private idleSpin(cause: IdleCause): boolean {
    if (this.rx.available() !== 0) return true;
    // A ring still owed to the peer (deferred to the end of the tick): the peer had parked, with
    // everything it had answered, and sends nothing more before it is rung but what its own
    // pending work (an async handler) produces. No spin then, and the strategy is not asked (it
    // learns from spins that could pay). Before, a call sent later in the tick of a reply that a
    // spin had caught spun its whole budget for nothing, then rang.
    if (this.ringDue) return false;
    const budgetNs = Math.min(this.idle.spinBudgetNs(cause), EVENT_LOOP_YIELD_NS);
    if (!(budgetNs > 0)) return false;
    const start = Bun.nanoseconds();
    const end = start + budgetNs;
    let paid = false;
    do {
      // Read the clock every 16 looks: a clock read costs more than a look at the ring.
      for (let i = 0; i < 16; i++) {
        if (this.rx.available() !== 0) {
          paid = true;
          break;
        }
      }
    } while (!paid && Bun.nanoseconds() < end);
    this.spun(cause, paid, Bun.nanoseconds() - start);
    return paid;
  }

  /** Counts a spin and reports it to the idle strategy. */
  private spun(cause: IdleCause, paid: boolean, spentNs: number): void {
    this.stats.spins++;
    this.stats.spinNs += spentNs;
    if (paid) this.stats.paidSpins++;
    this.idle.onSpinEnd(cause, paid, spentNs);
  }

  /**
   * Event-loop delivery (async / adaptive): deliver what is there; if nothing, spin for what the
   * idle strategy grants; if still nothing, arm the doorbell and return to the event loop. After
   * a delivery it yields (setImmediate) so the receiver's continuations run before it looks again.
   */
  private pump(followUp = false): void {
    if (this.closed || this.pumping || this.receiver === null || !this.autoPumps()) return;
    this.pumping = true;
    this.rangThisPump = false;
    // Read before poll(): sends made while delivering belong to the next pump.
    const cause: IdleCause = this.sentSincePump ? IDLE_AFTER_SEND : IDLE_AFTER_INPUT;
    this.sentSincePump = false;
    let n = 0;
    let idleSinceNs = 0;
    try {
      this.disarm();
      n = this.poll();
      if (followUp) this.idle.onFollowUp(n > 0);
      if (n === 0 && !this.closed) {
        idleSinceNs = Bun.nanoseconds();
        if (this.idleSpin(cause)) n = this.poll();
      }
    } finally {
      this.pumping = false;
    }
    this.flushPumpRing();
    if (this.closed) return;
    if (n === 0) {
      this.deliveringSinceNs = 0;
      this.armEventLoop(cause, idleSinceNs);
      return;
    }
    this.waiters.wake(true);
    // Look again at the end of the tick (more may follow a delivery) when the idle strategy says
    // so (followUp(): such looks recently found input), or when pumps have delivered without a
    // break for FOLLOW_UP_YIELD_NS (the immediate is what hands the thread to the event loop);
    // otherwise park now: the doorbell says when more comes.
    const now = Bun.nanoseconds();
    if (this.deliveringSinceNs === 0) this.deliveringSinceNs = now;
    if (this.idle.followUp() || now - this.deliveringSinceNs > FOLLOW_UP_YIELD_NS) {
      this.scheduleFollowUp();
      return;
    }
    this.armEventLoop(IDLE_AFTER_INPUT, now);
  }

  /** Arms the doorbell and parks on the event loop; `cause` and `idleSinceNs` (0: now) say why and since when, for the idle strategy. */
  private armEventLoop(cause: IdleCause, idleSinceNs = 0): void {
    const seq = Atomics.load(this.words, this.rxDoorbell >> 2);
    // SYNC: pairs with Atomics.exchange(armed) in the peer's publish(): store armed, then re-check.
    Atomics.store(this.words, this.rxArmedIdx, ARMED_EVENT_LOOP);
    this.armedFor = ARMED_EVENT_LOOP;
    if (this.rx.available() !== 0) {
      this.disarm();
      this.schedulePump();
      return;
    }
    // Room freed before the doorbell's sequence was read rings no more: tell the waiters now.
    if (this.waiters.size > 0 && this.roomFreed()) this.waiters.wake(true);
    this.stats.parks++;
    this.parkedCause = cause;
    this.parkedSinceNs = idleSinceNs > 0 ? idleSinceNs : Bun.nanoseconds();
    this.signals.armEventLoop(this.rxDoorbell, seq, this.onDoorbellCb);
  }

  private disarm(): void {
    // A park that ends without the doorbell (a send, wait() or setWaitPolicy() pumped) teaches nothing.
    this.parkedCause = -1;
    if (this.armedFor === ARMED_AWAKE) return;
    Atomics.store(this.words, this.rxArmedIdx, ARMED_AWAKE);
    this.armedFor = ARMED_AWAKE;
  }

  /** @internal the peer rang (shm: a byte on the control socket; inproc: waitAsync resolved). */
  onDoorbell(): void {
    if (this.closed) return;
    if (this.parkedCause >= 0) {
      // The doorbell also rings for room and for the peer's close: only input is a turnaround.
      if (this.rx.available() !== 0) this.idle.onParkedInput(this.parkedCause as IdleCause, Bun.nanoseconds() - this.parkedSinceNs);
      this.parkedCause = -1;
    }
    this.armedFor = ARMED_AWAKE;
    // Input, or room to send (the receiver freed what we waited for): wake waiters either way.
    this.waiters.wake(true);
    if (this.autoPumps() && this.receiver !== null) this.schedulePump();
  }

  // ---------------------------------------------------------------- wait()

  wait(timeoutMs: number): Promise<boolean> {
    if (typeof timeoutMs !== "number" || !(timeoutMs >= 0)) throw new UsageError(`${this.transport} wait: timeoutMs ${String(timeoutMs)} must be a number ≥ 0`);
    if (this.closed) return Promise.resolve(false);
    const ms = Math.min(timeoutMs, MAX_WAIT_MS);
    if (!this.autoPumps()) return Promise.resolve(this.waitOnThread(ms));
    // Input or room is there: say so at once, unless this microtask chain has kept the event
    // loop waiting past EVENT_LOOP_YIELD_NS; then park, and the pending immediate's pump wakes us.
    const input = this.rx.available() !== 0;
    if ((input || this.roomReady()) && !this.yieldDue()) {
      if (!input) this.wantingSpace = false;
      else if (this.poll() > 0) this.scheduleFollowUp();
      return Promise.resolve(!this.closed);
    }
    // async / adaptive: park in the event loop; the pump or the doorbell wakes us. The pump
    // runs first (a microtask) and spins, so a reply that is on its way is not missed.
    const p = this.waiters.wait(ms);
    if (this.receiver !== null) this.schedulePump();
    else this.armEventLoop(IDLE_WAIT);
    return p;
  }

  /**
   * wait() in the modes that hold the thread (spin, blocking): spin for the idle strategy's
   * budget (spin mode: the whole timeout), then park in futex for what is left of `timeoutMs`.
   */
  private waitOnThread(timeoutMs: number): boolean {
    const timeoutNs = timeoutMs * 1e6;
    const budgetNs = Math.min(this.idle.spinBudgetNs(IDLE_WAIT), timeoutNs);
    // The doorbell's sequence before the spin: room or input that comes during the spin moves
    // it, so the park below cannot sleep through it (a lost wakeup otherwise).
    const seq = Atomics.load(this.words, this.rxDoorbell >> 2);
    if (this.ready()) return this.waitResult(true);
    let spentNs = 0;
    if (budgetNs > 0) {
      const start = Bun.nanoseconds();
      const paid = this.spinReady(budgetNs);
      spentNs = Bun.nanoseconds() - start;
      this.spun(IDLE_WAIT, paid, spentNs);
      if (paid) return this.waitResult(true);
    }
    const leftMs = (timeoutNs - spentNs) / 1e6;
    if (!(leftMs > 0)) return this.waitResult(false);
    const parkedAt = Bun.nanoseconds();
    const woken = this.waitBlocking(leftMs, seq);
    if (woken && this.rx.available() !== 0) this.idle.onParkedInput(IDLE_WAIT, Bun.nanoseconds() - parkedAt + spentNs);
    return woken;
  }

  /** Something for a waiter: input, room after a Full (the receiver cleared spaceWanted), or the peer's close. */
  private ready(): boolean {
    if (this.rx.available() !== 0) return true;
    // SYNC: the receiver clears spaceWanted after it freed room (releaseMessage).
    if (this.wantingSpace && Atomics.load(this.words, this.txSpaceIdx) === 0) return true;
    return this.peerClosed();
  }

  /** Spins until ready() or `budgetNs` passed, probing the peer's liveness on the way; true when ready or closed. */
  private spinReady(budgetNs: number): boolean {
    if (this.ready()) return true;
    if (!(budgetNs > 0)) return false;
    const end = Bun.nanoseconds() + budgetNs;
    for (;;) {
      for (let i = 0; i < 16; i++) if (this.ready()) return true;
      const now = Bun.nanoseconds();
      if (now >= end) return false;
      if (this.probe(now)) return true;
    }
  }

  /** Room came back after a Full: the receiver cleared spaceWanted. */
  private roomReady(): boolean {
    // SYNC: the receiver clears spaceWanted after it freed room (releaseMessage).
    return this.wantingSpace && Atomics.load(this.words, this.txSpaceIdx) === 0;
  }

  /** roomReady(), reported once per Full. */
  private roomFreed(): boolean {
    if (!this.roomReady()) return false;
    this.wantingSpace = false;
    return true;
  }

  /**
   * What a spin or blocking wait reports: false once closed (a peer whose close flag was seen is
   * closed here), true for input, or for room after a Full (reported once), else `woken`.
   */
  private waitResult(woken: boolean): boolean {
    if (this.closed) return false;
    if (this.rx.available() !== 0 || this.roomFreed()) return true;
    if (this.peerClosed()) {
      this.onPeerGone("closed by the peer");
      return false;
    }
    return woken;
  }

  /**
   * Parks the thread in futex / Atomics.wait until input, room after a Full, the doorbell moving
   * past `seq`, the timeout, or the peer's close or death (probed between slices). Blocks the
   * calling thread for at most `timeoutMs`; returns what wait() resolves with.
   */
  waitBlocking(timeoutMs: number, seq = Atomics.load(this.words, this.rxDoorbell >> 2)): boolean {
    const end = Bun.nanoseconds() + timeoutMs * 1e6;
    let woken = false;
    for (;;) {
      // SYNC: pairs with Atomics.exchange(armed) in the peer's publish() and releaseMessage().
      Atomics.store(this.words, this.rxArmedIdx, ARMED_FUTEX);
      this.armedFor = ARMED_FUTEX;
      if (this.ready()) {
        woken = true;
        break;
      }
      const now = Bun.nanoseconds();
      if (this.probe(now)) break;
      const left = end - now;
      if (left <= 0) break;
      this.signals.waitBlocking(this.rxDoorbell, seq, Math.min(left, BLOCK_SLICE_NS));
      // The doorbell moved: input, room, or the peer's close. Either way the caller looks again.
      if (Atomics.load(this.words, this.rxDoorbell >> 2) !== seq) {
        woken = true;
        break;
      }
    }
    this.disarm();
    return this.waitResult(woken);
  }
}
