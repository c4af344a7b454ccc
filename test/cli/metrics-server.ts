/**
 * A server process for test/cli/metrics.test.ts: `bun metrics-server.ts URL on|off` serves an
 * echo method (1) and a failing one (2, throws RangeError) on URL, with its metrics and the
 * metrics method on (withMetricsMethod) or off, prints one JSON line `{"url": ...}` when it
 * listens, and exits when its stdin closes (or when it is killed by pid).
 */
import { serve } from "../../src/index.ts";
import { withMetricsMethod } from "../../src/rpc/metrics-method.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

const [url, mode] = process.argv.slice(2);
if (url === undefined || (mode !== "on" && mode !== "off")) {
  console.error("usage: bun metrics-server.ts URL on|off");
  process.exit(2);
}
const handlers = {
  1: (h: { data: Uint8Array }) => h.data,
  2: () => {
    throw new RangeError("out of range");
  },
};
const on = mode === "on";
const s = await serve(url, on ? withMetricsMethod(handlers) : handlers, { metrics: on, onError: () => {} });
exitWhenParentGoes(() => s.close());
console.log(JSON.stringify({ url: s.url }));
