/**
 * Typed streams for service definitions (service.ts: MethodDef `stream: "server" | "client" |
 * "bidi"`): each message goes through the method's codecs, `request` one way and `response`
 * the other. What the client methods return and what the implementations get:
 *
 *   "server": client.svc.m(req, opts) -> ServerStreamCall<Res> (for await (const r of call));
 *             impl (req, s) => AsyncIterable<Res> (an async generator)
 *   "client": client.svc.m(opts) -> ClientStreamCall<Req, Res> (send(req), end() -> Res);
 *             impl (reqs: AsyncIterable<Req>, s) => Promise<Res>
 *   "bidi":   client.svc.m(opts) -> TypedStream<Req, Res>; impl (s: TypedStream<Res, Req>) => Promise<void>
 *
 * Contract: a value that does not encode rejects that send() (UsageError, nothing sent); a
 * message that does not decode fails the reading side with DecodeError and cancels the stream.
 * Errors of the stream itself are RpcStream's (types.ts). The owning thread.
 *
 * Example:
 *   const Feed = defineService({ watch: { id: 3, stream: "server", request: msgpack<{ from: number }>(), response: msgpack<Event>() } });
 *   for await (const ev of client.svc.watch({ from: 0 })) show(ev);
 */

import { DecodeError, type Codec } from "../codec.ts";
import type { Metadata, MetadataInit } from "../metadata.ts";
import type { ClientStream, RpcStream, ServerStream } from "./types.ts";

/** An RpcStream whose messages are values: `Out` sent, `In` received. */
export class TypedStream<Out, In> implements AsyncIterable<In> {
  constructor(
    /** The byte stream underneath (metadata, signal, credit, trailers). */
    readonly raw: RpcStream,
    private readonly out: Codec<Out>,
    private readonly inc: Codec<In>,
  ) {}

  get signal(): AbortSignal {
    return this.raw.signal;
  }
  get closed(): Promise<void> {
    return this.raw.closed;
  }

  /** Encodes and sends one value (see RpcStream.send). */
  send(value: Out): Promise<void> {
    let bytes: Uint8Array;
    try {
      bytes = this.out.encode(value);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.raw.send(bytes);
  }

  /** The next value, `done` at the peer's END. */
  async next(): Promise<IteratorResult<In, undefined>> {
    const m = await this.raw.read();
    if (m === null) return { done: true, value: undefined };
    let v: In;
    try {
      v = this.inc.decode(m);
    } catch (e) {
      this.raw.cancel(e);
      throw e instanceof DecodeError ? e : new DecodeError(`stream for method ${this.raw.method}: a message did not decode: ${String(e)}`);
    }
    return { done: false, value: v };
  }

  end(metadata?: MetadataInit | Metadata): void {
    this.raw.end(metadata);
  }

  cancel(reason?: unknown): void {
    this.raw.cancel(reason);
  }

  [Symbol.asyncIterator](): AsyncIterator<In> {
    const rawIt = this.raw[Symbol.asyncIterator]();
    return {
      next: () => this.next(),
      return: async () => {
        await rawIt.return?.(); // before the end: the client cancels, the server stops reading (RpcStream's iterator)
        return { done: true, value: undefined };
      },
    };
  }
}

/** What a "server" method returns on the client: the responses, in order. */
export interface ServerStreamCall<Res> extends AsyncIterable<Res> {
  readonly stream: ClientStream;
  /** The server's END metadata, once it ended. */
  readonly trailers: Metadata | null;
  cancel(reason?: unknown): void;
}

/** What a "client" method returns on the client: send requests, then end() for the one response. */
export interface ClientStreamCall<Req, Res> {
  readonly stream: ClientStream;
  send(request: Req): Promise<void>;
  /** Half-closes and resolves with the server's response. */
  end(): Promise<Res>;
  cancel(reason?: unknown): void;
}

/** A "server" method's client side over `s`: sends the one request, ends, iterates the responses. */
export function serverStreamCall<Req, Res>(s: ClientStream, req: Codec<Req>, res: Codec<Res>, request: Req): ServerStreamCall<Res> {
  const typed = new TypedStream<Req, Res>(s, req, res);
  typed.send(request).catch(() => {}); // a failure shows in the responses' iteration (the stream fails)
  s.end();
  return {
    stream: s,
    get trailers() {
      return s.trailers;
    },
    cancel: (reason) => s.cancel(reason),
    [Symbol.asyncIterator]: () => typed[Symbol.asyncIterator](),
  };
}

/** A "client" method's client side over `s`. */
export function clientStreamCall<Req, Res>(s: ClientStream, req: Codec<Req>, res: Codec<Res>): ClientStreamCall<Req, Res> {
  const typed = new TypedStream<Req, Res>(s, req, res);
  return {
    stream: s,
    send: (request) => typed.send(request),
    async end() {
      s.end();
      const r = await typed.next();
      if (r.done) throw new DecodeError(`stream for method ${s.method}: the server ended without a response`);
      return r.value;
    },
    cancel: (reason) => s.cancel(reason),
  };
}

/** The server side of a "server" method: the first message is the request; each value the implementation yields is sent. */
export async function runServerStreaming<Req, Res>(s: ServerStream, req: Codec<Req>, res: Codec<Res>, fn: (request: Req, s: ServerStream) => AsyncIterable<Res> | Iterable<Res>): Promise<void> {
  const first = await s.read();
  if (first === null) throw new DecodeError(`stream for method ${s.method}: the client ended without a request`);
  for await (const v of fn(req.decode(first), s)) await s.send(res.encode(v));
}

/** The server side of a "client" method: the requests as values, the implementation's result as the one response. */
export async function runClientStreaming<Req, Res>(s: ServerStream, req: Codec<Req>, res: Codec<Res>, fn: (requests: AsyncIterable<Req>, s: ServerStream) => Promise<Res> | Res): Promise<void> {
  const requests = new TypedStream<Res, Req>(s, res, req);
  await s.send(res.encode(await fn(requests, s)));
}
