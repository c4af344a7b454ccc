/**
 * The pool over inproc: the server is a Worker of this process, terminated (its thread ends
 * with a call in flight) and started again on the same name. The call in flight fails with
 * TransportClosedError, a call made while the server is gone waits for the new one (wait-for-
 * ready) and gets its own bytes, and the pool counts one reconnect.
 */
import { afterEach, expect, test } from "bun:test";
import { TransportClosedError } from "../../src/errors.ts";
import { ConnectionPool } from "../../src/pool/pool.ts";

const WORKER = new URL("./inproc-server-worker.ts", import.meta.url).href;
const te = new TextEncoder();
const td = new TextDecoder();
const workers: Worker[] = [];
const pools: ConnectionPool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
  for (const w of workers.splice(0)) w.terminate();
});

/** A server Worker on `url`, and its messages after the listening one, in order. */
async function startServer(url: string): Promise<{ worker: Worker; next: () => Promise<unknown> }> {
  const worker = new Worker(WORKER);
  workers.push(worker);
  const queue: unknown[] = [];
  const takers: Array<(v: unknown) => void> = [];
  worker.onmessage = (e) => {
    const t = takers.shift();
    if (t) t(e.data);
    else queue.push(e.data);
  };
  const next = () => (queue.length > 0 ? Promise.resolve(queue.shift()) : new Promise<unknown>((r) => takers.push(r)));
  const watchdog = (what: string) => Bun.sleep(10_000).then(() => Promise.reject(new Error(`watchdog: ${what} within 10 s`)));
  worker.postMessage({ url });
  expect(await Promise.race([next(), watchdog("server Worker listening")])).toEqual({ url });
  return { worker, next: () => Promise.race([next(), watchdog("server Worker message")]) };
}

test("inproc: server Worker terminated with a call in flight and started again on its name", async () => {
  const url = `inproc://pool-inproc-${process.pid}`;
  const a = await startServer(url);
  const pool = new ConnectionPool({ backoff: { initialMs: 10, multiplier: 1.6, maxMs: 100, jitter: 0.2, minConnectTimeoutMs: 2000 }, timeoutMs: 10_000 });
  pools.push(pool);
  const c = pool.client(url);
  expect(td.decode(await c.request(1, te.encode("before")))).toBe("before");
  const held = c.request(2, te.encode("held"));
  held.catch(() => {});
  expect(await a.next()).toBe("held");
  a.worker.terminate();
  const err = await held.then(() => null, (e) => e);
  expect(err).toBeInstanceOf(TransportClosedError);
  const later = c.request(1, te.encode("later")); // no server now: waits for ready
  later.catch(() => {});
  await Bun.sleep(50);
  await startServer(url);
  expect(td.decode(await later)).toBe("later");
  const st = pool.stats()[0]!;
  expect(st.state).toBe("READY");
  expect(st.reconnects).toBe(1);
}, 30_000);
