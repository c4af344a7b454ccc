/**
 * Test peer for the in-server tests (in-server.test.ts): serve() on the URL given (argv[2]) and,
 * with argv[3] "http", a Bun.serve HTTP server on 127.0.0.1 (port from the OS) in the same
 * process, on the same event loop, echoing each POST's body.
 *
 * RPC methods: M_ECHO echoes its data; M_HOLD answers only when the client cancels it (its
 * handle's signal aborts: counted) or after 10 s; M_COUNTS answers {held, cancels} as JSON:
 * calls of M_HOLD that arrived, and cancels seen.
 *   bun test/rpc/in-server-peer.ts shm://name [http]
 * Prints {"url", "port", "pid"} when ready (port 0 without http); exits when stdin closes.
 */

import { serve } from "../../src/index.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

export const M_ECHO = 1;
export const M_HOLD = 2;
export const M_COUNTS = 3;
/** How long M_HOLD waits for a cancel before it answers anyway. */
const HOLD_MS = 10_000;

if (import.meta.main) {
  let held = 0;
  let cancels = 0;
  const serving = await serve(process.argv[2]!, {
    [M_ECHO]: (h) => h.data,
    [M_HOLD]: async (h) => {
      held++;
      const signal = h.signal;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, HOLD_MS);
        signal.addEventListener("abort", () => {
          cancels++;
          clearTimeout(t);
          resolve();
        });
      });
      return new Uint8Array([1]);
    },
    [M_COUNTS]: () => new TextEncoder().encode(JSON.stringify({ held, cancels })),
  });
  const http =
    process.argv[3] === "http"
      ? Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async (req) => new Response(new Uint8Array(await req.arrayBuffer())) })
      : null;
  console.log(JSON.stringify({ url: serving.url, port: http?.port ?? 0, pid: process.pid }));
  exitWhenParentGoes(() => {
    http?.stop(true);
    serving.close();
  });
}
