/**
 * bench/stream.bench.ts, the stream throughput part, in quick mode with tiny counts: every
 * reference row (gRPC, WebSocket) and every hotpath row that can run here produces a positive
 * rate at both message sizes with its ratios to the references; a peer that flips one byte of one
 * message (HOTPATH_BENCH_CORRUPT_STREAM) fails exactly that row, named, while the others are
 * measured; and the message check itself catches each kind of wrong message. No timing asserts.
 */

import { expect, test } from "bun:test";
import { measureStream, STREAM_SIZES, StreamRowsFailed, type StreamRow } from "../../bench/stream.bench.ts";
import { checkMessage, stampMessage, streamMessage } from "../../bench/peers/stream-pattern.ts";

const HOTPATH_ROWS = ["shm", "tcp", "ucx-tcp", "ucx-shm"];
const quiet = () => {};

test("the message check passes message i and names every kind of wrong one (length, index, middle stamp, tail stamp)", () => {
  for (const lenBytes of [9, 32, 64 << 10]) {
    const m = streamMessage(lenBytes);
    stampMessage(m, 77);
    expect(checkMessage(m, 77, lenBytes)).toBeNull();
    expect(checkMessage(m, 78, lenBytes)).toContain("carries index 77");
    expect(checkMessage(m.subarray(0, lenBytes - 1), 77, lenBytes)).toContain(`expected ${lenBytes}`);
    for (const at of [0, lenBytes >> 1, lenBytes - 1]) {
      const c = m.slice();
      c[at]! ^= 0x01;
      expect(checkMessage(c, 77, lenBytes)).not.toBeNull();
    }
  }
});

test("quick mode with tiny counts: the gRPC and WebSocket rows (and each hotpath row that can run here) give positive rates at 32 B and 64 KiB; others are skipped with a reason", async () => {
  const part = await measureStream({ quick: true, log: quiet, messages: 40 });
  const rows = part.rows as unknown as StreamRow[];
  const measured = new Set(rows.map((r) => r.id));
  for (const id of ["grpc", "ws"]) expect(measured.has(id)).toBe(true);
  for (const id of HOTPATH_ROWS) {
    const skip = part.skipped.find((s) => s.id === id);
    // Every row is either measured or skipped with its reason, never silently absent.
    expect(measured.has(id) || (skip !== undefined && skip.reason.length > 0)).toBe(true);
  }
  for (const r of rows) {
    expect(r.messages).toBe(40);
    expect(r.messagesPerS).toBeGreaterThan(0);
    expect(r.mbPerS).toBeCloseTo((r.messagesPerS * r.lenBytes) / 1e6, 6);
    expect(r.vsGrpc).toBeGreaterThan(0);
    expect(r.vsWs).toBeGreaterThan(0);
  }
  for (const lenBytes of STREAM_SIZES) {
    expect(rows.find((r) => r.id === "grpc" && r.lenBytes === lenBytes)?.vsGrpc).toBe(1);
    expect(rows.find((r) => r.id === "ws" && r.lenBytes === lenBytes)?.vsWs).toBe(1);
  }
  expect(part.lines.join("\n")).toContain("×grpc");
});

test("a peer that flips one byte of the 3rd message fails that row by name (the first size it streams); the uncorrupted row is measured", async () => {
  for (const [bad, good] of [["grpc", "ws"], ["ws", "grpc"]] as const) {
    let err: unknown = null;
    try {
      await measureStream({ quick: true, log: quiet, messages: 20, rows: [bad, good], corrupt: { rows: [bad], message: 3 } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StreamRowsFailed);
    const f = err as StreamRowsFailed;
    expect(f.failed.map((x) => x.id)).toEqual([bad]);
    expect(f.failed[0]!.reason).toContain("32 B: StreamMismatch: message 2 carries index");
    expect((f.report.rows as unknown as StreamRow[]).map((r) => r.id)).toEqual([good, good]);
    expect(f.report.lines.join("\n")).toContain(`FAILED ${bad}: 32 B: StreamMismatch`);
  }
});

test("the hotpath rows that can run here fail the same way on a corrupted message", async () => {
  let err: unknown = null;
  let part = null;
  try {
    part = await measureStream({ quick: true, log: quiet, messages: 20, rows: HOTPATH_ROWS, corrupt: { rows: HOTPATH_ROWS, message: 3 } });
  } catch (e) {
    err = e;
  }
  if (err === null) {
    // Nothing ran: every hotpath row was skipped here (no streams yet, no ucx), each with its reason.
    expect(part!.rows).toEqual([]);
    expect(part!.skipped.map((s) => s.id).sort()).toEqual([...HOTPATH_ROWS].sort());
    return;
  }
  expect(err).toBeInstanceOf(StreamRowsFailed);
  const f = err as StreamRowsFailed;
  const ran = HOTPATH_ROWS.filter((id) => !f.report.skipped.some((s) => s.id === id));
  expect(f.failed.map((x) => x.id).sort()).toEqual(ran.sort());
  for (const x of f.failed) expect(x.reason).toContain("StreamMismatch: message 2 carries index");
});
