/**
 * workerPool when Workers die and when they cannot start (src/serve/worker-pool.ts): a Worker
 * that calls process.exit in a handler, throws at the top level of a timer, or is terminated
 * fails exactly its in-flight calls with WorkerCrashedError (index and cause), the calls on the
 * other Worker succeed, the Worker is replaced (stats().restarts, a later call reaches the new
 * thread), onWorkerExit runs; after close no thread, no socket file and nothing in /dev/shm is
 * left. A handlers module that is missing, throws at load, exports no Handlers or never
 * finishes loading (past startTimeoutMs) rejects workerPool() with WorkerStartError naming the
 * module, and leaves no Worker.
 */
import { expect, test } from "bun:test";
import { readdirSync, rmSync, writeFileSync } from "node:fs";
import { TransportClosedError, WorkerCrashedError, WorkerStartError, workerPool } from "../../src/index.ts";
import { terminateWorkerForTests } from "../../src/serve/worker-pool.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { until } from "../helpers/peer.ts";
import { flakyFlag } from "./worker-pool-flaky.ts";
import { M } from "./worker-pool-service.ts";
import { baselineThreads, untilThreads } from "./worker-pool-threads.ts";

const HANDLERS = new URL("./worker-pool-handlers.ts", import.meta.url);
const WATCHDOG_MS = 30_000;
const u32 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true);
const rejection = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e);
const ownSockets = () => readdirSync(socketDirOf(process.geteuid!())).filter((n) => n.startsWith(`inproc-${process.pid}-wp-`));
const devShm = () => readdirSync("/dev/shm").filter((n) => n.includes(String(process.pid)));

const CASES: { how: string; kill: (pool: Awaited<ReturnType<typeof workerPool>>) => Promise<unknown>; cause: string }[] = [
  { how: "process.exit in a handler", kill: (p) => rejection(p.request(M.exit, new Uint8Array([9]))), cause: "it exited with code 9" },
  { how: "a throw at the top level of a timer", kill: (p) => rejection(p.request(M.throwLater)), cause: "RangeError: thrown at the top level of a timer" },
  {
    how: "worker.terminate()",
    kill: async (p) => {
      terminateWorkerForTests(p, 0);
      return null;
    },
    cause: "it was terminated",
  },
];

for (const c of CASES) {
  test(`a Worker that dies by ${c.how}: exactly its in-flight calls fail with WorkerCrashedError, the others succeed, it is replaced, nothing leaks`, async () => {
    const threads = await baselineThreads();
    const exits: [number, Error][] = [];
    const pool = await workerPool(HANDLERS, { size: 2, onWorkerExit: (i, e) => exits.push([i, e]) });
    const oldIds = pool.threadIds() as number[];
    // Two slow calls on each Worker (least busy first: they alternate), then the killer.
    const slow = Array.from({ length: 4 }, (_, i) => pool.request(M.slow, new Uint8Array([20, i])).then((r) => Array.from(r), (e: unknown) => e));
    await Bun.sleep(20);
    expect(pool.stats().inFlight).toBe(4);
    const killed = c.kill(pool);
    const results = await Promise.all(slow);
    const killer = await killed;
    const failed = results.filter((r) => r instanceof Error) as Error[];
    const ok = results.filter((r) => !(r instanceof Error));
    expect(failed).toHaveLength(2);
    expect(ok).toHaveLength(2);
    for (const r of ok) expect((r as number[])[0]).toBe(20);
    const all = killer === null ? failed : [...failed, killer as Error];
    const index = (failed[0] as WorkerCrashedError).workerIndex;
    for (const e of all) {
      expect(e).toBeInstanceOf(WorkerCrashedError);
      expect(e).toBeInstanceOf(TransportClosedError);
      expect((e as WorkerCrashedError).code).toBe("E_WORKER_CRASHED");
      expect((e as WorkerCrashedError).workerIndex).toBe(index);
      expect(e.message).toBe(`workerPool: Worker ${index} crashed: ${c.cause}`);
    }
    if (c.how === "worker.terminate()") expect(index).toBe(0);
    expect(exits.map(([i]) => i)).toEqual([index]);
    expect(exits[0]![1]).toBe(failed[0]!);
    // Replaced: a new thread at that index, and later calls reach it.
    await until(() => pool.stats().workers === 2, "the replacement Worker", 10_000);
    expect(pool.stats().restarts).toBe(1);
    const newId = pool.threadIds()[index]!;
    expect(oldIds).not.toContain(newId);
    const seen = new Set((await Promise.all(Array.from({ length: 20 }, () => pool.request(M.thread)))).map(u32));
    expect(seen.has(newId)).toBe(true);
    await pool.close();
    await untilThreads(threads);
    expect(ownSockets()).toEqual([]);
    expect(devShm()).toEqual([]);
  }, WATCHDOG_MS);
}

test("a Worker that dies while queued calls wait: they go to the replacement and succeed", async () => {
  const pool = await workerPool(HANDLERS, { size: 1, window: 1 });
  const killed = rejection(pool.request(M.exit, new Uint8Array([4])));
  const queued = Array.from({ length: 3 }, (_, i) => pool.request(M.echo, new Uint8Array([i])));
  expect(pool.stats().queued).toBe(3);
  expect(await killed).toBeInstanceOf(WorkerCrashedError);
  expect((await Promise.all(queued)).map((r) => r[0])).toEqual([0, 1, 2]);
  expect(pool.stats()).toMatchObject({ workers: 1, restarts: 1, queued: 0 });
  await pool.close();
}, WATCHDOG_MS);

test("an idle Worker that ends is replaced; a replacement that fails to start is retried with backoff, calls wait for it", async () => {
  const flag = flakyFlag();
  const pool = await workerPool(new URL("./worker-pool-flaky.ts", import.meta.url), { size: 1 });
  try {
    terminateWorkerForTests(pool, 0);
    await until(() => pool.stats().restarts === 1 && pool.stats().workers === 1, "the idle Worker's replacement", 10_000);
    writeFileSync(flag, "");
    terminateWorkerForTests(pool, 0);
    await until(() => pool.stats().restarts === 2, "the second crash", 10_000);
    await Bun.sleep(300); // the first start and its first retry (100 ms) fail
    expect(pool.stats().workers).toBe(0);
    const waiting = pool.request(1, new Uint8Array([7]));
    expect(pool.stats().queued).toBe(1);
    rmSync(flag);
    expect(Array.from(await waiting)).toEqual([7]); // the next retry (1 s later) serves
    expect(pool.stats()).toMatchObject({ workers: 1, restarts: 2, queued: 0 });
  } finally {
    rmSync(flag, { force: true });
    await pool.close();
  }
}, WATCHDOG_MS);

for (const [what, file, says] of [
  ["does not exist", "./no-such-handlers.ts", "does not exist"],
  ["throws while it loads", "./worker-pool-throws.ts", "these handlers refuse to load"],
  ["exports no Handlers", "./worker-pool-not-handlers.ts", "its default export is a number"],
] as const) {
  test(`a handlers module that ${what}: workerPool() rejects with WorkerStartError naming the module and the cause, no Worker left`, async () => {
    const threads = await baselineThreads();
    const url = new URL(file, import.meta.url);
    const e = await rejection(workerPool(url, { size: 2 }));
    expect(e).toBeInstanceOf(WorkerStartError);
    expect((e as Error).message).toContain(url.href);
    expect((e as Error).message).toContain(says);
    await untilThreads(threads);
    expect(ownSockets()).toEqual([]);
  }, WATCHDOG_MS);
}

test("a handlers module that never finishes loading: workerPool() rejects after startTimeoutMs with WorkerStartError, no Worker left", async () => {
  const threads = await baselineThreads();
  const url = new URL("./worker-pool-hangs.ts", import.meta.url);
  const e = await rejection(workerPool(url, { size: 2, startTimeoutMs: 300 }));
  expect(e).toBeInstanceOf(WorkerStartError);
  expect((e as Error).message).toContain(url.href);
  expect((e as Error).message).toContain("it did not serve within 300 ms");
  await untilThreads(threads);
  expect(ownSockets()).toEqual([]);
}, 10_000); // the watchdog: far below the default start timeout (30 s), which the option replaces
