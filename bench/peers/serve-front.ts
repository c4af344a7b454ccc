/**
 * Front of the Bun.serve benchmark (bench/serve.bench.ts): a Bun.serve HTTP server on
 * 127.0.0.1 (port from the OS) answering each POST with its body. The same handler shape in
 * every mode; what produces the response differs:
 *   local                 the handler copies the body itself (no backend)
 *   hotpath URL           a hotpath backend (shm / tcp / ucx by URL) echoes it: one ConnectionPool
 *                         client shared by every request, `request(1, body, { signal: req.signal })`
 *   fetch URL             `fetch(URL, { method: "POST", body })` to a second Bun.serve
 *   grpc URL              one @grpc/grpc-js client, unary echo (raw bytes), to a grpc-js server
 *   kv URL                hotpath kv (kvConnect, one client): GET of the key named by the body
 *   redis URL             Bun's RedisClient (one client, auto-pipelined): GET of that key
 *   coexist SHM TCP       local, and on the same event loop serve() echo on SHM and TCP (item 2)
 * The KV modes first store every key of serve-bodies.ts's set with itself as the value, so a
 * correct response equals its request (the load generator's check). SERVE_FRONT_CORRUPT=N flips
 * one byte of the N-th response (the test of the load generators' byte check).
 *   bun bench/peers/serve-front.ts hotpath shm://name
 * Prints {"port", "pid"[, "rpc"]} when ready; exits when stdin closes.
 */

import { ConnectionPool, kvConnect, serve } from "../../src/index.ts";
import { ECHO_METHOD } from "./methods.ts";
import { GRPC_ECHO_PATH } from "./other-servers.ts";
import { kvKeys } from "./serve-bodies.ts";

const [mode, url, url2] = process.argv.slice(2) as [string, string | undefined, string | undefined];
/** Body bytes of the KV key set (the bench's request size). */
const KV_BYTES = Number(process.env.SERVE_FRONT_BYTES ?? 32);
let answer: (req: Request, body: Uint8Array) => Promise<Uint8Array> | Uint8Array;
let close: () => Promise<void> | void = () => {};
const extra: Record<string, unknown> = {};

if (mode === "local") {
  answer = (_req, b) => b;
} else if (mode === "hotpath") {
  // The pattern the README teaches: one pooled client for the process, the request's signal as the call's.
  const pool = new ConnectionPool();
  const backend = pool.client(url!);
  await backend.request(ECHO_METHOD, new Uint8Array(1));
  answer = (req, b) => backend.request(ECHO_METHOD, b, { signal: req.signal });
  close = () => pool.close();
} else if (mode === "fetch") {
  answer = async (_req, b) => new Uint8Array(await (await fetch(url!, { method: "POST", body: b })).arrayBuffer());
} else if (mode === "grpc") {
  const grpc = await import("@grpc/grpc-js");
  const passthrough = (x: Buffer) => x;
  const Ctor = grpc.makeGenericClientConstructor(
    { echo: { path: GRPC_ECHO_PATH, requestStream: false, responseStream: false, requestSerialize: passthrough, requestDeserialize: passthrough, responseSerialize: passthrough, responseDeserialize: passthrough } },
    "Echo",
  );
  const client = new Ctor(new URL(url!).host, grpc.credentials.createInsecure()) as unknown as { echo(b: Buffer, cb: (e: Error | null, r: Buffer) => void): void; close(): void };
  const call = (b: Uint8Array) => new Promise<Uint8Array>((resolve, reject) => client.echo(Buffer.from(b.buffer, b.byteOffset, b.length), (e, r) => (e ? reject(e) : resolve(r))));
  await call(new Uint8Array(1));
  answer = (_req, b) => call(b);
  close = () => client.close();
} else if (mode === "kv") {
  const kv = await kvConnect(url!);
  for (const k of kvKeys(KV_BYTES)) await kv.put(k, k);
  answer = async (_req, b) => {
    const v = await kv.get(b);
    if (v === null) throw new Error("serve-front kv: a stored key is missing");
    return v.value.slice();
  };
  close = () => kv.close();
} else if (mode === "redis") {
  const { RedisClient } = await import("bun");
  const redis = new RedisClient(url!, { autoReconnect: false });
  await redis.connect();
  const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.length);
  for (const k of kvKeys(KV_BYTES)) await redis.set(buf(k), buf(k));
  answer = async (_req, b) => {
    const v = await redis.getBuffer(buf(b));
    if (v === null) throw new Error("serve-front redis: a stored key is missing");
    return v;
  };
  close = () => redis.close();
} else if (mode === "coexist") {
  const echo = { [ECHO_METHOD]: (h: { data: Uint8Array }) => h.data };
  const shm = await serve(url!, echo);
  const tcp = await serve(url2!, echo);
  extra.rpc = { shm: shm.url, tcp: tcp.url };
  answer = (_req, b) => b;
  close = () => {
    shm.close();
    tcp.close();
  };
} else {
  throw new Error(`serve-front: mode "${mode}" is not local, hotpath, fetch, grpc, kv, redis or coexist`);
}

const corruptAt = Number(process.env.SERVE_FRONT_CORRUPT ?? 0);
let answered = 0;
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  async fetch(req) {
    const out = await answer(req, new Uint8Array(await req.arrayBuffer()));
    if (++answered === corruptAt && out.length > 5) {
      const bad = out.slice();
      bad[5] = bad[5]! ^ 0xff;
      return new Response(bad);
    }
    return new Response(out);
  },
});
console.log(JSON.stringify({ port: server.port, pid: process.pid, ...extra }));
for await (const _ of Bun.stdin.stream());
server.stop(true);
await close();
process.exit(0);
