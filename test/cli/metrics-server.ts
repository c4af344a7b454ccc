/**
 * A server process for test/cli/metrics.test.ts: `bun metrics-server.ts URL on|off|hang` serves
 * an echo method (1) and a failing one (2, throws RangeError) on URL, with its metrics and the
 * metrics method on (withMetricsMethod) or off, or a metrics method that never answers (hang); prints one JSON line `{"url": ...}` when it
 * listens, and exits when its stdin closes (or when it is killed by pid).
 */
import { serve } from "../../src/index.ts";
import { METRICS_METHOD, withMetricsMethod } from "../../src/rpc/metrics-method.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

const [url, mode] = process.argv.slice(2);
if (url === undefined || (mode !== "on" && mode !== "off" && mode !== "hang")) {
  console.error("usage: bun metrics-server.ts URL on|off|hang");
  process.exit(2);
}
const handlers = {
  1: (h: { data: Uint8Array }) => h.data,
  2: () => {
    throw new RangeError("out of range");
  },
};
const on = mode === "on";
const table = mode === "hang" ? { ...handlers, [METRICS_METHOD]: () => new Promise<Uint8Array>(() => {}) } : on ? withMetricsMethod(handlers) : handlers;
const s = await serve(url, table, { metrics: on, onError: () => {} });
exitWhenParentGoes(() => s.close());
console.log(JSON.stringify({ url: s.url }));
