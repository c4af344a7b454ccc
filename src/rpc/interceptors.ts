/**
 * Interceptors: code that runs around every convenient call (request(), and streams) on the
 * client, and around every handler served by serve() on the server, in array order (the first
 * is the outermost: it sees the call first and its outcome last). Each sees the method, the
 * metadata and the request, may change them, may answer without calling next() (a
 * short-circuit), may throw (the call fails with that error), and may catch next()'s error and
 * throw another (error mapping). The hot-path APIs (call / poll, recv / reply) never run them.
 *
 * Example:
 *   const auth: ClientInterceptor = { unary: (call, next) => next({ ...call, metadata: Metadata.from({ authorization: token }) }) };
 *   const client = await rpcConnect(url, { interceptors: [auth] });
 */

import { Metadata } from "./metadata.ts";
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
  let next = (call: UnaryCall): Promise<UnaryResult> => {
    let metadata = Metadata.EMPTY;
    const opts: RequestOptions = { ...call.opts, metadata: call.metadata, onResponseMetadata: (md) => (metadata = md) };
    return send(call.method, call.data, opts).then((data) => ({ data, metadata }));
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
      opts?.onResponseMetadata?.(r.metadata);
      return r.data;
    });
  };
}
