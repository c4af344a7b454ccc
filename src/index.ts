/**
 * hotpath: a Bun-native RPC runtime. One RPC layer (src/rpc) over one Transport contract
 * (src/transport), with a transport per folder (src/tcp, ...).
 *
 *   import { serve, rpcConnect } from "hotpath";
 *   const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
 *   const c = await rpcConnect(s.url);
 *   await c.request(1, new Uint8Array([1, 2, 3]));
 */

export * from "./errors.ts";
export * from "./transport/transport.ts";
export { connect, listen, registerTransport, transports, parseUrl } from "./transport/registry.ts";
export type { ChosenConnection, ConnectionVia, SkippedTransport } from "./transport/registry.ts";
export { Client, DEFAULT_WINDOW, MAX_WINDOW } from "./rpc/client.ts";
export type { ClientOptions, OnResponse, RequestOptions } from "./rpc/client.ts";
export { Server, ServerSession, RequestHandle } from "./rpc/server.ts";
export type { ServerOptions } from "./rpc/server.ts";
export type { ServerErrorContext, ServerErrorSource, RequestErrorContext, SessionErrorContext, RefusedErrorContext } from "./rpc/report.ts";
export { serve, rpcConnect, dispatcher } from "./rpc/serve.ts";
export type { Serving, RpcClient } from "./rpc/serve.ts";
export { defineService, bindService, implement } from "./rpc/service.ts";
export type { MethodDef, ServiceDef, ServiceClient, ServiceImpl, Handlers, RawHandler } from "./rpc/service.ts";
export { raw, struct, bytes, msgpack, DecodeError } from "./rpc/codec.ts";
export type { Codec, StructCodec, StructValue } from "./rpc/codec.ts";
export * as wire from "./rpc/wire.ts";
