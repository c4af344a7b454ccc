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
 */

import { UsageError } from "../errors.ts";
import type { Client, RequestOptions } from "./client.ts";
import { raw, type Codec } from "./codec.ts";
import type { RequestHandle } from "./server.ts";
import { detachFirst, wantsDetachFirst } from "./detach.ts";

export interface MethodDef<Req = Uint8Array, Res = Uint8Array> {
  readonly id: number;
  readonly request?: Codec<Req>;
  readonly response?: Codec<Res>;
}

export type ServiceDef = Record<string, MethodDef<any, any>>;

type ReqOf<M> = M extends MethodDef<infer R, any> ? (M["request"] extends Codec<any> ? R : Uint8Array) : never;
type ResOf<M> = M extends MethodDef<any, infer R> ? (M["response"] extends Codec<any> ? R : Uint8Array) : never;

export type ServiceClient<S extends ServiceDef> = {
  [K in keyof S]: (request: ReqOf<S[K]>, opts?: RequestOptions) => Promise<ResOf<S[K]>>;
};

export type ServiceImpl<S extends ServiceDef> = {
  [K in keyof S]: (request: ReqOf<S[K]>, handle: RequestHandle) => ResOf<S[K]> | Promise<ResOf<S[K]>>;
};

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
    seen.set(m.id, name);
  }
  return def;
}

/**
 * Typed methods over `client`: each encodes its request, calls request() and decodes the
 * response. Every failure, a request that does not encode included (UsageError naming the
 * field), is a rejected promise, never a synchronous throw; nothing is sent for a request that
 * does not encode. The methods belong to the client's thread.
 */
export function bindService<S extends ServiceDef>(client: Client<any>, def: S): ServiceClient<S> {
  const out: Record<string, (req: unknown, opts?: RequestOptions) => Promise<unknown>> = {};
  for (const [name, m] of Object.entries(def)) {
    const req = (m.request ?? raw) as Codec<unknown>;
    const res = (m.response ?? raw) as Codec<unknown>;
    out[name] = (value, opts) => {
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
 * reported on the server). Runs on the server's thread.
 */
export function implement<S extends ServiceDef>(def: S, impl: ServiceImpl<S>): Handlers {
  const handlers: Handlers = {};
  for (const [name, m] of Object.entries(def)) {
    const fn = (impl as Record<string, (r: unknown, h: RequestHandle) => unknown>)[name];
    if (typeof fn !== "function") throw new UsageError(`implement: no function for method "${name}"`);
    const req = (m.request ?? raw) as Codec<unknown>;
    const res = (m.response ?? raw) as Codec<unknown>;
    const handler: RawHandler = (h) => {
      const out = fn(req.decode(h.data), h);
      return out instanceof Promise ? out.then((v) => res.encode(v)) : res.encode(out);
    };
    // An async implementation keeps its decoded request (a view, for raw) across awaits.
    handlers[m.id] = wantsDetachFirst(fn) ? detachFirst(handler) : handler;
  }
  return handlers;
}
