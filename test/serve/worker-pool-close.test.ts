/**
 * workerPool close() while a replacement Worker is starting (src/serve/worker-pool.ts): close()
 * resolves only once every Worker thread the pool made has exited, the one still loading its
 * module included. The Worker constructor is wrapped (a real Worker, subclassed only to record
 * each one's close event), so this file runs alone: the wrapper is global to its test process.
 *
 * Fixture: worker-pool-slow.ts (a handlers module that takes 300 ms to load).
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { workerPool } from "../../src/index.ts";
import { terminateWorkerForTests } from "../../src/serve/worker-pool.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { until } from "../helpers/peer.ts";

const SLOW = new URL("./worker-pool-slow.ts", import.meta.url);
const WATCHDOG_MS = 30_000;
const ownSockets = () => readdirSync(socketDirOf(process.geteuid!())).filter((n) => n.startsWith(`inproc-${process.pid}-wp-`));

const made: { closed: boolean }[] = [];
const RealWorker = globalThis.Worker;
globalThis.Worker = class extends RealWorker {
  constructor(url: string | URL, options?: WorkerOptions) {
    super(url, options);
    const rec = { closed: false };
    made.push(rec);
    this.addEventListener("close", () => (rec.closed = true));
  }
} as typeof Worker;

// Delays after the replacement was made: while it loads its module, near its end, and around ready/connect.
for (const delayMs of [0, 100, 280, 300, 320]) {
  test(`close() ${delayMs} ms after a replacement Worker started loading resolves after its thread exited`, async () => {
    made.length = 0;
    const p = await workerPool(SLOW, { size: 1 });
    expect(made).toHaveLength(1);
    terminateWorkerForTests(p, 0);
    await until(() => made.length === 2, "the replacement Worker", 10_000);
    if (delayMs > 0) await Bun.sleep(delayMs);
    await p.close();
    expect(made.filter((m) => !m.closed)).toHaveLength(0);
    expect(ownSockets()).toEqual([]);
  }, WATCHDOG_MS);
}
