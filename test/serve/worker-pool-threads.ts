/**
 * Thread counting for the worker-pool tests: this process's Worker threads (/proc/self/task, the
 * threads whose name is "Worker": Bun names each Worker's thread so). The runtime's own helper
 * threads are not counted: JSC's JIT compiler threads ("JITWorker") come with load and leave only
 * after about 10 s idle, which made a count of all threads wait that long after every busy test.
 * A baseline is still read after one throwaway Worker has come and gone (baselineThreads()).
 */
import { readdirSync, readFileSync } from "node:fs";
import { until } from "../helpers/peer.ts";

/** A thread's name, or "" when it ended while being read. */
function threadName(tid: string): string {
  try {
    return readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

export const threadCount = (): number => readdirSync("/proc/self/task").filter((t) => threadName(t) === "Worker").length;

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
