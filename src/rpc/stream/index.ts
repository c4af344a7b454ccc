/**
 * The streams' public surface (what src/index.ts exports): the handler marker, the protocol's
 * windows and the stream shapes. The engine lives beside it (credit.ts, base.ts,
 * client-stream.ts, server-stream.ts).
 *
 * Example: serve(url, { 7: streamHandler(async (s) => { for await (const m of s) await s.send(m); }) });
 */

export { streamHandler } from "./server-stream.ts";
export type { StreamHandlerFn } from "./server-stream.ts";
export { STREAM_INITIAL_CREDIT, DEFAULT_STREAM_WINDOW } from "./credit.ts";
export type { RpcStream, ClientStream, ServerStream, StreamOptions, StreamCall, StreamWindow } from "./types.ts";
export { TypedStream } from "./typed.ts";
export type { ServerStreamCall, ClientStreamCall } from "./typed.ts";
