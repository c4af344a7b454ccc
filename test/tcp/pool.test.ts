/** BufferPool: whole-frame reservations granted in arrival order, never deadlocked. */

import { expect, test } from "bun:test";
import { BufferPool } from "../../src/tcp/limits.ts";

function waiter(log: string[], name: string) {
  return { granted: () => void log.push(name) };
}

test("reservations that fit are granted; the rest queue and are granted in order as bytes come back", () => {
  const pool = new BufferPool(100);
  const log: string[] = [];
  expect(pool.tryReserve(60)).toBe(true);
  expect(pool.tryReserve(50)).toBe(false);
  pool.enqueue(waiter(log, "a"), 50);
  // Nobody jumps the queue, even a reservation that would fit.
  expect(pool.tryReserve(10)).toBe(false);
  pool.enqueue(waiter(log, "b"), 10);
  pool.release(60);
  expect(log).toEqual(["a", "b"]);
  expect(pool.usedBytes).toBe(60);
});

test("a frame larger than the whole budget is granted alone, when nothing else is held", () => {
  const pool = new BufferPool(100);
  const log: string[] = [];
  expect(pool.tryReserve(30)).toBe(true);
  pool.enqueue(waiter(log, "huge"), 500);
  pool.release(30);
  expect(log).toEqual(["huge"]);
  expect(pool.usedBytes).toBe(500);
});

test("a waiter that leaves the queue lets the next one in", () => {
  const pool = new BufferPool(100);
  const log: string[] = [];
  pool.tryReserve(90);
  const a = waiter(log, "a");
  pool.enqueue(a, 100);
  pool.enqueue(waiter(log, "b"), 10);
  pool.cancel(a);
  expect(log).toEqual(["b"]);
  expect(pool.waiting).toBe(0);
});
