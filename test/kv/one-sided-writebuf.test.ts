/**
 * The cap on write-buffer bytes (ucx, UCX_TLS=tcp,self): a server with writeBufferTotalBytes of
 * one buffer gives it to the first client that does a large put; a second client's large put
 * gets none and still stores its value, by KV_PUT; STATS' `oneSided` counts the buffer, its
 * bytes and the refusal. When the first client goes, its buffer's bytes are free for a new one.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { kvConnect, type KvClient } from "../../src/kv/client.ts";
import { oneSidedClient } from "../../src/kv/one-sided.ts";
import { useEnv } from "../helpers/env.ts";
import type { Peer } from "../helpers/peer.ts";
import { startServer } from "./peers/servers.ts";

const peers: Peer[] = [];
afterAll(async () => {
  for (const p of peers.splice(0)) await p.kill();
});

interface WbStats {
  writeBuffers: number;
  writeBufferBytes: number;
  writeBufferTotalBytes: number;
  writeBuffersRefused: number;
}
const wbStats = async (kv: KvClient) => ((await kv.stats())[0] as { stats: { oneSided: WbStats } }).stats.oneSided;

describe("kv write buffers over ucx (UCX_TLS=tcp,self)", () => {
  useEnv({ UCX_TLS: "tcp,self" });

  test("past the server's cap a client gets no write buffer and its large put goes by KV_PUT", async () => {
    const server = await startServer({ listen: ["ucx://127.0.0.1:0"], memoryBytes: 8 << 20, writeBufferBytes: 256 << 10, writeBufferTotalBytes: 256 << 10 }, { UCX_TLS: "tcp,self" });
    peers.push(server);
    const url = server.urls[0]!;
    const a = await kvConnect(url);
    const b = await kvConnect(url);
    let c: KvClient | null = null;
    try {
      expect(await wbStats(a)).toMatchObject({ writeBuffers: 0, writeBufferBytes: 0, writeBufferTotalBytes: 256 << 10, writeBuffersRefused: 0 });
      const va = new Uint8Array(100 << 10).fill(1);
      const vb = new Uint8Array(100 << 10).fill(2);
      oneSidedClient.resetStats();
      const verA = await a.put("a", va);
      expect(oneSidedClient.stats).toMatchObject({ largePuts: 1, largePutFallbacks: 0 });
      const verB = await b.put("b", vb);
      expect(oneSidedClient.stats).toMatchObject({ largePuts: 1, largePutFallbacks: 1 });
      for (const [k, v, ver] of [["a", va, verA], ["b", vb, verB]] as const) {
        const got = await a.get(k);
        expect([got?.version, Buffer.from(got!.value).equals(Buffer.from(v))]).toEqual([ver, true]);
      }
      expect(await wbStats(a)).toMatchObject({ writeBuffers: 1, writeBufferBytes: 256 << 10, writeBuffersRefused: 1 });
      // b stays on KV_PUT (it asked once); a's buffer is freed with its connection, and a new client gets one.
      await a.close();
      const deadline = Date.now() + 10_000; // a watchdog: the server sees the close as UCX closes the endpoint
      while ((await wbStats(b)).writeBuffers !== 0) {
        if (Date.now() > deadline) throw new Error("the closed client's write buffer was never freed");
        await Bun.sleep(20);
      }
      c = await kvConnect(url);
      oneSidedClient.resetStats();
      await c.put("c", vb);
      await b.put("b", va);
      expect(oneSidedClient.stats).toMatchObject({ largePuts: 1, largePutFallbacks: 1 });
      expect(Buffer.from((await b.get("b"))!.value).equals(Buffer.from(va))).toBe(true);
      expect(await wbStats(b)).toMatchObject({ writeBuffers: 1, writeBufferBytes: 256 << 10 });
    } finally {
      await a.close();
      await b.close();
      await c?.close();
    }
  });
});
