/** Child of exit.test.ts: a Worker listens on inproc, the main thread calls it, terminates the Worker and exits normally. */
import { rpcConnect } from "../../src/index.ts";
import { spawnWorkerPeer } from "../helpers/peer.ts";

const url = `inproc://exit-${process.pid}`;
const peer = await spawnWorkerPeer(new URL("../conformance/peer-worker.ts", import.meta.url).href, url);
const c = await rpcConnect(peer.ready.url as string, { fallback: [] });
await c.request(1, new Uint8Array([1, 2, 3]));
c.close();
await peer.kill(); // Worker.terminate(): its own exit hook never runs
console.log(JSON.stringify({ pid: process.pid }));
