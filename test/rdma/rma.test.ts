/**
 * One-sided access over rdma:// (src/rdma/rma.ts).
 *
 * Unit level (this process, no device): the 20-byte descriptor round-trips and malformed ones
 * are ProtocolError; every access outside the region, a misaligned CAS, an operation over
 * MAX_OP_BYTES is refused with UsageError before anything reaches the connection (a recording
 * RmaConnection sees no post); a closed connection refuses with TransportClosedError.
 *
 * Over the software RC TEST FIXTURE (two processes, test/rdma/rma-owner.ts and rma-peer.ts):
 * see the second describe block.
 */
import { describe, expect, test } from "bun:test";
import { ProtocolError, TransportClosedError, UsageError } from "../../src/errors.ts";
import type { VerbsPd } from "../../src/ffi/ibverbs.ts";
import { decodeRmaDescriptor, encodeRmaDescriptor, MAX_OP_BYTES, RdmaRma, RMA_DESC_BYTES, type RmaConnection } from "../../src/rdma/rma.ts";

/** A connection that records posts (none may happen in these tests) and can be closed. */
function recorder() {
  const posts: unknown[][] = [];
  const conn: RmaConnection & { closed: boolean } = {
    closed: false,
    closeError: null,
    peer: "rdma://198.51.100.7:4791",
    postOneSided: (...args: unknown[]) => {
      posts.push(args);
      return true;
    },
    abort() {
      conn.closed = true;
    },
  };
  // No registration happens before a refused access: a PD that throws if touched proves it.
  const pd = new Proxy({}, { get: () => { throw new Error("the PD was used"); } }) as unknown as VerbsPd;
  return { conn, posts, rma: new RdmaRma(conn, pd) };
}

describe("rdma rma, unit", () => {
  test("descriptor: u64 address, u64 length, u32 rkey, little-endian; malformed ones are ProtocolError", () => {
    const d = encodeRmaDescriptor({ address: 0x7f12_3456_7800n, lenBytes: 4096, rkey: 0xdeadbeef });
    expect(d.length).toBe(RMA_DESC_BYTES);
    expect([...d]).toEqual([0x00, 0x78, 0x56, 0x34, 0x12, 0x7f, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
    expect(decodeRmaDescriptor(d)).toEqual({ address: 0x7f12_3456_7800n, lenBytes: 4096, rkey: 0xdeadbeef });
    // A view into a larger buffer decodes from its own offset.
    const framed = new Uint8Array(RMA_DESC_BYTES + 3);
    framed.set(d, 3);
    expect(decodeRmaDescriptor(framed.subarray(3))).toEqual(decodeRmaDescriptor(d));
    expect(() => decodeRmaDescriptor(d.subarray(0, 19))).toThrow(ProtocolError);
    expect(() => decodeRmaDescriptor(new Uint8Array(36))).toThrow(/expected 20/);
    const huge = d.slice();
    new DataView(huge.buffer).setBigUint64(8, 1n << 60n, true);
    expect(() => decodeRmaDescriptor(huge)).toThrow(/safe integer/);
  });

  test("accesses outside the region, misaligned CAS and oversized operations are UsageError before any post", async () => {
    const { rma, posts } = recorder();
    const remote = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0000n, lenBytes: 4096, rkey: 7 }));
    expect(remote.lenBytes).toBe(4096);
    await expect(remote.get(4090, 10)).rejects.toBeInstanceOf(UsageError);
    await expect(remote.get(-1, 4)).rejects.toBeInstanceOf(UsageError);
    await expect(remote.get(0.5, 4)).rejects.toBeInstanceOf(UsageError);
    await expect(remote.put(4096, new Uint8Array(1))).rejects.toBeInstanceOf(UsageError);
    await expect(remote.put(4000, new Uint8Array(97))).rejects.toThrow(/\[4000, 4097\) are outside the remote region of 4096 bytes/);
    await expect(remote.cas(4092, 0n, 1n)).rejects.toBeInstanceOf(UsageError);
    await expect(remote.cas(3, 0n, 1n)).rejects.toThrow(/aligned/);
    expect(() => remote.readTo(4000, 200, { buf: new Uint8Array(200), onRead() {} })).toThrow(UsageError);
    expect(() => remote.readTo(0, 200, { buf: new Uint8Array(100), onRead() {} })).toThrow(/do not fit/);
    expect(() => remote.readInto(4095, new Uint8Array(2), () => {})).toThrow(UsageError);
    // A region whose base is not 8-byte aligned: no offset in it is aligned for CAS.
    const odd = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0004n, lenBytes: 64, rkey: 7 }));
    await expect(odd.cas(8, 0n, 1n)).rejects.toThrow(/not 8-byte aligned/);
    const big = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0000n, lenBytes: MAX_OP_BYTES + 8, rkey: 7 }));
    await expect(big.get(0, MAX_OP_BYTES + 1)).rejects.toThrow(/at most/);
    // Zero-length accesses inside the region complete without a post.
    expect(await remote.get(4096, 0)).toEqual(new Uint8Array(0));
    await remote.put(10, new Uint8Array(0));
    expect(posts).toEqual([]);
    expect(() => rma.attachRegion(new Uint8Array(5))).toThrow(ProtocolError);
  });

  test("a closed connection refuses every access with TransportClosedError", async () => {
    const { rma, conn, posts } = recorder();
    const remote = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0000n, lenBytes: 4096, rkey: 7 }));
    conn.closed = true;
    await expect(remote.get(0, 8)).rejects.toBeInstanceOf(TransportClosedError);
    await expect(remote.put(0, new Uint8Array(8))).rejects.toBeInstanceOf(TransportClosedError);
    await expect(remote.cas(0, 0n, 1n)).rejects.toBeInstanceOf(TransportClosedError);
    await expect(remote.flush()).rejects.toBeInstanceOf(TransportClosedError);
    expect(() => remote.readTo(0, 8, { buf: new Uint8Array(8), onRead() {} })).toThrow(TransportClosedError);
    expect(() => rma.registerMemory(64)).toThrow(TransportClosedError);
    expect(() => rma.attachRegion(encodeRmaDescriptor({ address: 0n, lenBytes: 1, rkey: 1 }))).toThrow(TransportClosedError);
    expect(posts).toEqual([]);
  });
});
