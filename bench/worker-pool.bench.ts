/**
 * Worker pool: a 1 KiB request / 1 KiB reply through hotpath's workerPool (inproc: one
 * SharedArrayBuffer segment per Worker) against plain postMessage to a pool of as many Workers,
 * in one run, for pool sizes 1 and 2.
 *
 * Every reply is the request with each byte XOR 0x5a (peers/worker-pool-handlers.ts for hotpath,
 * peers/worker-pool-postmessage.ts for postMessage), computed in the Worker and checked here byte
 * for byte against its own request (a wrong byte throws): each call's request carries its own
 * sequence number in its first 4 bytes, so a reply delivered to another of the 64 calls in flight
 * is caught. postMessage gets its best ordinary usage, two rows: structured
 * clone of the Uint8Array both ways, and a transferred ArrayBuffer both ways (the caller's bytes
 * copied into a fresh buffer per call, as hotpath copies them into its segment). Calls go to the
 * Worker with the fewest in flight in both.
 *
 * Rows: RTT p50/p99 at 1 in flight (each call timed alone, Bun.nanoseconds, after a warm-up);
 * the full run measures every row twice (fresh Workers, the second round in reverse order) and
 * takes percentiles over both rounds' calls and rates over both windows;
 * calls/s at 64 in flight (64 loops, each awaiting its call); CPU per call over that window, of
 * the whole process (main thread + Workers, process.cpuUsage) and of the main thread alone
 * (/proc/self/task/<pid>/schedstat): the main thread is the Bun.serve front's in the use case.
 * Hotpath rows name the wait modes of the calling side and of the Workers; besides the default,
 * the full run measures two spinning pairs (a short bounded caller spin with spinning blocking
 * Workers); `--waits [ROUNDS]` measures all the candidates DEFAULT_WAIT was chosen among.
 * The machine has 2 cores: with size 2 the main thread and two Workers share them. The full run
 * adds 60 KiB rows at size 1 (default wait modes only): what copying into the segment costs
 * against a structured clone or a transfer of the same bytes.
 *
 *   bun bench/worker-pool.bench.ts [--quick] [--json PATH] | [--waits [ROUNDS]]
 *   import { measureWorkerPool } from "./worker-pool.bench.ts"  // the part, for bench/run.ts
 */

import { readFileSync, writeFileSync } from "node:fs";
import { workerPool, type WaitPolicy } from "../src/index.ts";
import { DEFAULT_WAIT } from "../src/serve/worker-pool.ts";
import { os } from "./os.ts";
import type { PartReport } from "./report.ts";
import { XOR_METHOD } from "./peers/worker-pool-handlers.ts";

const HANDLERS = new URL("./peers/worker-pool-handlers.ts", import.meta.url);
const PM_WORKER = new URL("./peers/worker-pool-postmessage.ts", import.meta.url).href;
const BODY_BYTES = 1024;
/** The larger body of the full run's extra rows (size 1): fits the segment's 64 KiB slab slots with the header, 64 of them. */
const LARGE_BODY_BYTES = 60 << 10;
const IN_FLIGHT = 64;

export interface WorkerPoolRow {
  size: number;
  bodyBytes: number;
  id: string;
  label: string;
  p50Us: number;
  p99Us: number;
  callsPerS: number;
  cpuUsPerCall: number;
  mainCpuUsPerCall: number;
}

/** @internal What a row measures through (exported for the bench's own check test). */
export interface Driver {
  call(data: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** A reply's bytes differ from its own request's XOR 0x5a (the bench throws it; exported for its test). */
export class ReplyMismatch extends Error {}

function check(reply: Uint8Array, expected: Uint8Array, row: string): void {
  if (reply.length !== expected.length || Buffer.compare(reply, expected) !== 0) {
    throw new ReplyMismatch(`worker-pool bench ${row}: a reply of ${reply.length} bytes differs from the expected ${expected.length} (request XOR 0x5a)`);
  }
}

/** postMessage to `size` Workers, least busy first; `transfer`: ArrayBuffers transferred both ways. */
async function postMessagePool(size: number, transfer: boolean): Promise<Driver> {
  const workers = await Promise.all(
    Array.from({ length: size }, async () => {
      const w = new Worker(PM_WORKER);
      await new Promise<void>((resolve, reject) => {
        w.onmessage = () => resolve();
        w.onerror = (e) => reject(new Error(`postMessage Worker: ${e.message}`));
      });
      return w;
    }),
  );
  const inFlight = new Array(size).fill(0);
  const waiting = new Map<number, { resolve: (b: Uint8Array) => void; w: number }>();
  let nextId = 0;
  workers.forEach((w) => {
    w.onmessage = (e: MessageEvent) => {
      const { id, data } = e.data as { id: number; data: Uint8Array | ArrayBuffer };
      const p = waiting.get(id)!;
      waiting.delete(id);
      inFlight[p.w]--;
      p.resolve(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
    };
  });
  return {
    call(data) {
      let wi = 0;
      for (let i = 1; i < size; i++) if (inFlight[i] < inFlight[wi]) wi = i;
      inFlight[wi]++;
      const id = nextId++;
      return new Promise<Uint8Array>((resolve) => {
        waiting.set(id, { resolve, w: wi });
        if (transfer) {
          const buf = data.slice().buffer;
          workers[wi]!.postMessage({ id, data: buf }, [buf]);
        } else workers[wi]!.postMessage({ id, data });
      });
    },
    async close() {
      await Promise.all(
        workers.map((w) => {
          const gone = new Promise((r) => w.addEventListener("close", r));
          w.terminate();
          return gone;
        }),
      );
    },
  };
}

type Waits = { caller: Partial<WaitPolicy>; worker: Partial<WaitPolicy> };
const waitName = (w: Partial<WaitPolicy>) => `${w.mode ?? "adaptive"}${w.spinNs === undefined ? "" : ` spin ${w.spinNs / 1000} µs`}`;
const waitsLabel = (w: Waits) => `caller ${waitName(w.caller)} / Workers ${waitName(w.worker)}`;

async function hotpathPool(size: number, wait: Waits): Promise<Driver> {
  const pool = await workerPool(HANDLERS, { size, window: IN_FLIGHT, wait });
  return { call: (data) => pool.request(XOR_METHOD, data), close: () => pool.close() };
}

/** The main thread's CPU time so far, µs (its schedstat: ns on a CPU). */
function mainThreadCpuUs(): number {
  return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, "utf8").split(" ")[0]) / 1000;
}

function processCpuUsNow(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

const pct = (sorted: Float64Array, q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

/** One round of one row: the per-call times, and the 64-in-flight window's calls, ms and CPU. */
export interface Round {
  times: Float64Array;
  calls: number;
  elapsedMs: number;
  cpuUs: number;
  mainCpuUs: number;
}

/**
 * A caller's request and the reply it expects, both stamped per call: stamp(seq) writes `seq`
 * into the request's first 4 bytes and its XOR 0x5a into the expected reply's (the rest is fixed),
 * so a reply delivered to another call (its own sequence number) fails the byte check. Two 4-byte
 * writes per call, next to a 1 KiB copy each way.
 */
class Stamped {
  readonly data: Uint8Array;
  readonly expected: Uint8Array;
  private readonly req: DataView;
  private readonly exp: DataView;
  constructor(bodyBytes: number) {
    this.data = new Uint8Array(bodyBytes).map((_, i) => (i * 7 + 3) & 0xff);
    this.expected = this.data.map((b) => b ^ 0x5a);
    this.req = new DataView(this.data.buffer);
    this.exp = new DataView(this.expected.buffer);
  }
  stamp(seq: number): Uint8Array {
    this.req.setUint32(0, seq, true);
    this.exp.setUint32(0, (seq ^ 0x5a5a5a5a) >>> 0, true);
    return this.data;
  }
}

/** @internal One round of one row on driver `d` (exported for the bench's own check test); throws ReplyMismatch on a wrong reply. */
export async function measureRound(d: Driver, row: string, o: { warm: number; timed: number; windowMs: number; bodyBytes: number }): Promise<Round> {
  let seq = 0;
  const one = new Stamped(o.bodyBytes);
  for (let i = 0; i < o.warm; i++) check(await d.call(one.stamp(seq++)), one.expected, row);
  const times = new Float64Array(o.timed);
  for (let i = 0; i < o.timed; i++) {
    const data = one.stamp(seq++);
    const t0 = Bun.nanoseconds();
    const reply = await d.call(data);
    times[i] = (Bun.nanoseconds() - t0) / 1000;
    check(reply, one.expected, row);
  }
  // Each of the 64 loops owns its request buffer (every driver copies it before call() returns).
  const loops = Array.from({ length: IN_FLIGHT }, () => new Stamped(o.bodyBytes));
  let calls = 0;
  const cpu0 = processCpuUsNow();
  const main0 = mainThreadCpuUs();
  const t0 = performance.now();
  const end = t0 + o.windowMs;
  await Promise.all(
    loops.map(async (mine) => {
      while (performance.now() < end) {
        check(await d.call(mine.stamp(seq++)), mine.expected, row);
        calls++;
      }
    }),
  );
  return { times, calls, elapsedMs: performance.now() - t0, cpuUs: processCpuUsNow() - cpu0, mainCpuUs: mainThreadCpuUs() - main0 };
}

/** A row's figures over its rounds: percentiles of all per-call times, window totals summed. */
function figures(rounds: Round[]): Omit<WorkerPoolRow, "size" | "bodyBytes" | "id" | "label"> {
  const times = new Float64Array(rounds.reduce((n, r) => n + r.times.length, 0));
  let at = 0;
  for (const r of rounds) {
    times.set(r.times, at);
    at += r.times.length;
  }
  times.sort();
  const sum = (f: (r: Round) => number) => rounds.reduce((n, r) => n + f(r), 0);
  const calls = sum((r) => r.calls);
  return {
    p50Us: pct(times, 0.5),
    p99Us: pct(times, 0.99),
    callsPerS: (calls / sum((r) => r.elapsedMs)) * 1000,
    cpuUsPerCall: sum((r) => r.cpuUs) / calls,
    mainCpuUsPerCall: sum((r) => r.mainCpuUs) / calls,
  };
}

const f1 = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const kps = (v: number) => `${(v / 1000).toFixed(1)}k`;

/** The part: rows for sizes 1 and 2, the issue's two targets per size (vs postMessage's best row). */
export async function measureWorkerPool(opts: { quick: boolean; log: (s: string) => void; waits?: { rounds: number } }): Promise<PartReport> {
  if (opts.waits !== undefined) return measureWaits(opts.waits.rounds, opts.log);
  // Full: two rounds per row, the second in reverse order, so drift on the busy machine falls on every row alike.
  const o = opts.quick ? { warm: 300, timed: 1000, windowMs: 300, rounds: 1 } : { warm: 300, timed: 1200, windowMs: 300, rounds: 2 };
  // An unrecorded round of each kind first: the first row measured in a process otherwise pays for
  // the JIT compiling the 64-in-flight paths (seen as a first row several times slower than its repeat).
  for (const make of [() => hotpathPool(1, DEFAULT_WAIT), () => postMessagePool(1, false)]) {
    const d = await make();
    try {
      await measureRound(d, "warm-up", { ...o, bodyBytes: BODY_BYTES });
    } finally {
      await d.close();
    }
  }
  // The default, and the other pairs it was chosen against (full mode only).
  const alternatives: Waits[] = opts.quick
    ? []
    : [
        { caller: { mode: "async", spinNs: 5_000 }, worker: { mode: "blocking", spinNs: 20_000 } },
        { caller: { mode: "async", spinNs: 20_000 }, worker: { mode: "blocking", spinNs: 50_000 } },
      ];
  const rows: WorkerPoolRow[] = [];
  // 1 KiB at sizes 1 and 2 (the targets); in the full run also 60 KiB at size 1 (what a clone costs), no alternatives.
  const groups = [
    { size: 1, bodyBytes: BODY_BYTES },
    { size: 2, bodyBytes: BODY_BYTES },
    ...(opts.quick ? [] : [{ size: 1, bodyBytes: LARGE_BODY_BYTES }]),
  ];
  for (const { size, bodyBytes } of groups) {
    const kinds: { id: string; label: string; make: () => Promise<Driver> }[] = [
      { id: "hotpath", label: `hotpath workerPool, ${waitsLabel(DEFAULT_WAIT)} (default)`, make: () => hotpathPool(size, DEFAULT_WAIT) },
      { id: "postmessage-clone", label: "postMessage, structured clone of a Uint8Array", make: () => postMessagePool(size, false) },
      { id: "postmessage-transfer", label: "postMessage, transferred ArrayBuffer", make: () => postMessagePool(size, true) },
      ...(bodyBytes === BODY_BYTES ? alternatives : []).map((w) => ({ id: `hotpath-${waitName(w.caller)}-${waitName(w.worker)}`.replace(/[ µ]+/g, "-"), label: `hotpath workerPool, ${waitsLabel(w)}`, make: () => hotpathPool(size, w) })),
    ];
    const rounds = new Map<string, Round[]>(kinds.map((k) => [k.id, []]));
    for (let round = 0; round < o.rounds; round++) {
      for (const k of round % 2 === 0 ? kinds : [...kinds].reverse()) {
        const d = await k.make();
        try {
          rounds.get(k.id)!.push(await measureRound(d, `${k.id} size ${size} ${bodyBytes} B`, { ...o, bodyBytes }));
        } finally {
          await d.close();
        }
      }
    }
    for (const k of kinds) {
      const fig = figures(rounds.get(k.id)!);
      rows.push({ size, bodyBytes, id: k.id, label: k.label, ...fig });
      opts.log(`worker-pool: size ${size} ${bodyBytes} B ${k.id}: p50 ${f1(fig.p50Us)} µs, ${kps(fig.callsPerS)} calls/s at ${IN_FLIGHT}`);
    }
  }
  const lines = [
    `${"size".padEnd(5)}${"body".padEnd(7)}${"row".padEnd(72)}${"p50 µs".padStart(9)}${"p99 µs".padStart(9)}${"calls/s@64".padStart(12)}${"CPU µs/call".padStart(13)}${"main µs/call".padStart(14)}${"p50 ×pm".padStart(9)}${"tput ×pm".padStart(10)}`,
  ];
  const targets: PartReport["targets"] = [];
  for (const { size, bodyBytes } of groups) {
    const of = rows.filter((r) => r.size === size && r.bodyBytes === bodyBytes);
    const pm = of.filter((r) => r.id.startsWith("postmessage"));
    const bestRtt = Math.min(...pm.map((r) => r.p50Us));
    const bestTput = Math.max(...pm.map((r) => r.callsPerS));
    for (const r of of) {
      lines.push(
        `${String(size).padEnd(5)}${`${bodyBytes >> 10}K`.padEnd(7)}${r.label.padEnd(72)}${f1(r.p50Us).padStart(9)}${f1(r.p99Us).padStart(9)}${kps(r.callsPerS).padStart(12)}${r.cpuUsPerCall.toFixed(2).padStart(13)}${r.mainCpuUsPerCall.toFixed(2).padStart(14)}${(r.p50Us / bestRtt).toFixed(2).padStart(9)}${(r.callsPerS / bestTput).toFixed(2).padStart(10)}`,
      );
    }
    if (bodyBytes !== BODY_BYTES) continue;
    const hp = of.find((r) => r.id === "hotpath")!;
    const rtt = hp.p50Us / bestRtt;
    const tput = hp.callsPerS / bestTput;
    targets.push({ label: `worker pool size ${size}: 1 KiB RTT p50 ≤ 0.25× postMessage's`, measured: `${f1(hp.p50Us)} µs vs ${f1(bestRtt)} µs = ${rtt.toFixed(2)}×`, met: rtt <= 0.25 });
    targets.push({ label: `worker pool size ${size}: calls/s at 64 in flight ≥ 4× postMessage's`, measured: `${kps(hp.callsPerS)} vs ${kps(bestTput)} = ${tput.toFixed(2)}×`, met: tput >= 4 });
  }
  lines.push("×pm: ratio to the best postMessage row of the same size and body (lowest p50, highest calls/s); CPU: whole process; main: the calling thread alone");
  return { title: `Worker pool: 1 KiB request/reply, hotpath workerPool vs postMessage, sizes 1 and 2 (${os()})`, lines, targets, rows: rows as unknown as Record<string, unknown>[] };
}

/**
 * `--waits [ROUNDS]`: the wait-mode candidates alone (1 KiB, sizes 1 and 2) beside postMessage,
 * ROUNDS rounds (default 4), each round measuring every kind once on fresh Workers, alternating
 * forward and reverse order; per round and row the p50 and calls/s and their ratio to the
 * round's postMessage, then the medians over rounds. What DEFAULT_WAIT was chosen by.
 */
export const WAIT_CANDIDATES: { id: string; waits: Waits }[] = [
  { id: "async-0/async-0", waits: { caller: { mode: "async", spinNs: 0 }, worker: { mode: "async", spinNs: 0 } } },
  { id: "async-0/blocking-50", waits: { caller: { mode: "async", spinNs: 0 }, worker: { mode: "blocking", spinNs: 50_000 } } },
  { id: "async-5/blocking-20", waits: { caller: { mode: "async", spinNs: 5_000 }, worker: { mode: "blocking", spinNs: 20_000 } } },
  { id: "async-5/blocking-50", waits: { caller: { mode: "async", spinNs: 5_000 }, worker: { mode: "blocking", spinNs: 50_000 } } },
  { id: "async-10/blocking-50", waits: { caller: { mode: "async", spinNs: 10_000 }, worker: { mode: "blocking", spinNs: 50_000 } } },
  { id: "async-20/blocking-50", waits: { caller: { mode: "async", spinNs: 20_000 }, worker: { mode: "blocking", spinNs: 50_000 } } },
];

async function measureWaits(nRounds: number, log: (s: string) => void): Promise<PartReport> {
  const o = { warm: 300, timed: 1000, windowMs: 250, bodyBytes: BODY_BYTES };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const lines: string[] = [`${"size".padEnd(5)}${"row".padEnd(24)}${"p50 µs".padStart(9)}${"calls/s@64".padStart(12)}${"main µs/call".padStart(14)}${"p50 ×pm".padStart(9)}${"tput ×pm".padStart(10)}   (medians over ${nRounds} rounds; ×pm per round)`];
  const rows: Record<string, unknown>[] = [];
  for (const size of [1, 2]) {
    const kinds = [{ id: "postmessage", make: () => postMessagePool(size, false) }, ...WAIT_CANDIDATES.map((c) => ({ id: c.id, make: () => hotpathPool(size, c.waits) }))];
    const per = new Map<string, { p50: number[]; tput: number[]; main: number[]; rp50: number[]; rtput: number[] }>(kinds.map((k) => [k.id, { p50: [], tput: [], main: [], rp50: [], rtput: [] }]));
    for (let round = 0; round < nRounds; round++) {
      const got = new Map<string, ReturnType<typeof figures>>();
      for (const k of round % 2 === 0 ? kinds : [...kinds].reverse()) {
        const d = await k.make();
        try {
          got.set(k.id, figures([await measureRound(d, `${k.id} size ${size}`, o)]));
        } finally {
          await d.close();
        }
      }
      const pm = got.get("postmessage")!;
      for (const [id, f] of got) {
        const e = per.get(id)!;
        e.p50.push(f.p50Us);
        e.tput.push(f.callsPerS);
        e.main.push(f.mainCpuUsPerCall);
        e.rp50.push(f.p50Us / pm.p50Us);
        e.rtput.push(f.callsPerS / pm.callsPerS);
      }
      log(`worker-pool waits: size ${size} round ${round}: ${[...got].map(([id, f]) => `${id} ${f1(f.p50Us)} µs ${kps(f.callsPerS)}`).join(", ")}`);
    }
    for (const [id, e] of per) {
      const row = { size, id, p50Us: median(e.p50), callsPerS: median(e.tput), mainCpuUsPerCall: median(e.main), p50VsPm: median(e.rp50), tputVsPm: median(e.rtput) };
      rows.push(row);
      lines.push(`${String(size).padEnd(5)}${id.padEnd(24)}${f1(row.p50Us).padStart(9)}${kps(row.callsPerS).padStart(12)}${row.mainCpuUsPerCall.toFixed(2).padStart(14)}${row.p50VsPm.toFixed(2).padStart(9)}${row.tputVsPm.toFixed(2).padStart(10)}`);
    }
  }
  lines.push("caller / Workers: wait mode and spinNs in µs; postmessage: structured clone");
  return { title: `Worker pool wait modes, 1 KiB (${os()})`, lines, targets: [], rows };
}

if (import.meta.main) {
  const quick = process.argv.includes("--quick");
  const waitsAt = process.argv.indexOf("--waits");
  if (waitsAt >= 0) {
    const part = await measureWorkerPool({ quick, log: (s) => console.error(s), waits: { rounds: Number(process.argv[waitsAt + 1]) || 4 } });
    console.log(part.title);
    for (const l of part.lines) console.log(l);
    process.exit(0);
  }
  const jsonAt = process.argv.indexOf("--json");
  const part = await measureWorkerPool({ quick, log: (s) => console.error(s) });
  console.log(part.title);
  for (const l of part.lines) console.log(l);
  for (const t of part.targets) console.log(`target ${t.met ? "met   " : "MISSED"} ${t.label}: ${t.measured}`);
  if (jsonAt >= 0 && process.argv[jsonAt + 1]) writeFileSync(process.argv[jsonAt + 1]!, JSON.stringify(part, null, 2));
}
