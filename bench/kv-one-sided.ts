/**
 * One-sided GET against its floors, over ucx (a scratch benchmark for issue 13's target
 * "one-sided GET p50 <= RPC GET over the same ucx(shm) connection"). One kv server in its own
 * process (bench/peers/kv-server.ts, spin); in this process, in one run and interleaved in
 * blocks so that drift hits every row alike:
 * - `kv one-sided GET`: KvClient.get() with oneSided "auto" (promise API, as bench/kv.bench.ts);
 * - `kv RPC GET`: KvClient.get() with oneSided "never", another connection to the same server;
 * - `raw RMA get 256 B` and `raw RMA get 256 B + record`: RemoteRegion.readTo on a connection
 *   of its own (the arena from HELLO, read with the allocation-free readTo), one read / the
 *   group and the record read together, and
 * - `raw AM round trip`: rpc Client.request(KV_GET) on that same connection,
 *   both awaited through a promise and polled from setImmediate like the kv client's pump, and
 *   also spun (poll in a loop, callbacks, no promise): the floors of one RMA get and one AM
 *   round trip.
 * Per row: p50 / p99 of one call at a time, and JS heap objects allocated per call (heapStats,
 * windows in which no collection ran). Figures are the machine's of the moment: compare rows of
 * one run.
 *
 *   bun bench/kv-one-sided.ts [--tls shm,self|tcp,self] [--size 64] [--rounds 20] [--block 200]
 */

import { Client, connect, type UcxConnection } from "../src/index.ts";
import { kvConnect, type KvClient } from "../src/kv/client.ts";
import { keyHash, type KvLayout } from "../src/kv/layout.ts";
import { oneSidedClient } from "../src/kv/one-sided.ts";
import { decodeHello, KV_GET, KV_HELLO } from "../src/kv/protocol.ts";
import { groupOffset, parseHeader, scanGroup } from "../src/kv/verify.ts";
import { startPeer } from "./spawn.ts";
import { heapWindow } from "./measure.ts";

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const TLS = opt("--tls", "shm,self");
const SIZE = Number(opt("--size", "64"));
const ROUNDS = Number(opt("--rounds", "20"));
const BLOCK = Number(opt("--block", "200"));
const KEYS = 64;

process.env.UCX_TLS = TLS;
const peer = await startPeer([new URL("./peers/kv-server.ts", import.meta.url).pathname, "ucx://127.0.0.1:0", "spin"], { UCX_TLS: TLS });

const enc = new TextEncoder();
const keys = Array.from({ length: KEYS }, (_, i) => enc.encode(`bench-key-${i}`.padEnd(32, ".")));
const pool = { connect: { wait: { mode: "spin" as const, spinNs: 0 }, window: 256 } };
const os: KvClient = await kvConnect(peer.url, { pool, oneSided: "auto" });
const rpc: KvClient = await kvConnect(peer.url, { pool, oneSided: "never" });
for (const [i, k] of keys.entries()) await rpc.put(k, new Uint8Array(SIZE).fill(i));

// A raw connection of its own: the arena attached from HELLO.
const conn = (await connect(peer.url, { ucx: { rma: true }, wait: { mode: "spin", spinNs: 0 } })) as unknown as UcxConnection;
const raw = new Client<number>(conn);
const pumpRaw = () => {
  let on = true;
  const tick = () => {
    if (!on) return;
    conn.poll();
    setImmediate(tick);
  };
  setImmediate(tick);
  return () => (on = false);
};
let stop = pumpRaw();
const hello = decodeHello(await raw.request(KV_HELLO, new Uint8Array(0)));
stop();
const layout: KvLayout = parseHeader(hello.arenaHeader);
const arena = conn.attachRegion(hello.arenaDesc);
const k0 = keys[0]!;
const h0 = keyHash(k0, layout.hashSeed);
const g0 = groupOffset(layout, h0);
const groupBuf = new Uint8Array(256);
stop = pumpRaw();
await new Promise<void>((r) => arena.readInto(g0, groupBuf, () => r()));
stop();
const cand = scanGroup(groupBuf, h0).candidates[0]!;
const recBuf = new Uint8Array(cand.entryBytes);

/** A readTo target: the buffer and what to do when a read into it completes. */
class RawTarget {
  onDone: () => void = () => {};
  constructor(readonly buf: Uint8Array) {}
  onRead(): void {
    this.onDone();
  }
}
const groupT = new RawTarget(groupBuf);
const recT = new RawTarget(recBuf);
let left = 0;
let settle: (() => void) | null = null;
const oneDone = () => {
  if (--left === 0 && settle !== null) {
    const s = settle;
    settle = null;
    s();
  }
};
groupT.onDone = oneDone;
recT.onDone = oneDone;

/** One raw read (or two together, RemoteRegion.readTo: nothing allocated per read) as a promise, polled from setImmediate while it is pending. */
function rawRead(two: boolean): Promise<void> {
  return new Promise<void>((resolve) => {
    const stopP = pumpRaw();
    settle = () => (stopP(), resolve());
    left = two ? 2 : 1;
    arena.readTo(g0, 256, groupT);
    if (two) arena.readTo(cand.entryOffset, recBuf.length, recT);
  });
}
function rawAm(): Promise<unknown> {
  const stopP = pumpRaw();
  return raw.request(KV_GET, k0).finally(stopP);
}
function spinRead(two: boolean): void {
  left = two ? 2 : 1;
  arena.readTo(g0, 256, groupT);
  if (two) arena.readTo(cand.entryOffset, recBuf.length, recT);
  while (left > 0) conn.poll();
}
let amDone = false;
raw.onResponse = () => void (amDone = true);
function spinAm(): void {
  amDone = false;
  raw.call(KV_GET, k0, 1);
  while (!amDone) raw.poll();
}

let ki = 0;
const sc0 = (os as unknown as { servers: Array<import("../src/kv/protocol.ts").KvServerConn> }).servers[0]!;
const pumpSc = () => {
  let on = true;
  const tick = () => {
    if (!on) return;
    sc0.rpc!.conn.poll();
    setImmediate(tick);
  };
  setImmediate(tick);
  return () => (on = false);
};
interface Row {
  name: string;
  run: () => Promise<unknown> | void;
  samples: number[];
  objs: number;
  objCalls: number;
}
const check = (r: { value: Uint8Array } | null) => {
  if (r === null || r.value.length !== SIZE) throw new Error("wrong GET reply");
};
const rows: Row[] = [
  { name: "kv one-sided GET (promise)", run: () => os.get(keys[ki++ % KEYS]!).then(check), samples: [], objs: 0, objCalls: 0 },
  { name: "kv RPC GET (promise)", run: () => rpc.get(keys[ki++ % KEYS]!).then(check), samples: [], objs: 0, objCalls: 0 },
  {
    name: "oneSidedGet, no KvClient.get (promise + pump)",
    run: () => {
      const stopP = pumpSc();
      return oneSidedClient.oneSidedGet(sc0, keys[ki++ % KEYS]!).then((r) => (stopP(), check(r as never)));
    },
    samples: [],
    objs: 0,
    objCalls: 0,
  },
  { name: "raw RMA get 256 B (promise + pump)", run: () => rawRead(false), samples: [], objs: 0, objCalls: 0 },
  { name: `raw RMA get 256 B + ${cand.entryBytes} B together (promise + pump)`, run: () => rawRead(true), samples: [], objs: 0, objCalls: 0 },
  { name: "raw AM round trip, KV_GET (promise + pump)", run: rawAm, samples: [], objs: 0, objCalls: 0 },
  { name: "raw RMA get 256 B (spin, callback)", run: () => spinRead(false), samples: [], objs: 0, objCalls: 0 },
  { name: `raw RMA get 256 B + ${cand.entryBytes} B (spin, callback)`, run: () => spinRead(true), samples: [], objs: 0, objCalls: 0 },
  { name: "raw AM round trip, KV_GET (spin, callback)", run: spinAm, samples: [], objs: 0, objCalls: 0 },
];

async function block(r: Row, n: number, record: boolean): Promise<void> {
  const objs = await heapWindow(async () => {
    for (let i = 0; i < n; i++) {
      const t0 = Bun.nanoseconds();
      const p = r.run();
      if (p !== undefined) await p;
      if (record) r.samples.push(Bun.nanoseconds() - t0);
    }
  });
  if (record && objs !== null) {
    r.objs += objs;
    r.objCalls += n;
  }
}

oneSidedClient.resetStats();
for (const r of rows) await block(r, BLOCK, false); // warm-up
for (let round = 0; round < ROUNDS; round++) for (const r of rows) await block(r, BLOCK, true);

const pct = (s: number[], q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]! / 1000;
const ref = rows[1]!;
ref.samples.sort((a, b) => a - b);
console.log(`kv one-sided bench: UCX_TLS=${TLS}, ${SIZE} B values, ${ROUNDS} rounds x ${BLOCK} calls per row (interleaved); one-sided stats ${JSON.stringify(oneSidedClient.stats)}`);
for (const r of rows) {
  r.samples.sort((a, b) => a - b);
  const p50 = pct(r.samples, 0.5);
  console.log(
    `${r.name.padEnd(52)} p50 ${p50.toFixed(2).padStart(7)} us  p99 ${pct(r.samples, 0.99).toFixed(2).padStart(8)} us  ${(p50 / pct(ref.samples, 0.5)).toFixed(2)}x RPC GET  objs/call ${r.objCalls > 0 ? (r.objs / r.objCalls).toFixed(1) : "-"}`,
  );
}

arena.close();
raw.close();
await os.close();
await rpc.close();
await peer.stop();
process.exit(0);
