/**
 * The Worker script of workerPool (src/serve/worker-entry.ts), driven directly: a real Worker
 * serving the worker-pool handlers over inproc in a thread-holding wait mode (blocking, spin).
 * Once its last connection is gone, the Worker's serving loop ends (it does not spin on its
 * event loop with nothing to wait on), and a new connection is served again. Observed through
 * the Worker's probe message ({ sessions, looping }).
 *
 * Fixtures: worker-pool-handlers.ts (methods M of worker-pool-service.ts).
 */
import { expect, test } from "bun:test";
import { connect } from "../../src/connect/registry.ts";
import { Client } from "../../src/rpc/client.ts";
import type { WorkerInit, WorkerSays } from "../../src/serve/worker-entry.ts";
import { until } from "../helpers/peer.ts";
import { M } from "./worker-pool-service.ts";

const ENTRY = new URL("../../src/serve/worker-entry.ts", import.meta.url).href;
const HANDLERS = new URL("./worker-pool-handlers.ts", import.meta.url).href;
const WATCHDOG_MS = 30_000;
let seq = 0;

/** A Worker running worker-entry.ts, serving the handlers on inproc://<name>; its messages land in `says`. */
async function startEntry(wait: WorkerInit["wait"]) {
  const name = `we-${process.pid}-${seq++}`;
  const worker = new Worker(ENTRY);
  const says: WorkerSays[] = [];
  worker.onmessage = (e: MessageEvent) => says.push(e.data as WorkerSays);
  const exited = new Promise<void>((r) => worker.addEventListener("close", () => r()));
  worker.postMessage({ type: "init", moduleUrl: HANDLERS, name, wait } satisfies WorkerInit);
  await until(() => says.length > 0, "the Worker's first message", 10_000);
  expect(says[0]).toMatchObject({ type: "ready" });
  /** The Worker's answer to a probe sent now. */
  const probe = async () => {
    const at = says.length;
    worker.postMessage({ type: "probe" });
    await until(() => says.slice(at).some((m) => m.type === "probe"), "the probe's answer", 10_000);
    return says.slice(at).find((m) => m.type === "probe") as Extract<WorkerSays, { type: "probe" }>;
  };
  const end = async () => {
    worker.terminate();
    await exited;
  };
  return { name, probe, end };
}

for (const wait of [{ mode: "blocking", spinNs: 0 }, { mode: "spin", spinNs: 20_000 }] as const) {
  test(`${wait.mode}: once its last connection closed the Worker's serving loop ends; a new connection is served`, async () => {
    const w = await startEntry(wait);
    try {
      for (let round = 0; round < 2; round++) {
        const client = new Client<unknown>(await connect(`inproc://${w.name}`), { window: 4 });
        const data = new Uint8Array([round, 1, 2, 3]);
        expect(Array.from(await client.request(M.echo, data))).toEqual(Array.from(data));
        expect((await w.probe()).sessions).toBe(1);
        client.close();
        // Not a runtime bound: a loop left running with no connection never ends (until's limit fails it).
        let last = await w.probe();
        const end = Date.now() + 5_000;
        while ((last.sessions !== 0 || last.looping) && Date.now() < end) last = await w.probe();
        expect(last).toEqual({ type: "probe", sessions: 0, looping: false });
      }
    } finally {
      await w.end();
    }
  }, WATCHDOG_MS);
}
