/**
 * Ring and slab tests over an ordinary ArrayBuffer (the same code runs over mapped memory and
 * SharedArrayBuffers): wrap-around, exact fit, full, an unpublished descriptor that must stay
 * invisible, and a seeded random run of send / poll / release checked against an array model.
 */

import { describe, expect, test } from "bun:test";
import { SEND_FULL, SEND_OK, UsageError, type RxMessage } from "../../src/index.ts";
import { SegmentConnection, type Signals } from "../../src/segment/connection.ts";
import { computeLayout, DESC_INLINE_BYTES, DESC_LEN_FLAGS, DESC_SEQ, DESC_SLOT_HEAD_BYTES, writeHeader, type SegmentConfig } from "../../src/segment/layout.ts";
import { RING_FAULT, RingConsumer, RingProducer, seqOf } from "../../src/segment/ring.ts";

const quiet: Signals = { wakeBlocking() {}, wakeEventLoop() {}, waitBlocking() {}, armEventLoop() {} };

function pair(cfg: SegmentConfig, byteOffset = 0) {
  const layout = computeLayout(cfg);
  const buffer = new ArrayBuffer(byteOffset + layout.totalBytes);
  writeHeader(new Uint32Array(buffer, byteOffset, 32), layout, 1);
  const mk = (side: "A" | "B") =>
    new SegmentConnection({ transport: "shm", buffer, byteOffset, layout, side, signals: quiet, peer: side, policy: { mode: "spin", spinNs: 0 } });
  const a = mk("A");
  const b = mk("B");
  const got: RxMessage[] = [];
  b.setReceiver({ onMessage: (m) => void got.push(m), onClose() {} });
  a.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
  return { a, b, got, layout, buffer };
}

const small: SegmentConfig = { ringSlots: 4, sizeClasses: [{ slotBytes: 256, slotCount: 2 }, { slotBytes: 4096, slotCount: 1 }] };
const head = (n: number) => new Uint8Array([n, n, n, n]);

describe("shm ring", () => {
  test("wrap-around: many times the ring size, in order", () => {
    const { a, b, got } = pair(small);
    for (let i = 0; i < 100; i++) {
      expect(a.trySend(head(i), new Uint8Array([i, 255 - i]))).toBe(SEND_OK);
      expect(b.poll()).toBe(1);
      const m = got.pop()!;
      expect([...m.head]).toEqual([i, i, i, i]);
      expect([...m.body]).toEqual([i, 255 - i]);
      m.release();
    }
  });

  test("exact fit: head + body filling the inline area, and a body filling a slot", () => {
    const { a, b, got } = pair(small);
    const inline = new Uint8Array(DESC_INLINE_BYTES - 4).fill(7);
    expect(a.trySend(head(1), inline)).toBe(SEND_OK);
    const slotFull = new Uint8Array(4096).fill(9);
    expect(a.trySend(head(2), slotFull)).toBe(SEND_OK);
    expect(() => a.trySend(head(3), new Uint8Array(4097))).toThrow(UsageError);
    expect(() => a.trySend(new Uint8Array(DESC_SLOT_HEAD_BYTES + 1))).toThrow(UsageError);
    expect(a.trySend(new Uint8Array(DESC_SLOT_HEAD_BYTES).fill(3), new Uint8Array(100).fill(4))).toBe(SEND_OK);
    b.poll();
    expect(got[0]!.body.length).toBe(DESC_INLINE_BYTES - 4);
    expect(got[0]!.body.every((x) => x === 7)).toBe(true);
    expect(got[1]!.body.length).toBe(4096);
    expect(got[1]!.body.every((x) => x === 9)).toBe(true);
    expect(got[2]!.head.length).toBe(DESC_SLOT_HEAD_BYTES);
    expect(got[2]!.head.every((x) => x === 3)).toBe(true);
    expect(got[2]!.body.every((x) => x === 4)).toBe(true);
  });

  test("full: the ring and each slab class report Full, and room comes back on release", () => {
    const { a, b, got } = pair(small);
    for (let i = 0; i < 4; i++) expect(a.trySend(head(i))).toBe(SEND_OK);
    expect(a.trySend(head(9))).toBe(SEND_FULL);
    b.poll();
    expect(a.trySend(head(9))).toBe(SEND_FULL); // delivered but still held: not reusable
    got.shift()!.release();
    expect(a.trySend(head(4))).toBe(SEND_OK);
    for (const m of got.splice(0)) m.release();
    b.poll();
    for (const m of got.splice(0)) m.release();
    // Slab: two 256-byte slots and one 4 KiB slot; a 200-byte body falls back to the larger class.
    const body = new Uint8Array(200);
    expect(a.trySend(head(1), body)).toBe(SEND_OK);
    expect(a.trySend(head(2), body)).toBe(SEND_OK);
    expect(a.trySend(head(3), body)).toBe(SEND_OK);
    expect(a.trySend(head(4), body)).toBe(SEND_FULL);
    expect(a.txSlotsInUse()).toBe(3);
    b.poll();
    for (const m of got.splice(0)) m.release();
    expect(a.txSlotsInUse()).toBe(0);
    expect(a.trySend(head(5), body)).toBe(SEND_OK);
  });

  test("out-of-order release frees descriptors only over a released prefix", () => {
    const { a, b, got } = pair(small);
    for (let i = 0; i < 4; i++) a.trySend(head(i), new Uint8Array([i]));
    b.poll();
    got[1]!.release();
    got[2]!.release();
    got[3]!.release();
    expect(a.trySend(head(9))).toBe(SEND_FULL);
    expect([...got[0]!.body]).toEqual([0]); // still intact
    got[0]!.release();
    for (let i = 0; i < 4; i++) expect(a.trySend(head(i))).toBe(SEND_OK);
  });

  test("a reserved but unpublished descriptor is invisible to the consumer", () => {
    const layout = computeLayout(small);
    const buffer = new ArrayBuffer(layout.totalBytes);
    const words = new Int32Array(buffer);
    const p = new RingProducer(words, layout.rings[0], 4);
    const c = new RingConsumer(words, layout.rings[0], 4);
    const d = p.reserve();
    expect(d).toBeGreaterThan(0);
    words[(d + DESC_LEN_FLAGS) >> 2] = 0x1234; // partly written: every word but the sequence
    expect(c.available()).toBe(0);
    p.publish();
    expect(c.available()).toBe(1);
    expect(words[(c.descOffset(c.take()) + DESC_LEN_FLAGS) >> 2]).toBe(0x1234);
    expect(c.available()).toBe(0);
  });

  test("record-sequence-last: the consumer reads each descriptor's sequence word (no tail index), across many laps", () => {
    const layout = computeLayout(small);
    const buffer = new ArrayBuffer(layout.totalBytes);
    const words = new Int32Array(buffer);
    const p = new RingProducer(words, layout.rings[0], 4);
    const c = new RingConsumer(words, layout.rings[0], 4);
    const seqWord = (index: number) => (c.descOffset(index) + DESC_SEQ) >> 2;
    for (let i = 0; i < 4 * 10; i++) {
      const d = p.reserve();
      words[(d + DESC_LEN_FLAGS) >> 2] = i;
      p.publish();
      expect(words[seqWord(i)]).toBe(seqOf(i));
      expect(c.available()).toBe(1);
      const index = c.take();
      expect(index).toBe(i);
      expect(words[(c.descOffset(index) + DESC_LEN_FLAGS) >> 2]).toBe(i);
      c.release(index);
      expect(c.available()).toBe(0); // the next descriptor holds the previous lap's sequence
    }
    // A sequence that is neither the expected one nor "not yet" is a fault naming both.
    words[seqWord(40)] = 12345;
    expect(c.available()).toBe(RING_FAULT);
    expect(c.fault).toBe("ring descriptor 40 has sequence 12345, neither 41 (published) nor 37 (not yet; ring size 4)");
  });

  test("seqOf never yields 0 (the never-written value), also where the index wraps", () => {
    expect(seqOf(0)).toBe(1);
    expect(seqOf(-1)).toBe(1);
    expect(seqOf(0x7fffffff)).toBe(-0x80000000);
    expect(seqOf(-2)).toBe(-1);
  });

  test("a consumer holding a ring's worth ignores a sequence written into a descriptor it holds", () => {
    const layout = computeLayout(small);
    const buffer = new ArrayBuffer(layout.totalBytes);
    const words = new Int32Array(buffer);
    const p = new RingProducer(words, layout.rings[0], 4);
    const c = new RingConsumer(words, layout.rings[0], 4);
    for (let i = 0; i < 4; i++) {
      p.reserve();
      p.publish();
      expect(c.available()).toBe(1);
      c.take();
    }
    // A hostile producer publishes index 4 over descriptor 0, which the consumer still holds.
    words[(c.descOffset(4) + DESC_SEQ) >> 2] = seqOf(4);
    expect(c.available()).toBe(0);
    c.release(0);
    expect(c.available()).toBe(1);
  });

  test("zero-copy: allocBuffer + trySendBuffer hands the same slot memory to the receiver", () => {
    const { a, b, got } = pair(small);
    const buf = a.allocBuffer(1000)!;
    buf.fill(42);
    expect(a.trySendBuffer(head(1), buf)).toBe(SEND_OK);
    expect(() => a.trySendBuffer(head(1), buf)).toThrow(UsageError); // sent already
    expect(() => a.trySendBuffer(head(1), new Uint8Array(10))).toThrow(UsageError);
    b.poll();
    expect(got[0]!.body.byteOffset).toBe(buf.byteOffset);
    expect(got[0]!.body.every((x) => x === 42)).toBe(true);
  });

  test("seeded random send / poll / release matches an array model", () => {
    const cfg: SegmentConfig = { ringSlots: 8, sizeClasses: [{ slotBytes: 256, slotCount: 3 }, { slotBytes: 2048, slotCount: 2 }] };
    const { a, b, got } = pair(cfg);
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const model: Uint8Array[] = []; // sent, not yet delivered
    const held: Array<{ m: RxMessage; want: Uint8Array }> = [];
    let sent = 0;
    let delivered = 0;
    for (let step = 0; step < 20_000; step++) {
      const op = rnd(10);
      if (op < 5) {
        const len = [0, 3, 50, 52, 53, 200, 256, 1000, 2048][rnd(9)]!;
        const body = new Uint8Array(len);
        for (let i = 0; i < len; i++) body[i] = (sent + i * 31) & 0xff;
        const st = a.trySend(head(sent & 0xff), body);
        if (st === SEND_OK) {
          model.push(body);
          sent++;
        } else expect(st).toBe(SEND_FULL);
      } else if (op < 8) {
        b.poll();
        for (const m of got.splice(0)) {
          const want = model.shift()!;
          expect(m.head[0]).toBe(delivered & 0xff);
          expect(m.body.length).toBe(want.length);
          held.push({ m, want });
          delivered++;
        }
      } else if (held.length > 0) {
        const { m, want } = held.splice(rnd(held.length), 1)[0]!;
        expect(Buffer.compare(Buffer.from(m.body), Buffer.from(want))).toBe(0); // intact until released
        m.release();
      }
    }
    b.poll();
    for (const m of got.splice(0)) held.push({ m, want: model.shift()! });
    for (const { m, want } of held) {
      expect(Buffer.compare(Buffer.from(m.body), Buffer.from(want))).toBe(0);
      m.release();
    }
    expect(model.length).toBe(0);
    expect(sent).toBeGreaterThan(3000);
    expect(a.txSlotsInUse()).toBe(0);
  });

  test("a segment at a non-zero byteOffset of its buffer: every view starts there, the bytes before stay untouched", () => {
    const off = 4096;
    const { a, b, got, buffer } = pair(small, off);
    const before = new Uint8Array(buffer, 0, off);
    before.fill(0xa5);
    expect(a.trySend(head(1), new Uint8Array([1, 2, 3]))).toBe(SEND_OK); // inline
    expect(a.trySend(head(2), new Uint8Array(200).fill(6))).toBe(SEND_OK); // slot
    const buf = a.allocBuffer(100)!;
    expect(buf.byteOffset).toBeGreaterThanOrEqual(off);
    buf.fill(8);
    expect(a.trySendBuffer(head(3), buf)).toBe(SEND_OK); // zero-copy
    expect(b.poll()).toBe(3);
    expect([...got[0]!.head]).toEqual([1, 1, 1, 1]);
    expect([...got[0]!.body]).toEqual([1, 2, 3]);
    expect(got[1]!.body.every((x) => x === 6) && got[1]!.body.length === 200).toBe(true);
    expect(got[2]!.body.byteOffset).toBe(buf.byteOffset);
    expect(got[2]!.body.every((x) => x === 8)).toBe(true);
    for (const m of got.splice(0)) m.release();
    expect(a.txSlotsInUse()).toBe(0);
    // The same descriptor reused: the cached inline view is found again, still right.
    for (let i = 0; i < 8; i++) {
      expect(a.trySend(head(i), new Uint8Array([i, i]))).toBe(SEND_OK);
      b.poll();
      expect([...got[0]!.body]).toEqual([i, i]);
      got.shift()!.release();
    }
    expect(before.every((x) => x === 0xa5)).toBe(true);
  });
});
