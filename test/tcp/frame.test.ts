/**
 * FrameParser's limit hooks: skippable oversized frames (head delivered, body discarded as it
 * arrives, never buffered), frames over maxHeadBytes that cannot be skipped, and split frames
 * that wait for a reservation (stall, keep their bytes, resume in order).
 */

import { describe, expect, test } from "bun:test";
import { ProtocolError } from "../../src/errors.ts";
import { FrameParser, type FrameHooks, type TcpRxMessage } from "../../src/tcp/frame.ts";

function frame(head: number[], body: number[] | Uint8Array, claimBody?: number): Uint8Array {
  const b = body instanceof Uint8Array ? body : new Uint8Array(body);
  const out = new Uint8Array(8 + head.length + b.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, head.length, true);
  dv.setUint32(4, claimBody ?? b.length, true);
  out.set(head, 8);
  out.set(b, 8 + head.length);
  return out;
}

function parser(maxBody: number, hooks: FrameHooks = {}) {
  const got: Array<[number[], number[]]> = [];
  const p = new FrameParser(64, maxBody, (m: TcpRxMessage) => {
    got.push([[...m.head], [...m.body]]);
    return true;
  }, hooks);
  return { p, got };
}

function skipping(maxBody: number) {
  const skipped: Array<[number[], number]> = [];
  const r = parser(maxBody, { canSkip: () => true, onOversized: (h, n) => (skipped.push([[...h], n]), true) });
  return { ...r, skipped };
}

describe("FrameParser: oversized bodies", () => {
  test("a skippable frame: its head is reported, its body discarded, later frames delivered in order", () => {
    const { p, got, skipped } = skipping(4);
    p.push(new Uint8Array([...frame([1], [1, 2]), ...frame([9, 9], [0, 0, 0, 0, 0, 0]), ...frame([3], [4])]));
    expect(skipped).toEqual([[[9, 9], 6]]);
    expect(got).toEqual([[[1], [1, 2]], [[3], [4]]]);
    expect(p.partial).toBe(false);
  });

  test("split at every point (prefix, head, body), the same frames come out", () => {
    const stream = new Uint8Array([...frame([1], [1, 2]), ...frame([9, 9, 9], [5, 5, 5, 5, 5, 5, 5]), ...frame([3], [4])]);
    for (let cut = 0; cut <= stream.length; cut++) {
      for (let cut2 = cut; cut2 <= stream.length; cut2++) {
        const { p, got, skipped } = skipping(4);
        p.push(stream.subarray(0, cut));
        p.push(stream.subarray(cut, cut2));
        p.push(stream.subarray(cut2));
        expect(skipped).toEqual([[[9, 9, 9], 7]]);
        expect(got).toEqual([[[1], [1, 2]], [[3], [4]]]);
      }
    }
  });

  test("a 4 GiB body claim is skipped holding nothing: 64 MiB of its body pass through no buffer", () => {
    const { p, got, skipped } = skipping(1 << 20);
    p.push(frame([7], [], 0xffffffff));
    expect(skipped).toEqual([[[7], 0xffffffff]]);
    const mib = new Uint8Array(1 << 20);
    for (let i = 0; i < 64; i++) {
      p.push(mib);
      expect(p.pendingBytes).toBe(0);
    }
    expect(p.partial).toBe(true);
    expect(got.length).toBe(0);
  });

  test("without canSkip (or when it says no) an oversized body throws ProtocolError", () => {
    expect(() => parser(4).p.push(frame([1], [0, 0, 0, 0, 0]))).toThrow(ProtocolError);
    expect(() => parser(4, { canSkip: () => false }).p.push(frame([1], [0, 0, 0, 0, 0]))).toThrow(ProtocolError);
  });

  test("a head over maxHeadBytes is never skippable", () => {
    const { p } = skipping(4);
    expect(() => p.push(frame(new Array(65).fill(0), [0, 0, 0, 0, 0]))).toThrow(/maxHeadBytes/);
  });

  test("onOversized returning false stops parsing", () => {
    const got: number[] = [];
    const p = new FrameParser(64, 4, () => (got.push(1), true), { canSkip: () => true, onOversized: () => false });
    p.push(new Uint8Array([...frame([1], [0, 0, 0, 0, 0]), ...frame([2], [1])]));
    expect(got.length).toBe(0);
  });
});

describe("FrameParser: reservations for split frames", () => {
  test("a refused reservation stalls the parser; its bytes wait, resume() delivers everything in order", () => {
    let allow = false;
    const asked: number[] = [];
    const released: number[] = [];
    const { p, got } = parser(1 << 20, {
      reserve: (n) => (asked.push(n), allow),
      unreserve: (n) => void released.push(n),
    });
    const big = frame([1], new Uint8Array(1000).fill(5));
    const stream = new Uint8Array([...frame([0], [0]), ...big, ...frame([2], [2])]);
    p.push(stream.subarray(0, 100));
    expect(got.length).toBe(1);
    expect(p.stalledForReserve).toBe(true);
    p.push(stream.subarray(100, 600));
    p.push(stream.subarray(600));
    expect(got.length).toBe(1);
    // Nothing is assembled while stalled: only the chunks read are kept.
    expect(p.pendingBytes).toBeLessThan(stream.length);
    allow = true;
    p.resume();
    expect(p.stalledForReserve).toBe(false);
    expect(got.map((g) => g[0])).toEqual([[0], [1], [2]]);
    expect(got[1]![1]).toEqual(new Array(1000).fill(5));
    expect(asked).toEqual([1001, 1001]);
    expect(released).toEqual([1001]);
    expect(p.pendingBytes).toBe(0);
  });

  test("frames wholly inside one read never ask for a reservation", () => {
    const asked: number[] = [];
    const { p, got } = parser(1 << 20, { reserve: (n) => (asked.push(n), false) });
    p.push(new Uint8Array([...frame([1], new Uint8Array(5000)), ...frame([2], [3])]));
    expect(got.length).toBe(2);
    expect(asked).toEqual([]);
  });
});
