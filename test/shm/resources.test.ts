/**
 * Resources come back after sessions end, without waiting for the garbage collector: a closed
 * shm session drops its shared pages and its segment mapping at once (anonymous pages replace
 * them), so a reconnect loop or a stream of killed clients grows neither fds, nor mappings of
 * hotpath segments (/proc/self/maps), nor shared memory (RssShmem), nor /dev/shm. A received
 * message that is still held keeps its memory until it is released.
 */

import { afterEach, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { connect, listen, SEND_FULL, type Connection, type RxMessage } from "../../src/index.ts";
import type { SegmentConnection } from "../../src/segment/connection.ts";
import { spawnPeer } from "../helpers/peer.ts";

const SEGMENT_PEER = new URL("./segment-peer.ts", import.meta.url).pathname;
let n = 0;
const unique = () => `res-${process.pid}-${n++}`;

const fds = () => readdirSync("/proc/self/fd").length;
const segmentMaps = () => readFileSync("/proc/self/maps", "utf8").split("\n").filter((l) => l.includes("/memfd:hotpath-")).length;
const statusKiB = (field: string) => Number(readFileSync("/proc/self/status", "utf8").match(new RegExp(`${field}:\\s+(\\d+)`))![1]);
const shmEntries = () => readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"));

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(1);
  }
}

async function send(conn: Connection, head: Uint8Array, body: Uint8Array): Promise<void> {
  while (conn.trySend(head, body) === SEND_FULL) await conn.wait(10);
}

afterEach(() => {
  expect(shmEntries()).toEqual([]);
});

test("100 reconnects with 256 KiB each way: fds, segment mappings and shared memory stay at baseline", async () => {
  const l = await listen(`shm://${unique()}`);
  const accepted: Connection[] = [];
  l.onConnection((c) => {
    c.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    accepted.push(c);
  });
  const body = new Uint8Array(256 << 10).fill(7);
  const base = { fds: fds(), maps: segmentMaps(), shmemKiB: statusKiB("RssShmem"), rssKiB: statusKiB("VmRSS") };
  for (let i = 0; i < 100; i++) {
    const a = await connect(l.url);
    let got = 0;
    a.setReceiver({ onMessage: (m) => void (got++, m.release()), onClose() {} });
    await until(() => accepted.length === 1, "the accept");
    const b = accepted.pop()!;
    await send(a, new Uint8Array(8), body);
    await send(b, new Uint8Array(8), body);
    await until(() => got === 1 && (b as SegmentConnection).txSlotsInUse() === 0, "both messages");
    // Either side closes first; the other learns it from the segment or the socket.
    (i % 2 === 0 ? a : b).close();
    await until(() => a.closed && b.closed, "both sides closed");
  }
  await Bun.sleep(20);
  const after = { fds: fds(), maps: segmentMaps(), shmemKiB: statusKiB("RssShmem"), rssKiB: statusKiB("VmRSS") };
  console.log(`shm 100 reconnects: fds ${base.fds} → ${after.fds}, segment maps ${base.maps} → ${after.maps}, RssShmem ${base.shmemKiB} → ${after.shmemKiB} KiB, RSS ${(base.rssKiB / 1024).toFixed(1)} → ${(after.rssKiB / 1024).toFixed(1)} MiB (no GC forced)`);
  l.close(true);
  expect(after.maps).toBe(base.maps);
  expect(after.fds).toBeLessThanOrEqual(base.fds + 2);
  // 100 sessions touched ≥ 100 × 2 × 256 KiB of shared pages in each mapping: none of it is left.
  expect(after.shmemKiB - base.shmemKiB).toBeLessThan(4096);
}, 60_000);

test("20 clients killed while their messages are held: the held messages stay readable, and mappings and fds go once they are released", async () => {
  const l = await listen(`shm://${unique()}`);
  const held: RxMessage[] = [];
  const open = new Set<Connection>();
  l.onConnection((c) => {
    open.add(c);
    c.setReceiver({ onMessage: (m) => void held.push(m), onClose: () => void open.delete(c) });
  });
  const base = { fds: fds(), maps: segmentMaps() };
  for (let i = 0; i < 20; i++) {
    const client = await spawnPeer(SEGMENT_PEER, ["connect", l.url, "10"]);
    await until(() => held.length === 10 * (i + 1), "the client's messages");
    await client.kill(9);
    await until(() => open.size === 0, "the killed client's session closes");
  }
  const whileHeld = { fds: fds(), maps: segmentMaps() };
  // The held views still read their messages' bytes (head "hold") after their sessions closed.
  expect(held.every((m) => new TextDecoder().decode(m.head) === "hold")).toBe(true);
  for (const m of held.splice(0)) m.release();
  const after = { fds: fds(), maps: segmentMaps() };
  console.log(`shm 20 killed clients: fds ${base.fds} → ${whileHeld.fds} (messages held) → ${after.fds}, segment maps ${base.maps} → ${whileHeld.maps} → ${after.maps}`);
  l.close(true);
  expect(whileHeld.maps).toBe(base.maps + 20);
  expect(after.maps).toBe(base.maps);
  expect(after.fds).toBeLessThanOrEqual(base.fds + 2);
}, 120_000);
