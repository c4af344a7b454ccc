/**
 * Echo servers for the peers a Bun user would pick instead of hotpath, one process each:
 *   bun bench/peers/other-servers.ts http HOST        Bun.serve: POST body echoed
 *   bun bench/peers/other-servers.ts ws HOST          Bun.serve WebSocket: every binary message echoed
 *   bun bench/peers/other-servers.ts grpc HOST        @grpc/grpc-js unary echo (raw bytes, no protobuf)
 * Prints {"url"} when ready; exits when stdin closes. (Bun.spawn IPC and Worker postMessage
 * need no server process of their own: see ipc-child.ts and echo-worker.ts.)
 */

import { servePeerUntilEof } from "./until-eof.ts";

export const GRPC_ECHO_PATH = "/hotpath.bench.Echo/Echo";

async function main(): Promise<{ url: string; close(): void }> {
  const [mode, where] = process.argv.slice(2) as [string, string];
  if (mode === "http") {
    const s = Bun.serve({ hostname: where, port: 0, fetch: async (req) => new Response(await req.arrayBuffer()) });
    return { url: `http://${where}:${s.port}/`, close: () => s.stop(true) };
  }
  if (mode === "ws") {
    const s = Bun.serve({
      hostname: where,
      port: 0,
      fetch: (req, server) => (server.upgrade(req) ? undefined : new Response("upgrade required", { status: 426 })),
      websocket: { message: (ws, msg) => void ws.send(msg) },
    });
    return { url: `ws://${where}:${s.port}/`, close: () => s.stop(true) };
  }
  if (mode === "grpc") {
    const grpc = await import("@grpc/grpc-js");
    const server = new grpc.Server();
    const passthrough = (b: Buffer) => b;
    server.addService(
      { echo: { path: GRPC_ECHO_PATH, requestStream: false, responseStream: false, requestSerialize: passthrough, requestDeserialize: passthrough, responseSerialize: passthrough, responseDeserialize: passthrough } },
      { echo: (call: { request: Buffer }, cb: (e: null, r: Buffer) => void) => cb(null, call.request) } as never,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${where}:0`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    return { url: `grpc://${where}:${port}`, close: () => server.forceShutdown() };
  }
  throw new Error(`other-servers: unknown mode "${mode}"`);
}

if (import.meta.main) servePeerUntilEof(await main());
