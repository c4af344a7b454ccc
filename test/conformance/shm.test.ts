import { afterAll } from "bun:test";
import { readdirSync } from "node:fs";
import { removeStaleSockets, socketDir, socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnPeer } from "../helpers/peer.ts";
import { runWaitModeMatrix } from "../shm/matrix.ts";
import { runConformance, type Fixture } from "./suite.ts";

let n = 0;
const unique = () => `conf-${process.pid}-${n++}`;
const SEGMENT_PEER = new URL("../shm/segment-peer.ts", import.meta.url).pathname;
const PEER_SERVER = new URL("./peer-server.ts", import.meta.url).pathname;

const fixture: Fixture = {
  name: "shm",
  listenUrl: () => `shm://${unique()}`,
  async refusedUrl() {
    return `shm://${unique()}`;
  },
  async blackhole() {
    // A listener socket that accepts and never answers the handshake.
    const name = unique();
    const l = Bun.listen({ unix: `${socketDir("blackhole", process.geteuid!(), "listen")}/shm-${name}.sock`, socket: { data() {} } });
    return { url: `shm://${name}`, close: () => l.stop(true) };
  },
};

// The whole suite in the default (adaptive) mode and in async mode; spin and blocking modes,
// where nothing moves unless the caller polls, run the transport-level matrix below.
runConformance(fixture);
runConformance({ ...fixture, label: "shm (async)", wait: { mode: "async" } });
runWaitModeMatrix({
  name: "shm",
  url: () => `shm://${unique()}`,
  spawnPeer: (args) => spawnPeer(SEGMENT_PEER, args),
  spawnRpcServer: (url) => spawnPeer(PEER_SERVER, [url]),
});

afterAll(async () => {
  const left = readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"));
  if (left.length > 0) throw new Error(`segments left in /dev/shm: ${left.join(", ")}`);
  // Servers killed with SIGKILL leave their socket files: remove those (nobody listens on them).
  const dir = socketDirOf(process.geteuid!());
  const ours = (f: string) => f.includes(`conf-${process.pid}-`);
  let sockets: string[] = [];
  for (let i = 0; i < 20; i++) {
    await removeStaleSockets(dir, ours);
    sockets = readdirSync(dir).filter(ours);
    if (sockets.length === 0) break;
    await Bun.sleep(100); // a peer killed just now
  }
  if (sockets.length > 0) throw new Error(`listeners left in ${dir}: ${sockets.join(", ")}`);
});
