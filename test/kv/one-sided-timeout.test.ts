/**
 * One-sided steps honour the call's deadline (ucx, UCX_TLS=tcp,self and shm,self): UCX 1.13
 * emulates RMA over tcp and shared memory with Active Messages that the server's worker
 * answers, so a SIGSTOPped server answers no RMA read, put or flush. With timeoutMs 1000:
 * - a one-sided GET rejects with TimeoutError (as an RPC GET does), and so does the next one
 *   (the connection's one-sided path is suspect: it goes by KV_GET, which has its deadline);
 * - a large put (RMA put + flush + KV_COMMIT) rejects with TimeoutError;
 * - after SIGCONT the stuck RMA operations complete, and GETs are one-sided again with the
 *   right values; a large put goes by RMA again.
 * A watchdog (not a time assert) fails a call that hangs.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { TimeoutError } from "../../src/errors.ts";
import { kvConnect } from "../../src/kv/client.ts";
import { oneSidedClient } from "../../src/kv/one-sided.ts";
import { useEnv } from "../helpers/env.ts";
import type { Peer } from "../helpers/peer.ts";
import { startServer } from "./peers/servers.ts";

const peers: Peer[] = [];
afterAll(async () => {
  for (const p of peers.splice(0)) {
    p.proc.kill("SIGCONT");
    await p.kill();
  }
});

/** What `p` settles with, or "hung" after `ms` (a watchdog far above the 1 s deadline). */
async function settle<T>(p: Promise<T>, ms = 6000): Promise<{ ok: T } | { err: unknown } | "hung"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const watchdog = new Promise<"hung">((r) => (timer = setTimeout(() => r("hung"), ms)));
  try {
    return await Promise.race([p.then((ok) => ({ ok }), (err) => ({ err })), watchdog]);
  } finally {
    clearTimeout(timer);
  }
}

for (const tls of ["tcp,self", "shm,self"]) {
  describe(`kv one-sided deadlines (UCX_TLS=${tls})`, () => {
    useEnv({ UCX_TLS: tls });

    test("with the server stopped, one-sided GETs and a large put reject with TimeoutError; after SIGCONT they work again", async () => {
      const server = await startServer({ listen: ["ucx://127.0.0.1:0"], memoryBytes: 8 << 20 }, { UCX_TLS: tls });
      peers.push(server);
      // Two clients: one for GETs, one for large puts (so each one-sided path meets the stopped server unsuspected).
      const kv = await kvConnect(server.urls[0]!, { timeoutMs: 1000 });
      const writer = await kvConnect(server.urls[0]!, { timeoutMs: 1000 });
      try {
        const big = new Uint8Array(64 << 10).fill(9);
        const v1 = await kv.put("k", "before");
        oneSidedClient.resetStats();
        await writer.put("big", big); // asks for and attaches the write buffer
        expect((await kv.get("k"))?.version).toBe(v1);
        expect(oneSidedClient.stats).toMatchObject({ hits: 1, largePuts: 1 });

        server.proc.kill("SIGSTOP");
        oneSidedClient.resetStats();
        const first = await settle(kv.get("k"));
        expect(first).not.toBe("hung");
        expect((first as { err: unknown }).err).toBeInstanceOf(TimeoutError);
        const put = await settle(writer.put("big2", big));
        expect(put).not.toBe("hung");
        expect((put as { err: unknown }).err).toBeInstanceOf(TimeoutError);
        expect(oneSidedClient.stats.timeouts).toBe(2); // both given up on their RMA steps, not on an RPC
        // The connection is suspect now: the next GET goes by KV_GET, which rejects at its own deadline.
        const second = await settle(kv.get("k"));
        expect((second as { err: unknown }).err).toBeInstanceOf(TimeoutError);
        expect(oneSidedClient.stats).toMatchObject({ timeouts: 2, fallbacks: 1 });

        server.proc.kill("SIGCONT");
        // The stuck reads complete once the server runs again; then GETs are one-sided again (a watchdog bounds the wait).
        const deadline = Date.now() + 10_000;
        for (;;) {
          oneSidedClient.resetStats();
          const got = await kv.get("k");
          expect([new TextDecoder().decode(got!.value), got!.version]).toEqual(["before", v1]);
          if (oneSidedClient.stats.hits === 1) break;
          if (Date.now() > deadline) throw new Error("GETs never went one-sided again after SIGCONT");
          await Bun.sleep(20);
        }
        let v3 = 0;
        for (;;) {
          oneSidedClient.resetStats();
          v3 = await writer.put("big3", big);
          if (oneSidedClient.stats.largePuts === 1) break;
          if (Date.now() > deadline) throw new Error("large puts never went by RMA again after SIGCONT");
          await Bun.sleep(20);
        }
        const got = await kv.get("big3");
        expect([got?.version, Buffer.from(got!.value).equals(Buffer.from(big))]).toEqual([v3, true]);
      } finally {
        server.proc.kill("SIGCONT");
        await kv.close();
        await writer.close();
      }
    }, 40_000);
  });
}
