/**
 * How a segment connection waits and wakes (shared by `shm` and `inproc`): the wait modes, the
 * doorbell operations each setup provides (`Signals`), and the timing constants of the waits.
 *
 * Modes (SegmentWaitPolicy.mode) pick how a side waits and, through idleStrategyFor() (idle.ts),
 * the idle strategy that decides how long it spins before it parks:
 *   - "spin": poll() only; wait() busy-polls until input, room or its timeout (never parks).
 *     For dedicated cores. BusySpinIdle.
 *   - "blocking": wait() spins up to spinNs, then parks in futex (Atomics.wait for inproc);
 *     blocks the thread for at most the timeout. For dedicated threads and processes.
 *     FixedSpinIdle(spinNs).
 *   - "async": messages are delivered from the event loop: whenever a look finds nothing the
 *     connection spins spinNs, then arms its doorbell and sleeps until the peer rings (no busy
 *     core while idle). FixedSpinIdle(spinNs): for a peer known to answer within spinNs.
 *   - "adaptive" (default): "async", but it spins only while spinning has recently paid, up to
 *     spinNs (AdaptiveIdle): no unconditional spin after a send, none after a reply that nothing
 *     follows, none while the peer's recent turnaround exceeds the budget.
 * In both event-loop modes a peer parked on its event loop is rung at most twice per pump or tick,
 * however many messages went out (SegmentConnection.deferRing): the reply to the last request a
 * pump has queued rings at once, other replies at the pump's end; outside a pump the first send
 * of a tick rings at once, the rest at the tick's end.
 *
 * Every mode notices a closed or dead peer without the event loop: poll() and the spin and
 * park loops read the peer's closed flag, and probe the control socket (Signals.peerGone) at
 * most every PROBE_INTERVAL_NS; async modes hand the pump to the event loop after
 * EVENT_LOOP_YIELD_NS of back-to-back microtask pumps, so timers and I/O keep running.
 *
 * Threading: a Signals object belongs to its connection's thread.
 */

// The wait modes are part of the contract (connect options name them): declared there.
import type { WaitPolicy as SegmentWaitPolicy, WaitMode } from "../contract/transport.ts";
export type { SegmentWaitPolicy, WaitMode };

/** How a side sleeps and how it wakes its peer; byte offsets name futex words in the segment. */
export interface Signals {
  /** Wakes a peer parked in futex / Atomics.wait on the word at `offset`. */
  wakeBlocking(offset: number): void;
  /** Wakes a peer parked in its event loop (shm: a byte on the control socket). */
  wakeEventLoop(offset: number): void;
  /** Blocks this thread while the word at `offset` equals `expected`, at most `timeoutNs`. */
  waitBlocking(offset: number, expected: number, timeoutNs: number): void;
  /**
   * Arranges for `onDoorbell()` once the word at `offset` moves past `expected` (inproc:
   * Atomics.waitAsync). Shm's doorbell arrives on the control socket instead: a no-op there.
   */
  armEventLoop(offset: number, expected: number, onDoorbell: () => void): void;
  /**
   * Optional: drops an event-loop wait armed on the word at `offset` (the connection closed), so
   * nothing pending keeps the segment alive. Called once, at close.
   */
  disarmEventLoop?(offset: number): void;
  /**
   * Optional: whether the peer is gone (its control socket hung up: it closed, or its process or
   * Worker died), answered at once without the event loop. Called at most every
   * PROBE_INTERVAL_NS by an idle connection.
   */
  peerGone?(): boolean;
}

/** Setup's Signals, with wakeEventLoop going through a connection's per-tick coalescing (SegmentConnection.deferRing) once `hold.conn` is set. */
export function coalescing(s: Signals, hold: { conn: { deferRing(offset: number): void } | null }): Signals {
  const out: Signals = {
    wakeBlocking: (offset) => s.wakeBlocking(offset),
    wakeEventLoop: (offset) => (hold.conn === null ? s.wakeEventLoop(offset) : hold.conn.deferRing(offset)),
    waitBlocking: (offset, expected, timeoutNs) => s.waitBlocking(offset, expected, timeoutNs),
    armEventLoop: (offset, expected, onDoorbell) => s.armEventLoop(offset, expected, onDoorbell),
  };
  if (s.disarmEventLoop) out.disarmEventLoop = (offset) => s.disarmEventLoop!(offset);
  if (s.peerGone) out.peerGone = () => s.peerGone!();
  return out;
}

/** Default spin budget (the most "adaptive" spins): covers a peer's turnaround on another core (~1–2 µs) with room to spare. */
export const DEFAULT_SPIN_NS = 20_000;
/** A blocking wait parks at most this long per slice: a peer that died (no doorbell) is noticed between slices. */
export const BLOCK_SLICE_NS = 20e6;
/** Liveness probes (one poll(2), ~0.5 µs) at most once a millisecond: death is noticed in ms, idle polling pays < 0.1%. */
export const PROBE_INTERVAL_NS = 1e6;
/** Empty polls between two looks at the clock for a probe (a clock read costs more than an empty poll). */
export const PROBE_POLL_MASK = 63;
/** Back-to-back microtask pumps hand over to the event loop after this long, so timers and I/O run (issue: starved 3.5 s). */
export const EVENT_LOOP_YIELD_NS = 2e6;
/** The longest single wait a timer can express (setTimeout's signed 32-bit ms); longer waits are cut to it. */
export const MAX_WAIT_MS = 2 ** 31 - 1;
