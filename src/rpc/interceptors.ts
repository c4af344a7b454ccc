/**
 * Interceptors: code that runs around every convenient call (request(), and streams) on the
 * client, and around every handler served by serve() on the server, in array order (the first
 * is the outermost: it sees the call first and its outcome last). Each sees the method, the
 * metadata and the request (on the client also the request's options as given, `call.opts`:
 * timeoutMs, signal, parent, ...), may change them, may answer without calling next() (a
 * short-circuit), may throw (the call fails with that error), and may catch next()'s error and
 * throw another (error mapping). The hot-path APIs (call / poll, recv / reply) never run them.
 * The caller's onResponseMetadata is called once, for what the chain settled with (unaryChain()).
 *
 * On the server, `ServerInterceptor.unary` sees a ServerCall (method, data, metadata, the
 * handle) and resolves with the response bytes; what it passes to next() is what the handler
 * reads as h.data and h.metadata; what it throws becomes the error response (name and message)
 * as a handler's throw does. `stream` wraps a stream handler (serverStreamChain()).
 *
 * Example:
 *   const auth: ClientInterceptor = { unary: (call, next) => next({ ...call, metadata: Metadata.from({ authorization: token }) }) };
 *   const short: ClientInterceptor = { unary: (call, next) => next({ ...call, opts: { ...call.opts, timeoutMs: 500 } }) }; // every call: 500 ms
 *   const client = await rpcConnect(url, { interceptors: [auth, short] });
 *   const gate: ServerInterceptor = { unary: (call, next) => (call.metadata.get("authorization") === token ? next(call) : Promise.reject(new DeniedError())) };
 *   await serve(url, handlers, { interceptors: [gate] });
 */

import { UsageError } from "../errors.ts";
import { Metadata, type MetadataInit } from "./metadata.ts";
import { describeValue } from "./validate.ts";
import type { RequestHandle } from "./handle.ts";
import type { ServerStream } from "./stream/types.ts";
import { tellMetadata, type ClientInterceptor, type RequestOptions, type UnaryCall, type UnaryResult } from "./pending.ts";
export type { ClientInterceptor, UnaryCall, UnaryResult } from "./pending.ts";

/** request() through the interceptors: what Client.request() runs when any are installed. */
export type UnaryChain = (method: number, data: Uint8Array, opts: RequestOptions | undefined) => Promise<Uint8Array>;

/**
 * Builds the chain over `send` (request() past the interceptors). The response metadata reaches
 * interceptors as UnaryResult.metadata (and nothing else), and the caller's onResponseMetadata
 * once, when the chain settles, as without interceptors: with the result's metadata, or for an
 * error that came back from the server (itself, or as the `cause` of the error an interceptor
 * threw in its place) that response's metadata (Metadata.EMPTY when it had none). An error no
 * response carried (a timeout, a short-circuit) calls it not at all. A throw of it is printed,
 * never the caller's (tellMetadata()).
 */
export function unaryChain(interceptors: readonly ClientInterceptor[], send: UnaryChain): UnaryChain {
  checkInterceptors(interceptors, "client options");
  // The metadata of each error response, by its error: a retried attempt's never reaches the caller.
  const errorMetadata = new WeakMap<object, Metadata>();
  let next = (call: UnaryCall): Promise<UnaryResult> => {
    let metadata: Metadata | null = null; // null until a response came
    const opts: RequestOptions = { ...call.opts, metadata: call.metadata, onResponseMetadata: (md) => (metadata = md) };
    return send(call.method, call.data, opts).then(
      (data) => ({ data, metadata: metadata ?? Metadata.EMPTY }),
      (e) => {
        if (metadata !== null && e !== null && typeof e === "object") errorMetadata.set(e, metadata);
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
  /** The metadata of the response that `e` (or an error in its `cause` chain) came from; undefined for none. */
  const metadataOf = (e: unknown): Metadata | undefined => {
    for (let depth = 0; depth < 8 && e !== null && typeof e === "object"; depth++) {
      const md = errorMetadata.get(e);
      if (md !== undefined) return md;
      try {
        e = (e as { cause?: unknown }).cause;
      } catch {
        return undefined;
      }
    }
    return undefined;
  };
  return (method, data, opts) => {
    let metadata: Metadata;
    const onMd = opts?.onResponseMetadata;
    try {
      if (onMd !== undefined && typeof onMd !== "function") throw new UsageError(`client.request: onResponseMetadata must be a function, got ${describeValue(onMd)}`);
      metadata = opts?.metadata === undefined ? Metadata.EMPTY : Metadata.from(opts.metadata);
    } catch (e) {
      return Promise.reject(e);
    }
    return outer({ method, data, metadata, opts }).then(
      (r) => {
        if (r === null || typeof r !== "object" || !(r.data instanceof Uint8Array) || !(r.metadata instanceof Metadata)) {
          throw new UsageError(`client interceptor for method ${method}: resolved with ${describeValue(r)}, expected { data: Uint8Array, metadata: Metadata }`);
        }
        if (onMd !== undefined) tellMetadata(onMd, r.metadata);
        return r.data;
      },
      (e) => {
        const md = onMd === undefined ? undefined : metadataOf(e);
        if (md !== undefined) tellMetadata(onMd!, md);
        throw e;
      },
    );
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
 * outermost. A next() call with something other than a ServerCall of the same handle as the
 * call the chain was run with rejects with UsageError (the handler never runs).
 */
export function serverUnaryChain(interceptors: readonly ServerInterceptor[], inner: (call: ServerCall) => Promise<Uint8Array>): (call: ServerCall) => Promise<Uint8Array> {
  const fns = interceptors.filter((ic) => ic.unary !== undefined).map((ic) => ic.unary!.bind(ic));
  if (fns.length === 0) return inner;
  return (first) => {
    const handle = first.handle;
    // next() of the interceptor at `i`: checks what it was given, then runs the one below.
    const below = (i: number) => (call: ServerCall): Promise<Uint8Array> => {
      if (call === null || typeof call !== "object" || !(call.data instanceof Uint8Array) || !(call.metadata instanceof Metadata)) {
        return Promise.reject(new UsageError(`server interceptor: next() takes a ServerCall with data (Uint8Array) and metadata (Metadata), got ${describeValue(call)}`));
      }
      if (call.handle !== handle) {
        const got = call.handle === undefined ? "no handle" : `a handle that is ${describeValue(call.handle)}`;
        return Promise.reject(new UsageError(`server interceptor: next() got a ServerCall with ${got}, not the call's own (method ${handle.method}): pass { ...call, data, metadata }`));
      }
      return i + 1 === fns.length ? inner(call) : step(fns[i + 1]!, call, below(i + 1));
    };
    return step(fns[0]!, first, below(0));
  };
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
