import { afterAll } from "bun:test";
import { readdirSync } from "node:fs";
import { removeStaleSockets, socketDir, socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnWorkerPeer, type Peer } from "../helpers/peer.ts";
import { runWaitModeMatrix } from "../shm/matrix.ts";
import { runConformance, type Fixture } from "./suite.ts";

let n = 0;
const unique = () => `conf-${n++}`;
const WORKER = new URL("./peer-worker.ts", import.meta.url).href;
const SEGMENT_PEER = new URL("../shm/segment-peer.ts", import.meta.url).href;

/** segment-peer.ts in a Worker: sent {args}, posts its ready object; killing it terminates the Worker. */
const spawnSegmentWorker = (args: string[]): Promise<Peer> => spawnWorkerPeer(SEGMENT_PEER, { args });

const fixture: Fixture = {
  name: "inproc",
  listenUrl: () => `inproc://${unique()}`,
  async refusedUrl() {
    return `inproc://${unique()}`;
  },
  async blackhole() {
    // A rendezvous socket that accepts and never answers the handshake.
    const name = unique();
    const l = Bun.listen({ unix: `${socketDir("blackhole", process.geteuid!(), "listen")}/inproc-${process.pid}-${name}.sock`, socket: { data() {} } });
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

afterAll(async () => {
  // Listeners in terminated Workers close their sockets but leave the files: remove those
  // (a Worker terminated just now may take a moment to close its socket).
  const dir = socketDirOf(process.geteuid!());
  const ours = (f: string) => f.startsWith(`inproc-${process.pid}-conf-`);
  let left: string[] = [];
  for (let i = 0; i < 20; i++) {
    await removeStaleSockets(dir, ours);
    left = readdirSync(dir).filter(ours);
    if (left.length === 0) break;
    await Bun.sleep(100);
  }
  if (left.length > 0) throw new Error(`listeners left in ${dir}: ${left.join(", ")}`);
});
