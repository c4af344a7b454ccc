/**
 * TcpConnection's hot path: the output buffer is bounded (a peer that never reads gets the
 * sender Full, and memory stays put), received message objects are reused once released while
 * the bytes they showed stay valid, and trySendWords puts the six head words on the wire as
 * trySend would put their bytes.
 */

import { heapStats } from "bun:jsc";
import { afterEach, expect, test } from "bun:test";
import { SEND_CLOSED, SEND_FULL, SEND_OK, UsageError, connect, listen, type Connection, type Listener, type RxMessage } from "../../src/index.ts";
import { TcpConnection } from "../../src/tcp/connection.ts";
import { COPY_BODY_MAX_BYTES } from "../../src/tcp/frame.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { rssBytes, until } from "./raw.ts";

const DEAF_PEER = new URL("./deaf-peer.ts", import.meta.url).pathname;

const open: Array<{ close(): void }> = [];
const peers: Peer[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) o.close();
  for (const p of peers.splice(0)) await p.kill();
});

/** The connection's output buffer (private), to see what it holds. */
function outBuffer(conn: Connection): { bytes: Uint8Array; length: number } {
  return (conn as unknown as { out: { bytes: Uint8Array; length: number } }).out;
}

/** A listener in this process whose connections hand every message to `onMessage`. */
async function pair(onMessage: (m: RxMessage) => void, maxMessageBytes?: number): Promise<{ listener: Listener; conn: Connection }> {
  const listener = await listen("tcp://127.0.0.1:0");
  open.push(listener);
  listener.onConnection((c) => {
    open.push(c);
    c.setReceiver({ onMessage, onClose() {} });
  });
  const conn = await connect(listener.url, maxMessageBytes === undefined ? {} : { maxMessageBytes });
  open.push(conn);
  return { listener, conn };
}

test("a peer that never reads: the sender gets Full, the output buffer stays within sendBufferBytes, memory stays bounded", async () => {
  const peer = await spawnPeer(DEAF_PEER, []);
  peers.push(peer);
  const budget = 1 << 20;
  const conn = await connect(peer.ready.url, { tcp: { sendBufferBytes: budget } });
  open.push(conn);
  const head = new Uint8Array(24);
  const body = new Uint8Array(16 << 10).fill(5);
  // Until the kernel's socket buffers and then ours are full: sends are Ok, then Full.
  let accepted = 0;
  let fullStreak = 0;
  for (let i = 0; i < 20_000 && fullStreak < 50; i++) {
    const st = conn.trySend(head, body);
    if (st === SEND_OK) {
      accepted += body.length;
      fullStreak = 0;
    } else {
      expect(st).toBe(SEND_FULL);
      fullStreak++;
      await Bun.sleep(1);
    }
  }
  expect(fullStreak).toBe(50);
  // What was taken fits the kernel's buffers plus our budget, not the 320 MiB offered.
  expect(accepted).toBeLessThan(64 << 20);
  Bun.gc(true);
  const rss0 = rssBytes(process.pid);
  // 200,000 more tries (3 GiB offered): every one Full, nothing more held.
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < 1000; i++) expect(conn.trySend(head, body)).toBe(SEND_FULL);
    await Bun.sleep(0);
  }
  const out = outBuffer(conn);
  expect(out.length).toBeLessThanOrEqual(budget);
  expect(out.bytes.length).toBeLessThanOrEqual(budget);
  Bun.gc(true);
  expect(rssBytes(process.pid) - rss0).toBeLessThan(16 << 20);
  expect(conn.closed).toBe(false);
  conn.close();
  expect(conn.trySend(head, body)).toBe(SEND_CLOSED);
});

test("released messages are reused: 5,000 messages one at a time arrive in a few objects; views taken before release keep their bytes", async () => {
  const seen = new Set<RxMessage>();
  const bodies: Uint8Array[] = [];
  const { conn } = await pair((m) => {
    seen.add(m);
    bodies.push(m.body);
    m.release();
    m.release(); // idempotent: the object goes back once
  });
  const head = new Uint8Array(24);
  const body = new Uint8Array(64);
  const n = 5000;
  for (let i = 0; i < n; i++) {
    body.fill(i & 0xff);
    new DataView(body.buffer).setUint32(0, i, true);
    expect(conn.trySend(head, body)).toBe(SEND_OK);
    if (i % 10 === 9) await until(() => bodies.length === i + 1, `message ${i}`);
  }
  await until(() => bodies.length === n, `all ${n} messages (now ${bodies.length})`);
  // One per message was the old way; a released object now carries the next frames.
  expect(seen.size).toBeLessThanOrEqual(16);
  for (let i = 0; i < n; i++) {
    const b = bodies[i]!;
    expect(new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true)).toBe(i);
    expect(b[63]).toBe(i & 0xff);
  }
});

test("messages held unreleased are never reused", async () => {
  const held: RxMessage[] = [];
  const { conn } = await pair((m) => held.push(m));
  const head = new Uint8Array([1, 2, 3]);
  for (let i = 0; i < 300; i++) expect(conn.trySend(head, new Uint8Array([i & 0xff, i >> 8]))).toBe(SEND_OK);
  await until(() => held.length === 300, "300 messages");
  expect(new Set(held).size).toBe(300);
  held.forEach((m, i) => {
    expect([...m.head]).toEqual([1, 2, 3]);
    expect([...m.body]).toEqual([i & 0xff, i >> 8]);
  });
  for (const m of held) m.release();
});

test("trySendWords: the six words arrive as the head, little-endian, with the body, small and large; limits as trySend", async () => {
  const got: Array<{ head: number[]; body: Uint8Array }> = [];
  const { conn } = await pair((m) => {
    got.push({ head: [...m.head], body: m.body.slice() });
    m.release();
  }, 1 << 20);
  const tcp = conn as TcpConnection;
  const words = [0x04030201, 0x08070605, 0xfffefdfc, 0, 1, 0x80000000] as const;
  const small = new Uint8Array(32).map((_, i) => i);
  const large = new Uint8Array(256 << 10).map((_, i) => (i * 7) & 0xff);
  expect(tcp.trySendWords(...words, small)).toBe(SEND_OK);
  expect(tcp.trySendWords(...words, new Uint8Array(0))).toBe(SEND_OK);
  await until(() => got.length === 2, "two messages");
  // A large body goes by the direct-write path when nothing is queued.
  expect(tcp.trySendWords(...words, large)).toBe(SEND_OK);
  await until(() => got.length === 3, "the large message");
  const headBytes = new Uint8Array(24);
  const dv = new DataView(headBytes.buffer);
  words.forEach((w, i) => dv.setUint32(4 * i, w, true));
  for (const g of got) expect(g.head).toEqual([...headBytes]);
  expect(got.map((g) => g.body.length)).toEqual([32, 0, large.length]);
  expect(got[0]!.body).toEqual(small);
  expect(got[2]!.body).toEqual(large);
  expect(() => tcp.trySendWords(...words, new Uint8Array((1 << 20) + 1))).toThrow(UsageError);
  conn.close();
  expect(tcp.trySendWords(...words, small)).toBe(SEND_CLOSED);
});

test("bodies up to COPY_BODY_MAX_BYTES come as copies of their own, larger ones as views of the read; both keep their bytes after release", async () => {
  const got: Array<{ body: Uint8Array; sharesRead: boolean }> = [];
  const { conn } = await pair((m) => {
    const body = m.body;
    got.push({ body, sharesRead: body.buffer === m.headBuf.buffer });
    m.release();
  });
  const sizes = [1, COPY_BODY_MAX_BYTES, COPY_BODY_MAX_BYTES + 1, 4096];
  for (const n of sizes) expect(conn.trySend(new Uint8Array(24), new Uint8Array(n).fill(n & 0xff))).toBe(SEND_OK);
  await until(() => got.length === sizes.length, "every message");
  expect(got.map((g) => g.sharesRead)).toEqual([false, false, true, true]);
  got.forEach((g, i) => expect(g.body).toEqual(new Uint8Array(sizes[i]!).fill(sizes[i]! & 0xff)));
});

test("wait() allocates its promise (and what JSC makes with every promise) only: no closure per wait", async () => {
  const { conn } = await pair((m) => m.release());
  const n = 2000;
  const pending: Array<Promise<boolean>> = new Array(n);
  pending[0] = conn.wait(60_000); // the list's arrays and timer exist from here on
  Bun.gc(true);
  const before = heapObjects();
  for (let i = 1; i < n; i++) pending[i] = conn.wait(60_000);
  const perWait = (heapObjects() - before) / (n - 1);
  // A Promise, its resolve and reject functions and the environment they share (JSC makes these
  // four for every promise; the list's arrays grow by doubling: a few more in all). A closure
  // per wait was two more.
  expect(perWait).toBeLessThan(4.5);
  conn.close();
  expect(await Promise.all(pending)).toEqual(new Array(n).fill(false));
});

/** Objects on the JS heap now (bun:jsc), all kinds together. */
function heapObjects(): number {
  let total = 0;
  for (const v of Object.values(heapStats().objectTypeCounts)) total += v;
  return total;
}
