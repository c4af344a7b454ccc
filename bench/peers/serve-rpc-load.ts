/**
 * RPC load of the "serving RPC beside HTTP" rows (bench/serve.bench.ts), a process of its own:
 * one hotpath client to URL (the front's serve() listener) keeping INFLIGHT echo calls of BODY
 * bytes outstanding, each reply checked byte for byte against its own request (a mismatch ends
 * the run with an error). After WARMUP_MS it times DURATION_MS: every call's latency
 * (Bun.nanoseconds from request() to its resolution).
 *   bun bench/peers/serve-rpc-load.ts URL INFLIGHT WARMUP_MS DURATION_MS BODY
 * Prints one JSON line: {calls, seconds, p50Us, p99Us} or {error}.
 */

import { rpcConnect } from "../../src/index.ts";
import { ECHO_METHOD } from "./methods.ts";
import { body as bodyFor } from "./serve-bodies.ts";

const [url, inflightS, warmupS, durationS, bytesS] = process.argv.slice(2) as [string, string, string, string, string];
const [inflight, warmupMs, durationMs, bytes] = [inflightS, warmupS, durationS, bytesS].map(Number) as [number, number, number, number];
const client = await rpcConnect(url);
let measuring = false;
let stopping = false;
let failed: string | null = null;
const lat: number[] = [];

async function lane(id: number): Promise<void> {
  for (let seq = 1; !stopping; seq++) {
    const b = bodyFor(id, seq, bytes);
    const t = Bun.nanoseconds();
    const out = await client.request(ECHO_METHOD, b);
    const ns = Bun.nanoseconds() - t;
    if (out.length !== b.length || out.some((x, i) => x !== b[i])) throw new Error(`reply to call ${seq} of lane ${id} differs from its request`);
    if (measuring) lat.push(ns);
  }
}

const lanes = Array.from({ length: inflight }, (_, i) =>
  lane(i).catch((e) => {
    failed ??= e instanceof Error ? e.message : String(e);
    stopping = true;
  }),
);
await Bun.sleep(warmupMs);
const t0 = Bun.nanoseconds();
measuring = true;
await Bun.sleep(durationMs);
measuring = false;
const seconds = (Bun.nanoseconds() - t0) / 1e9;
stopping = true;
await Promise.all(lanes);
client.close();
if (failed !== null) {
  console.log(JSON.stringify({ error: failed }));
  process.exit(1);
}
lat.sort((a, b) => a - b);
const pct = (p: number) => (lat.length === 0 ? NaN : lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! / 1e3);
console.log(JSON.stringify({ calls: lat.length, seconds, p50Us: pct(0.5), p99Us: pct(0.99) }));
process.exit(0);
