/**
 * workerPool: handlers that run in N Bun Workers, called from this thread with the typed-service
 * API, over the inproc transport (one SharedArrayBuffer segment per Worker: no structured clone,
 * no postMessage per call).
 *
 *   const pool = await workerPool(new URL("./hash-handlers.ts", import.meta.url), { size: 2, service: Hash });
 *   const out = await pool.svc.sum(bytes, { timeoutMs: 1000, signal });
 *   await pool.request(methodId, bytes);     // raw, as Client.request
 *   pool.stats();                             // { workers, inFlight, queued, restarts }
 *   await pool.close();                       // also `await using pool = ...`
 *
 * Contract:
 * - The handlers module (a file URL, or an absolute path) default-exports Handlers (what
 *   implement() returns) or a function returning Handlers (or a Promise of them), called once per
 *   Worker. workerPool() resolves once every Worker loaded it and serves; a module that does not
 *   load, throws, exports no Handlers or does not serve within `startTimeoutMs` (default 30 s)
 *   rejects it with a WorkerStartError naming the module and the cause, and leaves no Worker running.
 * - Each call goes to the least busy serving Worker (fewest calls in flight; ties rotate), at most
 *   `window` in flight per Worker. Beyond that calls queue, `maxQueued` across the pool; the next
 *   one rejects at once with PendingLimitError (backpressure). A queued call's deadline and
 *   AbortSignal count from request(), and it leaves the queue when either fires (a deadline past
 *   setTimeout's 2^31-1 ms re-arms its timer, as the client's do).
 * - Bytes: request() copies the request into the Worker's segment once (small ones inline in the
 *   ring descriptor, large ones in a slab slot); a handler's `h.data` is a view of that segment
 *   (its buffer is the segment's SharedArrayBuffer: no clone, no copy; an `async function`
 *   handler gets it copied out first, as with serve()); the reply travels the same way back and
 *   is copied out once for the caller, who owns it.
 * - A Worker that dies (a throw at its top level, process.exit in it, terminate) fails exactly its
 *   in-flight calls with WorkerCrashedError (the Worker's index and the cause: the error's text or
 *   the exit code), `onWorkerExit(index, error)` runs, and a fresh Worker takes its index
 *   (stats().restarts counts them); queued calls go to the others or to the replacement. A
 *   replacement that fails to start is retried with backoff.
 * - close() rejects queued and in-flight calls with TransportClosedError, asks each Worker to close
 *   its server, then ends it (terminate) and resolves once every Worker thread has exited, those
 *   still starting (a replacement loading its module) included.
 *
 * Wait modes: both sides park on their event loop at once ("async", spinNs 0), by measurement
 * (`bun bench/worker-pool.bench.ts --waits`, figures at DEFAULT_WAIT): on the shared 2-core
 * machine a bounded caller spin (5-20 µs) and spinning blocking Workers (20-50 µs) cost RTT in
 * every round (size 1 p50 1.1-1.4× postMessage's against 1.6-2.7×). The calling side is usually
 * a Bun.serve loop: by default it never spins. `wait` overrides either side.
 *
 * Threading: a WorkerPool belongs to the thread that created it (its clients, timers and Worker
 * objects live on that thread's event loop).
 */

import { CancelledError, TimeoutError, TransportClosedError, UsageError, WorkerCrashedError, WorkerStartError, describeThrown } from "../errors.ts";
import { connect } from "../connect/registry.ts";
import { sendLimit, type WaitPolicy } from "../contract/transport.ts";
import type { SegmentConfig } from "../segment/config.ts";
import { Client, DEFAULT_REQUEST_TIMEOUT_MS, MAX_WINDOW, type RequestOptions } from "../rpc/client.ts";
import { checkArgs } from "../rpc/pending.ts";
import { checkTimeout, describeValue } from "../rpc/validate.ts";
import { bindService, type ServiceClient, type ServiceDef } from "../rpc/service.ts";
import { PendingLimitError } from "../pool/channel.ts";
import { copyBytes, EMPTY_BYTES } from "../bytes.ts";
import type { WorkerInit, WorkerSays } from "./worker-entry.ts";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { checkInt, deadlineTimer, MAX_TIMER_MS, errorLine, removeSocket, resolveModule, type DeadlineTimer } from "./pool-helpers.ts";

/** Calls in flight per Worker by default: 64 keeps a Worker busy between doorbells, well inside the segment's 256 ring slots. */
export const DEFAULT_POOL_WINDOW = 64;
/** Calls queued across the pool by default before PendingLimitError: a burst of a busy HTTP front, bounded. */
export const DEFAULT_MAX_QUEUED = 1024;
/** How long a Worker may take to load its module and serve by default before its start fails (a module stuck in a top-level await). */
export const DEFAULT_START_TIMEOUT_MS = 30_000;
/** After its connection closed or its error event, how long a dying Worker gets to report its exit (its cause) before it is terminated. */
const CAUSE_WAIT_MS = 200;
/** How long close() lets a Worker close its server before it is terminated anyway. */
const CLOSE_WAIT_MS = 1_000;
/** Replacement start retries back off from 100 ms to 10 s (a module that now fails to load). */
const RESTART_BACKOFF_MS = [100, 1_000, 10_000];

/**
 * The default wait policies: both sides park on their event loop at once (async, no spin), woken
 * by the other's Atomics.notify. Chosen by `bun bench/worker-pool.bench.ts --waits 4` (fresh
 * Workers per round, rounds alternating forward and reverse, ratios to the same round's
 * postMessage, medians of 4 rounds), two runs on the project's 2-core machine while other
 * processes ran (load 1-4); 1 KiB, size 1, p50 RTT ×postMessage / calls/s at 64 ×postMessage:
 *   caller / Workers (spinNs)       run 1          run 2
 *   async 0 / async 0 (default)     1.09 / 1.90    1.41 / 1.49
 *   async 0 / blocking 50 µs        1.29 / 1.58    1.73 / 1.26
 *   async 5 µs / blocking 20 µs     1.57 / 1.64    1.74 / 1.96
 *   async 5 µs / blocking 50 µs     1.80 / 1.68    2.65 / 1.62
 *   async 20 µs / blocking 50 µs    2.36 / 1.59    2.74 / 1.61
 * (size 2: the default 1.29 / 1.79 and 1.60 / 2.12, every spinning pair 1.9-5.0× in RTT; a third
 * run, size 1: the default 1.29 / 2.49, async Workers spinning 10 or 50 µs 1.47 / 2.1-2.2.) The
 * default had the lowest RTT in both runs: a spin pays only with a free core for it (a quiet
 * machine once gave async 20 µs / blocking 50 µs 7-10 µs against postMessage's 32-39 µs); on two
 * shared cores it takes the time the peer needs to answer. A spinning blocking Worker also holds
 * its thread (back to its event loop after 50 ms idle, worker-entry.ts). Where cores are free,
 * `wait: { caller: { mode: "async", spinNs: 20_000 }, worker: { mode: "blocking", spinNs: 50_000 } }` is the pair to try.
 */
export const DEFAULT_WAIT: { caller: Partial<WaitPolicy>; worker: Partial<WaitPolicy> } = {
  caller: { mode: "async", spinNs: 0 },
  worker: { mode: "async", spinNs: 0 },
};

declare const HOTPATH_WORKER_ENTRY: string | undefined; // defined by the package build (scripts/build.ts)

/** The Worker script: worker-entry.ts beside this file, or the built dist/serve/worker-entry.js. */
function entryUrl(): URL {
  const rel = typeof HOTPATH_WORKER_ENTRY === "string" ? HOTPATH_WORKER_ENTRY : "./worker-entry.ts";
  return new URL(rel, import.meta.url);
}

export interface WorkerPoolOptions<S extends ServiceDef = {}> {
  /** Workers (integer ≥ 1). */
  size: number;
  /** The typed methods of `svc`. */
  service?: S;
  /** Calls in flight per Worker (default 64). */
  window?: number;
  /** Calls waiting for a free window slot across the pool (default 1024); beyond it request() rejects with PendingLimitError. */
  maxQueued?: number;
  /** Default request deadline, ms (default 30000; 0 or Infinity: none). */
  timeoutMs?: number;
  /** Each Worker's inproc segment (ring slots, slab size classes). */
  segment?: Partial<SegmentConfig>;
  /** Runs on this thread when a Worker dies, before its replacement starts. A throw is printed (console.error). */
  onWorkerExit?: (index: number, error: WorkerCrashedError) => void;
  /** How long a Worker may take to load the module and serve, ms (integer ≥ 1, default 30000); past it the start fails with WorkerStartError (a replacement's is retried). */
  startTimeoutMs?: number;
  /** Wait policies of the calling side's connections and of the Workers' (default DEFAULT_WAIT). */
  wait?: { caller?: Partial<WaitPolicy>; worker?: Partial<WaitPolicy> };
}

export interface WorkerPoolStats {
  /** Workers serving now. */
  workers: number;
  inFlight: number;
  queued: number;
  /** Workers replaced after they died. */
  restarts: number;
}

/** A call waiting for a free window slot. */
interface Queued {
  method: number;
  data: Uint8Array;
  appHeader: Uint8Array | undefined;
  signal: AbortSignal | undefined;
  deadline: number; // performance.now() ms; Infinity: none
  resolve: (v: Uint8Array) => void;
  reject: (e: Error) => void;
  timer: DeadlineTimer | undefined;
  onAbort: (() => void) | undefined;
  done: boolean;
}

/** One Worker of the pool and the client connected to it. */
class PoolWorker {
  inFlight = 0;
  state: "serving" | "dying" | "gone" = "serving";
  crash: WorkerCrashedError | null = null;
  /** Rejections of calls that failed with the connection, waiting for the cause. */
  readonly held: ((e: Error) => void)[] = [];
  errorText: string | null = null;
  exitCode: number | null = null;
  exited: Promise<void>;
  /** The settle handlers of every call sent to this Worker, made once per Worker (not two closures per call): set by the pool. */
  ok!: (v: Uint8Array) => Uint8Array;
  fail!: (e: unknown) => Uint8Array | Promise<Uint8Array>;
  constructor(
    readonly index: number,
    readonly name: string,
    readonly worker: Worker,
    readonly client: Client<unknown>,
    readonly threadId: number,
    exited: Promise<void>,
  ) {
    this.exited = exited;
  }
}

let poolSeq = 0;
const POOL_TAG = Math.floor(Math.random() * 0xffff).toString(36);

/**
 * The pool. Every method belongs to the thread that created it. request() and svc never throw
 * synchronously: every failure is a rejected promise.
 */
export class WorkerPool<S extends ServiceDef = {}> implements AsyncDisposable {
  readonly size: number;
  readonly svc: ServiceClient<S>;
  private readonly workers: (PoolWorker | null)[];
  private readonly queue: Queued[] = [];
  private queueHead = 0;
  private queuedLive = 0; // entries of `queue` not yet settled
  private rotate = 0;
  private restarts = 0;
  private closing = false;
  private closedDone: Promise<void> | null = null;
  private readonly timeoutMs: number;
  private readonly window: number;
  private readonly maxQueued: number;
  private readonly restartTimers = new Set<ReturnType<typeof setTimeout>>();
  /** Workers not serving yet, with their `exited`. */
  private readonly starting = new Map<Worker, Promise<void>>();
  /** startWorker() calls not settled yet: close() awaits them (a start that ends after close() began ends its Worker). */
  private readonly starts = new Set<Promise<void>>();
  private readonly sendOpts: { timeoutMs: number; signal: AbortSignal | undefined; appHeader: Uint8Array | undefined } = { timeoutMs: 0, signal: undefined, appHeader: undefined };

  /** @internal workerPool() builds it. */
  constructor(
    private readonly moduleUrl: string,
    private readonly opts: WorkerPoolOptions<S>,
    private readonly seq: number,
  ) {
    this.size = opts.size;
    this.window = opts.window ?? DEFAULT_POOL_WINDOW;
    this.maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.timeoutMs = checkTimeout(opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, "workerPool options");
    this.workers = new Array(opts.size).fill(null);
    // svc's methods only call request() (bindService needs nothing else of a Client).
    this.svc = opts.service ? bindService({ request: (m: number, d: Uint8Array, o?: RequestOptions) => this.request(m, d, o) } as unknown as Client<unknown>, opts.service) : ({} as ServiceClient<S>);
  }

  /**
   * Raw call, as Client.request: resolves with the reply bytes (the caller owns them), or rejects
   * with TimeoutError, CancelledError, RemoteError (the handler threw), PendingLimitError (the
   * queue is full), WorkerCrashedError (its Worker died with it in flight), TransportClosedError
   * (the pool closed) or UsageError (bad arguments, data over the segment's limit). `data` may be
   * reused once request() returned.
   */
  request(method: number, data: Uint8Array = EMPTY_BYTES, opts?: RequestOptions): Promise<Uint8Array> {
    let timeoutMs: number;
    try {
      checkArgs(method, data, opts?.appHeader, "workerPool.request");
      if (opts?.signal !== undefined && !(opts.signal instanceof AbortSignal)) throw new UsageError(`workerPool.request: signal must be an AbortSignal, got ${describeValue(opts.signal)}`);
      timeoutMs = opts?.timeoutMs === undefined ? this.timeoutMs : checkTimeout(opts.timeoutMs, "workerPool.request");
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.closing) return Promise.reject(new TransportClosedError(`workerPool ${this.moduleUrl}: the pool is closed`));
    if (opts?.signal?.aborted) return Promise.reject(new CancelledError(`workerPool request for method ${method} aborted before it was sent`, { cause: opts.signal.reason }));
    const w = this.pick();
    if (w !== null && this.queuedLive === 0) {
      const conn = w.client.conn;
      if (data.length > sendLimit(conn.caps)) {
        return Promise.reject(new UsageError(`workerPool.request: ${data.length} bytes of data exceed the limit of ${sendLimit(conn.caps)} bytes of a Worker's segment`));
      }
      return this.dispatch(w, method, data, opts?.appHeader, opts?.signal, timeoutMs);
    }
    if (this.queuedLive >= this.maxQueued) {
      return Promise.reject(new PendingLimitError(`workerPool ${this.moduleUrl}: ${this.maxQueued} calls already wait for a Worker (maxQueued), ${this.size * this.window} in flight`));
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      const q: Queued = {
        method,
        data: copyBytes(data),
        appHeader: opts?.appHeader ? copyBytes(opts.appHeader) : undefined,
        signal: opts?.signal,
        deadline: timeoutMs > 0 && Number.isFinite(timeoutMs) ? performance.now() + timeoutMs : Infinity,
        resolve,
        reject,
        timer: undefined,
        onAbort: undefined,
        done: false,
      };
      if (q.deadline !== Infinity) {
        q.timer = deadlineTimer(q.deadline, () => this.unqueue(q, new TimeoutError(`workerPool request for method ${method} timed out after ${timeoutMs} ms waiting for a Worker`)));
      }
      if (q.signal) {
        q.onAbort = () => this.unqueue(q, new CancelledError(`workerPool request for method ${method} aborted while queued`, { cause: q.signal!.reason }));
        q.signal.addEventListener("abort", q.onAbort, { once: true });
      }
      this.queue.push(q);
      this.queuedLive++;
      if (w !== null) this.pump();
    });
  }

  /** Workers serving, calls in flight and queued, Workers replaced. */
  stats(): WorkerPoolStats {
    let workers = 0;
    let inFlight = 0;
    for (const w of this.workers) {
      if (w === null) continue;
      if (w.state === "serving") workers++;
      inFlight += w.inFlight;
    }
    return { workers, inFlight, queued: this.queuedLive, restarts: this.restarts };
  }

  /** The threadId of each Worker now (null: being replaced). For logs and tests. */
  threadIds(): (number | null)[] {
    return this.workers.map((w) => (w !== null && w.state === "serving" ? w.threadId : null));
  }

  /**
   * Rejects queued and in-flight calls with TransportClosedError, closes every Worker's server and
   * ends the Workers; resolves once every Worker thread exited. Safe to call twice.
   */
  close(): Promise<void> {
    if (this.closedDone !== null) return this.closedDone;
    this.closing = true;
    for (const t of this.restartTimers) clearTimeout(t);
    this.restartTimers.clear();
    const ends: Promise<void>[] = [];
    for (const [w, exited] of this.starting) {
      w.terminate();
      ends.push(exited);
    }
    for (const p of this.starts) ends.push(p.catch(() => undefined));
    const err = new TransportClosedError(`workerPool ${this.moduleUrl}: the pool closed`);
    for (let i = this.queueHead; i < this.queue.length; i++) this.settleQueued(this.queue[i]!, null, err);
    this.queue.length = 0;
    this.queueHead = 0;
    for (const w of this.workers) {
      if (w === null) continue;
      w.client.close();
      for (const r of w.held.splice(0)) r(err);
      ends.push(w.state === "gone" ? w.exited : this.endWorker(w));
    }
    this.closedDone = Promise.all(ends).then(() => undefined);
    return this.closedDone;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal Starts Worker `index` and installs it (workerPool() and replacements); close() awaits it. */
  startWorker(index: number): Promise<void> {
    const p = this.start(index);
    this.starts.add(p);
    const done = () => void this.starts.delete(p);
    p.then(done, done);
    return p;
  }

  private async start(index: number): Promise<void> {
    const name = `wp-${POOL_TAG}-${this.seq}-${index}-${this.restarts}`;
    const worker = new Worker(entryUrl().href);
    let exitCode: number | null = null;
    let errorText: string | null = null;
    const exited = new Promise<void>((resolve) =>
      worker.addEventListener("close", (e) => {
        exitCode = (e as CloseEvent & { code?: number }).code ?? null;
        resolve();
      }),
    );
    this.starting.set(worker, exited);
    worker.addEventListener("error", (e) => {
      errorText ??= errorLine(String((e as ErrorEvent).message ?? e));
      e.preventDefault?.();
    });
    let client: Client<unknown>;
    let threadId: number;
    try {
      const ms = this.opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
      const startedAt = performance.now();
      const said = await new Promise<WorkerSays>((resolve, reject) => {
        const dog = setTimeout(() => reject(new Error(`it did not serve within ${ms} ms`)), ms);
        worker.onmessage = (e: MessageEvent) => {
          clearTimeout(dog);
          resolve(e.data as WorkerSays);
        };
        exited.then(() => {
          clearTimeout(dog);
          reject(new Error(errorText ?? `its Worker exited (code ${exitCode}) before it served`));
        });
        const init: WorkerInit = { type: "init", moduleUrl: this.moduleUrl, name, wait: { ...DEFAULT_WAIT.worker, ...this.opts.wait?.worker } };
        worker.postMessage(init);
      });
      if (said.type !== "ready") throw new Error(said.type === "failed" ? said.message : `unexpected first message ${said.type}`);
      threadId = said.threadId;
      const connectTimeoutMs = Math.max(1, Math.ceil(ms - (performance.now() - startedAt))); // what is left of startTimeoutMs
      const conn = await connect(`inproc://${name}`, { segment: this.opts.segment, wait: { ...DEFAULT_WAIT.caller, ...this.opts.wait?.caller }, connectTimeoutMs });
      client = new Client<unknown>(conn, { window: this.window, timeoutMs: 0 });
    } catch (e) {
      this.starting.delete(worker);
      worker.terminate();
      await exited;
      removeSocket(name);
      throw new WorkerStartError(`workerPool: Worker ${index} could not serve ${this.moduleUrl}: ${describeThrown(e)}`);
    }
    this.starting.delete(worker);
    const w = new PoolWorker(index, name, worker, client, threadId, exited);
    w.ok = (v) => (this.callDone(w), v);
    w.fail = (e) => this.callFailed(w, e);
    worker.onmessage = null;
    worker.addEventListener("error", () => {
      w.errorText ??= errorText;
      this.dying(w);
    });
    exited.then(() => {
      w.exitCode = exitCode;
      w.errorText ??= errorText;
      this.finishCrash(w);
    });
    if (this.closing) {
      client.close();
      this.workers[index] = w;
      await this.endWorker(w);
      return;
    }
    this.workers[index] = w;
    this.pump();
  }

  // ---- engine ----

  /** @internal See terminateWorkerForTests(). */
  terminateForTests(index: number): void {
    const w = this.workers[index];
    if (w === null || w === undefined || w.state !== "serving") return;
    w.errorText = "it was terminated";
    w.worker.terminate();
  }

  /** The least busy serving Worker with a free window slot, or null. */
  private pick(): PoolWorker | null {
    let best: PoolWorker | null = null;
    const n = this.workers.length;
    const start = this.rotate;
    for (let k = 0; k < n; k++) {
      const w = this.workers[(start + k) % n]!;
      if (w === null || w.state !== "serving" || w.inFlight >= this.window || w.client.closed) continue;
      if (best === null || w.inFlight < best.inFlight) best = w;
    }
    if (best !== null) this.rotate = (best.index + 1) % n;
    return best;
  }

  private dispatch(w: PoolWorker, method: number, data: Uint8Array, appHeader: Uint8Array | undefined, signal: AbortSignal | undefined, timeoutMs: number): Promise<Uint8Array> {
    w.inFlight++;
    const o = this.sendOpts; // one options object for every call: Client.request reads it before it returns, keeps none of it
    (o.timeoutMs = timeoutMs), (o.signal = signal), (o.appHeader = appHeader);
    const sent = w.client.request(method, data, o);
    o.signal = o.appHeader = undefined;
    return sent.then(w.ok, w.fail);
  }

  /** A call sent to `w` failed: as it is, or, when the connection to the Worker failed, with the Worker's crash. */
  private callFailed(w: PoolWorker, e: unknown): Promise<Uint8Array> {
    if (!(e instanceof TransportClosedError) || this.closing) {
      this.callDone(w);
      throw e;
    }
    this.dying(w); // the connection to this Worker failed: it is dying (no new calls, marked before the queue moves on); the cause comes with its exit
    this.callDone(w);
    if (w.crash !== null) throw w.crash;
    return new Promise<Uint8Array>((_, reject) => w.held.push(reject));
  }

  private callDone(w: PoolWorker): void {
    w.inFlight--;
    if (this.queueHead < this.queue.length) this.pump();
  }

  /** Sends queued calls while a Worker has room. */
  private pump(): void {
    while (this.queueHead < this.queue.length) {
      const q = this.queue[this.queueHead]!;
      if (q.done) {
        this.queueHead++;
        continue;
      }
      const w = this.pick();
      if (w === null) break;
      this.queueHead++;
      const left = q.deadline === Infinity ? 0 : q.deadline - performance.now();
      if (q.deadline !== Infinity && left <= 0) {
        this.settleQueued(q, null, new TimeoutError(`workerPool request for method ${q.method} timed out waiting for a Worker`));
        continue;
      }
      this.settleQueued(q, this.dispatch(w, q.method, q.data, q.appHeader, q.signal, q.deadline === Infinity ? 0 : Math.max(1, left)), null);
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
  }

  private unqueue(q: Queued, err: Error): void {
    if (q.done) return;
    this.settleQueued(q, null, err);
  }

  private settleQueued(q: Queued, sent: Promise<Uint8Array> | null, err: Error | null): void {
    if (q.done) return;
    q.done = true;
    this.queuedLive--;
    if (q.timer !== undefined) clearTimeout(q.timer.id);
    if (q.onAbort !== undefined) q.signal!.removeEventListener("abort", q.onAbort);
    if (sent !== null) sent.then(q.resolve, q.reject);
    else q.reject(err!);
  }

  /** First sign that `w` is dying (error event, exit, its connection closed): no new calls; the cause is awaited a moment. */
  private dying(w: PoolWorker): void {
    if (w.state !== "serving" || this.closing) return;
    w.state = "dying";
    setTimeout(() => this.finishCrash(w), CAUSE_WAIT_MS);
  }

  /** Fails the held calls of `w` with WorkerCrashedError, ends it and starts its replacement. */
  private finishCrash(w: PoolWorker): void {
    if (w.state === "gone" || this.closing) return;
    w.state = "gone";
    const cause = w.errorText ?? (w.exitCode !== null ? `it exited with code ${w.exitCode}` : `its connection closed: ${describeThrown(w.client.conn.closeError ?? "no reason given")}`);
    const err = new WorkerCrashedError(w.index, cause);
    w.crash = err;
    for (const r of w.held.splice(0)) r(err);
    w.client.close(); // calls still in flight on it reject with `err` (dispatch)
    w.worker.terminate();
    void w.exited.then(() => removeSocket(w.name));
    this.restarts++;
    try {
      this.opts.onWorkerExit?.(w.index, err);
    } catch (e) {
      console.error("hotpath workerPool: onWorkerExit threw", e);
    }
    this.replace(w.index, 0);
  }

  private replace(index: number, attempt: number): void {
    if (this.closing) return;
    this.startWorker(index).catch((e: unknown) => {
      if (this.closing) return;
      const ms = RESTART_BACKOFF_MS[Math.min(attempt, RESTART_BACKOFF_MS.length - 1)]!;
      console.error(`hotpath ${describeThrown(e)}; retrying in ${ms} ms`);
      const t = setTimeout(() => {
        this.restartTimers.delete(t);
        this.replace(index, attempt + 1);
      }, ms);
      this.restartTimers.add(t);
    });
  }

  /** Asks `w` to close its server, then terminates it; resolves once its thread exited. */
  private async endWorker(w: PoolWorker): Promise<void> {
    w.state = "gone";
    const closed = new Promise<void>((resolve) => {
      w.worker.onmessage = (e: MessageEvent) => {
        if ((e.data as WorkerSays)?.type === "closed") resolve();
      };
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      w.worker.postMessage({ type: "close" });
      // A timer cleared once the race is over: a pending sleep kept the process alive 1 s after close().
      await Promise.race([closed, w.exited, new Promise<void>((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
    } catch {
      // already gone
    }
    clearTimeout(timer);
    w.worker.terminate();
    await w.exited;
    removeSocket(w.name);
  }
}

/**
 * Starts `opts.size` Workers that each import the handlers module at `moduleUrl` and serve it over
 * inproc; resolves once all serve. Rejects with UsageError for bad options, WorkerStartError
 * (naming the module and the cause) when a Worker cannot serve (none is left running). The pool
 * belongs to the calling thread.
 */
export async function workerPool<S extends ServiceDef = {}>(moduleUrl: string | URL, opts: WorkerPoolOptions<S>): Promise<WorkerPool<S>> {
  if (opts === null || typeof opts !== "object") throw new UsageError(`workerPool: options { size } are required, got ${describeValue(opts)}`);
  checkInt(opts.size, 1, 1024, "size");
  if (opts.window !== undefined) checkInt(opts.window, 1, MAX_WINDOW, "window");
  if (opts.maxQueued !== undefined) checkInt(opts.maxQueued, 0, 2 ** 31 - 1, "maxQueued");
  if (opts.startTimeoutMs !== undefined) checkInt(opts.startTimeoutMs, 1, MAX_TIMER_MS, "startTimeoutMs");
  if (opts.onWorkerExit !== undefined && typeof opts.onWorkerExit !== "function") throw new UsageError(`workerPool: onWorkerExit must be a function, got ${describeValue(opts.onWorkerExit)}`);
  const url = resolveModule(moduleUrl);
  const entry = entryUrl();
  if (!existsSync(fileURLToPath(entry))) throw new WorkerStartError(`workerPool: its Worker script ${entry.href} is missing (hotpath bundled without its package build?)`);
  if (url.startsWith("file:") && !existsSync(fileURLToPath(url))) throw new WorkerStartError(`workerPool: the handlers module ${url} does not exist`);
  const pool = new WorkerPool<S>(url, opts, poolSeq++);
  const started = await Promise.allSettled(Array.from({ length: opts.size }, (_, i) => pool.startWorker(i)));
  const failed = started.find((r) => r.status === "rejected");
  if (failed !== undefined) {
    await pool.close();
    throw (failed as PromiseRejectedResult).reason;
  }
  return pool;
}

/**
 * @internal Terminates Worker `index` of `pool` as if it had died (tests): its in-flight calls
 * fail with WorkerCrashedError ("terminated") and a replacement starts. The pool's thread.
 */
export function terminateWorkerForTests(pool: WorkerPool<any>, index: number): void {
  pool.terminateForTests(index);
}
