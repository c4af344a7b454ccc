/**
 * The convenient server and client entry points.
 *
 * `serve(url, handlers)` listens on `url` and answers every request with its handler's bytes.
 * A handler that throws (or rejects) becomes an error response, so the caller's request
 * rejects with RemoteError carrying the error's name and message; a method without a handler
 * gets an UnknownMethodError response; neither stops the server. A reply that meets transport
 * backpressure is retried when the connection drains, never dropped.
 *
 * `rpcConnect(url, { service })` connects (with fallback, through the URL registry) and wraps
 * the connection in a Client, with `client.svc` typed from the service definition.
 */


import { connect, listen, type ConnectionVia } from "../transport/registry.ts";
import { SEND_FULL, type ConnectOptions, type ListenOptions, type Listener } from "../transport/transport.ts";
import { Client, type ClientOptions } from "./client.ts";
import { DecodeError } from "./codec.ts";
import { RequestHandle, Server, type ServerOptions } from "./server.ts";
import { bindService, type Handlers, type RawHandler, type ServiceClient, type ServiceDef } from "./service.ts";

/** How long a reply waits for a full transport before it checks again. */
const REPLY_RETRY_WAIT_MS = 50;

export interface Serving extends Disposable {
  readonly url: string;
  readonly server: Server;
  readonly listener: Listener;
  close(): void;
}

function errorParts(e: unknown): { name: string; message: string } {
  if (e instanceof Error) return { name: e instanceof DecodeError ? "DecodeError" : e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

function sendReply(h: RequestHandle, data: Uint8Array | null, err: { name: string; message: string } | null): void {
  if (h.consumed) return;
  if (h.cancelled) {
    h.drop();
    return;
  }
  let status;
  try {
    status = err === null ? h.reply(data!) : h.replyError(err.name, err.message);
  } catch (e) {
    // A reply the transport refuses (larger than maxMessageBytes) becomes an error response:
    // the caller learns why, and the session goes on.
    if (err !== null || h.consumed) throw e;
    return sendReply(h, null, errorParts(e));
  }
  if (status === SEND_FULL) {
    h.session.conn.wait(REPLY_RETRY_WAIT_MS).then(() => sendReply(h, data, err));
  }
}

/** Dispatches each request to its handler by method id (the engine behind serve()). */
export function dispatcher(handlers: Handlers): (h: RequestHandle) => void {
  const table = new Map<number, RawHandler>();
  for (const [id, fn] of Object.entries(handlers)) table.set(Number(id), fn);
  return (h) => {
    const fn = table.get(h.method);
    if (fn === undefined) {
      sendReply(h, null, { name: "UnknownMethodError", message: `no handler for method ${h.method}` });
      return;
    }
    let out: Uint8Array | void | Promise<Uint8Array | void>;
    try {
      out = fn(h);
    } catch (e) {
      sendReply(h, null, errorParts(e));
      return;
    }
    if (out instanceof Promise) {
      out.then(
        (v) => sendReply(h, v ?? new Uint8Array(0), null),
        (e) => sendReply(h, null, errorParts(e)),
      );
    } else {
      sendReply(h, out ?? new Uint8Array(0), null);
    }
  };
}

export async function serve(
  url: string,
  handlers: Handlers,
  opts: ListenOptions & Omit<ServerOptions, "onRequest"> = {},
): Promise<Serving> {
  const listener = await listen(url, opts);
  const server = new Server({ ...opts, onRequest: dispatcher(handlers) });
  server.attach(listener);
  const close = () => server.close();
  return { url: listener.url, server, listener, close, [Symbol.dispose]: close };
}

export type RpcClient<S extends ServiceDef> = Client<any> & { readonly svc: ServiceClient<S>; readonly via: ConnectionVia };

export async function rpcConnect<S extends ServiceDef = {}>(
  url: string,
  opts: ConnectOptions & ClientOptions & { service?: S } = {},
): Promise<RpcClient<S>> {
  const conn = await connect(url, opts);
  const client = new Client<any>(conn, opts);
  const svc = opts.service ? bindService(client, opts.service) : ({} as ServiceClient<S>);
  return Object.assign(client, { svc, via: conn.via });
}


