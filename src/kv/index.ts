/**
 * hotpath kv: a key-value store on the RPC layer (server, client, store), with one-sided reads
 * where the transport has RMA. This barrel is what `hotpath` exports for kv.
 *
 *   await using server = await kvServe({ listen: ["shm://kv"], memoryBytes: 64 << 20 });
 *   await using kv = await kvConnect(server.urls[0]!);
 *   await kv.put("k", "v"); (await kv.get("k"))?.version;
 *
 * Threading: servers, clients and stores belong to the thread that made them.
 */

export { kvServe, listenerMessageLimit, DEFAULT_WRITE_BUFFER_BYTES } from "./server.ts";
export type { KvServer, KvServerOptions, KvServerHooks } from "./server.ts";
export { kvConnect, DEFAULT_KV_TIMEOUT_MS, DEFAULT_LARGE_PUT_BYTES, KV_BACKOFF } from "./client.ts";
export type { KvClient, KvClientOptions, KvKey, KvOnResult } from "./client.ts";
export { KvStore } from "./store.ts";
export type { KvStoreOptions, KvStoreStats, KvCasResult, KvValue, KvLayout } from "./store.ts";
export { Rendezvous, urlSeed } from "./hash.ts";
export * as kvProtocol from "./protocol.ts";
export type { KvHello, KvServerConn, KvRmaServer, KvOneSidedClient, KvHelloOffer } from "./protocol.ts";
export { KvFullError, KvKeyError, KvValueTooLargeError, KvSnapshotError, KvUnavailableError } from "../errors.ts";
