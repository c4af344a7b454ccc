/**
 * A connection's close and the messages its receiver still holds (rx.ts revoke): over UCX's
 * shared memory, a 6000-byte request received in place waits in the RPC server's inbox when
 * its client closes. The close gives UCX its buffer back and the held message reads as empty,
 * but its object stays the holder's until the holder releases it: another connection's
 * messages never arrive in it, so neither the stale handle nor the other client's calls see
 * foreign bytes. (Before: the close pooled the object, the next client's request was received
 * into it, A's handle read B's bytes, and B's first call got the reply built from its second.)
 * The peer (close-holder.ts) runs server and both clients with UCX_TLS=shm,self.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const HOLDER = new URL("./close-holder.ts", import.meta.url).pathname;

describe("ucx close with in-place messages still held", () => {
  let peer: Peer | null = null;
  afterAll(async () => {
    await peer?.kill();
  });

  test("the closed connection's held message reads empty; the other connection's calls get their own bytes", async () => {
    peer = await spawnPeer(HOLDER, [], { UCX_TLS: "shm,self" }, 30_000);
    const r = peer.ready;
    expect(r.aLength).toBe(0);
    expect(r.shared).toBe(false);
    expect(r.b1Data).toBe(r.b1);
    expect(r.b1Reply).toBe(r.b1);
    expect(r.b2Reply).toBe(r.b2);
  }, 60_000);
});
