/**
 * Child of terminate.test.ts: loads the ucx transport (libucs, when installed), then many times
 * starts a Worker serving inproc, connects, checks echoed bytes, and terminates the Worker while
 * the connection is idle, while calls are in flight, or after the client closed; half the rounds
 * with four other sessions held open, so their segments come from `new SharedArrayBuffer` instead
 * of a WebAssembly.Memory (freshSharedBuffer). Prints {"rounds","ucx"} and exits 0.
 */
import { Client, connect, listen, transports, TransportClosedError, type Connection } from "../../src/index.ts";

const ucx = (await transports()).find((t) => t.scheme === "ucx")?.unavailableReason === null;
const WORKER = new URL("./terminate-worker.ts", import.meta.url).href;
const ROUNDS = 4;

async function round(tag: string, state: "idle" | "in-flight" | "closed"): Promise<void> {
  const w = new Worker(WORKER);
  const url: string = await new Promise((r) => {
    w.onmessage = (e) => r(e.data.url);
    w.postMessage({ url: `inproc://term-${process.pid}-${tag}` });
  });
  const client = new Client(await connect(url));
  const data = new Uint8Array(32).map((_, i) => i ^ tag.length);
  for (let k = 0; k < 100; k++) {
    const reply = await client.request(1, data);
    if (reply.length !== 32 || reply.some((b, i) => b !== data[i])) throw new Error(`${tag}: wrong echo`);
  }
  await Bun.sleep(60); // the Worker's loop runs long enough to be optimized
  const inFlight = state === "in-flight" ? Array.from({ length: 64 }, () => client.request(1, data).then(() => null, (e) => e)) : [];
  if (state === "closed") client.close();
  const gone = new Promise((r) => w.addEventListener("close", r));
  w.terminate();
  await gone;
  for (const r of await Promise.all(inFlight)) if (r !== null && !(r instanceof TransportClosedError)) throw r;
  client.close();
}

let rounds = 0;
for (const held of [0, 4]) {
  const heldConns: Connection[] = [];
  const l = held ? await listen(`inproc://term-held-${process.pid}`) : null;
  for (let i = 0; i < held; i++) heldConns.push(await connect(l!.url));
  for (let i = 0; i < ROUNDS; i++) {
    for (const state of ["idle", "in-flight", "closed"] as const) {
      await round(`${held}-${i}-${state}`, state);
      rounds++;
    }
  }
  for (const c of heldConns) c.close();
  l?.close(true);
}
console.log(JSON.stringify({ rounds, ucx }));
