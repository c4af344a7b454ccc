/**
 * `hotpath metrics URL [--timeout-ms N]`: connects to a hotpath server started with metrics on
 * (serve(url, handlers, { metrics: true })), asks for its Prometheus text (METRICS_METHOD,
 * src/rpc/metrics-method.ts) and prints it on stdout, as a scrape would get it.
 *
 * Exit status: 0 with the text printed; 1 with one line on stderr when the server cannot be
 * reached, does not answer in time, or answers without metrics (it was started without them);
 * 2 for a usage error (the usage follows on stderr). `--timeout-ms` bounds the connect and the
 * request each (default 5000).
 *
 *   hotpath metrics tcp://127.0.0.1:7000 > scrape.prom
 */

import { RemoteError, TimeoutError, UsageError, describeThrown } from "../errors.ts";
import { rpcConnect } from "../rpc/serve.ts";
import { METRICS_METHOD, requestMetricsText } from "../rpc/metrics-method.ts";
import { eachFlag, parseOrExit, writeOut } from "./cli-io.ts";

export const METRICS_USAGE = `usage: hotpath metrics URL [--timeout-ms N]
  URL              a hotpath server started with metrics on (serve(url, handlers, { metrics: true }))
  --timeout-ms N   give up connecting, and then waiting for the answer, after N ms each (default 5000)
prints the server's metrics in the Prometheus text format 0.0.4`;

/** Default bound of the connect and of the request, ms: a scrape that hangs is worse than one that fails. */
export const DEFAULT_METRICS_TIMEOUT_MS = 5000;

export interface MetricsArgs {
  url: string;
  timeoutMs: number;
}

/** The arguments of `hotpath metrics`; UsageError for an unknown flag, a bad value, no URL or two. Pure. */
export function parseMetricsArgs(args: string[]): MetricsArgs {
  let url: string | undefined;
  let timeoutMs = DEFAULT_METRICS_TIMEOUT_MS;
  eachFlag(args, false, (flag, value, arg) => {
    if (flag === "--timeout-ms") {
      const v = value();
      const n = Number(v);
      if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`--timeout-ms: "${v}" is not a whole number of ms >= 1`);
      timeoutMs = n;
    } else if (arg.startsWith("-")) {
      throw new UsageError(`unknown flag "${arg}"`);
    } else if (url !== undefined) {
      throw new UsageError(`one URL only (got "${url}" and "${arg}")`);
    } else url = arg;
  });
  if (url === undefined) throw new UsageError("the server's URL is required");
  return { url, timeoutMs };
}

/** One line of text for an error (newlines in messages folded). */
const oneLine = (s: string) => s.replace(/\s*\n\s*/g, " ").trim();

/** `hotpath metrics ARGS`: resolves to the exit status (see the module comment); prints the text or one error line. */
export async function runMetrics(args: string[]): Promise<number> {
  const p = await parseOrExit("metrics", args, METRICS_USAGE, parseMetricsArgs);
  if ("exit" in p) return p.exit;
  const { url, timeoutMs } = p.parsed;
  const fail = (what: string) => {
    process.stderr.write(`hotpath metrics: ${oneLine(what)}\n`);
    return 1;
  };
  let client: Awaited<ReturnType<typeof rpcConnect>>;
  try {
    client = await rpcConnect(url, { connectTimeoutMs: timeoutMs, timeoutMs });
  } catch (e) {
    return fail(`cannot connect to ${url}: ${describeThrown(e)}`);
  }
  try {
    const text = await requestMetricsText(client, { timeoutMs });
    await writeOut(text);
    return 0;
  } catch (e) {
    if (e instanceof RemoteError && e.remoteName === "UnknownMethodError") {
      return fail(`the server at ${url} has no metrics: it does not answer the metrics method (${METRICS_METHOD}); start it with serve(url, handlers, { metrics: true })`);
    }
    if (e instanceof RemoteError && e.remoteName === "UsageError") return fail(`the server at ${url} has no metrics: ${e.remoteMessage}`);
    if (e instanceof TimeoutError) return fail(`the server at ${url} did not answer within ${timeoutMs} ms`);
    return fail(`asking ${url} for its metrics failed: ${describeThrown(e, true)}`);
  } finally {
    client.close();
  }
}
