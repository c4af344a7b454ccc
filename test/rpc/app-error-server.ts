/**
 * `bun app-error-server.ts`: a server whose handlers throw the application's own error classes.
 * It registers nothing: the name travels from the error itself. Prints {"url"} when ready and
 * exits when stdin closes.
 */

import { serve } from "../../src/index.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

/** Declares no `name`: it travels as its class name. */
class OrderNotFound extends Error {}
/** Sets `name` as an own field. */
class QuotaExceeded extends Error {
  override name = "QuotaExceeded";
}
/** Takes (code, detail): the client rebuilds it with its own rebuild function. */
class CodedError extends Error {
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(`${status}: ${detail}`);
  }
}
class NotRegisteredAnywhere extends Error {}

const decoder = new TextDecoder();
const serving = await serve(process.argv[2] ?? "tcp://127.0.0.1:0", {
  1: (h) => {
    throw new OrderNotFound(`order ${decoder.decode(h.data)} not found`);
  },
  2: async () => {
    throw new QuotaExceeded("quota of 10 calls exceeded");
  },
  3: () => {
    throw new CodedError(404, "no such shelf");
  },
  4: () => {
    throw new NotRegisteredAnywhere("nobody knows me");
  },
  // A thrown error whose name is the text of the request: hostile names from the wire.
  5: (h) => {
    const e = new Error("named by the caller");
    e.name = decoder.decode(h.data);
    throw e;
  },
}, { onError: () => {} });
console.log(JSON.stringify({ url: serving.url }));
exitWhenParentGoes(() => serving.close());
