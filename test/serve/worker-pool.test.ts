/**
 * workerPool (src/serve/worker-pool.ts): handlers in real Bun Workers over inproc, called from
 * this thread. Typed and raw calls (bytes checked), 1 MiB both ways, the handler's view of the
 * segment, spreading over Workers, maxQueued backpressure, handler errors, deadlines and
 * AbortSignal (in flight and queued), close with calls in flight, option checks. Crashes and
 * start failures: worker-pool-crash.test.ts.
 *
 * Fixtures: worker-pool-handlers.ts (methods M of worker-pool-service.ts), worker-pool-factory.ts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { CancelledError, PendingLimitError, RemoteError, TimeoutError, TransportClosedError, UsageError, WorkerCrashedError, workerPool, type WorkerPool } from "../../src/index.ts";
import { Calc, M } from "./worker-pool-service.ts";
import { baselineThreads, untilThreads } from "./worker-pool-threads.ts";

const HANDLERS = new URL("./worker-pool-handlers.ts", import.meta.url);
const FACTORY = new URL("./worker-pool-factory.ts", import.meta.url);
/** A hang guard per test (never a runtime assertion). */
const WATCHDOG_MS = 30_000;

const open: WorkerPool<any>[] = [];
afterAll(async () => {
  for (const p of open) await p.close();
});
async function pool<S extends typeof Calc | {}>(opts: Parameters<typeof workerPool<S>>[1], url: URL = HANDLERS): Promise<WorkerPool<S>> {
  const p = await workerPool(url, opts);
  open.push(p);
  return p;
}
const u32 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true);
const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);
const rejection = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e);

describe("calls", () => {
  test("typed calls through svc (struct request, msgpack response) and raw request() with bytes checked", async () => {
    const p = await pool({ size: 2, service: Calc });
    expect(p.size).toBe(2);
    const r = await p.svc.add({ a: 40, b: 2 });
    expect(r.sum).toBe(42);
    expect(p.threadIds()).toContain(r.thread);
    const data = bytes(300, 7);
    const echo = await p.request(M.echo, data);
    expect(Buffer.compare(echo, data)).toBe(0);
    const x = await p.request(M.xor, data);
    expect(Array.from(x)).toEqual(Array.from(data, (b) => b ^ 0x5a));
    expect(p.stats()).toEqual({ workers: 2, inFlight: 0, queued: 0, restarts: 0 });
    await p.close();
  }, WATCHDOG_MS);

  test("1 MiB request and 1 MiB reply, every byte checked; the handler's request is a view of the segment's SharedArrayBuffer", async () => {
    const p = await pool({ size: 1 });
    const big = bytes(1 << 20, 3);
    const reply = await p.request(M.xor, big);
    expect(reply.length).toBe(1 << 20);
    let wrong = 0;
    for (let i = 0; i < big.length; i++) if (reply[i] !== (big[i]! ^ 0x5a)) wrong++;
    expect(wrong).toBe(0);
    // No structured clone, no copy into the Worker's heap: small (inline) and large (slab) requests alike.
    expect(Array.from(await p.request(M.inSegment, big))).toEqual([1, 1]);
    expect(Array.from(await p.request(M.inSegment, bytes(16, 1)))).toEqual([1, 1]);
    await p.close();
  }, WATCHDOG_MS);

  test("a handlers module whose default export is an async function: called once per Worker", async () => {
    const p = await pool({ size: 2 }, FACTORY);
    const got = await Promise.all(Array.from({ length: 8 }, () => p.request(1)));
    for (const g of got) expect(g[1]).toBe(42);
    expect(new Set(got.map((g) => g[0])).size).toBe(2);
    await p.close();
  }, WATCHDOG_MS);

  test("calls spread over all Workers (each reports its threadId), also with the Workers in blocking mode", async () => {
    for (const worker of [{}, { mode: "blocking" as const }]) {
      const p = await pool({ size: 3, wait: { worker } });
      const ids = p.threadIds();
      expect(new Set(ids).size).toBe(3);
      const counts = new Map<number, number>();
      const replies = await Promise.all(Array.from({ length: 300 }, () => p.request(M.thread)));
      for (const r of replies) counts.set(u32(r), (counts.get(u32(r)) ?? 0) + 1);
      expect([...counts.keys()].sort()).toEqual([...ids].sort() as number[]);
      for (const n of counts.values()) expect(n).toBeGreaterThanOrEqual(50);
      // One at a time, calls rotate among the idle Workers.
      const seq = new Set<number>();
      for (let i = 0; i < 6; i++) seq.add(u32(await p.request(M.thread)));
      expect(seq.size).toBe(3);
      await p.close();
    }
  }, WATCHDOG_MS);
});

describe("backpressure, errors, deadlines", () => {
  test("maxQueued full: the next call rejects at once with PendingLimitError while the earlier ones complete", async () => {
    const p = await pool({ size: 1, window: 2, maxQueued: 3 });
    const calls = Array.from({ length: 5 }, (_, i) => p.request(M.slow, new Uint8Array([5, i])));
    expect(p.stats()).toMatchObject({ inFlight: 2, queued: 3 });
    let settled = false;
    void Promise.all(calls).then(() => (settled = true));
    const over = await rejection(p.request(M.echo, new Uint8Array([9])));
    expect(settled).toBe(false);
    expect(over).toBeInstanceOf(PendingLimitError);
    expect((over as Error).message).toContain("maxQueued");
    const replies = await Promise.all(calls);
    replies.forEach((r, i) => expect(Array.from(r)).toEqual([5, i]));
    expect(p.stats()).toMatchObject({ inFlight: 0, queued: 0 });
    await p.close();
  }, WATCHDOG_MS);

  test("a handler's throw is a RemoteError, as with serve(); an unknown method too; the pool keeps serving", async () => {
    const p = await pool({ size: 1 });
    const e = await rejection(p.request(M.fail));
    expect(e).toBeInstanceOf(RemoteError);
    expect((e as RemoteError).remoteName).toBe("TypeError");
    expect((e as RemoteError).remoteMessage).toBe("bad input for fail");
    const u = await rejection(p.request(999));
    expect(u).toBeInstanceOf(RemoteError);
    expect((u as RemoteError).remoteName).toBe("UnknownMethodError");
    expect(Array.from(await p.request(M.echo, new Uint8Array([1, 2])))).toEqual([1, 2]);
    expect(p.stats().restarts).toBe(0);
    await p.close();
  }, WATCHDOG_MS);

  test("deadlines and AbortSignal, in flight and while queued", async () => {
    const p = await pool({ size: 1, window: 1, timeoutMs: 5_000 });
    // In flight: the handler sleeps 300 ms.
    expect(await rejection(p.request(M.slow, new Uint8Array([30]), { timeoutMs: 30 }))).toBeInstanceOf(TimeoutError);
    const ac = new AbortController();
    const aborted = rejection(p.request(M.slow, new Uint8Array([30]), { signal: ac.signal }));
    ac.abort(new Error("the HTTP client went away"));
    expect(await aborted).toBeInstanceOf(CancelledError);
    // Queued behind a slow call: the deadline and the signal count from request().
    const slow = p.request(M.slow, new Uint8Array([20, 1]), { timeoutMs: 0 });
    const queuedTimeout = rejection(p.request(M.echo, new Uint8Array([2]), { timeoutMs: 20 }));
    const ac2 = new AbortController();
    const queuedAbort = rejection(p.request(M.echo, new Uint8Array([3]), { signal: ac2.signal }));
    expect(p.stats().queued).toBe(2);
    ac2.abort();
    const te = await queuedTimeout;
    expect(te).toBeInstanceOf(TimeoutError);
    expect((te as Error).message).toContain("waiting for a Worker");
    expect(await queuedAbort).toBeInstanceOf(CancelledError);
    expect(p.stats().queued).toBe(0);
    expect(Array.from(await slow)).toEqual([20, 1]);
    expect(await rejection(p.request(M.echo, new Uint8Array([1]), { signal: AbortSignal.abort() }))).toBeInstanceOf(CancelledError);
    expect(Array.from(await p.request(M.echo, new Uint8Array([4])))).toEqual([4]);
    await p.close();
  }, WATCHDOG_MS);

  test("a queued call whose deadline lies past setTimeout's limit (2^31 ms) waits for its Worker and succeeds", async () => {
    const p = await pool({ size: 1, window: 1 });
    const slow = p.request(M.slow, new Uint8Array([20, 2])); // 200 ms in flight: the window is full
    const far = [2 ** 31, 2 ** 40].map((timeoutMs, i) => p.request(M.echo, new Uint8Array([5, i]), { timeoutMs }).then((r) => Array.from(r), (e: unknown) => e));
    expect(p.stats().queued).toBe(2);
    expect(Array.from(await slow)).toEqual([20, 2]);
    expect(await Promise.all(far)).toEqual([[5, 0], [5, 1]]);
    expect(p.stats().queued).toBe(0);
    await p.close();
  }, WATCHDOG_MS);

  test("close() with calls in flight and queued: they reject with TransportClosedError (not WorkerCrashedError) and every Worker ends", async () => {
    const before = await baselineThreads();
    const p = await workerPool(HANDLERS, { size: 2, window: 1 });
    const calls = Array.from({ length: 4 }, (_, i) => rejection(p.request(M.slow, new Uint8Array([50, i]))));
    await Bun.sleep(20);
    expect(p.stats()).toMatchObject({ inFlight: 2, queued: 2 });
    const closing = p.close();
    expect(p.close()).toBe(closing); // safe twice
    await closing;
    for (const e of await Promise.all(calls)) {
      expect(e).toBeInstanceOf(TransportClosedError);
      expect(e).not.toBeInstanceOf(WorkerCrashedError);
    }
    expect(await rejection(p.request(M.echo))).toBeInstanceOf(TransportClosedError);
    await untilThreads(before);
  }, WATCHDOG_MS);

  test("nothing close() arms keeps the process alive after it resolved (a process exits once its pool is closed)", async () => {
    const child = Bun.spawn(["bun", new URL("./worker-pool-exit-child.ts", import.meta.url).pathname], { stdout: "pipe", stderr: "inherit" });
    const out = await new Response(child.stdout).text();
    expect(await child.exited).toBe(0);
    // Before, a 1 s sleep raced against the Worker's "closed" answer stayed armed: the unref'd timer fired.
    expect(out.trim().split("\n")).toEqual(["closed"]);
  }, WATCHDOG_MS);

  test("bad sizes and arguments are UsageErrors, and no Worker starts", async () => {
    const before = await baselineThreads();
    for (const opts of [{ size: 0 }, { size: 1.5 }, { size: "2" }, { size: 1, window: 0 }, { size: 1, maxQueued: -1 }, { size: 1, timeoutMs: -5 }, { size: 1, startTimeoutMs: 0 }, { size: 1, startTimeoutMs: 2.5 }, { size: 1, startTimeoutMs: "1000" }, {}]) {
      expect(await rejection(workerPool(HANDLERS, opts as { size: number }))).toBeInstanceOf(UsageError);
    }
    expect(await rejection(workerPool("./worker-pool-handlers.ts", { size: 1 }))).toBeInstanceOf(UsageError);
    const p = await pool({ size: 1 });
    expect(await rejection(p.request(-1))).toBeInstanceOf(UsageError);
    expect(await rejection(p.request(M.echo, "text" as unknown as Uint8Array))).toBeInstanceOf(UsageError);
    expect(await rejection(p.request(M.echo, new Uint8Array(64 << 20)))).toBeInstanceOf(UsageError);
    await p.close();
    await untilThreads(before);
  }, WATCHDOG_MS);
});
