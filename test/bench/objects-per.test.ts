/**
 * bench/loopback.ts's objectsPer(), the heap-object counter behind the allocation tests and the
 * bench's objects-per-call figures: a body that allocates reads as allocating, never as 0 or
 * below, even when every chunk of it sees a collection (then it reads NaN, "no clean reading",
 * which fails any "< limit" assertion). Example: objectsPer(20_000, (n) => { ... }).
 */

import { expect, test } from "bun:test";
import { objectsPer } from "../../bench/loopback.ts";

const keep: { v: unknown } = { v: null };
/** The allocation tests' limit (test/rpc/alloc.test.ts). */
const ALLOWED = 0.01;

test("a body allocating one 64 KiB array per call reads about 1 object per call (never 0 or below) or no clean reading, and fails the allocation limit", () => {
  const body = (n: number) => {
    for (let i = 0; i < n; i++) keep.v = new Uint8Array(65536);
  };
  body(20_000);
  const v = objectsPer(20_000, body);
  expect({ v, aboutOneOrNoReading: Number.isNaN(v) || v > 0.99 }).toEqual({ v, aboutOneOrNoReading: true }); // the readings' own cost is subtracted: 0.99995 is one
  expect(v < ALLOWED).toBe(false);
}, 120_000);

test("a body allocating one small object per call reads 1 object per call", () => {
  const body = (n: number) => {
    for (let i = 0; i < n; i++) keep.v = { i };
  };
  body(100_000);
  const v = objectsPer(100_000, body);
  expect(v).toBeGreaterThan(0.99);
  expect(v).toBeLessThan(1.01);
}, 120_000);

test("a body allocating nothing reads under the allocation limit", () => {
  let x = 0;
  const body = (n: number) => {
    for (let i = 0; i < n; i++) x = (x + i) | 0;
  };
  body(100_000);
  const v = objectsPer(100_000, body);
  keep.v = x;
  expect(v).toBeGreaterThanOrEqual(-ALLOWED);
  expect(v).toBeLessThan(ALLOWED);
}, 120_000);
