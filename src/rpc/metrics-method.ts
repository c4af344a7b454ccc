/**
 * The reserved method through which a server with metrics on (ServerOptions.metrics) hands its
 * Prometheus text to a client: `hotpath metrics <url>` asks for it, serve() answers it.
 *
 * Contract:
 * - METRICS_METHOD ("METR" as a big-endian u32) takes an empty request; the response is the
 *   UTF-8 Prometheus text (format 0.0.4) of the server's metrics at that moment, role "server"
 *   (toPrometheus() in metrics.ts). A server without metrics answers a RemoteError named
 *   "UsageError"; one that does not serve the method at all answers "UnknownMethodError".
 * - metricsMethodHandler(server?) is that method's RawHandler (for serve()'s or dispatcher()'s
 *   table); without `server` it reads the server of the session the request came on.
 * - withMetricsMethod(handlers) is the table with the method added; a table that already has a
 *   metricsMethodHandler() there is kept as it is, one with another handler there is a
 *   UsageError (the id is reserved while metrics are on).
 * - requestMetricsText(client) asks a server for its text: the text, or the request's error
 *   (TimeoutError, TransportClosedError, RemoteError as above).
 *
 * The text grows with the methods recorded (about 30 lines per method and transport); it must
 * fit in one response of the transport (its maxMessageBytes).
 *
 * Example:
 *   const server = new Server({ metrics: true, onRequest: dispatcher({ [METRICS_METHOD]: metricsMethodHandler(), 1: (h) => h.data }) });
 *   const text = await requestMetricsText(client, { timeoutMs: 2000 });
 *
 * Threading: the handler runs on the server's thread, requestMetricsText on the client's.
 */

import { EMPTY_BYTES } from "../bytes.ts";
import { UsageError } from "../errors.ts";
import type { Client } from "./client.ts";
import { DecodeError } from "./codec.ts";
import { toPrometheus } from "./metrics.ts";
import type { Server } from "./server.ts";
import type { Handlers, RawHandler } from "./service.ts";

/** The reserved method id: the bytes "METR" read as a big-endian u32 (0x4d455452). */
export const METRICS_METHOD = 0x4d455452;

const utf8 = new TextEncoder();
/** The handlers metricsMethodHandler() made: withMetricsMethod() accepts these at METRICS_METHOD. */
const made = new WeakSet<RawHandler>();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The handler of METRICS_METHOD: answers with the Prometheus text of `server`'s metrics (default:
 * the server the request came to), encoded as UTF-8 (a new buffer per request). Throws UsageError
 * (an error response) when that server records no metrics. Server thread.
 */
export function metricsMethodHandler(server?: Server): RawHandler {
  const handler: RawHandler = (h) => {
    const s = server ?? h.session.server;
    if (s.metricsRegistry === null) {
      throw new UsageError("this server records no metrics (start it with ServerOptions.metrics: serve(url, handlers, { metrics: true }))");
    }
    return utf8.encode(toPrometheus(s.metricsRegistry.snapshot(), { role: "server" }));
  };
  made.add(handler);
  return handler;
}

/**
 * `handlers` with METRICS_METHOD answered by metricsMethodHandler() (a new table; `handlers` is
 * left as it is). A metricsMethodHandler() already there stays; any other handler for
 * METRICS_METHOD is a UsageError. Pure.
 */
export function withMetricsMethod(handlers: Handlers): Handlers {
  if (handlers !== null && typeof handlers === "object" && Object.prototype.hasOwnProperty.call(handlers, METRICS_METHOD)) {
    if (made.has(handlers[METRICS_METHOD]!)) return { ...handlers };
    throw new UsageError(`serve: method ${METRICS_METHOD} (METRICS_METHOD, "METR") is reserved for the metrics text while the server's metrics are on`);
  }
  return { ...handlers, [METRICS_METHOD]: metricsMethodHandler() };
}

/**
 * Asks the server on `client`'s connection for its Prometheus text (METRICS_METHOD), within
 * `timeoutMs` (default: the client's). Resolves with the text; rejects with the request's error
 * (see the module comment), or DecodeError for a response that is not UTF-8. Client thread.
 */
export async function requestMetricsText(client: Client<any>, opts: { timeoutMs?: number } = {}): Promise<string> {
  const body = await client.request(METRICS_METHOD, EMPTY_BYTES, opts.timeoutMs === undefined ? undefined : { timeoutMs: opts.timeoutMs });
  try {
    return fromUtf8.decode(body);
  } catch {
    throw new DecodeError(`metrics: the response to METRICS_METHOD (${body.length} bytes) is not UTF-8 text, so not a metrics exposition`);
  }
}
