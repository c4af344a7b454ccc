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
 * The handlers module's default export is Handlers (what implement() returns) or a function
 * returning Handlers (or a Promise of them), called once in this Worker.
 *
 * Importing this module in a thread that is not a Worker does nothing.
 */

import { threadId } from "node:worker_threads";
import { describeThrown, UsageError } from "../errors.ts";
import { describeValue } from "../rpc/validate.ts";
import { dispatcher } from "../rpc/serve.ts";
import { Server } from "../rpc/server.ts";
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
export type WorkerSays = { type: "ready"; threadId: number } | { type: "failed"; message: string } | { type: "closed" };

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

/**
 * Serves `server`'s connections from a loop that holds the thread (wait modes "spin" and
 * "blocking", whose connections deliver only through poll()): poll, then wait on the connection
 * (spin, or spin then Atomics.wait for at most PARK_MS), and every SLICE_MS one event-loop turn.
 */
async function serveOnThread(server: Server, stopped: () => boolean): Promise<void> {
  while (!stopped()) {
    const end = performance.now() + SLICE_MS;
    do {
      server.poll();
      const s = server.sessions.values().next().value;
      if (s === undefined) break;
      await s.conn.wait(PARK_MS);
    } while (performance.now() < end && !stopped());
    await new Promise((r) => setImmediate(r));
  }
}

if (!Bun.isMainThread) {
  let serving: Server | null = null;
  const say = (m: WorkerSays) => self.postMessage(m);
  self.onmessage = async (e: MessageEvent) => {
    const m = e.data as WorkerInit | { type: "close" };
    if (m?.type === "init") {
      try {
        const handlers = await loadHandlers(m.moduleUrl);
        const server = new Server({ poolHandles: false, onRequest: dispatcher(handlers) });
        server.attach(await listen(`inproc://${m.name}`, { wait: m.wait }));
        serving = server;
        if (m.wait.mode === "spin" || m.wait.mode === "blocking") void serveOnThread(server, () => serving === null);
      } catch (err) {
        say({ type: "failed", message: describeThrown(err, true) });
        return;
      }
      say({ type: "ready", threadId });
    } else if (m?.type === "close") {
      serving?.close();
      serving = null;
      say({ type: "closed" });
    }
  };
}
