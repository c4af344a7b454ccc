/**
 * The consumer project's worker pool: two Workers serving pool-handlers.ts, called through the
 * typed `svc`; a Worker that exits mid-call fails that call with WorkerCrashedError and is
 * replaced. Prints one JSON line ({ sums, threads, crashed, restarts }) and exits 0; a workerPool
 * that cannot start prints { error: name, message } and exits 3.
 */
import { WorkerCrashedError, workerPool, type WorkerPool } from "hotpath";
import { Sum } from "./pool-handlers.js";

let pool: WorkerPool<typeof Sum>;
try {
  pool = await workerPool(new URL("./pool-handlers.ts", import.meta.url), { size: 2, service: Sum });
} catch (e) {
  console.log(JSON.stringify({ error: (e as Error).name, message: (e as Error).message }));
  process.exit(3);
}
const data = new Uint8Array(4096).map((_, i) => i & 0xff);
const replies = await Promise.all(Array.from({ length: 16 }, () => pool.svc.sum(data)));
let crashed = "";
try {
  await pool.svc.exit(new Uint8Array(0));
} catch (e) {
  crashed = e instanceof WorkerCrashedError ? e.message : `other: ${String(e)}`;
}
const later = await pool.svc.sum(data);
const { restarts } = pool.stats();
await pool.close();
console.log(JSON.stringify({ sums: [...new Set([...replies, later].map((r) => r.sum))], threads: new Set(replies.map((r) => r.thread)).size, crashed, restarts }));
