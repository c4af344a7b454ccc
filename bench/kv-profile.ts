/**
 * Where a kv GET's time goes over shm: the kv server's GET beside the plain RPC echo, both in
 * spin mode in their own process, driven by the same client body (bench/kv-measure.ts) over a
 * spin-mode shm connection in this process. The echo row's request is the GET reply's bytes
 * (u8 found, u64 version, value) and its server answers with them unchanged (the hot-path
 * Server API, respond(h.data)), so both rows move a reply of the same size and decode it the
 * same way; the difference is kv's own work (lookup, reply building, routing, decoding).
 * Prints p50 / p99 at 1 in flight, ops/s at 1 and 64, CPU per call on both sides, heap objects
 * per call, and the kv / echo ratios. Every reply is checked (kv-measure's body).
 *
 *   bun bench/kv-profile.ts [--duration S] [--size B] [--rounds N] [--only echo|kv] [--profile DIR]
 * The rows alternate for N rounds (default 3) and the ratios are of their medians (a busy
 * machine's noise hits both alike).
 * `--profile DIR`: both sides run under Bun's sampling profiler (--cpu-prof-md), profiles in DIR.
 *   bun bench/kv-profile.ts --peer URL      (the echo server: prints {"url"}; exits on stdin EOF)
 */

import { Client, connect, listen, SEND_OK, Server } from "../src/index.ts";
import { processProbe } from "./cpu.ts";
import { hotPathKvDriver, KEY_SLOTS, measureKvRow, type KvDriver, type KvRowFigures } from "./kv-measure.ts";
import { startPeer } from "./spawn.ts";

const ECHO_METHOD = 1;
/** The spin loop of the echo peer: the kv server's (server.ts start()), so only the per-call work differs. */
const SPIN_SLICE_MS = 2;
const SPIN = { mode: "spin", spinNs: 0 } as const;

async function echoPeer(url: string): Promise<void> {
  const server = new Server({ onRequest: (h) => h.respond(h.data) });
  const l = await listen(url, { wait: SPIN });
  server.attach(l);
  let on = true;
  const slice = () => {
    if (!on) return;
    const end = performance.now() + SPIN_SLICE_MS;
    while (performance.now() < end) for (let i = 0; i < 64; i++) server.poll();
    setImmediate(slice);
  };
  setImmediate(slice);
  console.log(JSON.stringify({ url: l.url }));
  for await (const _ of Bun.stdin.stream()) {
    // EOF ends it
  }
  on = false;
  server.close();
  l.close(true);
  process.exit(0);
}

/** The echo row's driver: per key slot the GET reply's bytes, rewritten by each PUT. */
function echoDriver(c: Client<number>, size: number): KvDriver {
  const bodies = Array.from({ length: KEY_SLOTS }, () => new Uint8Array(9 + size));
  let version = 0;
  const d: KvDriver = {
    versions: true,
    onResult: () => {},
    get: (_key, seq) => c.call(ECHO_METHOD, bodies[seq & (KEY_SLOTS - 1)]!, seq) === SEND_OK,
    put(_key, value, seq) {
      const b = bodies[seq & (KEY_SLOTS - 1)]!;
      b[0] = 1;
      new DataView(b.buffer).setFloat64(1, ++version, true);
      b.set(value, 9);
      return c.call(ECHO_METHOD, b, seq) === SEND_OK;
    },
    poll: () => c.poll(),
    wait: () => Promise.resolve(),
    close: () => c.close(),
  };
  // Decoded as the kv client does, with no object per call: the value view cached per body view.
  const views = new Map<Uint8Array, Uint8Array>();
  const f64 = new Float64Array(1);
  const f64Bytes = new Uint8Array(f64.buffer);
  c.onResponse = (seq, data, err) => {
    if (err !== null) return d.onResult(seq, err, false, 0, null);
    for (let i = 0; i < 8; i++) f64Bytes[i] = data[1 + i]!;
    let v = views.get(data);
    if (v === undefined) views.set(data, (v = data.subarray(9)));
    d.onResult(seq, null, true, f64[0]!, v);
  };
  return d;
}

function line(name: string, f: KvRowFigures): string {
  const cpu = f.cpu.at1;
  const c64 = f.cpu.at64;
  return `${name.padEnd(10)} p50 ${f.p50Us.toFixed(2)} us  p99 ${f.p99Us.toFixed(2)} us  @1 ${Math.round(f.opsPerS["1"]!)} ops/s  @64 ${Math.round(f.opsPerS["64"]!)} ops/s  cpu/call @1 client ${cpu.clientUs.toFixed(2)} server ${cpu.serverUs.toFixed(2)} us  @64 client ${c64!.clientUs.toFixed(2)} server ${c64!.serverUs.toFixed(2)} us  objects/call ${f.heap.objectsPerCall?.toFixed(2) ?? "n/a"}`;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const arg = (name: string, dflt: number) => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  const durationS = arg("--duration", 0.3);
  const size = arg("--size", 64);
  const tag = `${process.pid}-${Date.now() % 1e6}`;
  const self = new URL(import.meta.url).pathname;
  const kvPeer = new URL("./peers/kv-server.ts", import.meta.url).pathname;
  const rows: Array<[string, KvRowFigures]> = [];
  const oi = argv.indexOf("--only");
  const only = oi >= 0 ? argv[oi + 1] : null;
  const pi = argv.indexOf("--profile");
  const prof = pi >= 0 ? ["--cpu-prof-md", `--cpu-prof-dir=${argv[pi + 1]}`, "--cpu-prof-interval=100"] : [];

  const rounds = arg("--rounds", 3);
  for (let r = 0; r < rounds; r++) {
  if (only !== "kv") {
  const echo = await startPeer([...prof, self, "--peer", `shm://kvprof-echo-${tag}`]);
  try {
    const conn = await connect(echo.url, { wait: SPIN });
    const c = new Client<number>(conn, { window: 256 });
    const f = await measureKvRow(echoDriver(c, size), { op: "get", valueBytes: size, durationS, mode: "spin", cpu: processProbe(echo.proc.pid) });
    c.close();
    rows.push(["echo", f]);
  } finally {
    await echo.stop();
  }
  }
  if (only !== "echo") {
  const kvp = await startPeer([...prof, kvPeer, `shm://kvprof-kv-${tag}`, "spin"]);
  try {
    const { kvConnect } = await import("../src/kv/index.ts");
    const kv = await kvConnect(kvp.url, { pool: { connect: { wait: SPIN, window: 256 } }, oneSided: "never" });
    const f = await measureKvRow(hotPathKvDriver(kv), { op: "get", valueBytes: size, durationS, mode: "spin", cpu: processProbe(kvp.proc.pid) });
    await kv.close();
    rows.push(["kv GET", f]);
  } finally {
    await kvp.stop();
  }
  }

  }
  for (const [n, f] of rows) console.log(line(n, f));
  const med = (name: string, pick: (f: KvRowFigures) => number) => {
    const v = rows.filter((r) => r[0] === name).map((r) => pick(r[1])).sort((x, y) => x - y);
    return v[v.length >> 1]!;
  };
  if (rows.length < 2) return;
  const ratio = (pick: (f: KvRowFigures) => number) => (med("kv GET", pick) / med("echo", pick)).toFixed(2);
  console.log(`medians of ${rounds} alternating rounds: echo p50 ${med("echo", (f) => f.p50Us).toFixed(2)} us, @64 ${Math.round(med("echo", (f) => f.opsPerS["64"]!))} ops/s; kv GET p50 ${med("kv GET", (f) => f.p50Us).toFixed(2)} us, @64 ${Math.round(med("kv GET", (f) => f.opsPerS["64"]!))} ops/s`);
  console.log(`kv / echo (medians): p50 ${ratio((f) => f.p50Us)}x  ops/s @64 ${ratio((f) => f.opsPerS["64"]!)}x  server cpu/call @64 ${ratio((f) => f.cpu.at64!.serverUs)}x  client cpu/call @64 ${ratio((f) => f.cpu.at64!.clientUs)}x`);
}

if (import.meta.main) {
  const i = process.argv.indexOf("--peer");
  if (i >= 0) await echoPeer(process.argv[i + 1]!);
  else await main();
}
