/**
 * A registered region outlives its connection safely: a server that keeps per-client regions
 * reads them after the client left (or was killed) and survives; the stale view still holds
 * the bytes last written (the memory stays valid until the GC frees it). The server runs in
 * a child process, so a segfault fails the test instead of killing the runner.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { useEnv } from "../helpers/env.ts";
import { rpcConnect } from "../../src/index.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const KEEPER = new URL("./region-keeper.ts", import.meta.url).pathname;
const CLIENT = `
import { rpcConnect } from "${new URL("../../src/index.ts", import.meta.url).pathname}";
const c = await rpcConnect(process.argv[1], { ucx: { rma: true } });
const remote = c.conn.attachRegion(await c.request(1, new Uint8Array([9])));
await remote.put(0, new Uint8Array(4096).fill(5));
console.log("ready");
await Bun.sleep(60000);
`;

function readStats(b: Uint8Array) {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const regions = dv.getUint32(0, true);
  return { regions, closed: dv.getUint32(4, true), sums: Array.from({ length: regions }, (_, i) => dv.getUint32(8 + 4 * i, true)) };
}

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe(`ucx regions after their connection goes (UCX_TLS=${tls})`, () => {
    let peer: Peer;
    useEnv({ UCX_TLS: tls });
    beforeAll(async () => {
      peer = await spawnPeer(KEEPER, ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
    });
    afterAll(async () => {
      await peer.kill();
    });

    test("a client closes, another is killed: the server reads their stale views and keeps serving", async () => {
      // One client closes cleanly after a one-sided write into its region.
      const a = await rpcConnect(peer.ready.url, { ucx: { rma: true } });
      const remote = (a.conn as UcxConnection).attachRegion(await a.request(1, new Uint8Array([7])));
      await remote.put(0, new Uint8Array(4096).fill(3));
      a.close();
      // Another, in its own process, is killed.
      const proc = Bun.spawn(["bun", "-e", CLIENT, peer.ready.url], { stdout: "pipe", env: { ...process.env, UCX_TLS: tls } });
      const reader = proc.stdout.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toContain("ready");
      proc.kill(9);
      await proc.exited;

      const probe = await rpcConnect(peer.ready.url);
      try {
        let stats = readStats(await probe.request(2));
        for (let i = 0; i < 200 && stats.closed < 2; i++) {
          await Bun.sleep(25);
          stats = readStats(await probe.request(2));
        }
        expect(stats.regions).toBe(2);
        expect(stats.closed).toBe(2);
        // Page 0 holds what the client wrote one-sided, the other 255 pages the fill byte.
        expect(stats.sums).toEqual([3 + 255 * 7, 5 + 255 * 9]);
        // Touch them again after a GC: still valid memory.
        Bun.gc(true);
        expect(readStats(await probe.request(2)).sums).toEqual(stats.sums);
      } finally {
        probe.close();
      }
      expect(peer.proc.exitCode).toBeNull();
      expect(peer.proc.signalCode).toBeNull();
    });
  });
}
