/**
 * Shared-memory benchmarks: shm (client here, server in its own process) and inproc (server in
 * a Worker), each beside references measured in the same run, all through the main table's one
 * client body (bench/measure.ts: per-call timing, every reply checked byte for byte):
 *   - spin mode: raw shm (a plain Bun shared-memory echo between two processes, Atomics spin,
 *     no RPC) against hotpath shm and inproc, both sides busy-polling (call + poll; server
 *     poll/recv/reply): this needs a free core for each side;
 *   - async mode: Worker postMessage against hotpath shm and inproc with their default wait
 *     policies inside the event loop (call + poll + await wait(); server serve()); plus an
 *     idle-to-woken call (each timed alone after 3 ms idle) and 8 concurrent callers exchanging
 *     256 KiB (await request()).
 * Run: bun bench/shm.bench.ts [--quick]
 */

import { Client, connect } from "../src/index.ts";
import { processProbe, workerProbe, workerThreads } from "./cpu.ts";
import { hotpathDriver, workerDriver } from "./drivers.ts";
import { measureRow, type RowFigures } from "./measure.ts";
import { ECHO_METHOD } from "./peers/methods.ts";
import { startPeer, workerServer } from "./spawn.ts";
import { TARGETS } from "./targets.ts";

const SEGMENT_SERVER = new URL("./peers/segment-server.ts", import.meta.url).pathname;
const ECHO_WORKER = new URL("./peers/echo-worker.ts", import.meta.url).href;

export interface SpinFigures {
  p50Us: number;
  p99Us: number;
  cps64: number;
  mibMs: number;
}

const MIB = 1 << 20;
const spinOf = (f: RowFigures): SpinFigures => ({ p50Us: f.p50Us, p99Us: f.p99Us, cps64: f.inflight[64]!, mibMs: f.sizes[MIB]! / 1e3 });

export interface AsyncFigures {
  backToBackUs: number;
  idleWokenUs: number;
  /** 8 concurrent callers exchanging 256 KiB messages: echoes per second (slab backpressure). */
  big8PerSec: number;
}

/** Idle-to-woken p50 and 8 × 256 KiB echoes/s, through `call` (one request's promise). */
async function asyncExtras(call: (data: Uint8Array) => Promise<unknown>, quick: boolean): Promise<Omit<AsyncFigures, "backToBackUs">> {
  const small = new Uint8Array(32).fill(1);
  const idle: number[] = [];
  for (let i = 0; i < (quick ? 30 : 200); i++) {
    await Bun.sleep(3); // long enough for both sides to stop spinning and park
    const t0 = Bun.nanoseconds();
    await call(small);
    idle.push(Bun.nanoseconds() - t0);
  }
  idle.sort((a, b) => a - b);
  // Eight callers, 256 KiB each way, on a slab whose 256 KiB class has fewer slots than that.
  const big = new Uint8Array(256 << 10).fill(7);
  const rounds = quick ? 20 : 200;
  const t0 = Bun.nanoseconds();
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let r = 0; r < rounds; r++) {
        const got = (await call(big)) as Uint8Array;
        if (got.length !== big.length || got[got.length - 1] !== 7) throw new Error("256 KiB echo: wrong bytes");
      }
    }),
  );
  return { idleWokenUs: idle[idle.length >> 1]! / 1e3, big8PerSec: (8 * rounds) / ((Bun.nanoseconds() - t0) / 1e9) };
}

export interface ShmBenchResult {
  rawShm: SpinFigures;
  shmSpin: SpinFigures;
  inprocSpin: SpinFigures;
  worker: AsyncFigures;
  shmAsync: AsyncFigures;
  inprocAsync: AsyncFigures;
}

export async function runShmBench(quick: boolean, log: (s: string) => void = () => {}): Promise<ShmBenchResult> {
  const tag = `${process.pid}`;
  const out: Partial<ShmBenchResult> = {};
  const base = { durationS: quick ? 0.1 : 1, sizes: [32, MIB], inflight: [64], log };
  const row = async (id: string) => {
    const t = TARGETS.find((x) => x.id === id)!;
    log(t.label);
    const r = await t.start({ host: "127.0.0.1" });
    try {
      return await measureRow(r.driver, { ...base, mode: t.mode, cpu: r.cpu });
    } finally {
      await r.stop();
    }
  };
  out.rawShm = spinOf(await row("raw-shm"));
  out.shmSpin = spinOf(await row("shm-spin"));
  out.inprocSpin = spinOf(await row("inproc"));

  const small = { ...base, sizes: [32], mode: "async" as const };
  log("Worker postMessage (reference)");
  const before = workerThreads();
  const ew = new Worker(ECHO_WORKER);
  await new Promise<void>((r) => {
    ew.onmessage = () => r();
    ew.postMessage(new Uint8Array(1));
  });
  const wd = workerDriver(ew);
  const wFig = await measureRow(wd, { ...small, cpu: workerProbe(before) });
  // One message in flight at a time per caller; concurrent callers queue behind one handler.
  let chain: Promise<unknown> = Promise.resolve();
  const wCall = (data: Uint8Array) =>
    (chain = chain.then(
      () =>
        new Promise((resolve) => {
          ew.onmessage = (e) => resolve(e.data);
          ew.postMessage(data);
        }),
    ));
  out.worker = { backToBackUs: wFig.p50Us, ...(await asyncExtras(wCall, quick)) };
  ew.terminate();

  log("shm, async mode");
  const as = await startPeer([SEGMENT_SERVER, `shm://bench-async-${tag}`, "async"]);
  try {
    const d = await hotpathDriver(as.url);
    const fig = await measureRow(d, { ...small, cpu: processProbe(as.proc.pid) });
    await d.close();
    const ac = new Client(await connect(as.url));
    out.shmAsync = { backToBackUs: fig.p50Us, ...(await asyncExtras((data) => ac.request(ECHO_METHOD, data), quick)) };
    ac.close();
  } finally {
    await as.stop();
  }

  log("inproc, async mode (server in a Worker)");
  const wb = workerThreads();
  const aw = await workerServer(`inproc://bench-async-${tag}`, "async");
  try {
    const d = await hotpathDriver(aw.url);
    const fig = await measureRow(d, { ...small, cpu: workerProbe(wb) });
    await d.close();
    const aic = new Client(await connect(aw.url));
    out.inprocAsync = { backToBackUs: fig.p50Us, ...(await asyncExtras((data) => aic.request(ECHO_METHOD, data), quick)) };
    aic.close();
  } finally {
    aw.worker.terminate();
  }
  return out as ShmBenchResult;
}

const f2 = (v: number) => v.toFixed(2);
const fc = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e4 ? `${(v / 1e3).toFixed(0)}k` : v.toFixed(0));

export function formatShmTables(r: ShmBenchResult): string {
  const rows = [
    ["spin mode (32 B echo unless noted)", "raw shm (ref)", "shm", "shm/raw", "inproc", "inproc/raw"],
    ["round trip p50 (µs)", f2(r.rawShm.p50Us), f2(r.shmSpin.p50Us), `${f2(r.shmSpin.p50Us / r.rawShm.p50Us)}x`, f2(r.inprocSpin.p50Us), `${f2(r.inprocSpin.p50Us / r.rawShm.p50Us)}x`],
    ["round trip p99 (µs)", f2(r.rawShm.p99Us), f2(r.shmSpin.p99Us), `${f2(r.shmSpin.p99Us / r.rawShm.p99Us)}x`, f2(r.inprocSpin.p99Us), `${f2(r.inprocSpin.p99Us / r.rawShm.p99Us)}x`],
    ["calls/s, 64 in flight", fc(r.rawShm.cps64), fc(r.shmSpin.cps64), `${f2(r.shmSpin.cps64 / r.rawShm.cps64)}x`, fc(r.inprocSpin.cps64), `${f2(r.inprocSpin.cps64 / r.rawShm.cps64)}x`],
    ["1 MiB echo p50 (ms)", (r.rawShm.mibMs).toFixed(3), r.shmSpin.mibMs.toFixed(3), `${f2(r.shmSpin.mibMs / r.rawShm.mibMs)}x`, r.inprocSpin.mibMs.toFixed(3), `${f2(r.inprocSpin.mibMs / r.rawShm.mibMs)}x`],
    [],
    ["async mode (event loop, 32 B)", "Worker postMessage (ref)", "shm", "shm/ref", "inproc", "inproc/ref"],
    ["back-to-back await p50 (µs)", f2(r.worker.backToBackUs), f2(r.shmAsync.backToBackUs), `${f2(r.shmAsync.backToBackUs / r.worker.backToBackUs)}x`, f2(r.inprocAsync.backToBackUs), `${f2(r.inprocAsync.backToBackUs / r.worker.backToBackUs)}x`],
    ["idle-to-woken call p50 (µs)", f2(r.worker.idleWokenUs), f2(r.shmAsync.idleWokenUs), `${f2(r.shmAsync.idleWokenUs / r.worker.idleWokenUs)}x`, f2(r.inprocAsync.idleWokenUs), `${f2(r.inprocAsync.idleWokenUs / r.worker.idleWokenUs)}x`],
    ["8 callers × 256 KiB echoes/s", fc(r.worker.big8PerSec), fc(r.shmAsync.big8PerSec), `${f2(r.shmAsync.big8PerSec / r.worker.big8PerSec)}x`, fc(r.inprocAsync.big8PerSec), `${f2(r.inprocAsync.big8PerSec / r.worker.big8PerSec)}x`],
  ];
  const widths = [0, 1, 2, 3, 4, 5].map((i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => (r.length === 0 ? "" : r.map((c, i) => c.padEnd(widths[i]!)).join("  "))).join("\n");
}

if (import.meta.main) {
  const quick = process.argv.includes("--quick");
  const r = await runShmBench(quick, (s) => console.error(`… ${s}`));
  console.log(formatShmTables(r));
  process.exit(0);
}
