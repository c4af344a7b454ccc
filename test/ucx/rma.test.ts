/**
 * One-sided access across processes over UCX (tcp, then shared memory): put then get the same
 * bytes (and the owner sees them in its own memory), CAS succeeds once and then fails with the
 * current value, out-of-bounds or misaligned access is refused before it reaches UCX.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rpcConnect, UsageError } from "../../src/index.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SERVER = new URL("./rma-server.ts", import.meta.url).pathname;

function span(offset: number, len: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, offset, true);
  new DataView(b.buffer).setUint32(4, len, true);
  return b;
}

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe(`ucx RMA (UCX_TLS=${tls})`, () => {
    let peer: Peer;
    beforeAll(async () => {
      process.env.UCX_TLS = tls;
      peer = await spawnPeer(SERVER, ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
    });
    afterAll(async () => {
      await peer.kill();
    });

    test("put, get, compare-and-swap on the peer's registered memory", async () => {
      const client = await rpcConnect(peer.ready.url, { ucx: { rma: true } });
      try {
        const conn = client.conn as UcxConnection;
        expect(conn.caps.rma).toBe(true);
        const remote = conn.attachRegion(await client.request(1));
        expect(remote.lenBytes).toBe(4096);

        const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 13) & 0xff);
        await remote.put(100, bytes);
        expect(await remote.get(100, 1000)).toEqual(bytes);
        // The owner sees the bytes in its own memory, without having done anything.
        expect(await client.request(2, span(100, 1000))).toEqual(bytes);

        const word = new Uint8Array(8);
        new DataView(word.buffer).setBigUint64(0, 5n, true);
        await remote.put(64, word);
        expect(await remote.cas(64, 5n, 42n)).toEqual({ swapped: true, value: 5n });
        expect(await remote.cas(64, 5n, 99n)).toEqual({ swapped: false, value: 42n });
        const after = await remote.get(64, 8);
        expect(new DataView(after.buffer).getBigUint64(0, true)).toBe(42n);
      } finally {
        client.close();
      }
    });

    test("out-of-bounds and misaligned access is refused before UCX", async () => {
      const client = await rpcConnect(peer.ready.url, { ucx: { rma: true } });
      try {
        const remote = (client.conn as UcxConnection).attachRegion(await client.request(1));
        await expect(remote.get(4090, 10)).rejects.toBeInstanceOf(UsageError);
        await expect(remote.get(-1, 4)).rejects.toBeInstanceOf(UsageError);
        await expect(remote.put(4096, new Uint8Array(1))).rejects.toBeInstanceOf(UsageError);
        await expect(remote.cas(4092, 0n, 1n)).rejects.toBeInstanceOf(UsageError);
        await expect(remote.cas(3, 0n, 1n)).rejects.toThrow(/aligned/);
        // The region is still usable afterwards.
        expect((await remote.get(4088, 8)).length).toBe(8);
      } finally {
        client.close();
      }
    });
  });
}
