/**
 * Front of the Bun.serve benchmark (bench/serve-backend.bench.ts): a Bun.serve HTTP server on
 * 127.0.0.1 (port from the OS) whose handler answers each POST with its body, either echoed
 * here ("local") or by a hotpath backend over one client shared by every request ("hotpath URL
 * [wait JSON]": `await client.request(1, body)` per HTTP request).
 *   bun bench/peers/serve-front.ts local
 *   bun bench/peers/serve-front.ts hotpath shm://name '{"spinNs":0}'
 * Prints {"port", "pid"} when ready; exits when stdin closes.
 */

import { rpcConnect } from "../../src/index.ts";
import { ECHO_METHOD } from "./methods.ts";

const [mode, url, waitJson] = process.argv.slice(2);
let fetch: (req: Request) => Promise<Response>;
let close = () => {};
if (mode === "local") {
  fetch = async (req) => new Response(new Uint8Array(await req.arrayBuffer()));
} else if (mode === "hotpath") {
  const wait = waitJson ? JSON.parse(waitJson) : undefined;
  const client = await rpcConnect(url!, wait ? { wait } : {});
  close = () => {
    // SERVE_FRONT_STATS=1: the client connection's idle figures (segment transports) on stderr.
    const stats = (client.conn as { idleStats?: () => object }).idleStats;
    if (process.env.SERVE_FRONT_STATS === "1" && stats) console.error(JSON.stringify({ front: stats.call(client.conn) }));
    client.close();
  };
  fetch = async (req) => new Response(await client.request(ECHO_METHOD, new Uint8Array(await req.arrayBuffer())));
} else {
  throw new Error(`serve-front: mode "${mode}" is not local or hotpath`);
}
const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch });
console.log(JSON.stringify({ port: server.port, pid: process.pid }));
for await (const _ of Bun.stdin.stream());
server.stop(true);
close();
process.exit(0);
