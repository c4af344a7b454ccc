/**
 * Shared-memory benchmarks: shm (client here, server in its own process) and inproc (server in
 * a Worker), each beside references measured in the same run:
 *   - raw shm: a plain Bun shared-memory echo between two processes (Atomics spin, no RPC);
 *   - Worker postMessage: a round trip to an echoing Worker.
 * Spin mode: both sides busy-poll (hot path: call + poll; server poll/recv/reply) — this needs
 * a free core for each side. Async mode: `await client.request()` against serve(), adaptive
 * spin-then-park on both sides, inside the event loop.
 * Run: bun bench/shm.bench.ts [--quick]
 */

import { measure } from "mitata";
import { Client, SEND_OK, connect } from "../src/index.ts";
import { ShmMapping, shmUnlink } from "../src/ffi/libc.ts";
import { ECHO_METHOD } from "./peers/methods.ts";
import { BULK_AT, BULK_BYTES, RAW, RING_AT, RING_SLOTS, TOTAL_BYTES } from "./peers/raw-shm.ts";
import { startPeer } from "./spawn.ts";

const SEGMENT_SERVER = new URL("./peers/segment-server.ts", import.meta.url).pathname;
const RAW_SHM = new URL("./peers/raw-shm.ts", import.meta.url).pathname;
const ECHO_WORKER = new URL("./peers/echo-worker.ts", import.meta.url).href;

/** A synchronous echo client (spin mode: no promise on the path). */
export interface SpinEcho {
  roundTrip(data: Uint8Array): void;
  burst(n: number, inFlight: number, data: Uint8Array): void;
  close(): void;
}

export function rawShmClient(name: string): SpinEcho {
  const m = ShmMapping.open(name, TOTAL_BYTES);
  shmUnlink(name); // both sides have it mapped
  const w = new Int32Array(m.buffer);
  const b = new Uint8Array(m.buffer);
  const reqRing = RING_AT;
  let ping = 0;
  let tail = 0;
  let respHead = 0;
  return {
    roundTrip(data) {
      b.set(data, BULK_AT);
      w[RAW.LEN] = data.length;
      ping = (ping + 1) | 0;
      Atomics.store(w, RAW.PING, ping);
      while (Atomics.load(w, RAW.PONG) !== ping) {}
      if (b[BULK_AT + BULK_BYTES] !== data[0]) throw new Error("raw shm echo: wrong bytes");
    },
    burst(n, inFlight, data) {
      let sent = 0;
      let done = 0;
      while (done < n) {
        while (sent < n && sent - done < inFlight) {
          b.set(data, reqRing + (tail & (RING_SLOTS - 1)) * 32);
          tail = (tail + 1) | 0;
          sent++;
        }
        Atomics.store(w, RAW.REQ_TAIL, tail);
        const respTail = Atomics.load(w, RAW.RESP_TAIL);
        while (respHead !== respTail) {
          respHead = (respHead + 1) | 0;
          done++;
        }
        Atomics.store(w, RAW.RESP_HEAD, respHead);
      }
    },
    close: () => m.close(),
  };
}

export async function hotpathSpinClient(url: string): Promise<SpinEcho> {
  const conn = await connect(url, { wait: { mode: "spin", spinNs: 0 } });
  const c = new Client<number>(conn, { window: 256 });
  let done = 0;
  let bad = 0;
  let want = 0;
  c.onResponse = (_u, data, err) => {
    if (err !== null || data.length !== want) bad++;
    done++;
  };
  return {
    roundTrip(data) {
      want = data.length;
      const target = done + 1;
      while (c.call(ECHO_METHOD, data, 0) !== SEND_OK) c.poll();
      while (done < target) c.poll();
      if (bad) throw new Error("hotpath echo: bad response");
    },
    burst(n, inFlight, data) {
      want = data.length;
      const start = done;
      let sent = 0;
      while (done - start < n) {
        while (sent < n && sent - (done - start) < inFlight && c.call(ECHO_METHOD, data, 0) === SEND_OK) sent++;
        c.poll();
      }
    },
    close: () => c.close(),
  };
}

export interface SpinFigures {
  p50Us: number;
  p99Us: number;
  cps64: number;
  mibMs: number;
}

function spinFigures(c: SpinEcho, quick: boolean): Promise<SpinFigures> {
  return (async () => {
    const small = new Uint8Array(32).fill(3);
    const big = new Uint8Array(1 << 20).fill(5);
    const n64 = quick ? 50_000 : 500_000;
    c.burst(n64, 64, small); // warm-up
    for (let i = 0; i < 20; i++) c.roundTrip(big);
    const opts = { min_cpu_time: (quick ? 100 : 1000) * 1e6 };
    const rt = await measure(() => c.roundTrip(small), opts);
    const b64 = await measure(() => c.burst(n64, 64, small), { ...opts, max_samples: quick ? 5 : 30 });
    const mib = await measure(() => c.roundTrip(big), { ...opts, max_samples: quick ? 50 : 1000 });
    return { p50Us: rt.p50 / 1e3, p99Us: rt.p99 / 1e3, cps64: n64 / (b64.avg / 1e9), mibMs: mib.p50 / 1e6 };
  })();
}

export interface AsyncFigures {
  backToBackUs: number;
  idleWokenUs: number;
  /** 8 concurrent callers exchanging 256 KiB messages: echoes per second (slab backpressure). */
  big8PerSec: number;
}

async function asyncFigures(call: (data?: Uint8Array) => Promise<unknown>, quick: boolean): Promise<AsyncFigures> {
  for (let i = 0; i < 2000; i++) await call();
  const b2b = await measure(async () => void (await call()), { min_cpu_time: (quick ? 100 : 1000) * 1e6 });
  const idle: number[] = [];
  for (let i = 0; i < (quick ? 30 : 200); i++) {
    await Bun.sleep(3); // long enough for both sides to stop spinning and park
    const t0 = Bun.nanoseconds();
    await call();
    idle.push(Bun.nanoseconds() - t0);
  }
  idle.sort((a, b) => a - b);
  // Eight callers, 256 KiB each way, on a slab whose 256 KiB class has fewer slots than that.
  const big = new Uint8Array(256 << 10).fill(7);
  const rounds = quick ? 20 : 200;
  const t0 = Bun.nanoseconds();
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let r = 0; r < rounds; r++) await call(big);
  }));
  const big8PerSec = (8 * rounds) / ((Bun.nanoseconds() - t0) / 1e9);
  return { backToBackUs: b2b.p50 / 1e3, idleWokenUs: idle[idle.length >> 1]! / 1e3, big8PerSec };
}

export function workerServer(url: string, mode: "spin" | "async"): Promise<{ url: string; worker: Worker }> {
  const worker = new Worker(SEGMENT_SERVER);
  return new Promise((resolve) => {
    worker.onmessage = (e) => resolve({ url: e.data.url, worker });
    worker.postMessage({ url, mode });
  });
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

  log("raw shm ping-pong (reference)");
  const raw = await startPeer([RAW_SHM, `/hotpath-bench-raw-${tag}`]);
  const rc = rawShmClient(raw.url);
  out.rawShm = await spinFigures(rc, quick);
  rc.close();
  await raw.stop();

  log("shm, spin mode");
  const spin = await startPeer([SEGMENT_SERVER, `shm://bench-spin-${tag}`, "spin"]);
  const sc = await hotpathSpinClient(spin.url);
  out.shmSpin = await spinFigures(sc, quick);
  sc.close();
  await spin.stop();

  log("inproc, spin mode (server in a Worker)");
  const iw = await workerServer(`inproc://bench-spin-${tag}`, "spin");
  const ic = await hotpathSpinClient(iw.url);
  out.inprocSpin = await spinFigures(ic, quick);
  ic.close();
  iw.worker.terminate();

  const small = new Uint8Array(32).fill(1);
  log("Worker postMessage (reference)");
  const ew = new Worker(ECHO_WORKER);
  // One message in flight at a time per caller; concurrent callers queue behind one handler.
  let chain: Promise<unknown> = Promise.resolve();
  out.worker = await asyncFigures(
    (data = small) =>
      (chain = chain.then(
        () =>
          new Promise((resolve) => {
            ew.onmessage = resolve;
            ew.postMessage(data);
          }),
      )),
    quick,
  );
  ew.terminate();

  log("shm, async mode");
  const as = await startPeer([SEGMENT_SERVER, `shm://bench-async-${tag}`, "async"]);
  const ac = new Client(await connect(as.url));
  out.shmAsync = await asyncFigures((data = small) => ac.request(ECHO_METHOD, data), quick);
  ac.close();
  await as.stop();

  log("inproc, async mode (server in a Worker)");
  const aw = await workerServer(`inproc://bench-async-${tag}`, "async");
  const aic = new Client(await connect(aw.url));
  out.inprocAsync = await asyncFigures((data = small) => aic.request(ECHO_METHOD, data), quick);
  aic.close();
  aw.worker.terminate();
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
