/**
 * One-sided GETs across a server restart (ucx, UCX_TLS=tcp,self and shm,self): the client reads
 * a key one-sided, the server is killed (kill -9) and started again on its address with other
 * values, and the client's GETs (once the pool reconnected and HELLO arrived) are one-sided
 * again, through the new connection's arena and never the old one's: they return the new
 * server's values.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { kvConnect } from "../../src/kv/client.ts";
import { KvUnavailableError } from "../../src/errors.ts";
import { oneSidedClient } from "../../src/kv/one-sided.ts";
import { useEnv } from "../helpers/env.ts";
import type { Peer } from "../helpers/peer.ts";
import { startServer } from "./peers/servers.ts";

const peers: Peer[] = [];
afterAll(async () => {
  for (const p of peers.splice(0)) await p.kill();
});

for (const tls of ["tcp,self", "shm,self"]) {
  describe(`kv one-sided GETs across a restart (UCX_TLS=${tls})`, () => {
    useEnv({ UCX_TLS: tls });

    test("after the server comes back, GETs are one-sided again and read the new server's arena", async () => {
      const first = await startServer({ listen: ["ucx://127.0.0.1:0"], memoryBytes: 8 << 20 }, { UCX_TLS: tls });
      peers.push(first);
      const url = first.urls[0]!;
      const kv = await kvConnect(url, { pool: { backoff: { initialMs: 10, maxMs: 50 } } });
      try {
        await kv.put("k", "before");
        oneSidedClient.resetStats();
        expect(new TextDecoder().decode((await kv.get("k"))!.value)).toBe("before");
        expect(oneSidedClient.stats.hits).toBe(1);

        await first.kill();
        const second = await startServer({ listen: [url], memoryBytes: 8 << 20 }, { UCX_TLS: tls });
        peers.push(second);
        // Until the pool has reconnected, calls fail fast with KvUnavailableError (a watchdog bounds the wait).
        const deadline = Date.now() + 20_000;
        let version = 0;
        while (version === 0) {
          try {
            version = await kv.put("k", "after, and longer than before");
          } catch (e) {
            expect(e).toBeInstanceOf(KvUnavailableError);
            if (Date.now() > deadline) throw e;
            await Bun.sleep(20);
          }
        }
        // The first GET may go by KV_GET while the new connection's HELLO is still on its way.
        expect((await kv.get("k"))?.version).toBe(version);
        oneSidedClient.resetStats();
        for (let i = 0; i < 5; i++) {
          const got = await kv.get("k");
          expect([new TextDecoder().decode(got!.value), got!.version]).toEqual(["after, and longer than before", version]);
        }
        expect(await kv.get("absent")).toBeNull();
        expect(oneSidedClient.stats).toMatchObject({ hits: 6, fallbacks: 0 });
      } finally {
        await kv.close();
      }
    }, 40_000);
  });
}
