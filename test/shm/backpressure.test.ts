/**
 * Slot exhaustion is backpressure, never a collapse: 8 concurrent callers exchanging 256 KiB
 * messages with a server process keep flowing (every reply whole), and a message larger than
 * the largest size class is refused with a clear UsageError.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { rpcConnect, UsageError } from "../../src/index.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import * as m from "../conformance/methods.ts";

const PEER_SERVER = new URL("../conformance/peer-server.ts", import.meta.url).pathname;
let peer: Peer;
beforeAll(async () => {
  peer = await spawnPeer(PEER_SERVER, [`shm://bp-${process.pid}`]);
});
afterAll(async () => {
  await peer.kill();
});

test("8 callers × 256 KiB echoes on a slab with few large slots all complete intact", async () => {
  // 4 slots of 256 KiB each way: half of what 8 callers want at once.
  const c = await rpcConnect(peer.ready.url, {
    segment: { ringSlots: 64, sizeClasses: [{ slotBytes: 4096, slotCount: 64 }, { slotBytes: 256 << 10, slotCount: 4 }] },
  });
  const rounds = 40;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: 8 }, async (_, caller) => {
      const data = new Uint8Array(256 << 10);
      for (let r = 0; r < rounds; r++) {
        data.fill((caller * 31 + r) & 0xff);
        const reply = await c.request(m.M_ECHO, data, { timeoutMs: 20_000 });
        expect(reply.length).toBe(data.length);
        expect(m.checksum(reply)).toBe(m.checksum(data));
      }
    }),
  );
  const s = (performance.now() - t0) / 1000;
  console.log(`shm backpressure: 8 callers × ${rounds} × 256 KiB echoes in ${s.toFixed(3)} s (${((8 * rounds) / s).toFixed(0)} echoes/s)`);
  c.close();
});

test("a message larger than the largest size class is refused with a clear error", async () => {
  const c = await rpcConnect(peer.ready.url);
  const e = await c.request(m.M_ECHO, new Uint8Array((16 << 20) + 1)).catch((x) => x);
  expect(e).toBeInstanceOf(UsageError);
  expect(e.message).toContain("maxMessageBytes");
  c.close();
});
