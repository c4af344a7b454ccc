/**
 * Copies the RPC layer makes are real copies in plain Uint8Arrays, whatever the caller or the
 * transport hands it: tcp delivers Node/Bun Buffers, whose slice() is a view of the same memory,
 * so a "copy" made with slice() pinned a whole read buffer and changed when the owner reused it.
 */

import { expect, test } from "bun:test";
import { copyBytes } from "../../src/bytes.ts";
import { rpcConnect, serve } from "../../src/index.ts";

test("copyBytes of a Buffer is a plain Uint8Array with memory of its own", () => {
  const src = Buffer.from([1, 2, 3, 4]);
  const c = copyBytes(src.subarray(1, 3));
  expect(c.constructor).toBe(Uint8Array);
  expect(c.buffer).not.toBe(src.buffer);
  src[1] = 99;
  expect([...c]).toEqual([2, 3]);
});

test("tcp: small responses are plain Uint8Arrays that pin no read buffer", async () => {
  const serving = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
  const client = await rpcConnect(serving.url, { fallback: [] });
  try {
    const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => client.request(1, new Uint8Array([i, i, i]))));
    for (const [i, r] of replies.entries()) {
      expect(r.constructor).toBe(Uint8Array);
      expect([...r]).toEqual([i, i, i]);
      expect(r.buffer.byteLength).toBe(3); // its own memory, not a view of the read chunk
    }
  } finally {
    client.close();
    serving.close();
  }
});

test("a request queued behind a full window keeps its bytes when the caller reuses a Buffer", async () => {
  const serving = await serve("tcp://127.0.0.1:0", { 1: async (h) => h.data });
  const client = await rpcConnect(serving.url, { fallback: [], window: 1 });
  try {
    const buf = Buffer.alloc(4);
    const calls: Array<Promise<Uint8Array>> = [];
    for (let i = 0; i < 4; i++) {
      buf.fill(i);
      calls.push(client.request(1, buf)); // the later three wait for the window: they must keep a copy
    }
    buf.fill(0xee);
    const got = await Promise.all(calls);
    expect(got.map((r) => [...r])).toEqual([0, 1, 2, 3].map((i) => [i, i, i, i]));
  } finally {
    client.close();
    serving.close();
  }
});
