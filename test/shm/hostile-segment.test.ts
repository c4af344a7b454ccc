/**
 * What a hostile peer can write into a segment, checked on two SegmentConnections over one
 * ordinary ArrayBuffer (the same code runs over mapped memory and SharedArrayBuffers): the
 * session aborts and still lets go of its memory, a peer that keeps publishing cannot hold
 * poll() forever, a slot a held message owns cannot be named again, a peer's slab words cannot
 * make allocBuffer() hand one slot out twice, a ring or header set up wrong by the segment's
 * creator is refused, and a wait() on a corrupted ring returns for poll() to abort.
 */

import { describe, expect, test } from "bun:test";
import { ProtocolError, SEND_OK, type HotpathError, type RxMessage } from "../../src/index.ts";
import { SegmentConnection, type Signals } from "../../src/segment/connection.ts";
import { seqOf } from "../../src/segment/ring.ts";
import {
  computeLayout,
  DESC_BYTES,
  DESC_LEN_FLAGS,
  DESC_SEQ,
  HDR_CLASSES,
  HDR_CLASS_COUNT,
  HDR_DESC_BYTES,
  HDR_MAGIC,
  HDR_RING_AB,
  HDR_RING_BA,
  HDR_RING_SLOTS,
  HDR_SLAB_AB,
  HDR_SLAB_BA,
  HDR_TOTAL_BYTES,
  HDR_VERSION,
  MAX_SLOTS,
  readHeader,
  RING_DESCS,
  SEGMENT_MAGIC,
  SEGMENT_VERSION,
  SLOT_FREE,
  writeHeader,
  type SegmentConfig,
  type SegmentLayout,
} from "../../src/segment/layout.ts";

const quiet: Signals = { wakeBlocking() {}, wakeEventLoop() {}, waitBlocking() {}, armEventLoop() {} };
const cfg: SegmentConfig = { ringSlots: 8, sizeClasses: [{ slotBytes: 4096, slotCount: 4 }] };
const head = new Uint8Array(24).fill(1);

function segment(c: SegmentConfig) {
  const layout = computeLayout(c);
  const buffer = new ArrayBuffer(layout.totalBytes);
  writeHeader(new Uint32Array(buffer, 0, 32), layout, 1);
  return { layout, buffer, words: new Int32Array(buffer) };
}

function pair(c: SegmentConfig, mode: "spin" | "blocking" | "async" = "spin") {
  const { layout, buffer, words } = segment(c);
  let unused = 0;
  const policy = { mode, spinNs: 0 };
  const a = new SegmentConnection({ transport: "shm", buffer, layout, side: "A", signals: quiet, peer: "shm://b", policy });
  const b = new SegmentConnection({ transport: "shm", buffer, layout, side: "B", signals: quiet, peer: "shm://a (client)", policy, onUnused: () => void unused++ });
  const got: RxMessage[] = [];
  const closes: Array<HotpathError | null> = [];
  b.setReceiver({ onMessage: (m) => void got.push(m), onClose: (e) => void closes.push(e) });
  a.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
  return { a, b, got, closes, layout, words, unused: () => unused };
}

/** Word index of descriptor `index` of ring A→B (its sequence word: + DESC_SEQ / 4). */
const descAB = (l: SegmentLayout, index: number) => (l.rings[0] + RING_DESCS + (index & (l.ringSlots - 1)) * DESC_BYTES) >> 2;
/** Publishes descriptor `index` of ring A→B as its producer would: its sequence word, last. */
const publishAB = (words: Int32Array, l: SegmentLayout, index: number, seq = seqOf(index)) => Atomics.store(words, descAB(l, index) + DESC_SEQ / 4, seq);

describe("a hostile peer's segment writes", () => {
  test("a bad descriptor aborts the session, and its memory still goes (the taken ring entry goes back)", () => {
    const { a, b, closes, layout, words, unused } = pair(cfg);
    expect(a.trySend(head, new Uint8Array(100))).toBe(SEND_OK);
    const lf = descAB(layout, 0) + DESC_LEN_FLAGS / 4;
    words[lf] = (words[lf]! & 0xffff) | (99 << 16); // the slot reference, out of range
    expect(b.poll()).toBe(0);
    expect(b.closed).toBe(true);
    expect(closes[0]).toBeInstanceOf(ProtocolError);
    expect(closes[0]!.message).toBe("shm session shm://a (client): descriptor names slot 99, the slab has 4");
    expect(unused()).toBe(1);
  });

  test("one poll() delivers at most a ring's worth however fast the peer publishes; the rest follows", () => {
    const { a, b, layout } = pair(cfg);
    let sent = 0;
    let delivered = 0;
    b.setReceiver({
      onMessage(m) {
        delivered++;
        m.release();
        // The peer publishes again as soon as there is room: a producer that keeps up.
        if (sent < 100 && a.trySend(head) === SEND_OK) sent++;
      },
      onClose() {},
    });
    expect(a.trySend(head)).toBe(SEND_OK);
    sent++;
    expect(b.poll()).toBe(layout.ringSlots);
    let polls = 1;
    while (b.poll() > 0) polls++;
    expect(delivered).toBe(sent);
    expect(sent).toBe(100);
    expect(polls).toBeGreaterThan(1);
    expect(b.closed).toBe(false);
  });

  test("a descriptor naming a slot that a held message still owns is refused (a descriptor reused)", () => {
    const { a, b, got, closes, layout, words } = pair(cfg);
    expect(a.trySend(head, new Uint8Array(100).fill(5))).toBe(SEND_OK);
    expect(b.poll()).toBe(1); // held, not released
    // Every word but the sequence copied, then descriptor 1 published.
    words.copyWithin(descAB(layout, 1) + 1, descAB(layout, 0) + 1, descAB(layout, 0) + DESC_BYTES / 4);
    publishAB(words, layout, 1);
    expect(b.poll()).toBe(0);
    expect(got.length).toBe(1);
    expect(closes[0]).toBeInstanceOf(ProtocolError);
    expect(closes[0]!.message).toContain("descriptor names slot 0, which a message not yet released holds");
    got[0]!.release();
  });

  test("a peer marking an allocated, unsent slot FREE cannot make allocBuffer() hand it out twice", () => {
    const one: SegmentConfig = { ringSlots: 4, sizeClasses: [{ slotBytes: 4096, slotCount: 1 }] };
    const { a, b, got, layout, words } = pair(one);
    const first = a.allocBuffer(100)!;
    first.fill(1);
    Atomics.store(words, layout.slabs[0].statesOffset >> 2, SLOT_FREE);
    expect(a.allocBuffer(100)).toBeNull();
    expect(a.trySendBuffer(head, first)).toBe(SEND_OK);
    b.poll();
    expect(got[0]!.body.every((x) => x === 1)).toBe(true);
  });

  test("a sequence word the segment's creator wrote before setup is checked like any other: the first poll aborts", () => {
    const { layout, buffer, words } = segment(cfg);
    // Ring B→A (the client's rx), descriptor 0: neither published (1) nor "not yet" (0 / -7).
    Atomics.store(words, ((layout.rings[1] + RING_DESCS) >> 2) + DESC_SEQ / 4, 100);
    const a = new SegmentConnection({ transport: "shm", buffer, layout, side: "A", signals: quiet, peer: "shm://x", policy: { mode: "spin", spinNs: 0 } });
    const closes: Array<HotpathError | null> = [];
    a.setReceiver({ onMessage: (m) => m.release(), onClose: (e) => void closes.push(e) });
    expect(a.poll()).toBe(0);
    expect(closes[0]).toEqual(new ProtocolError("shm session shm://x: ring descriptor 0 has sequence 100, neither 1 (published) nor 4294967289 (not yet; ring size 8)"));
  });

  for (const mode of ["spin", "blocking"] as const) {
    test(`${mode} mode: wait() on a ring whose next sequence the peer set 2^31 ahead returns, and poll() aborts`, async () => {
      const { b, closes, layout, words } = pair(cfg, mode);
      publishAB(words, layout, 0, seqOf(2 ** 31));
      expect(await b.wait(1000)).toBe(true);
      expect(b.poll()).toBe(0);
      expect(b.closed).toBe(true);
      expect(closes[0]!.message).toBe("shm session shm://a (client): ring descriptor 0 has sequence 2147483649, neither 1 (published) nor 4294967289 (not yet; ring size 8)");
    });
  }

  test("async mode: wait() on a ring whose next sequence the peer set 2^31 ahead aborts the session and resolves false (closed)", async () => {
    const { b, closes, layout, words } = pair(cfg, "async");
    publishAB(words, layout, 0, seqOf(2 ** 31));
    expect(await b.wait(1000)).toBe(false);
    expect(b.closed).toBe(true);
    expect(closes[0]).toBeInstanceOf(ProtocolError);
  });
});

describe("readHeader: the peer's header", () => {
  /** A header for one class of 64-byte slots and a ring of 4, self-consistent for `slots` slots. */
  function header(slots: number): Uint32Array {
    const w = new Uint32Array(32);
    const ringBytes = RING_DESCS + 4 * DESC_BYTES;
    const slabBytes = slots * (4 + 4 + 64);
    w[HDR_MAGIC / 4] = SEGMENT_MAGIC;
    w[HDR_VERSION / 4] = SEGMENT_VERSION;
    w[HDR_RING_SLOTS / 4] = 4;
    w[HDR_DESC_BYTES / 4] = DESC_BYTES;
    w[HDR_CLASS_COUNT / 4] = 1;
    w[HDR_RING_AB / 4] = 128;
    w[HDR_RING_BA / 4] = 128 + ringBytes;
    w[HDR_SLAB_AB / 4] = 128 + 2 * ringBytes;
    w[HDR_SLAB_BA / 4] = 128 + 2 * ringBytes + slabBytes;
    w[HDR_TOTAL_BYTES / 4] = 128 + 2 * ringBytes + 2 * slabBytes;
    w[HDR_CLASSES / 4] = 64;
    w[HDR_CLASSES / 4 + 1] = slots;
    return w;
  }

  test("a consistent header within the bounds is read", () => {
    expect(readHeader(header(MAX_SLOTS), "seg", 2 ** 32 - 1).slabs[0].totalSlots).toBe(MAX_SLOTS);
  });

  test("more than MAX_SLOTS slots (a view each at setup) is refused with ProtocolError", () => {
    const slots = 1 << 20;
    expect(() => readHeader(header(slots), "seg", 2 ** 32 - 1)).toThrow(new ProtocolError(`seg: header: shm size classes have ${slots} slots, at most ${MAX_SLOTS} per direction`));
    expect(() => readHeader(header(slots), "seg", 2 ** 32 - 1)).toThrow(ProtocolError);
  });

  test("what a peer got wrong is a ProtocolError, with the value", () => {
    const bad: Array<[(w: Uint32Array) => void, RegExp]> = [
      [(w) => void (w[HDR_MAGIC / 4] = 1), /bad magic 0x1/],
      [(w) => void (w[HDR_RING_SLOTS / 4] = 6), /ringSlots 6 must be a power of two/],
      [(w) => void (w[HDR_CLASS_COUNT / 4] = 9), /9 size classes/],
      [(w) => void (w[HDR_CLASSES / 4] = 65), /size class 65 bytes/],
      [(w) => void (w[HDR_SLAB_BA / 4] = 128), /slab B→A offset is 128/],
    ];
    for (const [spoil, why] of bad) {
      const w = header(16);
      spoil(w);
      expect(() => readHeader(w, "seg", 2 ** 32 - 1)).toThrow(ProtocolError);
      expect(() => readHeader(w, "seg", 2 ** 32 - 1)).toThrow(why);
    }
    expect(() => readHeader(header(16), "seg", 1000)).toThrow(new ProtocolError(`seg: layout needs ${128 + 2 * 448 + 2 * 16 * 72} bytes, segment has 1000`));
  });
});
