/**
 * TCP echo benchmark: hotpath's tcp transport against a fair raw Bun socket reference, client
 * here and each server in its own process (this file, run with `--peer`), measured in the same
 * run, alternating in rounds, with every figure printed beside the reference as a ratio.
 *
 * Rows (columns: hotpath tcp, "raw framed", "raw bytes"):
 *   - hotpath: `serve()` answering method 1 with its data; the client's hot path
 *     (`client.call` + `client.poll`, waiting with `client.wait` between polls).
 *   - raw framed (the fair reference): a hand-rolled Bun socket RPC, u32-length-prefixed
 *     messages; its server parses every frame of a read in place (no concat; only a frame
 *     split across reads is assembled), copies each reply into one output buffer and writes
 *     all replies of one read with one write(), as hotpath does.
 *   - raw bytes: a server that writes back each read as it came (no framing work at all, the
 *     ceiling for Bun sockets; not an RPC), with the raw framed client.
 * Method: every latency is one call timed on its own (`Bun.nanoseconds()` around it, no
 * batching), p50 / p99 over all calls of the run; calls/s at 64 in flight is calls / wall time
 * of a run keeping 64 outstanding. Every response is checked byte for byte against its own
 * request (each request's bytes derive from its sequence number). CPU µs per call is the CPU
 * time of all threads of each process (/proc/<pid>/task/<tid>/schedstat) over the phase,
 * divided by its calls. Heap objects per round trip (client side) is the rise of `bun:jsc`
 * heapStats() object counts over 1000 ping-pong calls after a full collection, the largest of
 * three tries (a collection during a try can only lower it). Figures are medians over rounds.
 * Last, in this process alone: what handing out a received body costs as a view of the read or
 * as a copy, by size and messages per read (the reason for tcp's COPY_BODY_MAX_BYTES).
 *
 * Run: bun bench/rpc.bench.ts [--quick] [--rounds N] [--json]
 */

import { heapStats } from "bun:jsc";
import type { Socket } from "bun";
import { readFileSync, readdirSync } from "node:fs";
import { Client, SEND_OK, connect, serve } from "../src/index.ts";
import { startPeer, type BenchPeer } from "./spawn.ts";

const SELF = new URL(import.meta.url).pathname;
const ECHO_METHOD = 1;
const SMALL = 32;
const BIG = 1 << 20;
/** Calls kept outstanding in the throughput phase (the "64 in flight"). */
const DEPTH = 64;
/** Unanswered requests the raw link tracks (a power of two above DEPTH: a full ring refuses the send, as a full output buffer does). */
const PENDING_SLOTS = 256;

// ---- payloads: each request's bytes derive from its sequence number ----

/** Writes request `seq`'s bytes into `b` (length = its size): the u32 seq, then a pattern of it. */
function fillPayload(b: Uint8Array, at: number, len: number, seq: number): void {
  b[at] = seq;
  b[at + 1] = seq >>> 8;
  b[at + 2] = seq >>> 16;
  b[at + 3] = seq >>> 24;
  for (let i = 4; i < len; i++) b[at + i] = (seq + i) & 0xff;
}

/** The seq of a response whose bytes are exactly some request's, or -1. */
function checkPayload(b: Uint8Array, at: number, len: number, expectLen: number): number {
  if (len !== expectLen || len < 4) return -1;
  const seq = (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
  for (let i = 4; i < len; i++) if (b[at + i] !== ((seq + i) & 0xff)) return -1;
  return seq;
}

// ---- peers: `bun bench/rpc.bench.ts --peer hotpath|raw-framed|raw-bytes` ----

async function runPeer(kind: string): Promise<void> {
  let close: () => void;
  let url: string;
  if (kind === "hotpath") {
    const s = await serve("tcp://127.0.0.1:0", { [ECHO_METHOD]: (h) => h.data });
    url = s.url;
    close = () => s.close();
  } else {
    const framed = kind === "raw-framed";
    const l = Bun.listen<RawServerState>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(s) {
          s.setNoDelay(true);
          s.data = new RawServerState(s);
        },
        data(s, chunk) {
          if (framed) s.data.onData(chunk);
          else s.data.echo(chunk);
        },
        drain(s) {
          s.data.flush();
        },
      },
    });
    url = `tcp://127.0.0.1:${l.port}`;
    close = () => l.stop(true);
  }
  console.log(JSON.stringify({ url, pid: process.pid }));
  for await (const _ of Bun.stdin.stream()) {
    // ignored: EOF means the benchmark ended
  }
  close();
  process.exit(0);
}

/**
 * Splits a raw stream of u32-length-prefixed frames: every whole frame of a read is handed on
 * in place (`onFrame(bytes, at, len)`, prefix included); only a frame split across reads is
 * assembled, into a buffer of its own size.
 */
class FrameSplitter {
  private part: Uint8Array | null = null;
  private partFill = 0;
  private readonly prefix = new Uint8Array(4);
  private prefixFill = 0;

  constructor(private readonly onFrame: (b: Uint8Array, at: number, len: number) => void) {}

  push(chunk: Uint8Array): void {
    const n = chunk.length;
    let p = 0;
    if (this.prefixFill > 0) {
      const take = Math.min(4 - this.prefixFill, n);
      for (let i = 0; i < take; i++) this.prefix[this.prefixFill + i] = chunk[i]!;
      this.prefixFill += take;
      p = take;
      if (this.prefixFill < 4) return;
      this.prefixFill = 0;
      this.part = new Uint8Array(4 + u32(this.prefix, 0));
      this.part.set(this.prefix, 0);
      this.partFill = 4;
    }
    if (this.part !== null) {
      const part = this.part;
      const take = Math.min(part.length - this.partFill, n - p);
      part.set(chunk.subarray(p, p + take), this.partFill);
      this.partFill += take;
      p += take;
      if (this.partFill < part.length) return;
      this.part = null;
      this.onFrame(part, 0, part.length);
    }
    while (p + 4 <= n) {
      const len = 4 + u32(chunk, p);
      if (p + len > n) break;
      this.onFrame(chunk, p, len);
      p += len;
    }
    if (p === n) return;
    if (n - p < 4) {
      for (let i = p; i < n; i++) this.prefix[this.prefixFill++] = chunk[i]!;
      return;
    }
    this.part = new Uint8Array(4 + u32(chunk, p));
    this.part.set(chunk.subarray(p), 0);
    this.partFill = n - p;
  }
}

function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/**
 * One raw server connection: replies are copied into one output buffer (small ones byte by
 * byte, as hotpath copies small bodies) and all replies of a read go out in one write().
 */
class RawServerState {
  private out = new Uint8Array(64 << 10);
  private outStart = 0;
  private outEnd = 0;
  private readonly splitter = new FrameSplitter((b, at, len) => this.queue(b, at, len));

  constructor(private readonly s: Socket<RawServerState>) {}

  /** A framed read: each whole frame's reply (the echo's reply frame is the request frame) queued, then one write. */
  onData(chunk: Uint8Array): void {
    this.splitter.push(chunk);
    this.flush();
  }

  /** raw bytes: the read goes back as it came, straight from the read's memory when nothing waits. */
  echo(chunk: Uint8Array): void {
    if (this.outEnd === this.outStart) {
      const w = this.s.write(chunk);
      if (w === chunk.length || w < 0) return;
      this.queue(chunk, w, chunk.length - w);
    } else this.queue(chunk, 0, chunk.length);
    this.flush();
  }

  queue(b: Uint8Array, at: number, len: number): void {
    if (this.outEnd + len > this.out.length) this.room(len);
    const out = this.out;
    const end = this.outEnd;
    if (len <= 64) for (let i = 0; i < len; i++) out[end + i] = b[at + i]!;
    else out.set(b.subarray(at, at + len), end);
    this.outEnd = end + len;
  }

  private room(len: number): void {
    const used = this.outEnd - this.outStart;
    if (used + len > this.out.length) {
      const next = new Uint8Array(2 * (used + len));
      next.set(this.out.subarray(this.outStart, this.outEnd), 0);
      this.out = next;
    } else this.out.copyWithin(0, this.outStart, this.outEnd);
    this.outStart = 0;
    this.outEnd = used;
  }

  flush(): void {
    const len = this.outEnd - this.outStart;
    if (len === 0) return;
    const w = this.s.write(this.out, this.outStart, len);
    if (w === len || w < 0) this.outStart = this.outEnd = 0;
    else this.outStart += w;
  }
}

// ---- one client shape for every row ----

/** One echo connection as the measuring loops drive it. */
export interface EchoLink {
  /** Responses checked so far (each one exactly its own request's bytes). */
  done: number;
  /** Responses that were not their request's bytes. */
  bad: number;
  /** Queues request `seq` of `len` bytes; false when it cannot take it now. */
  send(seq: number, len: number): boolean;
  /** Pushes queued requests to the socket and handles what arrived. */
  flush(): void;
  /** Resolves once something may have arrived or a wait ran out (flush() then handles it). */
  wait(): Promise<unknown>;
  close(): void;
}

async function hotpathLink(url: string): Promise<EchoLink> {
  const conn = await connect(url);
  const client = new Client<number>(conn, { window: 256 });
  const payload = new Uint8Array(BIG);
  const small = payload.subarray(0, SMALL);
  let expectLen = 0;
  const link: EchoLink = {
    done: 0,
    bad: 0,
    send(seq, len) {
      fillPayload(payload, 0, len, seq);
      expectLen = len;
      return client.call(ECHO_METHOD, len === SMALL ? small : len === BIG ? payload : payload.subarray(0, len), seq) === SEND_OK;
    },
    flush() {
      client.poll();
    },
    wait: () => client.wait(1000),
    close: () => client.close(),
  };
  client.onResponse = (seq, data, err) => {
    if (err === null && checkPayload(data, 0, data.length, expectLen) === seq) link.done++;
    else link.bad++;
  };
  return link;
}

/** A framed raw TCP echo connection (4-byte little-endian length, then the bytes); each reply is checked against its own request (the oldest unanswered). The calling thread only. */
export async function rawLink(url: string): Promise<EchoLink> {
  const u = new URL(url);
  const out = new Uint8Array(BIG + 4 + DEPTH * (SMALL + 4));
  let outLen = 0;
  let expectLen = 0;
  // The seqs of the requests not yet answered, oldest first: a TCP echo answers in order, so
  // each reply must carry the oldest one (its own request's bytes, not any valid request's).
  const pending = new Uint32Array(PENDING_SLOTS);
  let pendHead = 0;
  let pendTail = 0;
  let wake: (() => void) | null = null;
  let sock!: Socket<undefined>;
  const link: EchoLink = {
    done: 0,
    bad: 0,
    send(seq, len) {
      if (outLen + 4 + len > out.length || pendTail - pendHead === PENDING_SLOTS) return false;
      pending[pendTail & (PENDING_SLOTS - 1)] = seq >>> 0;
      pendTail++;
      out[outLen] = len;
      out[outLen + 1] = len >>> 8;
      out[outLen + 2] = len >>> 16;
      out[outLen + 3] = len >>> 24;
      fillPayload(out, outLen + 4, len, seq);
      outLen += 4 + len;
      expectLen = len;
      return true;
    },
    flush() {
      if (outLen === 0) return;
      const w = sock.write(out, 0, outLen);
      if (w === outLen || w < 0) outLen = 0;
      else {
        out.copyWithin(0, w, outLen);
        outLen -= w;
      }
    },
    wait() {
      return new Promise<void>((r) => (wake = r));
    },
    close: () => sock.end(),
  };
  const splitter = new FrameSplitter((b, at, len) => {
    const own = pendHead < pendTail ? pending[pendHead++ & (PENDING_SLOTS - 1)]! : -1;
    if (checkPayload(b, at + 4, len - 4, expectLen) === own) link.done++;
    else link.bad++;
  });
  sock = await Bun.connect({
    hostname: u.hostname,
    port: Number(u.port),
    socket: {
      data(_s, chunk) {
        splitter.push(chunk);
        const w = wake;
        wake = null;
        w?.();
      },
      drain() {
        link.flush();
      },
    },
  });
  sock.setNoDelay(true);
  return link;
}

// ---- measurement ----

/** CPU time (ns) of every thread of a process so far. */
function cpuNs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return ns;
}

/** `n` calls one at a time, each timed on its own into `lat` (when given). */
async function pingPong(link: EchoLink, n: number, len: number, seq0: number, lat: Float64Array | null): Promise<void> {
  for (let i = 0; i < n; i++) {
    const t0 = Bun.nanoseconds();
    const target = link.done + 1;
    while (!link.send(seq0 + i, len)) {
      await link.wait();
      link.flush();
    }
    link.flush();
    while (link.done < target) {
      if (link.bad > 0) throw new Error("echo: a response was not its request's bytes");
      await link.wait();
      link.flush();
    }
    if (lat !== null) lat[i] = Bun.nanoseconds() - t0;
  }
}

/** `n` calls keeping `depth` outstanding. */
async function pipelined(link: EchoLink, n: number, depth: number, len: number): Promise<void> {
  const start = link.done;
  let sent = 0;
  while (link.done - start < n) {
    while (sent < n && sent - (link.done - start) < depth && link.send(sent, len)) sent++;
    link.flush();
    if (link.bad > 0) throw new Error("echo: a response was not its request's bytes");
    if (link.done - start < n) {
      await link.wait();
      link.flush();
    }
  }
}

function percentile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export interface Figures {
  p50Us: number;
  p99Us: number;
  cps64: number;
  /** CPU µs per call at 1 in flight (ping-pong), client and server. */
  clientCpuUs1: number;
  serverCpuUs1: number;
  /** CPU µs per call at 64 in flight. */
  clientCpuUs64: number;
  serverCpuUs64: number;
  heapObjectsPerCall: number;
  mibP50Ms: number;
}

interface Sizes {
  /** Warm-up calls, one at a time and pipelined: the JIT's top tier needs this many on both sides. */
  warm1: number;
  warm64: number;
  calls1: number;
  calls64: number;
  callsMiB: number;
}

async function measureOnce(link: EchoLink, peerPid: number, z: Sizes): Promise<Figures> {
  await pingPong(link, z.warm1, SMALL, 0, null);
  await pipelined(link, z.warm64, DEPTH, SMALL);
  const lat = new Float64Array(z.calls1);
  let c0 = cpuNs(process.pid);
  let s0 = cpuNs(peerPid);
  await pingPong(link, z.calls1, SMALL, 0, lat);
  const clientCpuUs1 = (cpuNs(process.pid) - c0) / 1e3 / z.calls1;
  const serverCpuUs1 = (cpuNs(peerPid) - s0) / 1e3 / z.calls1;
  lat.sort();
  c0 = cpuNs(process.pid);
  s0 = cpuNs(peerPid);
  const t0 = Bun.nanoseconds();
  await pipelined(link, z.calls64, DEPTH, SMALL);
  const wallNs = Bun.nanoseconds() - t0;
  const clientCpuUs64 = (cpuNs(process.pid) - c0) / 1e3 / z.calls64;
  const serverCpuUs64 = (cpuNs(peerPid) - s0) / 1e3 / z.calls64;
  let heap = 0;
  for (let t = 0; t < 3; t++) heap = Math.max(heap, await heapObjectsPerCall(link));
  const mib = new Float64Array(z.callsMiB);
  await pingPong(link, 2, BIG, 0, null);
  await pingPong(link, z.callsMiB, BIG, 0, mib);
  mib.sort();
  return {
    p50Us: percentile(lat, 0.5) / 1e3,
    p99Us: percentile(lat, 0.99) / 1e3,
    cps64: z.calls64 / (wallNs / 1e9),
    clientCpuUs1,
    serverCpuUs1,
    clientCpuUs64,
    serverCpuUs64,
    heapObjectsPerCall: heap,
    mibP50Ms: percentile(mib, 0.5) / 1e6,
  };
}

function objectTotal(counts: Record<string, number>): number {
  let n = 0;
  for (const k in counts) n += counts[k]!;
  return n;
}

/** Heap objects the client side allocates per ping-pong call (see the module comment). */
async function heapObjectsPerCall(link: EchoLink): Promise<number> {
  const n = 1000;
  Bun.gc(true);
  const before = objectTotal(heapStats().objectTypeCounts);
  await pingPong(link, n, SMALL, 0, null);
  return Math.max(0, objectTotal(heapStats().objectTypeCounts) - before) / n;
}

export type Row = "hotpath" | "rawFramed" | "rawBytes";
export type TcpBenchResult = Record<Row, Figures>;

const PEER_KIND: Record<Row, string> = { hotpath: "hotpath", rawFramed: "raw-framed", rawBytes: "raw-bytes" };

export async function runTcpBench(quick: boolean, rounds: number, log: (s: string) => void = () => {}): Promise<TcpBenchResult> {
  const z: Sizes = quick
    ? { warm1: 5000, warm64: 50_000, calls1: 5000, calls64: 100_000, callsMiB: 20 }
    : { warm1: 20_000, warm64: 200_000, calls1: 20_000, calls64: 500_000, callsMiB: 100 };
  const rows: Row[] = ["rawFramed", "hotpath", "rawBytes"];
  const peers = {} as Record<Row, BenchPeer>;
  const runs = { hotpath: [], rawFramed: [], rawBytes: [] } as Record<Row, Figures[]>;
  try {
    for (const r of rows) peers[r] = await startPeer([SELF, "--peer", PEER_KIND[r]]);
    for (let round = 0; round < rounds; round++) {
      for (const r of round % 2 === 0 ? rows : [...rows].reverse()) {
        log(`tcp: round ${round + 1}/${rounds}: ${r}`);
        const link = r === "hotpath" ? await hotpathLink(peers[r].url) : await rawLink(peers[r].url);
        runs[r].push(await measureOnce(link, peers[r].proc.pid, z));
        link.close();
      }
    }
  } finally {
    for (const p of Object.values(peers)) await p.stop();
  }
  const out = {} as TcpBenchResult;
  for (const r of rows) {
    const f = {} as Figures;
    for (const k of Object.keys(runs[r][0]!) as Array<keyof Figures>) f[k] = median(runs[r].map((x) => x[k]));
    out[r] = f;
  }
  return out;
}

function fmt(v: number, unit: string): string {
  if (unit === "calls/s") return v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${(v / 1e3).toFixed(0)}k`;
  return v.toFixed(unit === "ms" ? 3 : 2);
}

const METRICS: Array<[string, keyof Figures, string, boolean]> = [
  ["32 B round trip p50, per call", "p50Us", "µs", false],
  ["32 B round trip p99, per call", "p99Us", "µs", false],
  ["calls/s, 64 in flight", "cps64", "calls/s", true],
  ["client CPU per call, 1 in flight", "clientCpuUs1", "µs", false],
  ["server CPU per call, 1 in flight", "serverCpuUs1", "µs", false],
  ["client CPU per call, 64 in flight", "clientCpuUs64", "µs", false],
  ["server CPU per call, 64 in flight", "serverCpuUs64", "µs", false],
  ["client heap objects per round trip", "heapObjectsPerCall", "objects", false],
  ["1 MiB echo p50, per call", "mibP50Ms", "ms", false],
];

export function formatTcpTable(r: TcpBenchResult): string {
  const head = ["metric", "hotpath tcp", "raw framed", "hotpath/framed", "raw bytes", "hotpath/bytes", ""];
  const ratio = (a: number, b: number) => (b === 0 ? (a === 0 ? "1.00x" : "-") : `${(a / b).toFixed(2)}x`);
  const body = METRICS.map(([label, k, unit, higher]) => [
    `${label} (${unit})`,
    fmt(r.hotpath[k], unit),
    fmt(r.rawFramed[k], unit),
    ratio(r.hotpath[k], r.rawFramed[k]),
    fmt(r.rawBytes[k], unit),
    ratio(r.hotpath[k], r.rawBytes[k]),
    higher ? "(higher is better)" : "(lower is better)",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/**
 * What handing out a received body costs, in this process: a view of the read (subarray) or a
 * copy (slice), per message, from fresh reads holding `perRead` messages of `size` bytes (Bun
 * hands each read a fresh buffer), the read's own allocation subtracted; the best of 7 tries.
 * The reason behind COPY_BODY_MAX_BYTES in the tcp transport (frame.ts).
 */
export function bodyHandOutNs(perRead: number, size: number): { viewNs: number; copyNs: number } {
  const frame = size + 32;
  const reads = Math.max(1000, Math.floor(200_000 / perRead));
  let sink: unknown = null;
  const best = (take: (c: Uint8Array, at: number) => unknown) => {
    let min = Infinity;
    for (let t = 0; t < 7; t++) {
      const t0 = Bun.nanoseconds();
      for (let r = 0; r < reads; r++) {
        const c = new Uint8Array(frame * perRead);
        for (let i = 0; i < perRead; i++) sink = take(c, i * frame + 32);
      }
      min = Math.min(min, (Bun.nanoseconds() - t0) / reads / perRead);
    }
    return min;
  };
  const base = best((c, at) => c[at]);
  const viewNs = best((c, at) => c.subarray(at, at + size)) - base;
  const copyNs = best((c, at) => c.slice(at, at + size)) - base;
  if (sink === undefined) throw new Error("unreachable");
  return { viewNs, copyNs };
}

/** The tcp targets, each as measured against the fair reference of the same run. */
export function formatTargets(r: TcpBenchResult): string {
  const p50 = r.hotpath.p50Us / r.rawFramed.p50Us;
  const cps = r.hotpath.cps64 / r.rawFramed.cps64;
  return [
    `target 32 B p50 ≤ 1.1x raw framed: ${p50.toFixed(2)}x (${p50 <= 1.1 ? "met" : "not met"})`,
    `target calls/s at 64 in flight ≥ 1.0x raw framed: ${cps.toFixed(2)}x (${cps >= 1.0 ? "met" : "not met"})`,
  ].join("\n");
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  if (argv[0] === "--peer") {
    await runPeer(argv[1]!);
  } else {
    const quick = argv.includes("--quick");
    const ri = argv.indexOf("--rounds");
    const rounds = ri >= 0 ? Number(argv[ri + 1]) : quick ? 2 : 3;
    const r = await runTcpBench(quick, rounds, (s) => console.error(s));
    if (argv.includes("--json")) console.log(JSON.stringify(r, null, 2));
    console.log(`\ntcp echo, client here and each server in its own process, event-loop waits, no core pinning; medians of ${rounds} rounds (ratios: same run)`);
    console.log(formatTcpTable(r));
    console.log(formatTargets(r));
    console.log("\nreceived body handed out as a view of the read vs a copy (ns per message, this process)");
    for (const [perRead, size] of [[1, 32], [1, 128], [64, 32], [64, 128], [64, 1024]] as const) {
      const b = bodyHandOutNs(perRead, size);
      console.log(`  ${perRead} per read, ${size} B: view ${b.viewNs.toFixed(0)} ns, copy ${b.copyNs.toFixed(0)} ns`);
    }
  }
}
