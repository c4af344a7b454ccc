/**
 * Interceptors: code that runs around every convenient call (request(), and streams) on the
 * client, and around every handler served by serve() on the server, in array order (the first
 * is the outermost: it sees the call first and its outcome last). Each sees the method, the
 * metadata and the request, may change them, may answer without calling next() (a
 * short-circuit), may throw (the call fails with that error), and may catch next()'s error and
 * throw another (error mapping). The hot-path APIs (call / poll, recv / reply) never run them.
 *
 * On the server, `ServerInterceptor.unary` sees a ServerCall (method, data, metadata, the
 * handle) and resolves with the response bytes; what it passes to next() is what the handler
 * reads as h.data and h.metadata; what it throws becomes the error response (name and message)
 * as a handler's throw does. `stream` wraps a stream handler (serverStreamChain()).
 *
 * Example:
 *   const auth: ClientInterceptor = { unary: (call, next) => next({ ...call, metadata: Metadata.from({ authorization: token }) }) };
 *   const client = await rpcConnect(url, { interceptors: [auth] });
 *   const gate: ServerInterceptor = { unary: (call, next) => (call.metadata.get("authorization") === token ? next(call) : Promise.reject(new DeniedError())) };
 *   await serve(url, handlers, { interceptors: [gate] });
 */

import { UsageError } from "../errors.ts";
import { Metadata, type MetadataInit } from "./metadata.ts";
import { describeValue } from "./validate.ts";
import type { RequestHandle } from "./handle.ts";
import type { ServerStream } from "./stream/types.ts";
import type { ClientInterceptor, RequestOptions, UnaryCall, UnaryResult } from "./pending.ts";
export type { ClientInterceptor, UnaryCall, UnaryResult } from "./pending.ts";

/** request() through the interceptors: what Client.request() runs when any are installed. */
export type UnaryChain = (method: number, data: Uint8Array, opts: RequestOptions | undefined) => Promise<Uint8Array>;

/**
 * Builds the chain over `send` (request() past the interceptors). The response metadata reaches
 * interceptors as UnaryResult.metadata and the caller's onResponseMetadata with what the
 * outermost interceptor returned.
 */
export function unaryChain(interceptors: readonly ClientInterceptor[], send: UnaryChain): UnaryChain {
  checkInterceptors(interceptors, "client options");
  let next = (call: UnaryCall): Promise<UnaryResult> => {
    let metadata = Metadata.EMPTY;
    const opts: RequestOptions = { ...call.opts, metadata: call.metadata, onResponseMetadata: (md) => (metadata = md) };
    return send(call.method, call.data, opts).then(
      (data) => ({ data, metadata }),
      (e) => {
        // An error response's metadata goes to the caller as it would without interceptors.
        if (metadata.size > 0) call.opts?.onResponseMetadata?.(metadata);
        throw e;
      },
    );
  };
  for (let i = interceptors.length - 1; i >= 0; i--) {
    const ic = interceptors[i]!;
    if (ic.unary === undefined) continue;
    const inner = next;
    next = (call) => {
      try {
        return Promise.resolve(ic.unary!(call, inner));
      } catch (e) {
        return Promise.reject(e);
      }
    };
  }
  const outer = next;
  return (method, data, opts) => {
    let metadata: Metadata;
    try {
      metadata = opts?.metadata === undefined ? Metadata.EMPTY : Metadata.from(opts.metadata);
    } catch (e) {
      return Promise.reject(e);
    }
    return outer({ method, data, metadata, opts }).then((r) => {
      if (r === null || typeof r !== "object" || !(r.data instanceof Uint8Array) || !(r.metadata instanceof Metadata)) {
        throw new UsageError(`client interceptor for method ${method}: resolved with ${describeValue(r)}, expected { data: Uint8Array, metadata: Metadata }`);
      }
      opts?.onResponseMetadata?.(r.metadata);
      return r.data;
    });
  };
}

/** One unary call as a server interceptor sees it. Pass a changed copy to next() to change what the handler reads. */
export interface ServerCall {
  readonly method: number;
  /** The request's data (the handler's h.data). */
  readonly data: Uint8Array;
  /** The request's metadata (the handler's h.metadata). */
  readonly metadata: Metadata;
  /** The call's handle (deadline, signal, session); the handler gets the same one. */
  readonly handle: RequestHandle<any>;
  /** h.setResponseMetadata(): the response's metadata (UsageError for bad metadata). */
  setResponseMetadata(md: MetadataInit | Metadata): void;
}

export interface ServerInterceptor {
  /** Around every unary handler of serve(): resolves with the response bytes; a throw is the call's error response. */
  unary?(call: ServerCall, next: (call: ServerCall) => Promise<Uint8Array>): Promise<Uint8Array>;
  /** Around every stream handler: may wrap the stream, refuse it (throw) or map its error. */
  stream?(stream: ServerStream, next: (stream: ServerStream) => Promise<void>): Promise<void>;
}

/** The ServerCall of a handle (what the outermost interceptor sees). */
export function serverCall(h: RequestHandle<any>): ServerCall {
  return { method: h.method, data: h.data, metadata: h.metadata, handle: h, setResponseMetadata: (md) => h.setResponseMetadata(md) };
}

/** Runs `fn` as a step of a chain: what it throws becomes a rejection, what it returns a promise. */
function step<C, R>(fn: (call: C, next: (call: C) => Promise<R>) => Promise<R>, call: C, next: (call: C) => Promise<R>): Promise<R> {
  try {
    return Promise.resolve(fn(call, next));
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * The server's unary chain over `inner` (the handler, given the call the innermost interceptor
 * passed on): interceptors without `unary` are skipped; none: `inner` itself. The first is the
 * outermost. A next() call with something other than a ServerCall of the same handle rejects
 * with UsageError.
 */
export function serverUnaryChain(interceptors: readonly ServerInterceptor[], inner: (call: ServerCall) => Promise<Uint8Array>): (call: ServerCall) => Promise<Uint8Array> {
  let next = inner;
  for (let i = interceptors.length - 1; i >= 0; i--) {
    const ic = interceptors[i]!;
    if (ic.unary === undefined) continue;
    const fn = ic.unary.bind(ic);
    const below = next;
    const checked = (call: ServerCall): Promise<Uint8Array> => {
      if (call === null || typeof call !== "object" || !(call.data instanceof Uint8Array) || !(call.metadata instanceof Metadata)) {
        return Promise.reject(new UsageError(`server interceptor: next() takes a ServerCall with data (Uint8Array) and metadata (Metadata), got ${describeValue(call)}`));
      }
      return below(call);
    };
    next = (call) => step(fn, call, checked);
  }
  return next;
}

/**
 * The server's stream chain over `handler`: what a stream engine runs for each stream when
 * interceptors are given (the first outermost; those without `stream` skipped; none: `handler`).
 * A throw or rejection anywhere ends the stream with that error, as a handler's would.
 */
export function serverStreamChain(interceptors: readonly ServerInterceptor[], handler: (stream: ServerStream) => Promise<void>): (stream: ServerStream) => Promise<void> {
  let next = (s: ServerStream): Promise<void> => {
    try {
      return Promise.resolve(handler(s));
    } catch (e) {
      return Promise.reject(e);
    }
  };
  for (let i = interceptors.length - 1; i >= 0; i--) {
    const ic = interceptors[i]!;
    if (ic.stream === undefined) continue;
    const fn = ic.stream.bind(ic);
    const below = next;
    next = (s) => step(fn, s, below);
  }
  return next;
}

/** UsageError unless `interceptors` is undefined or an array of objects (what serve() and Client check). */
export function checkInterceptors<I extends ServerInterceptor | ClientInterceptor = ServerInterceptor>(interceptors: readonly I[] | undefined, what: string): readonly I[] | undefined {
  if (interceptors === undefined) return undefined;
  if (!Array.isArray(interceptors)) throw new UsageError(`${what}: interceptors must be an array, got ${describeValue(interceptors)}`);
  for (const [i, ic] of interceptors.entries()) {
    if (ic === null || typeof ic !== "object") throw new UsageError(`${what}: interceptor ${i} is ${describeValue(ic)}, not an object`);
    for (const k of ["unary", "stream"] as const) {
      const f = (ic as Record<string, unknown>)[k];
      if (f !== undefined && typeof f !== "function") throw new UsageError(`${what}: interceptor ${i}'s ${k} is ${describeValue(f)}, not a function`);
    }
  }
  return interceptors;
}
