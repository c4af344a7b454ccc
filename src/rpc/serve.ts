/**
 * The convenient server and client entry points.
 *
 * `serve(url, handlers)` listens on `url` and answers every request with its handler's bytes.
 * A handler that throws (or rejects) anything becomes an error response, so the caller's request
 * rejects with RemoteError carrying the error's name and message (a value that is not an Error,
 * or whose getters throw, still gets one); a handler returning something other than bytes fails
 * that call with a HandlerReturnError and is reported on the server (onError); a method without
 * a handler gets an UnknownMethodError response; none of it stops the server. A handler that
 * does not finish synchronously has its request detached from transport memory, so it never
 * holds the receive ring. A reply that meets transport backpressure waits in the session's
 * backlog and goes out when the connection drains, never dropped. `opts.interceptors` run
 * around every handler (interceptors.ts; none: the dispatch is unchanged).
 *
 * `rpcConnect(url, { service })` connects (with fallback, through the URL registry) and wraps
 * the connection in a Client, with `client.svc` typed from the service definition.
 */


import { connect, listen, type ConnectionVia } from "../connect/registry.ts";
import { EMPTY_BYTES } from "../bytes.ts";
import { UsageError } from "../errors.ts";
import { type ConnectOptions, type ListenOptions, type Listener } from "../contract/transport.ts";
import { Client, type ClientOptions } from "./client.ts";
import { describeValue } from "./validate.ts";
import { RequestHandle, Server, type DrainResult, type ServerOptions } from "./server.ts";
import { errorReplyOf } from "./handle.ts";
import { wantsDetachFirst } from "./detach.ts";
import { withMetricsMethod } from "./metrics-method.ts";
import { serverStreamChain } from "./interceptors.ts";
import { isStreamHandler, sessionStreams, type StreamHandlerFn } from "./stream/server-stream.ts";
import type { StreamWindow } from "./stream/types.ts";
import { bindService, type Handlers, type RawHandler, type ServiceClient, type ServiceDef } from "./service.ts";
import { checkInterceptors, serverCall, serverUnaryChain, type ServerCall, type ServerInterceptor } from "./interceptors.ts";

export interface Serving extends Disposable {
  readonly url: string;
  readonly server: Server;
  readonly listener: Listener;
  close(): void;
  /** Graceful drain: see Server.drain() (stops listening, GOAWAY, in-flight calls finish, then closes). */
  drain(timeoutMs: number): Promise<DrainResult>;
}

/**
 * Dispatches each request to its handler by method id (the engine behind serve()), through
 * `interceptors` when any has `unary` (interceptors.ts; the first outermost): then every request
 * is detached first (interceptors may await), the handler reads what the innermost interceptor
 * passed on, and the chain's outcome is the response. A handler's throw and a bad return are
 * reported (onError) as without interceptors; an interceptor's own throw is its answer, not reported.
 */
export function dispatcher(handlers: Handlers, interceptors?: readonly ServerInterceptor[]): (h: RequestHandle) => void {
  const table = new Map<number, RawHandler>();
  // `async function` handlers get their request out of transport memory before they run, so a
  // view of h.data they keep across an await stays valid; others are detached if they return
  // a Promise (a non-async handler must not keep views of h.data past its return).
  const early = new Set<number>();
  for (const [key, fn] of Object.entries(handlers)) {
    const id = Number(key);
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new UsageError(`serve: method id "${key}" is not an integer in 0..${0xffffffff}`);
    if (typeof fn !== "function") throw new UsageError(`serve: the handler for method ${id} is ${describeValue(fn)}, not a function`);
    table.set(id, fn);
    if (wantsDetachFirst(fn)) early.add(id);
  }
  const list = checkInterceptors(interceptors, "serve");
  const chain = list === undefined || !list.some((ic) => ic.unary !== undefined) ? null : serverUnaryChain(list, (call) => runHandler(table, call));
  return (h) => {
    // Its metadata was malformed: the connection is aborted already (handle.ts readMetadata()).
    if (h.cancelled && h.session.conn.closed) return h.drop();
    const fn = table.get(h.method);
    if (fn === undefined) {
      h.respond(null, { name: "UnknownMethodError", message: `no handler for method ${h.method}` });
      return;
    }
    if (chain !== null) {
      h.detach();
      chain(serverCall(h)).then(
        (v) => finish(h, v),
        (e) => h.respond(null, errorReplyOf(e)),
      );
      return;
    }
    if (early.has(h.method)) h.detach();
    let out: unknown;
    try {
      out = fn(h);
    } catch (e) {
      fail(h, e);
      return;
    }
    let thenable: boolean;
    try {
      thenable = isThenable(out);
    } catch {
      return badReturn(h, "a value that cannot be inspected"); // e.g. a Proxy whose traps throw
    }
    if (!thenable) return finish(h, out);
    h.detach();
    let settled: Promise<unknown>;
    try {
      settled = Promise.resolve(out as PromiseLike<unknown>);
    } catch (e) {
      return fail(h, e);
    }
    settled.then(
      (v) => finish(h, v),
      (e) => fail(h, e),
    );
  };
}

const isThenable = (out: unknown): boolean => out instanceof Promise || (out !== null && typeof out === "object" && typeof (out as PromiseLike<unknown>).then === "function");

/** A handler's bad return, inside an interceptor chain: reported, then the chain's error (name HandlerReturnError). */
class HandlerReturnError extends Error {
  override name = "HandlerReturnError";
}

/**
 * The innermost step of an interceptor chain: the handler of `call.method`, reading the data
 * and metadata the interceptors passed on. Resolves with its bytes (nothing: empty); a throw or
 * a bad return is reported and rejects.
 */
async function runHandler(table: Map<number, RawHandler>, call: ServerCall): Promise<Uint8Array> {
  const h = call.handle as RequestHandle;
  if (call.data !== h.data || call.metadata !== h.metadata) h.replaceRequest(call.data, call.metadata);
  const fn = table.get(h.method)!;
  let v: unknown;
  try {
    v = fn(h);
    if (isThenable(v)) v = await (v as PromiseLike<unknown>);
  } catch (e) {
    h.session.server.report(e, "handler", h);
    throw e;
  }
  let bytes: boolean;
  try {
    bytes = v instanceof Uint8Array;
  } catch {
    bytes = false;
  }
  if (bytes) return v as Uint8Array;
  if (v === undefined || v === null) return EMPTY_BYTES;
  const message = `the handler for method ${h.method} returned ${describeValue(v)}; a handler returns a Uint8Array (or nothing)`;
  h.session.server.report(new TypeError(message), "return", h);
  throw new HandlerReturnError(message);
}

/** A handler's result: bytes (or nothing) become the response; anything else fails the call. Never throws. */
function finish(h: RequestHandle, v: unknown): void {
  let bytes: boolean;
  try {
    bytes = v instanceof Uint8Array;
  } catch {
    return badReturn(h, "a value that cannot be inspected");
  }
  if (bytes) return h.respond(v as Uint8Array);
  if (v === undefined || v === null) return h.respond(EMPTY_BYTES);
  badReturn(h, describeValue(v));
}

function badReturn(h: RequestHandle, what: string): void {
  const message = `the handler for method ${h.method} returned ${what}; a handler returns a Uint8Array (or nothing)`;
  h.session.server.report(new TypeError(message), "return", h);
  h.respond(null, { name: "HandlerReturnError", message });
}

/** A handler threw or rejected: an error response with its name and message, whatever was thrown. */
function fail(h: RequestHandle, e: unknown): void {
  h.session.server.report(e, "handler", h);
  h.respond(null, errorReplyOf(e));
}


/**
 * Listens on `url` and serves `handlers` (method id → handler) until close(). `opts` holds the
 * listener's options and the server's (maxPendingBytes, onSessionClose, and onError, which sees
 * every handler failure, every session that ends with an error and every peer the listener
 * refuses; without it each is one rate-limited line on stderr). UsageError for a bad handler
 * table or option; the transport's error when it cannot listen. Runs on the calling thread's
 * event loop; the returned Serving belongs to that thread.
 */
export async function serve(
  url: string,
  handlers: Handlers,
  opts: ListenOptions & Omit<ServerOptions, "onRequest" | "streams"> & { interceptors?: readonly ServerInterceptor[]; streamWindow?: StreamWindow } = {},
): Promise<Serving> {
  // Handlers and options are checked before anything listens: a UsageError leaves nothing open.
  // Handlers are application code that may keep `h`: no pooled handles (a late use is a UsageError).
  // Stream handlers (streamHandler()) serve STREAM_STARTs, through the interceptors' `stream`
  // members; a unary request to one of their methods is answered with UnknownMethodError.
  const unary: Record<string, RawHandler> = {}; // by the table's own keys: the dispatcher checks them
  const streams = new Map<number, StreamHandlerFn>();
  for (const [key, fn] of Object.entries(handlers)) {
    if (!isStreamHandler(fn)) {
      unary[key] = fn;
      continue;
    }
    const all = Array.isArray(opts.interceptors) ? opts.interceptors : []; // a bad list: the dispatcher's UsageError
    const ics = all.filter((ic) => ic !== null && typeof ic === "object" && typeof ic.stream === "function");
    streams.set(Number(key), ics.length === 0 ? fn : serverStreamChain(ics, async (s) => fn(s)));
    // Answered here (not thrown: no handler failed), so the dispatcher's own reply finds it consumed.
    unary[key] = (h) => h.respond(null, { name: "UnknownMethodError", message: `method ${key} is a stream: open it with client.stream()` });
  }
  const lookup = (m: number) => streams.get(m) ?? (handlers[m] === undefined ? `no handler for method ${m}` : `method ${m} is not a stream: call it with request()`);
  const streamOpts = { window: opts.streamWindow };
  // With metrics on, METRICS_METHOD answers the Prometheus text (`hotpath metrics URL`; metrics-method.ts).
  const table = opts.metrics ? withMetricsMethod(unary) : unary;
  const server = new Server({ ...opts, poolHandles: false, onRequest: dispatcher(table, opts.interceptors), streams: sessionStreams(lookup, streamOpts) });
  const listener = await listen(url, opts);
  // The listener is serve()'s own: its refusals are the server's to report (onError "refused").
  listener.onRefused((error, reason) => server.reportFailure(error, { source: "refused", method: null, session: null, reason, listener }));
  server.attach(listener);
  const close = () => server.close();
  return { url: listener.url, server, listener, close, drain: (ms) => server.drain(ms), [Symbol.dispose]: close };
}

export type RpcClient<S extends ServiceDef> = Client<any> & { readonly svc: ServiceClient<S>; readonly via: ConnectionVia };

/**
 * Connects to `url` (with `opts.fallback`, through the URL registry: see connect()) and wraps
 * the connection in a Client; `svc` holds the typed methods of `opts.service`, `via` says which
 * candidate connected and why the others were skipped. The client belongs to the calling thread.
 */
export async function rpcConnect<S extends ServiceDef = {}>(
  url: string,
  opts: ConnectOptions & ClientOptions & { service?: S } = {},
): Promise<RpcClient<S>> {
  const conn = await connect(url, opts);
  let client: Client<any>;
  let svc: ServiceClient<S>;
  try {
    client = new Client<any>(conn, opts);
    svc = opts.service ? bindService(client, opts.service) : ({} as ServiceClient<S>);
  } catch (e) {
    conn.close(); // a bad client option (window, interceptors, metrics): nothing stays open
    throw e;
  }
  return Object.assign(client, { svc, via: conn.via });
}


