/**
 * Typed services: a definition maps method names to ids and codecs, so both ends are typed.
 *
 *   const Kv = defineService({
 *     get: { id: 1, request: struct({ key: "u64" }), response: msgpack<{ value: string }>() },
 *     ping: { id: 2 },                                        // raw bytes both ways
 *   });
 *   const stop = await serve("tcp://127.0.0.1:0", implement(Kv, { get: ({ key }) => ({ value: "v" + key }), ping: (b) => b }));
 *   const client = await rpcConnect(stop.url, { service: Kv });
 *   const { value } = await client.svc.get({ key: 7n });
 *
 * A method with `stream: "server" | "client" | "bidi"` is a stream, its codecs applied to each
 * message (stream/typed.ts has the shapes each side gets):
 *   scan: { id: 3, stream: "server", request: msgpack<{ from: string }>(), response: msgpack<Row>() },
 *   implement(Kv, { ..., scan: async function* ({ from }, s) { yield* rows(from); } });
 *   for await (const row of client.svc.scan({ from: "a" })) use(row);
 */

import { UsageError } from "../errors.ts";
import type { Client, RequestOptions } from "./client.ts";
import { raw, type Codec } from "./codec.ts";
import type { RequestHandle } from "./server.ts";
import { detachFirst, wantsDetachFirst } from "./detach.ts";
import { streamHandler } from "./stream/server-stream.ts";
import { TypedStream, clientStreamCall, runClientStreaming, runServerStreaming, serverStreamCall, type ClientStreamCall, type ServerStreamCall } from "./stream/typed.ts";
import type { ServerStream, StreamOptions } from "./stream/types.ts";

/** Which way a stream method's messages go: "server" (one request, many responses), "client" (many requests, one response), "bidi". */
export type StreamKind = "server" | "client" | "bidi";

export interface MethodDef<Req = Uint8Array, Res = Uint8Array> {
  readonly id: number;
  readonly request?: Codec<Req>;
  readonly response?: Codec<Res>;
  /** A stream method (its codecs apply per message); absent: a unary call. */
  readonly stream?: StreamKind;
}

export type ServiceDef = Record<string, MethodDef<any, any>>;

type ReqOf<M> = M extends MethodDef<infer R, any> ? (M["request"] extends Codec<any> ? R : Uint8Array) : never;
type ResOf<M> = M extends MethodDef<any, infer R> ? (M["response"] extends Codec<any> ? R : Uint8Array) : never;

/** A method as the client calls it, by its stream kind. */
export type ClientMethod<M> = M extends { readonly stream: "server" }
  ? (request: ReqOf<M>, opts?: StreamOptions) => ServerStreamCall<ResOf<M>>
  : M extends { readonly stream: "client" }
    ? (opts?: StreamOptions) => ClientStreamCall<ReqOf<M>, ResOf<M>>
    : M extends { readonly stream: "bidi" }
      ? (opts?: StreamOptions) => TypedStream<ReqOf<M>, ResOf<M>>
      : (request: ReqOf<M>, opts?: RequestOptions) => Promise<ResOf<M>>;

/** A method's implementation, by its stream kind. */
export type ImplMethod<M> = M extends { readonly stream: "server" }
  ? (request: ReqOf<M>, s: ServerStream) => AsyncIterable<ResOf<M>> | Iterable<ResOf<M>>
  : M extends { readonly stream: "client" }
    ? (requests: AsyncIterable<ReqOf<M>>, s: ServerStream) => ResOf<M> | Promise<ResOf<M>>
    : M extends { readonly stream: "bidi" }
      ? (s: TypedStream<ResOf<M>, ReqOf<M>>) => Promise<void> | void
      : (request: ReqOf<M>, handle: RequestHandle) => ResOf<M> | Promise<ResOf<M>>;

export type ServiceClient<S extends ServiceDef> = { [K in keyof S]: ClientMethod<S[K]> };

export type ServiceImpl<S extends ServiceDef> = { [K in keyof S]: ImplMethod<S[K]> };

/** A raw handler: the request handle in, response bytes out (void for one-way methods). */
export type RawHandler = (handle: RequestHandle) => Uint8Array | void | Promise<Uint8Array | void>;
export type Handlers = Record<number, RawHandler>;

/** Checks a service definition (UsageError for an id that is not a u32, or one used twice) and returns it, typed. */
export function defineService<const S extends ServiceDef>(def: S): S {
  const seen = new Map<number, string>();
  for (const [name, m] of Object.entries(def)) {
    if (!Number.isInteger(m.id) || m.id < 0 || m.id > 0xffffffff) throw new UsageError(`service method "${name}": id ${m.id} is not a u32`);
    const other = seen.get(m.id);
    if (other !== undefined) throw new UsageError(`service methods "${other}" and "${name}" share id ${m.id}`);
    if (m.stream !== undefined && m.stream !== "server" && m.stream !== "client" && m.stream !== "bidi") throw new UsageError(`service method "${name}": stream ${JSON.stringify(m.stream)} is not "server", "client" or "bidi"`);
    seen.set(m.id, name);
  }
  return def;
}

/**
 * Typed methods over `client`: each encodes its request, calls request() and decodes the
 * response. Every failure, a request that does not encode included (UsageError naming the
 * field), is a rejected promise, never a synchronous throw; nothing is sent for a request that
 * does not encode. Stream methods open client.stream() (stream/typed.ts: what each kind
 * returns; a value that does not encode rejects its send). The methods belong to the client's thread.
 */
export function bindService<S extends ServiceDef>(client: Client<any>, def: S): ServiceClient<S> {
  const out: Record<string, (...args: any[]) => unknown> = {};
  for (const [name, m] of Object.entries(def)) {
    const req = (m.request ?? raw) as Codec<unknown>;
    const res = (m.response ?? raw) as Codec<unknown>;
    if (m.stream === "server") out[name] = (value: unknown, opts?: StreamOptions) => serverStreamCall(client.stream(m.id, opts), req, res, value);
    else if (m.stream === "client") out[name] = (opts?: StreamOptions) => clientStreamCall(client.stream(m.id, opts), req, res);
    else if (m.stream === "bidi") out[name] = (opts?: StreamOptions) => new TypedStream(client.stream(m.id, opts), req, res);
    else out[name] = (value: unknown, opts?: RequestOptions) => {
      let data: Uint8Array;
      try {
        data = req.encode(value);
      } catch (e) {
        return Promise.reject(e);
      }
      return client.request(m.id, data, opts).then((b) => res.decode(b));
    };
  }
  return out as ServiceClient<S>;
}

/**
 * Turns a typed implementation into handlers for serve(): each decodes the request (a
 * DecodeError reaches the caller as RemoteError("DecodeError")) and encodes what the function
 * returns (a value that does not encode reaches the caller as RemoteError("UsageError") and is
 * reported on the server). Stream methods become streamHandler()s (stream/typed.ts: what each
 * kind's implementation gets). Runs on the server's thread.
 */
export function implement<S extends ServiceDef>(def: S, impl: ServiceImpl<S>): Handlers {
  const handlers: Handlers = {};
  for (const [name, m] of Object.entries(def)) {
    const fn = (impl as Record<string, (r: any, h: any) => any>)[name];
    if (typeof fn !== "function") throw new UsageError(`implement: no function for method "${name}"`);
    const req = (m.request ?? raw) as Codec<unknown>;
    const res = (m.response ?? raw) as Codec<unknown>;
    if (m.stream !== undefined) {
      handlers[m.id] = streamHandler(
        m.stream === "server" ? (s) => runServerStreaming(s, req, res, fn) : m.stream === "client" ? (s) => runClientStreaming(s, req, res, fn) : (s) => fn(new TypedStream(s, res, req), undefined),
      );
      continue;
    }
    const handler: RawHandler = (h) => {
      const out = fn(req.decode(h.data), h);
      return out instanceof Promise ? out.then((v) => res.encode(v)) : res.encode(out);
    };
    // An async implementation keeps its decoded request (a view, for raw) across awaits.
    handlers[m.id] = wantsDetachFirst(fn) ? detachFirst(handler) : handler;
  }
  return handlers;
}
