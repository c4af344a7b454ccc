/**
 * Soak: per transport, an echo server in another process (a Worker for inproc) and this
 * process keeping 64 requests in flight for --seconds, with random sizes from 32 B to 1 MiB
 * (log-uniform), every response checked against its own request. Run on demand, not in CI:
 *
 *   bun bench/soak.ts [--seconds 60] [--transports shm,inproc,tcp,ucx] [--in-flight 64]
 *                     [--min-bytes 32] [--max-bytes 1048576] [--wait adaptive] [--ucx-tls tcp,self]
 *                     [--json PATH]
 *
 * Each request starts with its sequence number and length (u32 LE each) followed by bytes from
 * a random pool at an offset derived from the sequence number; half go to a synchronous echo
 * handler, half to one that answers after an event-loop turn. A response is:
 *   - corrupt when its length or bytes differ from its request's,
 *   - misrouted when it carries another outstanding request's sequence number,
 *   - duplicated when it carries a sequence number already answered, or the client counted it
 *     as a late response (a call answered twice),
 *   - lost when its request neither resolved nor rejected DRAIN_MS after the run stopped;
 *   - an error when its request rejected (any typed error counts: none is expected).
 * All must be 0. Every second it samples this process's RSS and the server's (read from
 * /proc/<pid>/status; inproc's server shares this process) and reports each RSS slope (MiB/min,
 * least squares over the samples after the first WARMUP_FRACTION of the run), and the worst
 * gap between ticks of a 100 ms setInterval in this process (event-loop starvation).
 *
 * Prints one line per transport and a JSON summary (to --json PATH too); exits 1 when any
 * transport had a lost, duplicated, misrouted, corrupt or failed call, or its server died.
 */

import { rpcConnect, serve, type ListenOptions, type Serving } from "../src/index.ts";
import { procFigures, slope } from "../test/helpers/proc-figures.ts";

const M_ECHO = 1;
const M_ECHO_LATER = 2;
/** The 100 ms timer whose gaps measure how long the event loop went without running timers. */
const TICK_MS = 100;
/** Responses still outstanding this long after the run stops count as lost. */
const DRAIN_MS = 30_000;
/** RSS slopes leave out this first part of the run (JIT warm-up, slab pages first touched). */
const WARMUP_FRACTION = 0.1;
/** Random bytes requests are cut from: 2 MiB, so every 1 MiB request has its own offset. */
const POOL_BYTES = 2 << 20;

const handlers = {
  [M_ECHO]: (h: { data: Uint8Array }) => h.data,
  [M_ECHO_LATER]: async (h: { data: Uint8Array }) => {
    await new Promise((r) => setImmediate(r));
    return h.data;
  },
};

function waitOpts(mode: string | undefined): ListenOptions {
  return mode ? { wait: { mode: mode as never } } : {};
}

// ------------------------------------------------------------------ server roles

declare const self: Worker;

if (!Bun.isMainThread) {
  // inproc: the server in a Worker of the client's process.
  self.onmessage = async (e: MessageEvent) => {
    const s = await serve(e.data.url, handlers, waitOpts(e.data.wait));
    self.postMessage({ url: s.url });
  };
} else if (process.argv[2] === "--serve") {
  // Any other transport: the server in its own process; exits when stdin closes.
  const s: Serving = await serve(process.argv[3]!, handlers, waitOpts(process.argv[4] || undefined));
  console.log(JSON.stringify({ url: s.url, pid: process.pid }));
  for await (const _ of Bun.stdin.stream()) {
    // only EOF matters
  }
  s.close();
  process.exit(0);
} else {
  await main();
}

// ------------------------------------------------------------------ driver

interface Args {
  seconds: number;
  minBytes: number;
  transports: string[];
  inFlight: number;
  maxBytes: number;
  wait: string | undefined;
  ucxTls: string;
  json: string | undefined;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { seconds: 60, minBytes: 32, transports: ["shm", "inproc", "tcp", "ucx"], inFlight: 64, maxBytes: 1 << 20, wait: undefined, ucxTls: "tcp,self", json: undefined };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case "--seconds": a.seconds = Number(v); i++; break;
      case "--transports": a.transports = v!.split(","); i++; break;
      case "--in-flight": a.inFlight = Number(v); i++; break;
      case "--min-bytes": a.minBytes = Number(v); i++; break;
      case "--max-bytes": a.maxBytes = Number(v); i++; break;
      case "--wait": a.wait = v; i++; break;
      case "--ucx-tls": a.ucxTls = v!; i++; break;
      case "--json": a.json = v; i++; break;
      default: throw new Error(`soak: unknown flag ${argv[i]}`);
    }
  }
  return a;
}

interface ServerHandle {
  url: string;
  /** The server's pid, or null when it shares this process (inproc). */
  pid: number | null;
  alive(): boolean;
  stop(): Promise<void>;
}

async function startServer(transport: string, args: Args): Promise<ServerHandle> {
  const url = { shm: `shm://soak-${process.pid}`, inproc: `inproc://soak-${process.pid}`, tcp: "tcp://127.0.0.1:0", ucx: "ucx://127.0.0.1:0" }[transport];
  if (url === undefined) throw new Error(`soak: unknown transport ${transport}`);
  if (transport === "inproc") {
    const w = new Worker(import.meta.url);
    let alive = true;
    w.addEventListener("close", () => (alive = false));
    const ready = await new Promise<{ url: string }>((resolve, reject) => {
      w.onmessage = (e) => resolve(e.data);
      w.onerror = (e) => reject(new Error(`soak inproc server: ${e.message}`));
      w.postMessage({ url, wait: args.wait });
    });
    return { url: ready.url, pid: null, alive: () => alive, stop: async () => w.terminate() };
  }
  const env = { ...process.env, ...(transport === "ucx" ? { UCX_TLS: args.ucxTls } : {}) };
  const proc = Bun.spawn(["bun", import.meta.path, "--serve", url, args.wait ?? ""], { stdin: "pipe", stdout: "pipe", stderr: "inherit", env });
  const reader = proc.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`soak ${transport} server exited before listening (${proc.exitCode ?? proc.signalCode})`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const ready = JSON.parse(text.slice(0, text.indexOf("\n")));
  return {
    url: ready.url,
    pid: proc.pid,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill(9), 5000);
      await proc.exited;
      clearTimeout(t);
    },
  };
}

export interface SoakResult {
  transport: string;
  seconds: number;
  calls: number;
  callsPerS: number;
  mibPerS: number;
  lost: number;
  duplicated: number;
  misrouted: number;
  corrupt: number;
  errors: number;
  firstErrors: string[];
  /** The first few lost, duplicated, misrouted or corrupt responses, described. */
  firstAnomalies: string[];
  clientRssMiB: { first: number; last: number; slopeMiBPerMin: number };
  serverRssMiB: { first: number; last: number; slopeMiBPerMin: number } | null;
  serverCpuPercent: number | null;
  worstTimerGapMs: number;
  serverAlive: boolean;
}

function logUniformSize(min: number, max: number): number {
  return Math.floor(Math.exp(Math.log(min) + Math.random() * (Math.log(max + 1) - Math.log(min))));
}

async function soakOne(transport: string, args: Args, pool: Uint8Array): Promise<SoakResult> {
  if (transport === "ucx") process.env.UCX_TLS = args.ucxTls;
  const server = await startServer(transport, args);
  const client = await rpcConnect(server.url, { window: args.inFlight * 2, timeoutMs: 0, ...(args.wait ? { wait: { mode: args.wait as never } } : {}) });

  const t0 = performance.now();
  const outstanding = new Map<number, Uint8Array>();
  const answered = new Set<number>();
  let calls = 0;
  let bytes = 0;
  let corrupt = 0;
  let misrouted = 0;
  let duplicated = 0;
  let errors = 0;
  const firstErrors: string[] = [];
  let seq = 0;
  let stopping = false;

  const firstAnomalies: string[] = [];
  const anomaly = (what: string, sent: Uint8Array, mySeq: number, got: Uint8Array, gotSeq: number) => {
    if (firstAnomalies.length >= 5) return;
    let firstDiff = -1;
    for (let i = 0; i < Math.min(sent.length, got.length); i++) if (sent[i] !== got[i]) { firstDiff = i; break; }
    const other = outstanding.get(gotSeq);
    firstAnomalies.push(`${what}: call ${mySeq} (${sent.length} B, method ${mySeq % 2 === 0 ? M_ECHO : M_ECHO_LATER}) got ${got.length} B carrying call ${gotSeq}${other ? ` (${other.length} B)` : ""}, first differing byte ${firstDiff}, at ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  };
  const check = (sent: Uint8Array, mySeq: number, got: Uint8Array) => {
    const dv = new DataView(got.buffer, got.byteOffset, got.byteLength);
    const gotSeq = got.length >= 8 ? dv.getUint32(0, true) : -1;
    if (gotSeq !== mySeq) {
      const what = answered.has(gotSeq) ? "duplicated" : outstanding.has(gotSeq) ? "misrouted" : "corrupt";
      if (what === "duplicated") duplicated++;
      else if (what === "misrouted") misrouted++;
      else corrupt++;
      return anomaly(what, sent, mySeq, got, gotSeq);
    }
    if (got.length !== sent.length || !Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(sent)) {
      corrupt++;
      anomaly("corrupt", sent, mySeq, got, gotSeq);
    }
  };

  const lane = async () => {
    while (!stopping) {
      const mySeq = seq++;
      const len = logUniformSize(args.minBytes, args.maxBytes);
      const at = (mySeq * 7919) % (POOL_BYTES - len);
      const data = pool.slice(at, at + len);
      const dv = new DataView(data.buffer);
      dv.setUint32(0, mySeq, true);
      dv.setUint32(4, len, true);
      outstanding.set(mySeq, data);
      try {
        const got = await client.request(mySeq % 2 === 0 ? M_ECHO : M_ECHO_LATER, data);
        check(data, mySeq, got);
        calls++;
        bytes += len;
      } catch (e) {
        errors++;
        if (firstErrors.length < 5) firstErrors.push(`${(e as Error).name}: ${(e as Error).message}`);
      }
      outstanding.delete(mySeq);
      answered.add(mySeq);
      if (answered.size > 1 << 20) answered.clear(); // bounded memory; duplicates come soon after the original
    }
  };

  const times: number[] = [];
  const clientRss: number[] = [];
  const serverRss: number[] = [];
  const cpu0 = server.pid !== null ? procFigures(server.pid).cpuMs : 0;
  let lastTick = t0;
  let lastSample = -Infinity;
  let worstGap = 0;
  const sample = (now: number) => {
    lastSample = now;
    times.push((now - t0) / 60_000);
    clientRss.push(process.memoryUsage().rss / 2 ** 20);
    if (server.pid !== null && server.alive()) serverRss.push(procFigures(server.pid).rssMiB);
  };
  sample(t0);
  const timer = setInterval(() => {
    const now = performance.now();
    worstGap = Math.max(worstGap, now - lastTick);
    lastTick = now;
    if (now - lastSample >= 1000) sample(now);
  }, TICK_MS);

  const lanes = Array.from({ length: args.inFlight }, lane);
  await Bun.sleep(args.seconds * 1000);
  stopping = true;
  const elapsedS = (performance.now() - t0) / 1000;
  const cpu1 = server.pid !== null && server.alive() ? procFigures(server.pid).cpuMs : cpu0;
  const drained = await Promise.race([Promise.all(lanes).then(() => true), Bun.sleep(DRAIN_MS).then(() => false)]);
  clearInterval(timer);
  const lost = drained ? 0 : outstanding.size;
  duplicated += client.lateResponses;
  const serverAlive = server.alive();
  client.close();
  await server.stop();

  const fit = (ys: number[]) => {
    const from = Math.floor(ys.length * WARMUP_FRACTION);
    return { first: ys[0] ?? NaN, last: ys[ys.length - 1] ?? NaN, slopeMiBPerMin: slope(times.slice(from, ys.length), ys.slice(from)) };
  };
  return {
    transport: transport === "ucx" ? `ucx (UCX_TLS=${args.ucxTls})` : transport,
    seconds: elapsedS,
    calls,
    callsPerS: calls / elapsedS,
    mibPerS: bytes / 2 ** 20 / elapsedS,
    lost,
    duplicated,
    misrouted,
    corrupt,
    errors,
    firstErrors,
    firstAnomalies,
    clientRssMiB: fit(clientRss),
    serverRssMiB: server.pid !== null ? fit(serverRss) : null,
    serverCpuPercent: server.pid !== null ? ((cpu1 - cpu0) / 1000 / elapsedS) * 100 : null,
    worstTimerGapMs: worstGap,
    serverAlive,
  };
}

function line(r: SoakResult): string {
  const rss = (x: { first: number; last: number; slopeMiBPerMin: number }) => `${x.first.toFixed(0)}→${x.last.toFixed(0)} MiB (${x.slopeMiBPerMin >= 0 ? "+" : ""}${x.slopeMiBPerMin.toFixed(2)} MiB/min)`;
  return (
    `soak ${r.transport}: ${r.seconds.toFixed(1)} s, ${r.calls} calls (${r.callsPerS.toFixed(0)}/s, ${r.mibPerS.toFixed(1)} MiB/s); ` +
    `lost ${r.lost} duplicated ${r.duplicated} misrouted ${r.misrouted} corrupt ${r.corrupt} errors ${r.errors}; ` +
    `client RSS ${rss(r.clientRssMiB)}; server RSS ${r.serverRssMiB ? rss(r.serverRssMiB) : "(same process)"}` +
    `${r.serverCpuPercent !== null ? `, server CPU ${r.serverCpuPercent.toFixed(0)}%` : ""}; worst ${TICK_MS} ms timer gap ${r.worstTimerGapMs.toFixed(0)} ms` +
    `${r.serverAlive ? "" : "; SERVER DIED"}${r.firstErrors.length ? `; first errors: ${r.firstErrors.join(" | ")}` : ""}` +
    `${r.firstAnomalies.length ? `; first anomalies: ${r.firstAnomalies.join(" | ")}` : ""}`
  );
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const pool = crypto.getRandomValues(new Uint8Array(POOL_BYTES));
  const results: SoakResult[] = [];
  let failed = false;
  for (const t of args.transports) {
    let r: SoakResult;
    try {
      r = await soakOne(t, args, pool);
    } catch (e) {
      console.log(`soak ${t}: could not run: ${(e as Error).message}`);
      failed = true;
      continue;
    }
    console.log(line(r));
    results.push(r);
    if (r.lost + r.duplicated + r.misrouted + r.corrupt + r.errors > 0 || !r.serverAlive) failed = true;
  }
  const summary = { seconds: args.seconds, inFlight: args.inFlight, sizes: `${args.minBytes}..${args.maxBytes} B log-uniform`, wait: args.wait ?? "default", bun: Bun.version, results };
  console.log(JSON.stringify(summary));
  if (args.json) await Bun.write(args.json, JSON.stringify(summary, null, 2));
  process.exit(failed ? 1 : 0);
}
