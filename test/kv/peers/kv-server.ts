/**
 * A kv server process for the kv tests: `bun test/kv/peers/kv-server.ts '<KvServerOptions JSON>'`.
 * Prints {"urls":[...]} when listening, or {"error":{"name","message"}} when kvServe failed (then
 * exits 3). SIGTERM closes gracefully (saving the snapshot when configured) and exits 0; so does
 * the parent closing stdin.
 */
import { kvServe } from "../../../src/kv/index.ts";

const opts = JSON.parse(process.argv[2]!);
let server;
try {
  server = await kvServe(opts);
} catch (e) {
  console.log(JSON.stringify({ error: { name: (e as Error).name, message: (e as Error).message } }));
  process.exit(3);
}
console.log(JSON.stringify({ urls: server.urls, pid: process.pid }));
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await server.close({ drainMs: 200 });
  process.exit(0);
};
process.on("SIGTERM", stop);
(async () => {
  for await (const _ of Bun.stdin.stream()) {
    // input is ignored; EOF ends the server
  }
  await stop();
})();
