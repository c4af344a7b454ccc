/**
 * shm segments are real SharedArrayBuffers: the memfd is mapped (MAP_FIXED | MAP_SHARED) over
 * the page-aligned storage of one (ShmMapping). Checked here against a real peer process
 * (sab-peer.ts maps the same memfd through /proc/<pid>/fd) and real Workers:
 *   - the garbage collector, forced in a loop while messages flow, never moves or frees a
 *     mapped segment, and fresh allocations never land on shared pages, even for a mapping
 *     dropped without close();
 *   - the SharedArrayBuffer posted to a Worker is the same memory: the Worker's writes reach the
 *     peer process, the peer's replies reach the Worker, its Atomics.notify wakes a waitAsync
 *     of the main thread on the segment;
 *   - close() with views still held (here and in a Worker): no fault, the views read zeros, the
 *     shared pages leave this process at once (RssShmem, /proc/self/maps, the fd), and nothing
 *     written afterwards reaches the peer;
 *   - a segment placed past offset 0 of its SharedArrayBuffer carries a whole session.
 */

import { afterAll, expect, test } from "bun:test";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { connect, listen, SEND_FULL, type Connection } from "../../src/index.ts";
import { UsageError } from "../../src/errors.ts";
import { mappedSegmentCount, PAGE_BYTES, placeMappingsOffsetForTests, ShmMapping } from "../../src/ffi/libc.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { REPLY_AT, REQUEST_AT } from "./sab-peer.ts";
import { MARK_AT, WAKE_WORD, WORKER_MARK } from "./sab-worker.ts";

const PEER = new URL("./sab-peer.ts", import.meta.url).pathname;
const WORKER = new URL("./sab-worker.ts", import.meta.url).href;
const SEGMENT_PEER = new URL("./segment-peer.ts", import.meta.url).pathname;
const BYTES = 1 << 20;
let n = 0;
const unique = (what: string) => `hotpath-sab-${what}-${process.pid}-${n++}`;
const peers: Peer[] = [];

afterAll(async () => {
  placeMappingsOffsetForTests(false);
  for (const p of peers) await p.kill();
});

const statusKiB = (field: string) => Number(readFileSync("/proc/self/status", "utf8").match(new RegExp(`${field}:\\s+(\\d+)`))![1]);
const mapsOf = (label: string) => readFileSync("/proc/self/maps", "utf8").split("\n").filter((l) => l.includes(`/memfd:${label}`)).length;
const fdsOf = (label: string) =>
  readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(`/memfd:${label}`);
    } catch {
      return false;
    }
  }).length;

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(1);
  }
}

/** A peer process that maps `m` through /proc/<pid>/fd and answers the protocol of sab-peer.ts. */
async function peerOf(m: ShmMapping): Promise<Peer> {
  const p = await spawnPeer(PEER, [String(process.pid), String(m.fd), String(m.lenBytes)]);
  peers.push(p);
  return p;
}

/** What the peer process reads in its own mapping now (SIGUSR1: it prints the sum and count of non-zero bytes). */
async function peerSees(p: Peer): Promise<{ sum: number; nonzero: number }> {
  p.proc.kill("SIGUSR1");
  return JSON.parse(await p.nextLine());
}

/** One request through the segment from this thread (sab-peer.ts's protocol); returns the reply. */
async function ask(m: ShmMapping, req: Uint8Array): Promise<Uint8Array> {
  const words = new Int32Array(m.sab, m.byteOffset, m.lenBytes >> 2);
  const bytes = new Uint8Array(m.sab, m.byteOffset, m.lenBytes);
  bytes.set(req, REQUEST_AT);
  words[2] = req.length;
  const seq = Atomics.load(words, 0) + 1;
  // SYNC: pairs with the peer's Atomics.load of the request seq; the request bytes are written first.
  Atomics.store(words, 0, seq);
  // SYNC: pairs with the peer's Atomics.store of the reply seq.
  await until(() => Atomics.load(words, 1) === seq, "the peer's reply");
  return bytes.slice(REPLY_AT, REPLY_AT + req.length);
}

function newWorker(): { worker: Worker; next: () => Promise<any> } {
  const worker = new Worker(WORKER);
  const inbox: any[] = [];
  const waiting: Array<(v: any) => void> = [];
  worker.onmessage = (e) => (waiting.length > 0 ? waiting.shift()!(e.data) : inbox.push(e.data));
  worker.onerror = (e) => {
    throw new Error(`sab-worker: ${e.message}`);
  };
  return { worker, next: () => (inbox.length > 0 ? Promise.resolve(inbox.shift()) : new Promise((r) => waiting.push(r))) };
}

test("a mapping is a SharedArrayBuffer over page-aligned storage, and the peer process sees its writes and it the peer's", async () => {
  const m = ShmMapping.createSealed(unique("basic"), BYTES);
  expect(m.sab).toBeInstanceOf(SharedArrayBuffer);
  expect(m.addressOf(0) % PAGE_BYTES).toBe(0);
  expect(m.sab.byteLength - m.byteOffset).toBeGreaterThanOrEqual(BYTES);
  const p = await peerOf(m);
  const req = Uint8Array.from({ length: 100 }, (_, i) => i * 7);
  expect(Array.from(await ask(m, req))).toEqual(Array.from(req, (b) => b ^ 0xff));
  m.close();
  await p.kill();
});

test("Bun.gc(true) in a loop while messages flow over an shm session: every echoed byte is right", async () => {
  const name = unique("gc").slice("hotpath-".length);
  const p = await spawnPeer(SEGMENT_PEER, ["listen", `shm://${name}`]);
  peers.push(p);
  const conn: Connection = await connect(`shm://${name}`);
  const replies: Array<{ head: Uint8Array; body: Uint8Array }> = [];
  conn.setReceiver({ onMessage: (msg) => void (replies.push({ head: msg.head.slice(), body: msg.body.slice() }), msg.release()), onClose() {} });
  const sizes = [0, 24, 48, 100, 4000, 70_000];
  const garbage: SharedArrayBuffer[] = [];
  let wrong = 0;
  const ROUNDS = 600;
  for (let i = 0; i < ROUNDS; i++) {
    const body = new Uint8Array(sizes[i % sizes.length]!);
    for (let j = 0; j < body.length; j += 61) body[j] = (i + j) & 0xff;
    const head = new TextEncoder().encode(`gc${i}`);
    while (conn.trySend(head, body) === SEND_FULL) await conn.wait(10);
    await until(() => replies.length === 1, `echo ${i}`);
    const r = replies.pop()!;
    if (new TextDecoder().decode(r.head) !== `gc${i}` || Buffer.compare(r.body, body) !== 0) wrong++;
    if (i % 20 === 0) {
      // Fresh storage of the segment's own size, filled: had the segment been freed, it would be handed out here.
      for (let k = 0; k < 4; k++) garbage.push(new SharedArrayBuffer(1 << 20));
      for (const g of garbage) new Uint8Array(g).fill(0x5a);
      garbage.length = 0;
      Bun.gc(true);
    }
  }
  expect(wrong).toBe(0);
  conn.close();
  await p.kill();
}, 60_000);

test("a mapping dropped without close() keeps its SharedArrayBuffer: collections and fresh allocations leave the peer's bytes alone", async () => {
  const before = mappedSegmentCount();
  // This mapping stays for the life of the test process (nothing can close it): 1 MiB, under a
  // label other tests' counts of hotpath-* segments do not see.
  const label = `sabtest-dropped-${process.pid}`;
  let m: ShmMapping | null = ShmMapping.createSealed(label, BYTES);
  new Uint8Array(m.sab, m.byteOffset, BYTES).fill(0x33);
  const p = await peerOf(m);
  m = null; // no close(): the fd and the mapping stay, the SharedArrayBuffer is held for them
  for (let round = 0; round < 10; round++) {
    Bun.gc(true);
    const fresh = Array.from({ length: 20 }, () => new SharedArrayBuffer(BYTES));
    for (const f of fresh) new Uint8Array(f).fill(0x5a);
  }
  Bun.gc(true);
  expect(await peerSees(p)).toEqual({ sum: 0x33 * BYTES, nonzero: BYTES });
  expect(mappedSegmentCount()).toBe(before + 1);
  expect(mapsOf(label)).toBe(1);
  await p.kill();
}, 30_000);

test("an shm segment posted to a Worker: its writes reach the peer process, the replies reach it, its Atomics.notify wakes this thread's waitAsync", async () => {
  const m = ShmMapping.createSealed(unique("worker"), BYTES);
  const p = await peerOf(m);
  const words = new Int32Array(m.sab, m.byteOffset, BYTES >> 2);
  const woken = Atomics.waitAsync(words, WAKE_WORD, 0, 10_000);
  expect(woken.async).toBe(true);
  const { worker, next } = newWorker();
  const requests = [[1, 2, 3], Array.from({ length: 300 }, (_, i) => i & 0xff), [0xff, 0]];
  worker.postMessage({ cmd: "ask", sab: m.sab, byteOffset: m.byteOffset, bytes: BYTES, requests });
  const got = await next();
  expect(got.replies).toEqual(requests.map((r) => r.map((b) => b ^ 0xff)));
  expect(await woken.value).toBe("ok");
  // The Worker's mark is in this thread's views and in the peer's mapping.
  expect(new Uint8Array(m.sab, m.byteOffset, BYTES)[MARK_AT]).toBe(WORKER_MARK);
  const seen = await peerSees(p);
  expect(seen.sum).toBe(new Uint8Array(m.sab, m.byteOffset, BYTES).reduce((s, b) => (s + b) >>> 0, 0));
  worker.terminate();
  m.close();
  await p.kill();
}, 30_000);

test("close() with views held here and in a Worker: no fault, they read zeros, the shared pages leave at once, later writes never reach the peer", async () => {
  const LEN = 16 << 20;
  const label = unique("close");
  const m = ShmMapping.createSealed(label, LEN);
  const p = await peerOf(m);
  const view = new Uint8Array(m.sab, m.byteOffset, LEN);
  const words = new Int32Array(m.sab, m.byteOffset, LEN >> 2);
  view.fill(0x11);
  const { worker, next } = newWorker();
  worker.postMessage({ cmd: "hold", sab: m.sab, byteOffset: m.byteOffset, bytes: LEN });
  await next();
  worker.postMessage({ cmd: "sum" });
  expect(await next()).toEqual({ sum: 0x11 * LEN, nonzero: LEN });
  const shmemBefore = statusKiB("RssShmem");
  expect(shmemBefore).toBeGreaterThanOrEqual(LEN >> 10);
  expect(mapsOf(label)).toBe(1);
  expect(fdsOf(label)).toBe(1);

  m.close();
  // No collection forced: the pages went with close().
  const shmemAfter = statusKiB("RssShmem");
  console.log(`sab close: RssShmem ${shmemBefore} → ${shmemAfter} KiB (segment ${LEN >> 10} KiB, no GC)`);
  expect(shmemBefore - shmemAfter).toBeGreaterThanOrEqual((LEN >> 10) - 64);
  expect(mapsOf(label)).toBe(0);
  expect(fdsOf(label)).toBe(0);
  expect(view.every((b) => b === 0)).toBe(true);
  expect(Atomics.load(words, 5)).toBe(0);
  worker.postMessage({ cmd: "sum" });
  expect(await next()).toEqual({ sum: 0, nonzero: 0 });
  // Writes after close land in private pages: the peer still reads what was there before.
  view.fill(0x22);
  Atomics.store(words, 0, 99);
  expect(await peerSees(p)).toEqual({ sum: 0x11 * LEN, nonzero: LEN });
  m.close(); // twice is safe
  worker.terminate();
  await p.kill();
}, 30_000);

test("a segment placed past offset 0 of its SharedArrayBuffer carries a whole shm session (inline and slab messages)", async () => {
  placeMappingsOffsetForTests(true);
  let l;
  try {
    const m = ShmMapping.createSealed(unique("offset"), BYTES);
    expect(m.byteOffset).toBeGreaterThan(0);
    expect(() => m.buffer).toThrow(UsageError);
    m.close();
    const name = unique("offset-session").slice("hotpath-".length);
    l = await listen(`shm://${name}`);
    l.onConnection((c) => c.setReceiver({ onMessage: (msg) => void (c.trySend(msg.head.slice(), msg.body.slice()), msg.release()), onClose() {} }));
    const conn = await connect(`shm://${name}`);
    const got: Uint8Array[] = [];
    conn.setReceiver({ onMessage: (msg) => void (got.push(msg.body.slice()), msg.release()), onClose() {} });
    const bodies = [new Uint8Array(20).fill(3), Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff), new Uint8Array(0)];
    for (const b of bodies) {
      expect(conn.trySend(new Uint8Array([1, 2]), b)).toBe(0);
      await until(() => got.length === 1, "the echo");
      expect(Buffer.compare(got.pop()!, b)).toBe(0);
    }
    conn.close();
  } finally {
    placeMappingsOffsetForTests(false);
    l?.close(true);
  }
}, 30_000);
