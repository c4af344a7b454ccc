/**
 * hotpath: a Bun-native RPC runtime. One RPC layer (src/rpc) over one Transport contract
 * (src/contract), with a transport per folder (src/tcp, ...).
 *
 *   import { serve, rpcConnect } from "hotpath";
 *   const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
 *   const c = await rpcConnect(s.url);
 *   await c.request(1, new Uint8Array([1, 2, 3]));
 *
 * This file is the package's public export list ("hotpath" resolves to its build, dist/index.js,
 * and its declarations): every type a README example or a typical service uses is exported here.
 * Importing it evaluates no transport module: the registry (src/connect) loads each transport the
 * first time a URL or transports() needs it; the transport types below are type-only exports.
 */

export * from "./errors.ts";
export * from "./contract/transport.ts";
export type { SegmentConfig, SizeClass } from "./segment/config.ts";
export { connect, listen, registerTransport, registerTransportLoader, transports, parseUrl } from "./connect/registry.ts";
export type { TransportLoader } from "./connect/registry.ts";
export type { ChosenConnection, ConnectionVia, SkippedTransport } from "./connect/registry.ts";
export { Client, DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_WINDOW, MAX_WINDOW } from "./rpc/client.ts";
export type { ClientOptions, OnResponse, RequestOptions } from "./rpc/client.ts";
export { Server, ServerSession, RequestHandle, DEFAULT_MAX_PENDING_BYTES } from "./rpc/server.ts";
export type { ErrorReply, ServerOptions } from "./rpc/server.ts";
export type { ServerErrorContext, ServerErrorSource, RequestErrorContext, SessionErrorContext, RefusedErrorContext } from "./rpc/report.ts";
export { serve, rpcConnect, dispatcher } from "./rpc/serve.ts";
export type { Serving, RpcClient } from "./rpc/serve.ts";
export { defineService, bindService, implement } from "./rpc/service.ts";
export type { MethodDef, ServiceDef, ServiceClient, ServiceImpl, Handlers, RawHandler, StreamKind, ClientMethod, ImplMethod } from "./rpc/service.ts";
export { raw, struct, bytes, msgpack, DecodeError } from "./rpc/codec.ts";
// streams, per-call metadata, interceptors and metrics (issue 16)
export { streamHandler, STREAM_INITIAL_CREDIT, DEFAULT_STREAM_WINDOW } from "./rpc/stream/index.ts";
export { TypedStream } from "./rpc/stream/index.ts";
export type { RpcStream, ClientStream, ServerStream, StreamOptions, StreamCall, StreamWindow, StreamHandlerFn, ServerStreamCall, ClientStreamCall } from "./rpc/stream/index.ts";
export { Metadata, encodeMetadata, decodeMetadata, withRemainingDeadline, remainingDeadline, traceparent, isValidTraceparent, DEADLINE_KEY, TRACEPARENT_KEY, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_BYTES } from "./rpc/metadata.ts";
export type { MetadataInit, MetadataValue } from "./rpc/metadata.ts";
export type { ClientInterceptor, UnaryCall, UnaryResult, ServerInterceptor, ServerCall } from "./rpc/interceptors.ts";
export { serverUnaryChain, serverStreamChain } from "./rpc/interceptors.ts";
export { RpcMetrics, MethodMetrics, toPrometheus, toPrometheusAll, metricsHandler, errorCodeName, PROMETHEUS_CONTENT_TYPE } from "./rpc/metrics.ts";
export type { RpcMetricsSnapshot, MethodSnapshot, MetricsRole, PrometheusOptions, RpcMetricsOptions } from "./rpc/metrics.ts";
export { LatencyHistogram } from "./rpc/histogram.ts";
export type { HistogramSnapshot } from "./rpc/histogram.ts";
export { METRICS_METHOD, metricsMethodHandler, withMetricsMethod, requestMetricsText } from "./rpc/metrics-method.ts";
export type { BytesField, Codec, FieldType, StructCodec, StructValue } from "./rpc/codec.ts";
// ucx connections and their RMA regions (types only). A connection
// made with `ucx: { rma: true }` is a UcxConnection: `(conn as UcxConnection).registerMemory(len)`.
export type { UcxConnection } from "./ucx/connection.ts";
export type { CasResult, LocalRegion, RemoteRegion } from "./ucx/rma.ts";
// rdma connections and their one-sided regions (types only). Every connection over rdma:// is an
// RdmaConnection: `(conn as RdmaConnection).registerMemory(len)`.
export type { RdmaConnection } from "./rdma/connection.ts";
export type { RdmaLocalRegion, RdmaRemoteRegion } from "./rdma/rma.ts";
export * as wire from "./rpc/wire.ts";
export { ConnectionPool } from "./pool/pool.ts";
export type { PoolOptions, TargetOptions, PooledClient, TargetStats } from "./pool/pool.ts";
export { Channel, PendingLimitError, KEEPALIVE_METHOD, DEFAULT_MAX_PENDING_CALLS, DEFAULT_BACKOFF_RESET_AFTER_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS } from "./pool/channel.ts";
export type { ChannelOptions, CallOptions, ConnectivityState, Connector } from "./pool/channel.ts";
export { Backoff, backoffPolicy, attemptTimes, seededRandom, DEFAULT_BACKOFF } from "./pool/backoff.ts";
export type { BackoffPolicy, Random } from "./pool/backoff.ts";
export { realClock, ManualClock } from "./pool/clock.ts";
export type { Clock, TimerHandle } from "./pool/clock.ts";
// kv: the key-value store (server, client, store) on the RPC layer. Loaded on first use, like the
// transports (the store's arena may map huge pages through the FFI): kvServe / kvConnect load it
// themselves, loadKv() hands over the whole module (KvStore, protocol, hashing). The kv error
// classes come with errors.ts above.
export type { KvServer, KvServerOptions, KvServerHooks, KvClient, KvClientOptions, KvKey, KvOnResult, KvStore, KvStoreOptions, KvStoreStats, KvCasResult, KvValue, KvLayout, KvHello, KvServerConn } from "./kv/index.ts";
/** The kv module (src/kv/index.ts), loaded on first call. */
export const loadKv = (): Promise<typeof import("./kv/index.ts")> => import("./kv/index.ts");
/** See src/kv/server.ts: serves one KvStore on every URL of `opts.listen`. */
export const kvServe = async (...args: Parameters<typeof import("./kv/index.ts").kvServe>): Promise<import("./kv/index.ts").KvServer> => (await loadKv()).kvServe(...args);
/** See src/kv/client.ts: connects to one or more kv servers. */
export const kvConnect = async (...args: Parameters<typeof import("./kv/index.ts").kvConnect>): Promise<import("./kv/index.ts").KvClient> => (await loadKv()).kvConnect(...args);
// serve: the worker pool (src/serve/worker-pool.ts), loaded on first use like kv: handlers in N
// Workers over inproc. WorkerCrashedError and WorkerStartError come with errors.ts above.
export type { WorkerPool, WorkerPoolOptions, WorkerPoolStats } from "./serve/worker-pool.ts";
/** See src/serve/worker-pool.ts: starts `opts.size` Workers serving the handlers module at `moduleUrl`. */
export async function workerPool<S extends import("./rpc/service.ts").ServiceDef = {}>(
  moduleUrl: string | URL,
  opts: import("./serve/worker-pool.ts").WorkerPoolOptions<S>,
): Promise<import("./serve/worker-pool.ts").WorkerPool<S>> {
  return (await import("./serve/worker-pool.ts")).workerPool(moduleUrl, opts);
}
