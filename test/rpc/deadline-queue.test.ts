/**
 * DeadlineQueue (src/rpc/pending.ts), the one-timer deadline heap of a client: the heap stays
 * ordered under random add/remove, and a request added from inside onTimeout does not push an
 * earlier deadline back behind its own.
 */
import { expect, test } from "bun:test";
import { DeadlineQueue, PendingRequest } from "../../src/rpc/pending.ts";
import { seededRandom } from "../../src/pool/backoff.ts";

const request = () => new PendingRequest(1, new Uint8Array(0), undefined, undefined, 1, () => {});

test("the heap keeps its order and indexes under 20,000 random adds and removes", () => {
  const q = new DeadlineQueue(() => {});
  const random = seededRandom(7);
  const queued: PendingRequest[] = [];
  for (let i = 0; i < 20_000; i++) {
    if (queued.length === 0 || random() < 0.55) {
      const p = request();
      q.add(p, 1e9 + Math.floor(random() * 1000));
      queued.push(p);
    } else {
      const p = queued.splice(Math.floor(random() * queued.length), 1)[0]!;
      q.remove(p);
      expect(p.heapIndex).toBe(-1);
    }
    if (i % 397 === 0) {
      const heap = (q as unknown as { heap: PendingRequest[] }).heap;
      for (let j = 0; j < heap.length; j++) {
        expect(heap[j]!.heapIndex).toBe(j);
        if (j > 0) expect(heap[(j - 1) >> 1]!.deadline).toBeLessThanOrEqual(heap[j]!.deadline);
      }
    }
  }
  expect(q.size).toBe(queued.length);
  q.clear();
});

test("a request added inside onTimeout does not delay an earlier deadline until its own", async () => {
  const first = request();
  const second = request();
  const later = request();
  const seen: { p: PendingRequest; laterLeftMs: number }[] = [];
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const q: DeadlineQueue = new DeadlineQueue((p) => {
    seen.push({ p, laterLeftMs: later.deadline - performance.now() });
    if (p === first) q.add(later, performance.now() + 400); // e.g. a request issued from a timeout handler
    if (seen.length === 3) done();
  });
  const now = performance.now();
  q.add(first, now + 10);
  q.add(second, now + 60);
  await finished;
  q.clear();
  expect(seen.map((s) => s.p)).toEqual([first, second, later]);
  // `second` timed out on its own deadline, while `later` still had most of its 400 ms to go
  // (before the fix the timer stayed armed for `later`, and both went out together).
  expect(seen[1]!.laterLeftMs).toBeGreaterThan(100);
});
