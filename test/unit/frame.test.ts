import { describe, expect, test } from "bun:test";
import { ProtocolError } from "../../src/errors.ts";
import { FrameParser, type TcpRxMessage } from "../../src/tcp/frame.ts";

function frame(head: number[], body: number[]): Uint8Array {
  const out = new Uint8Array(8 + head.length + body.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, head.length, true);
  dv.setUint32(4, body.length, true);
  out.set(head, 8);
  out.set(body, 8 + head.length);
  return out;
}

function parser(maxBody = 1 << 20) {
  const got: TcpRxMessage[] = [];
  const p = new FrameParser(64, maxBody, (m) => {
    got.push(m);
    return true;
  });
  return { p, got };
}

describe("FrameParser", () => {
  test("every complete frame of one chunk is delivered, as views into the chunk", () => {
    const { p, got } = parser();
    const chunk = new Uint8Array([...frame([1], [2, 3]), ...frame([4, 5], []), ...frame([], [6])]);
    p.push(chunk);
    expect(got.map((g) => [[...g.head], [...g.body]])).toEqual([[[1], [2, 3]], [[4, 5], []], [[], [6]]]);
    expect(got[0]!.head.buffer).toBe(chunk.buffer);
    expect(p.pendingBytes).toBe(0);
  });

  test("frames split at every possible point reassemble identically", () => {
    const stream = new Uint8Array([...frame([1, 2, 3], [9, 8, 7, 6]), ...frame([5], [4])]);
    for (let cut = 0; cut <= stream.length; cut++) {
      for (let cut2 = cut; cut2 <= stream.length; cut2 += 3) {
        const { p, got } = parser();
        p.push(stream.subarray(0, cut));
        p.push(stream.subarray(cut, cut2));
        p.push(stream.subarray(cut2));
        expect(got.map((g) => [[...g.head], [...g.body]])).toEqual([[[1, 2, 3], [9, 8, 7, 6]], [[5], [4]]]);
      }
    }
  });

  test("a 4 GiB length claim throws ProtocolError and allocates nothing", () => {
    const { p, got } = parser();
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setUint32(4, 0xffffffff, true);
    expect(() => p.push(prefix)).toThrow(ProtocolError);
    expect(got.length).toBe(0);
    expect(p.pendingBytes).toBe(0);
  });

  test("a claim within the limit holds memory for the bytes that arrived, not the claim", () => {
    const { p } = parser(64 << 20);
    const chunk = new Uint8Array(8 + 100);
    new DataView(chunk.buffer).setUint32(4, 60 << 20, true);
    p.push(chunk);
    expect(p.pendingBytes).toBeLessThanOrEqual(1 << 20);
    // Feed 3 MiB more: the buffer follows the data, at most doubling.
    p.push(new Uint8Array(3 << 20));
    expect(p.pendingBytes).toBeLessThanOrEqual(8 << 20);
  });

  test("an oversized head throws ProtocolError", () => {
    const { p } = parser();
    expect(() => p.push(frame(new Array(65).fill(0), []))).toThrow(ProtocolError);
  });
});
