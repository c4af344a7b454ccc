import { runConformance } from "./suite.ts";
import { spawnWorkerPeer } from "../helpers/peer.ts";

let n = 0;
const unique = () => `conf-${n++}`;
const WORKER = new URL("./peer-worker.ts", import.meta.url).href;

runConformance({
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
});
