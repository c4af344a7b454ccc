/**
 * inproc sessions let go of their segment when they end, however they end: a client Worker that
 * is terminated never rings, so the listener side's pending Atomics.waitAsync on the segment
 * would keep the whole SharedArrayBuffer alive; closing wakes it. Checked with WeakRefs to the
 * segments after 20 clients were killed, and the RSS reported.
 */

import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { listen, type Connection } from "../../src/index.ts";

const SEGMENT_PEER = new URL("../shm/segment-peer.ts", import.meta.url).href;
const rssMiB = () => Number(readFileSync("/proc/self/status", "utf8").match(/VmRSS:\s+(\d+)/)![1]) / 1024;

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(1);
  }
}

/** Starts segment-peer.ts in a Worker with `args`; resolves with the Worker once it reported. */
async function startWorker(args: string[]): Promise<Worker> {
  const w = new Worker(SEGMENT_PEER);
  await new Promise<void>((resolve, reject) => {
    w.onmessage = () => resolve();
    w.onerror = (e) => reject(new Error(e.message));
    w.postMessage({ args });
  });
  return w;
}

test("20 terminated client Workers: every session's segment becomes garbage", async () => {
  const l = await listen(`inproc://res-${process.pid}`);
  const segments: WeakRef<ArrayBufferLike>[] = [];
  let current: Connection | null = null;
  let got = 0;
  l.onConnection((c) => {
    current = c;
    segments.push(new WeakRef((c as unknown as { words: Int32Array }).words.buffer));
    c.setReceiver({ onMessage: (m) => void (got++, m.release()), onClose() {} });
  });
  const before = rssMiB();
  for (let i = 0; i < 20; i++) {
    const w = await startWorker(["connect", l.url, "10"]);
    await until(() => got === 10 * (i + 1), "the client's messages");
    await Bun.sleep(5); // the listener side parks in Atomics.waitAsync
    w.terminate();
    await until(() => current!.closed, "the session closes after the Worker is gone");
  }
  current = null;
  l.close(true);
  let alive = segments.length;
  for (let i = 0; i < 50 && alive > 0; i++) {
    Bun.gc(true);
    await Bun.sleep(10);
    alive = segments.filter((r) => r.deref() !== undefined).length;
  }
  console.log(`inproc 20 killed clients: ${alive} of 20 segments still reachable after GC, RSS ${before.toFixed(1)} → ${rssMiB().toFixed(1)} MiB`);
  expect(alive).toBe(0);
}, 120_000);
