/**
 * The script each Worker of a worker pool runs (started by worker-pool.ts; in the package build
 * dist/serve/worker-entry.js). It waits for one init message from the pool, imports the handlers
 * module, and serves it on `inproc://<name>` with serve(), in this Worker's event loop.
 *
 * Contract (messages, structured clone, setup and shutdown only: calls travel over inproc):
 *   pool → Worker  { type: "init", moduleUrl, name, wait }  once, first
 *   Worker → pool  { type: "ready", threadId }              serving; the pool connects next
 *                  { type: "failed", message }              the module did not load / is no Handlers
 *   pool → Worker  { type: "close" }                         closes the server, then:
 *   Worker → pool  { type: "closed" }
 *   pool → Worker  { type: "probe" }  (tests)               answered, any time after init:
 *   Worker → pool  { type: "probe", sessions, looping }      connections served; a thread-holding loop runs
 * The handlers module's default export is Handlers (what implement() returns) or a function
 * returning Handlers (or a Promise of them), called once in this Worker.
 *
 * Importing this module in a thread that is not a Worker does nothing.
 */

import { threadId } from "node:worker_threads";
import { describeThrown, UsageError } from "../errors.ts";
import { describeValue } from "../rpc/validate.ts";
import { dispatcher } from "../rpc/serve.ts";
import { Server, type RequestHandle } from "../rpc/server.ts";
import { listen } from "../connect/registry.ts";
import type { Handlers } from "../rpc/service.ts";
import type { WaitPolicy } from "../contract/transport.ts";

/** The pool's first message to a Worker. */
export interface WorkerInit {
  type: "init";
  moduleUrl: string;
  name: string;
  wait: Partial<WaitPolicy>;
}

/** What a Worker says to its pool. */
export type WorkerSays = { type: "ready"; threadId: number } | { type: "failed"; message: string } | { type: "closed" } | { type: "probe"; sessions: number; looping: boolean };

/** The Handlers a handlers module exports (default export: Handlers, or a function making them). */
export async function loadHandlers(moduleUrl: string): Promise<Handlers> {
  const mod = (await import(moduleUrl)) as { default?: unknown };
  let h: unknown = mod.default;
  if (typeof h === "function") h = await (h as () => unknown)();
  if (h === null || typeof h !== "object") {
    throw new UsageError(`its default export is ${describeValue(h)}: a handlers module exports Handlers (implement(Service, {...})) or a function returning them`);
  }
  return h as Handlers;
}

declare const self: Worker;

/** A thread-holding loop's slice before it yields to the event loop (timers, async handlers' I/O, the pool's messages). */
const SLICE_MS = 2;
/** The longest one park in Atomics.wait lasts (then the loop looks at the event loop again). */
const PARK_MS = 1;
/** After this long without a request the loop hands the connection back to the event loop (an idle Worker costs nothing). */
const IDLE_TO_EVENT_LOOP_MS = 50;
/** The policy of an idle Worker's connection: parked on its event loop, woken by the pool's doorbell. */
const IDLE_POLICY: Partial<WaitPolicy> = { mode: "async", spinNs: 0 };

/**
 * Serving for the wait modes that hold the thread ("spin", "blocking"; their connections deliver
 * only through poll()): the connection idles parked on the event loop (IDLE_POLICY); the first
 * request switches it to `policy` and starts a loop that polls, then waits on the connection
 * (spin, or spin then Atomics.wait for at most PARK_MS), with one event-loop turn every SLICE_MS;
 * IDLE_TO_EVENT_LOOP_MS without a request ends the loop and parks the connection again; so does
 * the end of the last connection (nothing left to wait on: a new one's first request starts it).
 * Returns the onRequest hook that wraps `dispatch`.
 */
/** Whether onThread's thread-holding loop runs now (a Worker serves one server): the probe reports it. */
let looping = false;

function onThread(server: () => Server | null, policy: Partial<WaitPolicy>, dispatch: (h: RequestHandle) => void): (h: RequestHandle) => void {
  let lastAt = 0;
  const loop = async () => {
    let s = server();
    for (const session of s?.sessions ?? []) session.conn.setWaitPolicy(policy);
    serving: while ((s = server()) !== null) {
      const end = performance.now() + SLICE_MS;
      let now = 0;
      do {
        s.poll();
        const session = s.sessions.values().next().value;
        if (session === undefined) break serving; // no connection left to wait on: the next one's first request starts a loop again
        await session.conn.wait(PARK_MS);
        now = performance.now();
      } while (now < end);
      if (now - lastAt > IDLE_TO_EVENT_LOOP_MS) break;
      await new Promise((r) => setImmediate(r));
    }
    for (const session of server()?.sessions ?? []) session.conn.setWaitPolicy(IDLE_POLICY);
    looping = false;
  };
  return (h) => {
    lastAt = performance.now();
    if (!looping) {
      looping = true;
      queueMicrotask(loop);
    }
    dispatch(h);
  };
}

if (!Bun.isMainThread) {
  let serving: Server | null = null;
  const say = (m: WorkerSays) => self.postMessage(m);
  self.onmessage = async (e: MessageEvent) => {
    const m = e.data as WorkerInit | { type: "close" } | { type: "probe" };
    if (m?.type === "init") {
      try {
        const handlers = await loadHandlers(m.moduleUrl);
        const dispatch = dispatcher(handlers);
        const onThreadMode = m.wait.mode === "spin" || m.wait.mode === "blocking";
        const server = new Server({ poolHandles: false, onRequest: onThreadMode ? onThread(() => serving, m.wait, dispatch) : dispatch });
        server.attach(await listen(`inproc://${m.name}`, { wait: onThreadMode ? IDLE_POLICY : m.wait }));
        serving = server;
      } catch (err) {
        say({ type: "failed", message: describeThrown(err, true) });
        return;
      }
      say({ type: "ready", threadId });
    } else if (m?.type === "close") {
      serving?.close();
      serving = null;
      say({ type: "closed" });
    } else if (m?.type === "probe") {
      say({ type: "probe", sessions: serving?.sessions.size ?? 0, looping });
    }
  };
}
