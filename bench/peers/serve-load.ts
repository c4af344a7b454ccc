/**
 * Load generator of the Bun.serve benchmark (bench/serve.bench.ts), a process of its own:
 * CONNS raw TCP connections to 127.0.0.1:PORT speaking HTTP/1.1 keep-alive, one request
 * outstanding per connection, each a POST of BODY bytes unique to it (connection and sequence
 * number, serve-bodies.ts; with `kv`, the sequence cycles through the KV key set) whose
 * response body must come back byte for byte (a mismatch or a non-200 status ends the run with
 * an error). After WARMUP_MS it times DURATION_MS: every request's latency
 * (Bun.nanoseconds from write to the last byte of its response), and the CPU of the PIDS given
 * (all threads, bench/cpu.ts) read at the start and the end of that window.
 *   bun bench/peers/serve-load.ts PORT CONNS WARMUP_MS DURATION_MS BODY PID,PID... [kv]
 * Prints one JSON line: {requests, seconds, p50Us, p99Us, cpuUs: {pid: µs}, loadCpuUs (its own)}.
 */

import type { Socket } from "bun";
import { processCpuUs } from "../cpu.ts";
import { body as bodyFor, kvSeq } from "./serve-bodies.ts";

const [port, conns, warmupMs, durationMs, bodyBytes, pidList, kind] = process.argv.slice(2).map((s, i) => (i >= 5 ? s : Number(s))) as [number, number, number, number, number, string, string | undefined];
const kv = kind === "kv";
const pids = (pidList ?? "").split(",").filter(Boolean).map(Number);
const enc = new TextEncoder();
const HEAD_END = enc.encode("\r\n\r\n");

interface Conn {
  id: number;
  seq: number;
  sentNs: number;
  expect: Uint8Array;
  buf: Uint8Array;
  len: number;
}

let measuring = false;
let stopping = false;
const lat: number[] = [];
let failed: string | null = null;
const done = Promise.withResolvers<void>();

function fail(why: string): void {
  if (failed === null) failed = why;
  done.resolve();
}

function request(s: Socket<Conn>): void {
  const c = s.data;
  if (stopping) return;
  c.seq++;
  const body = bodyFor(c.id, kv ? kvSeq(c.seq) : c.seq, bodyBytes);
  c.expect = body;
  const head = enc.encode(`POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${body.length}\r\n\r\n`);
  const msg = new Uint8Array(head.length + body.length);
  msg.set(head);
  msg.set(body, head.length);
  c.sentNs = Bun.nanoseconds();
  if (s.write(msg) !== msg.length) fail("a request did not fit the socket at once (one request in flight per connection)");
}

function indexOf(buf: Uint8Array, len: number, pat: Uint8Array): number {
  outer: for (let i = 0; i + pat.length <= len; i++) {
    for (let j = 0; j < pat.length; j++) if (buf[i + j] !== pat[j]) continue outer;
    return i;
  }
  return -1;
}

function onData(s: Socket<Conn>, chunk: Uint8Array): void {
  const c = s.data;
  if (c.len + chunk.length > c.buf.length) {
    const grown = new Uint8Array(Math.max(2 * c.buf.length, c.len + chunk.length));
    grown.set(c.buf.subarray(0, c.len));
    c.buf = grown;
  }
  c.buf.set(chunk, c.len);
  c.len += chunk.length;
  const end = indexOf(c.buf, c.len, HEAD_END);
  if (end < 0) return;
  const head = new TextDecoder().decode(c.buf.subarray(0, end));
  const m = /content-length:\s*(\d+)/i.exec(head);
  if (!head.startsWith("HTTP/1.1 200") || m === null) return fail(`unexpected response head: ${JSON.stringify(head.slice(0, 200))}`);
  const bodyLen = Number(m[1]);
  const total = end + 4 + bodyLen;
  if (c.len < total) return;
  if (c.len > total) return fail("more bytes than one response (one request was outstanding)");
  const body = c.buf.subarray(end + 4, total);
  const e = c.expect;
  if (body.length !== e.length) return fail(`response of ${body.length} bytes to a request of ${e.length}`);
  for (let i = 0; i < e.length; i++) if (body[i] !== e[i]) return fail(`response bytes differ from the request's at ${i} (connection ${c.id}, request ${c.seq})`);
  if (measuring) lat.push(Bun.nanoseconds() - c.sentNs);
  c.len = 0;
  request(s);
}

const sockets: Socket<Conn>[] = [];
for (let i = 0; i < conns; i++) {
  const s = await Bun.connect<Conn>({
    hostname: "127.0.0.1",
    port,
    data: { id: i, seq: 0, sentNs: 0, expect: new Uint8Array(0), buf: new Uint8Array(4096), len: 0 },
    socket: {
      data: onData,
      close: () => {
        if (!stopping) fail("the server closed a connection");
      },
      error: (_s, e) => fail(`socket error: ${e.message}`),
    },
  });
  s.setNoDelay(true);
  sockets.push(s);
}
for (const s of sockets) request(s);
await Promise.race([Bun.sleep(warmupMs), done.promise]);
const cpu0 = pids.map(processCpuUs);
const self0 = process.cpuUsage();
const t0 = Bun.nanoseconds();
measuring = true;
await Promise.race([Bun.sleep(durationMs), done.promise]);
measuring = false;
const seconds = (Bun.nanoseconds() - t0) / 1e9;
const cpu1 = pids.map(processCpuUs);
const self1 = process.cpuUsage();
stopping = true;
for (const s of sockets) s.end();
if (failed !== null) {
  console.log(JSON.stringify({ error: failed }));
  process.exit(1);
}
lat.sort((a, b) => a - b);
const pct = (p: number) => (lat.length === 0 ? NaN : lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! / 1e3);
const cpuUs: Record<number, number> = {};
pids.forEach((pid, i) => (cpuUs[pid] = cpu1[i]! - cpu0[i]!));
const loadCpuUs = self1.user + self1.system - self0.user - self0.system;
console.log(JSON.stringify({ requests: lat.length, seconds, p50Us: pct(0.5), p99Us: pct(0.99), cpuUs, loadCpuUs }));
process.exit(0);
