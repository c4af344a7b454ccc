/**
 * Idle-to-woken latency (issue 14, item 4): a call that reaches a peer which has gone idle (calls
 * spaced ~1 ms apart, each timed alone), over hotpath shm (default adaptive; and async spinNs 0),
 * inproc and tcp, beside the references measured in the same run: a Worker postMessage round
 * trip (back-to-back and spaced the same), a raw Bun Unix-socket ping-pong (the mechanism of
 * shm's event-loop doorbell) and a raw cross-process futex ping-pong through bun:ffi (the floor a
 * wake-up has here, the vCPU's own wake included: cpuidle's driver is `none` on this machine, so
 * an idle vCPU halts).
 *
 * Layout: this process is the client (main thread, its event loop); the server is a process of
 * its own (shm, tcp, the raw references: bench/peers/idle-server.ts, idle-raw.ts) or a Worker of
 * this process (inproc, postMessage). Both hotpath sides run the wait policy the row names (no
 * policy: the transport's default, as a Bun.serve process would run it).
 *
 * Per row: p50 / p99 of the spaced calls (each timed alone, Bun.nanoseconds), and CPU µs per call
 * of the client (this process, or this process minus the Worker) and of the server (its process's
 * threads, or the Worker's thread): the client's figure includes its own timer wake-up between
 * calls, the same in every row. Every reply is checked byte for byte (a wrong one throws).
 *
 * Stages of a spaced hotpath call (shm, inproc), from stamps on CLOCK_MONOTONIC, which both
 * processes read (Bun.nanoseconds() plus each process's offset to it): client send → its doorbell
 * written (the socket write returned) → server woken (the control socket's data callback) →
 * handler → reply's doorbell written → client woken → promise resolved; medians per stage. The
 * raw references give the same cut: one way through a socket byte, one way through a futex.
 *
 *   bun bench/idle-wake.bench.ts [--quick] [--json PATH]
 *   import { measureIdleWake } from "./idle-wake.bench.ts"   // the PartReport, for bun run bench
 */

import { readFileSync, writeFileSync } from "node:fs";
import { rpcConnect, type Client } from "../src/index.ts";
import { ShmMapping, futexWait, futexWake, shmUnlink } from "../src/ffi/libc.ts";
import { processProbe, workerProbe, workerThreads, type CpuProbe } from "./cpu.ts";
import { os } from "./os.ts";
import { startPeer, type BenchPeer } from "./spawn.ts";
import { clockOffsetNs, stampConnection } from "./peers/idle-clock.ts";
import { M_ECHO, M_RESET, M_STAMPS } from "./peers/idle-server.ts";
import { FUTEX_LAYOUT } from "./peers/idle-raw.ts";

/** The PartReport of issue 14's shared spec (bench/run.ts prints `lines` and checks `targets`). */
export interface PartReport {
  title: string;
  lines: string[];
  targets: { label: string; measured: string; met: boolean }[];
  rows: Record<string, unknown>[];
}

export interface IdleWakeOptions {
  quick: boolean;
  log: (s: string) => void;
  /** Spaced calls per row and round (default 300; 100 with quick). */
  calls?: number;
  /** Pause before each spaced call, ms (default 1). */
  spacingMs?: number;
}

const PEERS = new URL("./peers/", import.meta.url).pathname;
const BODY_BYTES = 32;
/** Back-to-back calls before the spaced ones, so both sides run JIT-compiled code (a long-running server would). */
const WARM_BACK_TO_BACK = 400;
/** Spaced calls before the timed ones: more than the adaptive strategy's first probes (PROBE_IDLES idles per cause, twice). */
const WARM_SPACED = 40;

export interface IdleRow {
  id: string;
  label: string;
  layout: string;
  calls: number;
  spacingMs: number;
  p50Us: number;
  p99Us: number;
  clientCpuUsPerCall: number;
  serverCpuUsPerCall: number;
  /** Median µs per stage (hotpath rows with stamps, and the raw references), in order. */
  stages: Record<string, number>;
}

/** One round trip of a row: `i` is the call's id; throws when the reply's bytes differ. */
type Call = (i: number) => Promise<void> | void;

interface Probe {
  /** Per call, after it returned: the stage durations in ns (NaN where a stamp is missing). */
  stages?: (i: number) => Record<string, number>;
  /** Called once after the timed calls (fetch the server's stamps). */
  collect?: () => Promise<void>;
}

const sorted = (xs: number[]) => Float64Array.from(xs).sort();
const pct = (s: Float64Array, q: number) => (s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]!);
const median = (xs: number[]) => pct(sorted(xs.filter((x) => Number.isFinite(x))), 0.5);

function checkEcho(id: string, sent: Uint8Array, got: Uint8Array): void {
  if (got.length !== sent.length || got.some((x, k) => x !== sent[k])) throw new Error(`${id}: a reply differs from its request (${got.length} bytes, expected ${sent.length})`);
}

function bodyFor(i: number): Uint8Array {
  const b = new Uint8Array(BODY_BYTES).fill(0x61);
  new DataView(b.buffer).setUint32(0, i >>> 0, true);
  return b;
}

interface Accum {
  lat: number[];
  clientUs: number;
  serverUs: number;
  calls: number;
  stages: Map<string, number[]>;
}

/** Warm-up, then `n` calls each after a `spacingMs` sleep (or none), each timed alone; CPU read around the timed ones. */
async function timed(call: Call, n: number, spacingMs: number, cpu: CpuProbe, probe: Probe, acc: Accum): Promise<void> {
  let id = 1_000_000;
  for (let i = 0; i < WARM_BACK_TO_BACK; i++) await call(id++);
  for (let i = 0; i < WARM_SPACED && spacingMs > 0; i++) {
    await Bun.sleep(spacingMs);
    await call(id++);
  }
  const ids: number[] = [];
  const c0 = cpu.read();
  for (let i = 0; i < n; i++) {
    if (spacingMs > 0) await Bun.sleep(spacingMs);
    const t = Bun.nanoseconds();
    await call(i);
    acc.lat.push(Bun.nanoseconds() - t);
    ids.push(i);
  }
  const c1 = cpu.read();
  acc.clientUs += c1.clientUs - c0.clientUs;
  acc.serverUs += c1.serverUs - c0.serverUs;
  acc.calls += n;
  await probe.collect?.();
  if (probe.stages) {
    for (const i of ids) {
      for (const [k, v] of Object.entries(probe.stages(i))) {
        let a = acc.stages.get(k);
        if (!a) acc.stages.set(k, (a = []));
        a.push(v);
      }
    }
  }
}

// ------------------------------------------------------------------------------- the rows

interface RowSpec {
  id: string;
  label: string;
  layout: string;
  spaced: boolean;
  /** Starts the peer; returns the call, the CPU probe, the stage probe and how to stop. */
  start(clock: () => number): Promise<{ call: Call; cpu: CpuProbe; probe: Probe; stop(): Promise<void> }>;
}

let names = 0;
const unique = (what: string) => `idle-${what}-${process.pid}-${names++}`;

/** Client-side stamps of hotpath calls: send, the doorbell it wrote (start, end), its wake-up, the resolve. */
function hotpathCall(id: string, client: Client, clock: () => number, server: () => Map<number, number[]>): { call: Call; probe: Probe } {
  const mine = new Map<number, number[]>(); // id → [send, doorbellEnd, woken, resolved, doorbellStart]
  let cur: number[] | null = null;
  const stamped = stampConnection(
    client.conn,
    clock,
    (ns) => {
      if (cur !== null && cur[2] === 0) cur[2] = ns;
    },
    (start, end) => {
      if (cur === null || cur[1] !== 0) return;
      cur[1] = end;
      cur[4] = start;
    },
  );
  const call: Call = async (i) => {
    const body = bodyFor(i);
    cur = [clock(), 0, 0, 0, 0];
    if (i < 1_000_000) mine.set(i, cur);
    const out = await client.request(M_ECHO, body, { timeoutMs: 10_000 });
    cur[3] = clock();
    cur = null;
    checkEcho(id, body, out);
  };
  const probe: Probe = {};
  if (!stamped) return { call, probe }; // tcp: no segment connection to stamp
  probe.stages = (i): Record<string, number> => {
    const c = mine.get(i);
    const s = server().get(i);
    if (!c || !s) return {};
    const nan = (x: number | undefined) => (x === undefined || x === 0 ? NaN : x);
    const [send, doorEnd, woken, done, door] = c.map(nan) as [number, number, number, number, number];
    const [sWoken, sHandler, sRingEnd, sRing] = s.map(nan) as [number, number, number, number];
    return {
      "client send → its doorbell write begins": door - send,
      "client's doorbell write (syscall)": doorEnd - door,
      "doorbell write begins → server woken": sWoken - door,
      "server woken → handler": sHandler - sWoken,
      "handler → reply's doorbell write begins": sRing - sHandler,
      "server's doorbell write (syscall)": sRingEnd - sRing,
      "reply's doorbell write begins → client woken": woken - sRing,
      "client woken → promise resolved": done - woken,
      "handler → promise resolved": done - sHandler,
    };
  };
  return { call, probe };
}

async function hotpathRow(id: string, url: string, wait: Record<string, unknown> | undefined, clock: () => number, inWorker: boolean, clientWait = wait) {
  let worker: Worker | null = null;
  let peer: BenchPeer | null = null;
  let cpu: CpuProbe;
  let target: string;
  if (inWorker) {
    const before = workerThreads();
    worker = new Worker(PEERS + "idle-server.ts");
    target = await new Promise<string>((resolve) => {
      worker!.onmessage = (e) => resolve(e.data.url);
      worker!.postMessage({ url, wait });
    });
    cpu = workerProbe(before);
  } else {
    peer = await startPeer([PEERS + "idle-server.ts", url, ...(wait ? [JSON.stringify(wait)] : [])]);
    target = peer.url;
    cpu = processProbe(peer.proc.pid!);
  }
  const client = await rpcConnect(target, clientWait ? { wait: clientWait } : {});
  let serverStamps = new Map<number, number[]>();
  const { call, probe } = hotpathCall(id, client, clock, () => serverStamps);
  // The server stamps from its first reset on (that call also wraps its connection).
  await client.request(M_RESET, new Uint8Array(0));
  probe.collect = async () => {
    const j = JSON.parse(new TextDecoder().decode(await client.request(M_STAMPS, new Uint8Array(0), { timeoutMs: 10_000 })));
    serverStamps = new Map(Object.entries(j).map(([k, v]) => [Number(k), v as number[]]));
  };
  return {
    call,
    cpu,
    probe,
    async stop() {
      client.close();
      if (worker) worker.terminate();
      await peer?.stop();
    },
  };
}

function postMessageRow(spaced: boolean): RowSpec {
  return {
    id: spaced ? "postmessage-spaced" : "postmessage-b2b",
    label: spaced ? "Worker postMessage round trip, spaced" : "Worker postMessage round trip, back-to-back",
    layout: "Worker of this process (structured clone of a Uint8Array)",
    spaced,
    async start() {
      const before = workerThreads();
      const worker = new Worker(PEERS + "echo-worker.ts");
      let resolve: ((d: Uint8Array) => void) | null = null;
      worker.onmessage = (e) => resolve?.(e.data);
      await new Promise<void>((r) => {
        resolve = () => r();
        worker.postMessage(new Uint8Array(1));
      });
      const cpu = workerProbe(before);
      const call: Call = async (i) => {
        const body = bodyFor(i);
        const got = await new Promise<Uint8Array>((r) => {
          resolve = r;
          worker.postMessage(body);
        });
        checkEcho("postMessage", body, got);
      };
      return { call, cpu, probe: {}, stop: async () => void worker.terminate() };
    },
  };
}

const unixRow: RowSpec = {
  id: "raw-unix",
  label: "raw Bun Unix-socket ping-pong, spaced",
  layout: "process (abstract Unix socket, Bun.listen / Bun.connect)",
  spaced: true,
  async start(clock) {
    const peer = await startPeer([PEERS + "idle-raw.ts", "unix", unique("unix")]);
    const stamps = new Map<number, number[]>(); // id → [writeBegins, serverWoken, clientWoken, written]
    let resolve: ((d: Uint8Array) => void) | null = null;
    const sock = await Bun.connect({
      unix: peer.url,
      socket: {
        data(_s, chunk) {
          const t = clock();
          const out = new Uint8Array(chunk);
          const id = new DataView(out.buffer).getUint32(0, true);
          const st = stamps.get(id);
          if (st) st[2] = t;
          resolve?.(out);
        },
      },
    });
    const call: Call = async (i) => {
      const body = bodyFor(i);
      const got = await new Promise<Uint8Array>((r) => {
        resolve = r;
        const t = clock();
        if (i < 1_000_000) stamps.set(i, [t, 0, 0, 0]);
        sock.write(body);
        if (i < 1_000_000) stamps.get(i)![3] = clock();
      });
      const st = stamps.get(i);
      if (st) st[1] = new DataView(got.buffer).getFloat64(8, true);
      const expect = body.slice();
      expect.set(got.subarray(8, 16), 8);
      checkEcho("raw unix", expect, got);
    };
    const probe: Probe = {
      stages(i): Record<string, number> {
        const s = stamps.get(i);
        if (!s) return {};
        return {
          "write (syscall)": s[3]! - s[0]!,
          "write begins → peer's data callback": s[1]! - s[0]!,
          "peer's data callback → reply's data callback": s[2]! - s[1]!,
        };
      },
    };
    return {
      call,
      cpu: processProbe(peer.proc.pid!),
      probe,
      async stop() {
        sock.end();
        await peer.stop();
      },
    };
  },
};

const futexRow: RowSpec = {
  id: "raw-futex",
  label: "raw cross-process futex ping-pong, spaced",
  layout: "process, both sides parked in FUTEX_WAIT (bun:ffi), no event loop",
  spaced: true,
  async start(clock) {
    const name = `/${unique("futex")}`;
    const m = ShmMapping.create(name, FUTEX_LAYOUT.BYTES);
    const w = new Int32Array(m.sab, m.byteOffset, FUTEX_LAYOUT.BYTES >> 2);
    const f = new Float64Array(m.sab, m.byteOffset, FUTEX_LAYOUT.BYTES >> 3);
    let peer: BenchPeer;
    try {
      peer = await startPeer([PEERS + "idle-raw.ts", "futex", name]);
    } finally {
      shmUnlink(name); // both have it mapped (or the peer failed): no name left behind
    }
    const stamps = new Map<number, number[]>(); // id → [wakeBegins, peerWoken, woken, wakeReturned]
    let seq = 0;
    const call: Call = (i) => {
      const next = ++seq;
      // SYNC: pairs with the peer's Atomics.load(PING) after its FUTEX_WAIT.
      Atomics.store(w, FUTEX_LAYOUT.PING >> 2, next);
      const ringing = clock();
      futexWake(m, FUTEX_LAYOUT.PING, 1);
      const rung = clock();
      const end = Bun.nanoseconds() + 5e9;
      // SYNC: pairs with the peer's Atomics.store(PONG) before its FUTEX_WAKE.
      while (Atomics.load(w, FUTEX_LAYOUT.PONG >> 2) !== next) {
        if (Bun.nanoseconds() > end) throw new Error("raw futex: no answer within 5 s");
        futexWait(m, FUTEX_LAYOUT.PONG, next - 1, 20e6);
      }
      if (i < 1_000_000) stamps.set(i, [ringing, f[FUTEX_LAYOUT.WOKEN_AT >> 3]!, clock(), rung]);
    };
    const probe: Probe = {
      stages(i): Record<string, number> {
        const s = stamps.get(i);
        if (!s) return {};
        return {
          "FUTEX_WAKE (syscall)": s[3]! - s[0]!,
          "FUTEX_WAKE begins → peer woken": s[1]! - s[0]!,
          "peer woken → waker woken (its store, FUTEX_WAKE, our wake)": s[2]! - s[1]!,
        };
      },
    };
    return {
      call,
      cpu: processProbe(peer.proc.pid!),
      probe,
      async stop() {
        Atomics.store(w, FUTEX_LAYOUT.STOP >> 2, 1);
        futexWake(m, FUTEX_LAYOUT.PING, 1);
        await peer.stop();
        m.close();
      },
    };
  },
};

function hotpathSpec(
  id: string,
  label: string,
  layout: string,
  url: () => string,
  wait: Record<string, unknown> | undefined,
  inWorker = false,
  clientWait: Record<string, unknown> | undefined = wait,
): RowSpec {
  return { id, label, layout, spaced: true, start: (clock) => hotpathRow(id, url(), wait, clock, inWorker, clientWait) };
}

/**
 * The opt-in row: a client that spins up to this long for an answer (adaptive, so only while such
 * spins pay), beside a default server: what keeping the client's vCPU awake through the call buys
 * (no wake-up for the reply, no doorbell for the server to ring), and what it costs in client CPU.
 */
const ANSWER_SPIN_NS = 200_000;

const ROWS: RowSpec[] = [
  hotpathSpec("shm", "hotpath shm, default (adaptive) both sides", "process; serve() / rpcConnect", () => `shm://${unique("shm")}`, undefined),
  hotpathSpec("shm-spin0", "hotpath shm, async spinNs 0 both sides", "process; serve() / rpcConnect", () => `shm://${unique("shm0")}`, { mode: "async", spinNs: 0 }),
  hotpathSpec(
    "shm-client-spin",
    `hotpath shm, client spinNs ${ANSWER_SPIN_NS / 1e3} µs (opt-in)`,
    "process; serve() default / rpcConnect adaptive",
    () => `shm://${unique("shmc")}`,
    undefined,
    false,
    {
      spinNs: ANSWER_SPIN_NS,
    },
  ),
  hotpathSpec("inproc", "hotpath inproc, default both sides", "Worker of this process; serve() / rpcConnect", () => `inproc://${unique("inproc")}`, undefined, true),
  hotpathSpec("tcp", "hotpath tcp, default", "process; serve() / rpcConnect on 127.0.0.1", () => "tcp://127.0.0.1:0", undefined),
  postMessageRow(true),
  postMessageRow(false),
  unixRow,
  futexRow,
];

// ------------------------------------------------------------------------------- the part

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "—");

/** Measures every row (rounds in alternating order), prints progress through opts.log; the PartReport. Main thread. */
export async function measureIdleWake(opts: IdleWakeOptions): Promise<PartReport> {
  const n = opts.calls ?? (opts.quick ? 100 : 300);
  const spacingMs = opts.spacingMs ?? 1;
  const rounds = opts.quick ? 1 : 2;
  const off = clockOffsetNs();
  const clock = () => Bun.nanoseconds() + off;
  const acc: Accum[] = ROWS.map(() => ({ lat: [], clientUs: 0, serverUs: 0, calls: 0, stages: new Map() }));
  for (let r = 0; r < rounds; r++) {
    const order = ROWS.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) {
      const spec = ROWS[i]!;
      opts.log(`idle-wake: round ${r + 1}/${rounds}: ${spec.label} ...`);
      const row = await spec.start(clock);
      try {
        await timed(row.call, n, spec.spaced ? spacingMs : 0, row.cpu, row.probe, acc[i]!);
      } finally {
        await row.stop();
      }
    }
  }
  const rows: IdleRow[] = ROWS.map((spec, i) => {
    const a = acc[i]!;
    const s = sorted(a.lat);
    const stages: Record<string, number> = {};
    for (const [k, v] of a.stages) stages[k] = median(v) / 1e3;
    return {
      id: spec.id,
      label: spec.label,
      layout: spec.layout,
      calls: a.calls,
      spacingMs: spec.spaced ? spacingMs : 0,
      p50Us: pct(s, 0.5) / 1e3,
      p99Us: pct(s, 0.99) / 1e3,
      clientCpuUsPerCall: a.clientUs / a.calls,
      serverCpuUsPerCall: a.serverUs / a.calls,
      stages,
    };
  });
  return report(rows, n * rounds, spacingMs);
}

function report(rows: IdleRow[], calls: number, spacingMs: number): PartReport {
  const by = (id: string) => rows.find((r) => r.id === id)!;
  const pmS = by("postmessage-spaced");
  const pmB = by("postmessage-b2b");
  const shm = by("shm");
  const lines = [
    `Idle-to-woken: ${calls} calls per row, each after a ~${spacingMs} ms sleep (back-to-back where said), ${BODY_BYTES} B echo, each call timed alone; ratios to the spaced postMessage round trip of this run`,
    `machine: ${os()}; cpuidle driver ${cpuidleDriver()}; client = this process's main thread (event loop)`,
    "",
    ["row".padEnd(46), "p50 µs".padStart(8), "÷pm".padStart(6), "p99 µs".padStart(8), "÷pm".padStart(6), "client µs/call".padStart(15), "server µs/call".padStart(15)].join(" "),
  ];
  for (const r of rows) {
    lines.push(
      [
        r.label.padEnd(46),
        f1(r.p50Us).padStart(8),
        `${(r.p50Us / pmS.p50Us).toFixed(2)}x`.padStart(6),
        f1(r.p99Us).padStart(8),
        `${(r.p99Us / pmS.p99Us).toFixed(2)}x`.padStart(6),
        f1(r.clientCpuUsPerCall).padStart(15),
        f1(r.serverCpuUsPerCall).padStart(15),
      ].join(" "),
    );
  }
  lines.push("", "stages (medians per stage, µs, CLOCK_MONOTONIC stamps in both processes; — : that stamp did not occur, e.g. no doorbell because the peer was awake):");
  for (const r of rows) {
    const st = Object.entries(r.stages);
    if (st.length === 0) continue;
    lines.push(`  ${r.label}:`);
    for (const [k, v] of st) lines.push(`    ${k.padEnd(44)} ${f1(v).padStart(8)}`);
  }
  const ratioS = shm.p50Us / pmS.p50Us;
  const ratioB = shm.p50Us / pmB.p50Us;
  const targets = [
    {
      label: "idle-to-woken shm call (default, calls ~1 ms apart) p50 ≤ 0.5× a Worker postMessage round trip under the same spacing (met is judged on this same-conditions ratio)",
      measured: `${f1(shm.p50Us)} µs vs ${f1(pmS.p50Us)} µs spaced: ${ratioS.toFixed(2)}x; vs ${f1(pmB.p50Us)} µs back-to-back postMessage: ${ratioB.toFixed(2)}x`,
      met: ratioS <= 0.5,
    },
  ];
  lines.push("", "where a spaced call's time goes (sums of the stage medians above, µs):");
  for (const id of ["shm", "shm-spin0", "inproc"]) lines.push(`  ${split(by(id))}`);
  const unix = by("raw-unix").stages;
  const futex = by("raw-futex").stages;
  lines.push(
    `  floors of one wake-up, this run: a Bun event loop woken by a socket byte ${f1(unix["write begins → peer's data callback"]!)} µs (raw Unix ping-pong), a thread parked in futex ${f1(futex["FUTEX_WAKE begins → peer woken"]!)} µs (raw futex); a call needs two`,
  );
  lines.push("", "target (issue 14):");
  for (const t of targets) lines.push(`  ${t.label}: ${t.measured} — ${t.met ? "met" : "NOT met"}`);
  return { title: "Idle-to-woken latency: calls spaced ~1 ms apart, shm / inproc / tcp beside postMessage, Unix socket and futex", lines, targets, rows: rows as unknown as Record<string, unknown>[] };
}

/** One row's stages grouped: the two wake-ups (outside hotpath's control), the doorbell syscalls, and hotpath's JS on either side of them. */
function split(r: IdleRow): string {
  const st = r.stages;
  const sum = (ks: string[]) => ks.reduce((a, k) => a + (st[k] ?? NaN), 0);
  const wake = sum(["doorbell write begins → server woken", "reply's doorbell write begins → client woken"]);
  const js = sum(["client send → its doorbell write begins", "server woken → handler", "handler → reply's doorbell write begins", "client woken → promise resolved"]);
  return `${r.label}: two wake-ups (doorbell write begins → peer woken, both ways; each waker's syscall runs meanwhile) ${f1(wake)}; hotpath before and after them (send → doorbell, woken → handler → reply's doorbell, woken → resolved) ${f1(js)}; p50 ${f1(r.p50Us)}`;
}

function cpuidleDriver(): string {
  try {
    return readFileSync("/sys/devices/system/cpu/cpuidle/current_driver", "utf8").trim();
  } catch {
    return "unknown";
  }
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  const jsonAt = argv.indexOf("--json");
  const part = await measureIdleWake({ quick: argv.includes("--quick"), log: (l) => console.error(l) });
  console.log(part.title);
  for (const l of part.lines) console.log(l);
  if (jsonAt >= 0 && argv[jsonAt + 1]) writeFileSync(argv[jsonAt + 1]!, JSON.stringify(part, null, 2));
  process.exit(0);
}
