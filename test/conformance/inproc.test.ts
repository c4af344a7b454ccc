import { spawnWorkerPeer, type Peer } from "../helpers/peer.ts";
import { runWaitModeMatrix } from "../shm/matrix.ts";
import { runConformance, type Fixture } from "./suite.ts";

let n = 0;
const unique = () => `conf-${n++}`;
const WORKER = new URL("./peer-worker.ts", import.meta.url).href;
const SEGMENT_PEER = new URL("../shm/segment-peer.ts", import.meta.url).href;

/** segment-peer.ts in a Worker: sent {args}, posts its ready object; killing it terminates the Worker. */
async function spawnSegmentWorker(args: string[]): Promise<Peer> {
  const worker = new Worker(SEGMENT_PEER);
  const ready = await new Promise<Record<string, any>>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`segment-peer worker ${args.join(" ")}: not ready`)), 15_000);
    worker.onmessage = (e) => {
      clearTimeout(t);
      resolve(e.data);
    };
    worker.onerror = (e) => {
      clearTimeout(t);
      reject(new Error(`segment-peer worker: ${e.message}`));
    };
    worker.postMessage({ args });
  });
  return {
    proc: null as never,
    ready,
    lines: [],
    nextLine: () => Promise.reject(new Error("worker peers report through messages")),
    async kill() {
      worker.terminate();
    },
  };
}

const fixture: Fixture = {
  name: "inproc",
  listenUrl: () => `inproc://${unique()}`,
  async refusedUrl() {
    return `inproc://${unique()}`;
  },
  async blackhole() {
    // A rendezvous socket that accepts and never answers the handshake.
    const name = unique();
    const l = Bun.listen({ unix: `\0hotpath-inproc-${process.pid}-${name}`, socket: { data() {} } });
    return { url: `inproc://${name}`, close: () => l.stop(true) };
  },
  spawnServer: (url) => spawnWorkerPeer(WORKER, url),
};

// The whole suite in the default (adaptive) mode and in async mode; spin and blocking modes,
// where nothing moves unless the caller polls, run the transport-level matrix below.
runConformance(fixture);
runConformance({ ...fixture, label: "inproc (async)", wait: { mode: "async" } });
runWaitModeMatrix({
  name: "inproc",
  url: () => `inproc://${unique()}`,
  spawnPeer: spawnSegmentWorker,
  spawnRpcServer: (url) => spawnWorkerPeer(WORKER, url),
});
