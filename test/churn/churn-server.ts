/**
 * The churn server: `bun churn-server.ts URL` serves the churn service (methods.ts) on URL in
 * its own process, prints {"url","pid"} when listening, then answers commands on stdin, one
 * JSON object a line with an `id`, each with one JSON line on stdout carrying the same `id`:
 *
 *   {"id":1,"cmd":"figures","gc":true}  → its own /proc figures (after Bun.gc(true) and a turn
 *                                          of the event loop, so finalizers have run, and
 *                                          malloc_trim) + sessions
 *   {"id":2,"cmd":"idle","ms":1000}     → CPU it used over that long (percent of one core)
 *   {"id":3,"cmd":"start"}              → inproc: starts a churn client in a Worker of this
 *                                          process, answers {"client":k} once it is calling
 *   {"id":4,"cmd":"kill","client":k}    → Worker.terminate() of that client (mid-stream)
 *   {"id":5,"cmd":"close","client":k}   → tells that client to close cleanly, answers its report
 *
 * Inproc clients must be Workers of the server's process, hence start/kill/close here. The
 * process exits when stdin closes.
 */

import { dlopen, FFIType } from "bun:ffi";
import { heapStats } from "bun:jsc";
import { serve } from "../../src/index.ts";
import { procFigures } from "../helpers/proc-figures.ts";
import { M_ECHO, M_SLOW_ECHO } from "./methods.ts";

const CLIENT_SCRIPT = new URL("./churn-client.ts", import.meta.url).href;
/** A Worker client that does not report within this long counts as failed to start. */
const WORKER_READY_MS = 15_000;

const serving = await serve(process.argv[2]!, {
  [M_ECHO]: (h) => h.data,
  [M_SLOW_ECHO]: async (h) => {
    const d = h.data;
    await Bun.sleep(new DataView(d.buffer, d.byteOffset, d.byteLength).getUint32(0, true));
    return h.data;
  },
});

const workers = new Map<number, { worker: Worker; report: Promise<unknown> }>();
let nextClient = 0;

/** What the main thread's heap holds: buffers (SharedArrayBuffers count as ArrayBuffer) and promises. */
function heapFigures(): { arrayBuffers: number; promises: number; externalMiB: number } {
  const h = heapStats();
  return { arrayBuffers: h.objectTypeCounts.ArrayBuffer ?? 0, promises: h.objectTypeCounts.Promise ?? 0, externalMiB: h.extraMemorySize / 2 ** 20 };
}

/** glibc's malloc_trim: native libraries (UCX) allocate with malloc, whose arenas keep freed pages. */
const trim = dlopen("libc.so.6", { malloc_trim: { args: [FFIType.u64], returns: FFIType.i32 } }).symbols.malloc_trim;

async function settle(): Promise<void> {
  // Two rounds: the first GC queues finalizers (e.g. segment unmaps), the turn runs them.
  for (let i = 0; i < 2; i++) {
    Bun.gc(true);
    await Bun.sleep(20);
  }
  // Free pages back to the kernel, so RSS counts what is still allocated, not what malloc kept
  // from the busiest moment (a leak stays allocated and is still counted).
  trim(0);
}

function startWorker(): Promise<Record<string, unknown>> {
  const k = nextClient++;
  const worker = new Worker(CLIENT_SCRIPT);
  let done!: (v: unknown) => void;
  const report = new Promise<unknown>((r) => (done = r));
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve({ error: `worker client ${k}: not calling within ${WORKER_READY_MS} ms` }), WORKER_READY_MS);
    worker.onmessage = (e) => {
      if (e.data?.ready) {
        clearTimeout(t);
        resolve({ client: k });
      } else if (e.data?.done) {
        clearTimeout(t);
        done(e.data);
        resolve({ error: `worker client ${k} ended before calling: ${JSON.stringify(e.data)}` });
      }
    };
    worker.onerror = (e) => {
      clearTimeout(t);
      done({ error: e.message });
      resolve({ error: `worker client ${k}: ${e.message}` });
    };
    workers.set(k, { worker, report });
    worker.postMessage({ url: serving.url });
  });
}

async function stopWorker(k: number, clean: boolean): Promise<Record<string, unknown>> {
  const w = workers.get(k);
  if (w === undefined) return { error: `no client ${k}` };
  workers.delete(k);
  const closed = new Promise<void>((r) => w.worker.addEventListener("close", () => r()));
  let report: unknown = null;
  if (clean) {
    w.worker.postMessage("close");
    report = await Promise.race([w.report, Bun.sleep(10_000).then(() => ({ error: "no report within 10 s of close" }))]);
  }
  w.worker.terminate();
  await Promise.race([closed, Bun.sleep(5_000)]);
  return { report };
}

async function answer(req: Record<string, any>): Promise<Record<string, unknown>> {
  switch (req.cmd) {
    case "figures":
      if (req.gc) await settle();
      return { figures: procFigures(), sessions: serving.server.sessions.size, heap: heapFigures() };
    case "idle": {
      const c0 = process.cpuUsage();
      await Bun.sleep(req.ms);
      const c1 = process.cpuUsage(c0);
      return { cpuPercent: ((c1.user + c1.system) / 1000 / req.ms) * 100 };
    }
    case "start":
      return startWorker();
    case "kill":
      return stopWorker(req.client, false);
    case "close":
      return stopWorker(req.client, true);
    default:
      return { error: `unknown command ${req.cmd}` };
  }
}

console.log(JSON.stringify({ url: serving.url, pid: process.pid }));

let buf = "";
const decoder = new TextDecoder();
for await (const chunk of Bun.stdin.stream()) {
  buf += decoder.decode(chunk, { stream: true });
  let nl: number;
  while ((nl = buf.indexOf("\n")) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    const req = JSON.parse(line);
    answer(req).then(
      (out) => console.log(JSON.stringify({ id: req.id, ...out })),
      (e) => console.log(JSON.stringify({ id: req.id, error: String(e) })),
    );
  }
}
for (const { worker } of workers.values()) worker.terminate();
serving.close();
process.exit(0);
