/**
 * Thread counting for the worker-pool tests: this process's threads (/proc/self/task). The first
 * Worker of a process starts a few process-wide runtime threads that stay for good, so a baseline
 * is read after one throwaway Worker has come and gone (baselineThreads()).
 */
import { readdirSync } from "node:fs";
import { until } from "../helpers/peer.ts";

export const threadCount = (): number => readdirSync("/proc/self/task").length;

/** The thread count once the runtime's process-wide Worker threads exist (a Worker started and ended first). */
export async function baselineThreads(): Promise<number> {
  const w = new Worker(URL.createObjectURL(new Blob(["postMessage(1)"], { type: "application/javascript" })));
  await new Promise((r) => (w.onmessage = r));
  const gone = new Promise((r) => w.addEventListener("close", r));
  w.terminate();
  await gone;
  await Bun.sleep(50);
  return threadCount();
}

/** Resolves once the thread count is back to `n` (or below); fails after `timeoutMs` naming the count. */
export async function untilThreads(n: number, timeoutMs = 10_000): Promise<void> {
  await until(() => threadCount() <= n, `the thread count to return to ${n} (now ${threadCount()})`, timeoutMs);
}
