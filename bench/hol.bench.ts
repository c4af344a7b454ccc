/**
 * Fast calls behind a slow handler (issue 8): per transport, the per-call round trip of 32-byte
 * echo calls (one in flight, `await request()`) on three sessions to one server, taken in
 * turn: a clean session (the reference), a session with one call to a 30 s handler
 * outstanding, and a session after 300 calls to a handler that never answers were given up on
 * (timed out). Every figure is a percentile of individually timed calls; ratios are to the
 * reference, measured interleaved in the same run.
 *
 *   bun bench/hol.bench.ts [--calls 2000] [--transports shm,inproc,tcp,ucx]
 *
 * Servers run in their own process (a Worker for inproc), default wait modes.
 */

import { rpcConnect, UcxUnavailableError, type Client } from "../src/index.ts";
import { HOL_ECHO, HOL_NEVER, HOL_SLOW } from "./peers/hol-server.ts";
import { startPeer } from "./spawn.ts";

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const CALLS = Number(flag("calls", "2000"));
const TRANSPORTS = flag("transports", "shm,inproc,tcp,ucx").split(",");
const SERVER = new URL("./peers/hol-server.ts", import.meta.url).pathname;
const UCX_ENV = { UCX_TLS: process.env.UCX_TLS ?? "shm,self,tcp" };

interface Stats {
  p50: number;
  p99: number;
  n: number;
}

function stats(us: number[]): Stats {
  const s = us.slice().sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50: at(0.5), p99: at(0.99), n: s.length };
}

/**
 * `n` rounds of one echo call on each client in turn, each call timed on its own (µs), so
 * every client sees the same machine conditions; compares every reply with its request, every byte.
 */
async function interleavedEchoes(clients: Client<any>[], n: number): Promise<number[][]> {
  const data = new Uint8Array(32);
  const out = clients.map(() => [] as number[]);
  for (let i = 0; i < n; i++) {
    // Distinct bytes per call: i (u32 LE), then a pattern of it.
    new DataView(data.buffer).setUint32(0, i, true);
    for (let j = 4; j < 32; j++) data[j] = (i + j * 7) & 0xff;
    for (let k = 0; k < clients.length; k++) {
      const t0 = Bun.nanoseconds();
      const r = await clients[k]!.request(HOL_ECHO, data, { timeoutMs: 10_000 });
      out[k]!.push((Bun.nanoseconds() - t0) / 1e3);
      if (r.length !== 32 || Buffer.compare(r, data) !== 0) throw new Error(`echo ${i}: the reply differs from the request`);
    }
  }
  return out;
}

async function startServer(transport: string): Promise<{ url: string; stop(): Promise<void> }> {
  if (transport === "inproc") {
    const w = new Worker(SERVER);
    const ready = new Promise<{ url: string }>((r) => (w.onmessage = (e) => r(e.data)));
    w.postMessage({ url: `inproc://hol-${process.pid}` });
    const { url } = await ready;
    return { url, stop: async () => void w.terminate() };
  }
  const where = transport === "shm" ? `shm://hol-${process.pid}` : `${transport}://127.0.0.1:0`;
  const peer = await startPeer([SERVER, where], transport === "ucx" ? UCX_ENV : {});
  return { url: peer.url, stop: () => peer.stop() };
}

const fmt = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1));
const rows: string[] = [];
const json: Record<string, unknown> = {};
if (TRANSPORTS.includes("ucx")) Object.assign(process.env, UCX_ENV);

for (const t of TRANSPORTS) {
  let srv;
  try {
    srv = await startServer(t);
  } catch (e) {
    if (e instanceof UcxUnavailableError) {
      rows.push(`${t.padEnd(7)} skipped: ${e.message}`);
      continue;
    }
    throw e;
  }
  // Three sessions to one server: a clean one (the reference), one with a 30 s call
  // outstanding, one after 300 calls to a handler that never answers were given up on.
  const [ref, behind, after] = await Promise.all([0, 1, 2].map(() => rpcConnect(srv.url, { window: 512 })));
  try {
    let slowDone = false;
    const slow = behind!.request(HOL_SLOW, new Uint8Array([0x30, 0x75, 0, 0]), { timeoutMs: 60_000 }).then(() => (slowDone = true)); // 30,000 ms
    const gaveUp = await Promise.all(Array.from({ length: 300 }, () => after!.request(HOL_NEVER, new Uint8Array(8), { timeoutMs: 50 }).then(() => false, () => true)));
    await interleavedEchoes([ref!, behind!, after!], 200); // warm-up
    const [a, b, n] = (await interleavedEchoes([ref!, behind!, after!], CALLS)).map(stats) as [Stats, Stats, Stats];
    const r = (x: Stats, y: Stats) => `p50 ${fmt(x.p50)} µs (${(x.p50 / y.p50).toFixed(2)}x) p99 ${fmt(x.p99)} µs (${(x.p99 / y.p99).toFixed(2)}x)`;
    rows.push(
      `${t.padEnd(7)} reference p50 ${fmt(a.p50)} µs p99 ${fmt(a.p99)} µs | behind a 30 s handler ${r(b, a)}${slowDone ? " [the slow call finished first!]" : ""} | after ${gaveUp.filter(Boolean).length} abandoned calls ${r(n, a)}`,
    );
    json[t] = { reference: a, behindSlow: b, afterAbandoned: n, slowFinishedFirst: slowDone };
    void slow.catch(() => {});
  } finally {
    for (const c of [ref, behind, after]) c!.close();
    await srv.stop();
  }
}

console.log(`fast 32-byte echo calls, ${CALLS} per figure, one in flight, three sessions taken in turn (reference: the clean session, same run)`);
for (const r of rows) console.log(r);
console.log(JSON.stringify(json));
process.exit(0);
