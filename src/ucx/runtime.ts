/**
 * UcxRuntime: one UCP context and worker per thread, shared by every ucx connection and
 * listener of that thread, and the driver that makes the worker progress.
 *
 * Active Messages: AM_DATA carries a message (the RPC head as the AM header, the body as AM
 * data); AM_HELLO / AM_HELLO_ACK, and with a token AM_AUTH / AM_VERDICT, complete a connect
 * (hello.ts, handshake.ts); in the worker-address wire-up AM_BIND comes first and names the
 * listener's socket the endpoint belongs to (address-exchange.ts). Every send asks UCX for a reply endpoint
 * (UCP_AM_SEND_FLAG_REPLY), so an arriving message names the local endpoint it came through
 * and is routed to that connection.
 *
 * Progress (WaitPolicy.mode, as for shm):
 *   - "spin": nothing runs by itself; poll() progresses the worker, wait() spins.
 *   - "async" / "adaptive" (default): the worker progresses from the event loop: after a send
 *     (a microtask that spins up to the sender's spinNs for the answer), after a delivery
 *     (setImmediate), and when the worker's event fd fires. Idle, the fd is armed
 *     (ucp_worker_arm) and a helper Worker blocks in poll() on it and wakes this thread
 *     (Atomics.notify → Atomics.waitAsync): no busy core while idle. Requests in flight keep
 *     the pump going only while UCX makes progress on them; after IDLE_BUSY_NS without an
 *     event it parks too, re-checking every IN_FLIGHT_RECHECK_MS. When UCX will not arm but
 *     has nothing to do (wedged by a dead shared-memory peer), it progresses on a timer.
 *
 * Re-entrancy: UCX forbids ucp_worker_progress inside its own callbacks, and every message is
 * delivered from one. So progress(), spin() and the pump do nothing while the worker
 * progresses or any UCX call runs (UcpWorker.insideUcx), and a connection's wait() called from a callback
 * resolves on a clean stack instead of progressing (see UcxConnection.wait).
 *
 * RMA: a runtime is made with or without UCX's RMA and atomics (`acquire({ rma })`), and the
 * two kinds never share a worker: with RMA, UCX's software emulation lets every peer of the
 * worker read and write any address of this process over its tcp and shared-memory transports
 * (see UcpContext.create), so only connections and listeners that ask for RMA get it.
 *
 * Lifetime: while a listener or connection uses the runtime (users > 0) a timer holds the
 * process open, as an open socket does; the last release() lets it exit.
 *
 * Threading: a runtime belongs to the thread that acquired it.
 */

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { copyOut, ucpUnavailableReason, UcpContext, type UcpWorker } from "../ffi/ucp.ts";
import { BIND_ID_BYTES, bindKey } from "./address-exchange.ts";
import { UcxRxPool } from "./rx.ts";
import { WaitList } from "../contract/waitlist.ts";
import { EFD_ARMED, EFD_IDLE, EFD_READY, EFD_STOP } from "./efd-waiter.ts";

export const AM_DATA = 1;
export const AM_HELLO = 2;
export const AM_HELLO_ACK = 3;
export const AM_AUTH = 4;
export const AM_VERDICT = 5;
/** Worker-address mode: a client's first message on its endpoint, naming the socket it came through (address-exchange.ts). */
export const AM_BIND = 6;

/** Spin after a send for the answer: about three same-host ucx round trips. */
export const DEFAULT_UCX_SPIN_NS = 20_000;
/** Nothing happening for this long with requests in flight (or UCX refusing to arm): stop spinning (a slow, stalled or dead peer must not cost a core). */
const IDLE_BUSY_NS = 1_000_000;
/** Parked with requests in flight: progress at least this often, for transports whose completions raise no fd event. */
const IN_FLIGHT_RECHECK_MS = 10;
/** Wedged UCX (see pump): the longest gap between progress rounds; bounds the extra latency of a message that arrives then. */
const WEDGED_RECHECK_MAX_MS = 8;
/** No users left, endpoint closes pending: the longest gap between the progress rounds that take them to the peer (backing off from 1 ms; a close UCX never finishes costs one timer this often). */
const CLOSE_DRAIN_MAX_MS = 100;
/** The keep-alive timer's period: it never needs to fire, only to exist (below setTimeout's 2^31 ms limit). */
const KEEP_ALIVE_MS = 1 << 30;

/** What the runtime needs from a connection. */
export interface AmSink {
  /** An AM for this connection; pointers are valid during the call only. Returns a ucs_status. */
  onAm(id: number, header: number, headerLength: number, data: number, length: number, recvAttr: number): number;
  /** True while the connection wants event-loop progress (async / adaptive with a receiver). */
  readonly wantsProgress: boolean;
}

/**
 * The helper Worker's entry, bundled (efd-waiter.ts and what it imports, then runEfdWaiter()):
 * the package build (scripts/build.ts) defines it in dist/, since a bundle, ours or an
 * application's `bun build` of it, has no efd-waiter.ts beside it. Undefined in the sources.
 */
declare const HOTPATH_EFD_WAITER_JS: string | undefined;

let efdWaiterUrl: string | null = null;
/** Why the helper Worker cannot run in this process (its code is missing, or it failed), or null. */
let efdWaiterFailure: string | null = null;

/**
 * The Blob URL the helper Worker starts from (made once per process; its entry is a module of
 * its own, so no module of the application's runs in the helper): the bundled entry in a build;
 * from the sources, an entry that imports the efd-waiter.ts beside this file. Null, with
 * efdWaiterFailure saying why, when neither is there (these sources bundled without the build).
 */
function efdWaiterSource(): string | null {
  if (efdWaiterUrl !== null || efdWaiterFailure !== null) return efdWaiterUrl;
  let code: string;
  if (typeof HOTPATH_EFD_WAITER_JS === "string") code = HOTPATH_EFD_WAITER_JS;
  else {
    const file = new URL("./efd-waiter.ts", import.meta.url);
    if (file.protocol !== "file:" || !existsSync(fileURLToPath(file))) {
      efdWaiterFailure =
        `its helper Worker's code is missing (${file.href} does not exist: hotpath's sources were bundled ` +
        `without the package build; bundle the installed package (its dist/) instead, or build with scripts/build.ts)`;
      return null;
    }
    code = `import { runEfdWaiter } from ${JSON.stringify(file.href)};\nrunEfdWaiter();\n`;
  }
  efdWaiterUrl = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  return efdWaiterUrl;
}

export class UcxRuntime {
  readonly ctx: UcpContext;
  readonly worker: UcpWorker;
  /** Connections by their local endpoint handle (the reply endpoint of what arrives). */
  readonly sinks = new Map<number, AmSink>();
  /** AMs for endpoints not (yet) known: a server endpoint's HELLO before its handler exists. */
  onUnknownAm: ((id: number, header: number, hlen: number, data: number, len: number, attr: number, replyEp: number) => number) | null = null;
  /**
   * Worker-address mode: listeners' sockets waiting for their client's AM_BIND, by bind id
   * (hex). The handler runs inside worker progress with the AM's reply endpoint.
   */
  readonly binds = new Map<string, (replyEp: number) => void>();
  /** Ports this runtime's sockaddr listeners listen on: a connect to one of them uses the loopback runtime (setup.ts). */
  readonly sockaddrPorts = new Set<number>();
  private ownAddress: Uint8Array | null = null;
  readonly waiters = new WaitList();
  /** Received message objects of every connection of this runtime, and the in-place bound (rx.ts). */
  readonly rx: UcxRxPool;
  /** Connections and listeners using this runtime; the last release() lets the process exit. */
  private users = 0;
  private microQueued = false;
  private immediateQueued = false;
  private pumping = false;
  /** The largest spin budget a send asked for since the last pump (each connection has its own). */
  private pendingSpinNs = 0;
  /** Messages delivered so far (AM_DATA handled): a send that delivered to this very worker inside its call shows here. */
  delivered = 0;
  /** Worker events (progress() > 0) so far: tells a pump that moved requests from an idle one. */
  private events = 0;
  /** Since when the pump has seen no event (0: it saw one last time). */
  private idleSince = 0;
  /** The current gap between timed progress rounds while UCX will not arm (0: not in that state). */
  private recheckMs = 0;
  private recheckTimer: ReturnType<typeof setTimeout> | null = null;
  private drainTimer: ReturnType<typeof setTimeout> | null = null;
  private keepAlive: ReturnType<typeof setInterval> | null = null;
  private efdCtl: Int32Array | null = null;
  private efdWorker: Worker | null = null;
  private efdWaiting = false;

  private static readonly runtimes = new Map<string, UcxRuntime>();

  /**
   * The thread's runtime for the UCX configuration in the environment now (UCX_* variables,
   * read by ucp_config_read when the context is made) and `rma` (default false: a context
   * without RMA and atomics), created on first use. `loopback`: a second runtime of that
   * configuration, for a worker-address connect to a listener of this very runtime (an
   * endpoint a worker makes to its own address is one endpoint for both directions, so the
   * two ends of such a connection need two workers). The caller is a user until it calls release().
   */
  static acquire(opts: { rma?: boolean; loopback?: boolean } = {}): UcxRuntime {
    const rma = opts.rma === true;
    const key =
      (rma ? "rma " : "") +
      (opts.loopback === true ? "loopback " : "") +
      Object.keys(process.env)
        .filter((k) => k.startsWith("UCX_"))
        .sort()
        .map((k) => `${k}=${process.env[k]}`)
        .join(" ");
    let rt = UcxRuntime.runtimes.get(key);
    if (rt === undefined) {
      rt = new UcxRuntime(rma);
      UcxRuntime.runtimes.set(key, rt);
    }
    rt.retain();
    return rt;
  }

  /** Why ucx cannot run in this process (no libucp, or no helper Worker for idle waits), or null. */
  static unavailableReason(): string | null {
    const ucp = ucpUnavailableReason();
    if (ucp !== null) return ucp;
    efdWaiterSource();
    return efdWaiterFailure;
  }

  private constructor(readonly rma: boolean) {
    this.ctx = UcpContext.create({ rma });
    this.worker = this.ctx.createWorker();
    this.rx = new UcxRxPool((desc) => this.worker.releaseAmData(desc));
    for (const id of [AM_DATA, AM_HELLO, AM_HELLO_ACK, AM_AUTH, AM_VERDICT, AM_BIND]) {
      this.worker.setAmHandler(id, (header, hlen, data, len, attr, replyEp) => {
        const sink = this.sinks.get(replyEp);
        if (sink !== undefined) {
          if (id === AM_DATA) this.delivered++;
          return sink.onAm(id, header, hlen, data, len, attr);
        }
        if (id === AM_BIND && hlen === BIND_ID_BYTES && replyEp !== 0) {
          const key = bindKey(copyOut(header, hlen));
          const bind = this.binds.get(key);
          if (bind !== undefined) {
            this.binds.delete(key);
            bind(replyEp);
          }
          return 0; // an unknown bind id: dropped
        }
        return this.onUnknownAm ? this.onUnknownAm(id, header, hlen, data, len, attr, replyEp) : 0;
      });
    }
  }

  /** This worker's address (UcpWorker.address), fetched once: what a listener in address mode hands its clients. */
  workerAddress(): Uint8Array {
    if (this.ownAddress === null) this.ownAddress = this.worker.address();
    return this.ownAddress;
  }

  /** One more user (a connection or listener); the first holds the process open. */
  retain(): void {
    if (this.users++ === 0 && this.keepAlive === null) this.keepAlive = setInterval(() => {}, KEEP_ALIVE_MS);
  }

  /**
   * Drops one user; the last one stops the helper thread and the keep-alive so the process can
   * exit. The worker and context stay for the thread's lifetime and are reused by the next
   * acquire(): ucp_worker_destroy in UCX 1.13 aborts the process when an endpoint whose
   * wire-up failed still has a queued send ("pending request ... should have been flushed"),
   * which a refused or timed-out connect leaves behind.
   */
  release(): void {
    if (--this.users > 0) return;
    this.users = 0;
    if (this.keepAlive !== null) clearInterval(this.keepAlive);
    this.keepAlive = null;
    if (this.recheckTimer !== null) clearTimeout(this.recheckTimer);
    this.recheckTimer = null;
    if (this.efdCtl) {
      Atomics.store(this.efdCtl, 0, EFD_STOP);
      Atomics.notify(this.efdCtl, 0);
      this.efdCtl = null;
      this.efdWorker = null;
      this.efdWaiting = false;
    }
    this.waiters.wake(false);
    this.drainCloses(1);
  }

  /**
   * With no users left, endpoint closes still under way need the worker to progress, or the
   * peer never hears of them (a client that closed its last connection and lives on would
   * leave the server's side, and whatever it registered for that peer, open for ever). They
   * progress on an unref'd timer (it never holds the process), backing off, until UCX has
   * finished them or a user is back (whose pump takes over).
   */
  private drainCloses(ms: number): void {
    if (this.drainTimer !== null || this.users > 0 || this.worker.closing.size === 0) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      if (this.users > 0) return;
      this.progress();
      this.drainCloses(Math.min(ms * 2, CLOSE_DRAIN_MAX_MS));
    }, ms);
    this.drainTimer.unref();
  }

  /** True inside a UCX callback (where nothing may progress the worker). */
  get insideUcx(): boolean {
    return this.worker.insideUcx;
  }

  /** Debug counters: the worker's (requests in flight, retained buffers, closes pending, endpoints), the context's live memory registrations, the runtime's users and connections, and its received messages held in UCX memory now and in place so far (rx.ts). */
  stats(): ReturnType<UcpWorker["stats"]> & { registrations: number; users: number; sinks: number; heldInPlace: number; inPlaceTotal: number } {
    return { ...this.worker.stats(), registrations: this.ctx.registrations.live, users: this.users, sinks: this.sinks.size, heldInPlace: this.rx.heldInPlace, inPlaceTotal: this.rx.inPlaceTotal };
  }

  /**
   * Progresses until the worker reports no more events (bounded); returns messages delivered
   * plus one-sided operations completed.
   * Inside a UCX callback it does nothing (returns 0).
   */
  progress(): number {
    const before = this.delivered + this.rmaCompleted;
    for (let i = 0; i < 64; i++) {
      const e = this.worker.progress();
      if (e === 0) break;
      this.events += e;
    }
    return this.delivered + this.rmaCompleted - before;
  }

  /** One-sided operations completed so far (rma.ts counts them): a spin waiting for an answer stops on one as on a delivery. */
  rmaCompleted = 0;

  private anyWantsProgress(): boolean {
    for (const s of this.sinks.values()) if (s.wantsProgress) return true;
    return false;
  }

  /** After a send: progress soon, spinning up to `spinNs` (the sender's budget) for the answer. */
  sent(spinNs: number): void {
    if (spinNs > this.pendingSpinNs) this.pendingSpinNs = spinNs;
    this.schedule();
  }

  schedule(): void {
    if (this.microQueued) return;
    this.microQueued = true;
    queueMicrotask(this.microPump);
  }

  // Bound once: a closure made in schedule() / followUp() cost a scope object on every call
  // (JSC makes the function's environment at entry), i.e. one per send and one-sided read.
  private readonly microPump = (): void => {
    this.microQueued = false;
    this.pump();
  };

  private followUp(): void {
    if (this.immediateQueued) return;
    this.immediateQueued = true;
    setImmediate(this.immediatePump);
  }

  private readonly immediatePump = (): void => {
    this.immediateQueued = false;
    this.pump();
  };

  /**
   * Spins the worker until a message is delivered, `stop()` says so, or `budgetNs` passes.
   * Returns messages delivered; 0 at once inside a UCX callback.
   */
  spin(budgetNs: number, stop?: () => boolean): number {
    if (this.worker.insideUcx) return 0;
    let n = this.progress();
    if (n > 0 || budgetNs <= 0) return n;
    const end = Bun.nanoseconds() + budgetNs;
    while (Bun.nanoseconds() < end) {
      n = this.progress();
      if (n > 0 || (stop !== undefined && stop())) return n;
    }
    return 0;
  }

  private pump(): void {
    if (this.pumping || !this.anyWantsProgress()) return;
    if (this.worker.insideUcx) return this.followUp(); // never from inside UCX
    this.pumping = true;
    const spinNs = this.pendingSpinNs;
    this.pendingSpinNs = 0;
    const eventsBefore = this.events;
    let n = 0;
    try {
      n = this.spin(spinNs);
    } finally {
      this.pumping = false;
    }
    if (n > 0) this.waiters.wake(true);
    if (n > 0 || this.events !== eventsBefore) {
      this.idleSince = 0;
      this.recheckMs = 0;
      this.followUp();
      return;
    }
    // Nothing happened. Requests in flight may still complete without an fd event; keep
    // progressing for a while, then park.
    const now = Bun.nanoseconds();
    if (this.idleSince === 0) this.idleSince = now;
    const idleLong = now - this.idleSince >= IDLE_BUSY_NS;
    if (this.worker.inFlight > 0 && !idleLong) return this.followUp();
    if (this.worker.arm()) {
      this.recheckMs = 0;
      if (this.worker.inFlight > 0) this.recheck(IN_FLIGHT_RECHECK_MS);
      this.park();
      return;
    }
    // UCX says events are pending (ucp_worker_arm: BUSY), yet progress finds none. Briefly
    // that is ordinary; when it lasts, UCX is wedged (a shared-memory lane to a dead peer whose
    // FIFO is full never drains, and its interface then never arms): progress on a timer,
    // backing off, instead of burning a core.
    if (!idleLong) return this.followUp();
    this.recheckMs = Math.min(Math.max(1, this.recheckMs * 2), WEDGED_RECHECK_MAX_MS);
    this.recheck(this.recheckMs);
  }

  private recheck(ms: number): void {
    if (this.recheckTimer !== null) return;
    this.recheckTimer = setTimeout(() => {
      this.recheckTimer = null;
      this.pump();
    }, ms);
  }

  /**
   * Sleeps until the (armed) event fd fires: helper Worker + Atomics.waitAsync. Without a
   * helper (it failed: see onHelperError) it progresses on the wedged-UCX timer instead.
   */
  private park(): void {
    if (this.efdWaiting) return; // the helper is already polling the fd
    if (efdWaiterFailure !== null) return this.recheck(WEDGED_RECHECK_MAX_MS);
    if (this.efdCtl === null) {
      const url = efdWaiterSource();
      if (url === null) return this.recheck(WEDGED_RECHECK_MAX_MS); // unreachable: acquire() checked it
      this.efdCtl = new Int32Array(new SharedArrayBuffer(8));
      this.efdCtl[1] = this.worker.eventFd();
      const helper = new Worker(url);
      helper.addEventListener("error", (e) => this.onHelperError(helper, e));
      helper.unref();
      helper.postMessage({ ctl: this.efdCtl.buffer });
      this.efdWorker = helper;
    }
    const ctl = this.efdCtl;
    this.efdWaiting = true;
    Atomics.store(ctl, 0, EFD_ARMED);
    Atomics.notify(ctl, 0);
    const r = Atomics.waitAsync(ctl, 0, EFD_ARMED);
    const woke = () => {
      if (this.efdCtl === ctl) this.efdWaiting = false; // not a new helper's park (release() came between)
      // SYNC: only the helper's READY goes back to IDLE. A STOP from release() (or
      // onHelperError) also resolves this wait, and must stay for the helper to see: storing
      // IDLE over it left the helper asleep for ever, one thread and its epoll fd and eventfd
      // per connect / close round.
      Atomics.compareExchange(ctl, 0, EFD_READY, EFD_IDLE);
      this.pump();
    };
    if (r.async) r.value.then(woke);
    else woke();
  }

  /**
   * The helper Worker failed to load or threw. Said once on stderr; from then on ucx in this
   * process is unavailable (connect / listen fail with UcxUnavailableError and the reason), and
   * the connections already open progress on a timer (at most WEDGED_RECHECK_MAX_MS late)
   * instead of waiting for an event no one watches.
   */
  private onHelperError(helper: Worker, e: ErrorEvent): void {
    e.preventDefault();
    if (this.efdWorker !== helper) return; // an old helper, already stopped
    const first = efdWaiterFailure === null;
    // Bun's message is a code frame; its "error: ..." line says what happened.
    const lines = String(e.message).split("\n").map((l) => l.trim()).filter((l) => l !== "");
    const why = lines.find((l) => /^[a-z]*error: /i.test(l)) ?? lines[0] ?? "no message";
    efdWaiterFailure = `its helper Worker (which wakes this thread for UCX events) failed: ${why}`;
    if (first) console.error(`hotpath ucx: ${efdWaiterFailure}; open ucx connections progress on a ${WEDGED_RECHECK_MAX_MS} ms timer, new ones are refused`);
    helper.terminate();
    const ctl = this.efdCtl;
    this.efdCtl = null;
    this.efdWorker = null;
    this.efdWaiting = false; // the wake-up of a pending park() is for the old ctl and leaves this alone
    if (ctl !== null) {
      Atomics.store(ctl, 0, EFD_STOP); // resolves a park()'s waitAsync, which pumps again
      Atomics.notify(ctl, 0);
    }
    this.pump();
  }
}
