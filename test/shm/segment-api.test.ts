/**
 * Segment connection API edges over an ordinary ArrayBuffer (the same code runs over mapped
 * memory and SharedArrayBuffers): allocBuffer views bound to their allocation (a stale view is
 * refused or ignored, never taken for the slot's next owner), input validated with UsageError
 * naming the value, and a throwing onOversized closing the connection with its error.
 */

import { describe, expect, test } from "bun:test";
import { ProtocolError, SEND_OK, UsageError, type HotpathError, type RxMessage } from "../../src/index.ts";
import { SegmentConnection, type Signals } from "../../src/segment/connection.ts";
import { computeLayout, writeHeader, type SegmentConfig } from "../../src/segment/layout.ts";

const quiet: Signals = { wakeBlocking() {}, wakeEventLoop() {}, waitBlocking() {}, armEventLoop() {} };
const oneSlot: SegmentConfig = { ringSlots: 4, sizeClasses: [{ slotBytes: 4096, slotCount: 1 }] };

function pair(cfg: SegmentConfig, limits: { aMax?: number; bMax?: number; aPeerMax?: number } = {}) {
  const layout = computeLayout(cfg);
  const buffer = new ArrayBuffer(layout.totalBytes);
  writeHeader(new Uint32Array(buffer, 0, 32), layout, 1);
  const policy = { mode: "spin" as const, spinNs: 0 };
  const a = new SegmentConnection({ transport: "shm", buffer, layout, side: "A", signals: quiet, peer: "B", policy, maxMessageBytes: limits.aMax, peerMaxMessageBytes: limits.aPeerMax });
  const b = new SegmentConnection({ transport: "shm", buffer, layout, side: "B", signals: quiet, peer: "A", policy, maxMessageBytes: limits.bMax });
  const got: RxMessage[] = [];
  b.setReceiver({ onMessage: (m) => void got.push(m), onClose() {} });
  a.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
  return { a, b, got };
}

const head = new Uint8Array([1, 2, 3, 4]);

describe("allocBuffer views are bound to their allocation", () => {
  test("a view whose slot was sent, freed and handed out again is refused; the new owner's send goes through", () => {
    const { a, b, got } = pair(oneSlot);
    const first = a.allocBuffer(100)!;
    first.fill(1);
    expect(a.trySendBuffer(head, first)).toBe(SEND_OK);
    b.poll();
    got.shift()!.release(); // the only slot is free again
    const second = a.allocBuffer(200)!;
    expect(second.byteOffset).toBe(first.byteOffset); // the same slot, a new owner
    second.fill(2);
    expect(() => a.trySendBuffer(head, first)).toThrow(UsageError);
    a.releaseBuffer(first); // stale: ignored, the new owner keeps its slot
    expect(a.trySendBuffer(head, second)).toBe(SEND_OK);
    b.poll();
    const m = got.shift()!;
    expect(m.body.length).toBe(200);
    expect(m.body.every((x) => x === 2)).toBe(true);
    m.release();
  });

  test("a released view is stale too; a prefix goes by lenBytes, never as a subarray (a fresh subarray of a stale view is refused)", () => {
    const { a, b, got } = pair(oneSlot);
    const first = a.allocBuffer(100)!;
    a.releaseBuffer(first);
    const second = a.allocBuffer(100)!;
    expect(() => a.trySendBuffer(head, first)).toThrow(UsageError);
    expect(() => a.trySendBuffer(head, second.subarray(0, 10))).toThrow(UsageError);
    expect(() => a.trySendBuffer(head, second, 101)).toThrow(UsageError);
    second.fill(5);
    expect(a.trySendBuffer(head, second, 10)).toBe(SEND_OK);
    b.poll();
    expect(got[0]!.body.length).toBe(10);
    got.shift()!.release();
    const third = a.allocBuffer(100)!;
    third.fill(3);
    expect(third.byteOffset).toBe(second.byteOffset); // the same slot, a new owner
    // Views made now from the stale `second` look exactly like the new owner's memory.
    expect(() => a.trySendBuffer(head, second.subarray(0, 50))).toThrow(UsageError);
    expect(() => a.trySendBuffer(head, second)).toThrow(UsageError);
    a.releaseBuffer(second);
    a.releaseBuffer(second.subarray(0, 10));
    expect(a.txSlotsInUse()).toBe(1); // still the third allocation's
    expect(a.trySendBuffer(head, third)).toBe(SEND_OK);
    b.poll();
    expect(got[0]!.body.every((x) => x === 3)).toBe(true);
  });
});

describe("input is validated with UsageError naming the value", () => {
  test("wait, allocBuffer and setWaitPolicy", () => {
    const { a } = pair(oneSlot);
    for (const bad of [-1, Number.NaN, "10" as unknown as number]) expect(() => a.wait(bad)).toThrow(UsageError);
    expect(() => a.wait(-1)).toThrow("-1");
    for (const bad of [-1, 1.5, Number.NaN]) expect(() => a.allocBuffer(bad)).toThrow(UsageError);
    expect(() => a.allocBuffer(1.5)).toThrow("1.5");
    expect(() => a.allocBuffer(5000)).toThrow(/5000 bytes exceeds the limit of 4096/);
    expect(() => a.setWaitPolicy({ spinNs: Infinity })).toThrow(UsageError);
    expect(() => a.setWaitPolicy({ mode: "sometimes" as never })).toThrow(/sometimes/);
  });

  test("the send limit is this side's and the peer's maxMessageBytes, whichever is smaller, both named", () => {
    const { a } = pair({ ringSlots: 4, sizeClasses: [{ slotBytes: 64 << 10, slotCount: 2 }] }, { aMax: 30_000, aPeerMax: 20_000 });
    expect(a.caps.maxMessageBytes).toBe(30_000);
    expect(a.caps.peerMaxMessageBytes).toBe(20_000);
    expect(a.trySend(head, new Uint8Array(20_000))).toBe(SEND_OK);
    expect(() => a.trySend(head, new Uint8Array(20_001))).toThrow("this side's maxMessageBytes 30000, the peer's 20000");
  });
});

test("an onOversized that throws closes the connection with that error; the slot comes back", () => {
  const { a, b } = pair({ ringSlots: 4, sizeClasses: [{ slotBytes: 4096, slotCount: 1 }] }, { bMax: 1000 });
  const closes: Array<HotpathError | null> = [];
  b.setReceiver({
    onMessage: (m) => m.release(),
    onOversized() {
      throw new Error("hook bug");
    },
    onClose: (e) => void closes.push(e),
  });
  expect(a.trySend(head, new Uint8Array(2000))).toBe(SEND_OK);
  expect(b.poll()).toBe(0);
  expect(b.closed).toBe(true);
  expect(closes.length).toBe(1);
  expect(closes[0]).toBeInstanceOf(ProtocolError);
  expect(closes[0]!.message).toContain("hook bug");
  expect(a.txSlotsInUse()).toBe(0);
});

test("poll() from inside a delivery delivers nothing: deliveries never nest", () => {
  const { a, b } = pair({ ringSlots: 8, sizeClasses: [{ slotBytes: 4096, slotCount: 4 }] });
  const order: number[] = [];
  let depth = 0;
  let deepest = 0;
  let nested = 0;
  b.setReceiver({
    onMessage(m) {
      deepest = Math.max(deepest, ++depth);
      order.push(m.head[0]!);
      m.release();
      nested += b.poll();
      depth--;
    },
    onClose() {},
  });
  for (let i = 0; i < 5; i++) expect(a.trySend(new Uint8Array([i]))).toBe(SEND_OK);
  expect(b.poll()).toBe(5);
  expect(order).toEqual([0, 1, 2, 3, 4]);
  expect(nested).toBe(0);
  expect(deepest).toBe(1);
});
