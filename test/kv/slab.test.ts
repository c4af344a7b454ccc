/**
 * The kv slab: class sizes, exact accounting (alloc fails exactly when no chunk or page is
 * left), pages going back to the pool when emptied, contiguous page runs for large entries.
 */
import { describe, expect, test } from "bun:test";
import { classSizes, MAX_PAGE_BYTES, MIN_PAGE_BYTES, pageBytesFor, Slab } from "../../src/kv/slab.ts";

describe("kv slab", () => {
  test("classes grow by about 1.25 from 64 B to a quarter page; page size follows the heap", () => {
    const sizes = classSizes(64 * 1024);
    expect(sizes[0]).toBe(64);
    expect(sizes.at(-1)).toBe(16 * 1024);
    for (let i = 1; i < sizes.length; i++) {
      expect(sizes[i]! % 8).toBe(0);
      expect(sizes[i]! / sizes[i - 1]!).toBeGreaterThan(1.1);
      expect(sizes[i]! / sizes[i - 1]!).toBeLessThanOrEqual(1.375);
    }
    expect(pageBytesFor(100_000)).toBe(MIN_PAGE_BYTES);
    expect(pageBytesFor(64 * 64 * 1024)).toBe(64 * 1024);
    expect(pageBytesFor(2 ** 40)).toBe(MAX_PAGE_BYTES);
    const slab = new Slab(1000, 4 << 20);
    expect(slab.classFor(1)).toBe(0);
    expect(slab.classFor(64)).toBe(0);
    expect(slab.classFor(65)).toBe(1);
    expect(slab.classFor(slab.pageBytes / 4 + 1)).toBe(slab.runClass);
    expect(slab.footprint(slab.pageBytes + 1)).toBe(2 * slab.pageBytes);
  });

  test("accounting is exact: one class fills every page, frees give every page back", () => {
    const slab = new Slab(64, 1 << 20);
    const size = 100;
    const chunk = slab.footprint(size);
    const perPage = Math.floor(slab.pageBytes / chunk);
    const offs: number[] = [];
    for (;;) {
      const o = slab.alloc(size);
      if (o < 0) break;
      offs.push(o);
    }
    expect(offs.length).toBe(perPage * slab.pageCount);
    expect(new Set(offs).size).toBe(offs.length);
    for (const o of offs) {
      expect(o % 8).toBe(0);
      expect(o).toBeGreaterThanOrEqual(64);
      expect(o + chunk).toBeLessThanOrEqual(64 + slab.capacityBytes);
    }
    expect(slab.usedBytes).toBe(offs.length * chunk);
    expect(slab.fits(size)).toBe(false);
    // another class has no page left either
    expect(slab.alloc(1000)).toBe(-1);
    slab.free(offs.pop()!);
    expect(slab.fits(size)).toBe(true);
    expect(slab.alloc(1000)).toBe(-1);
    for (const o of offs) slab.free(o);
    expect(slab.usedBytes).toBe(0);
    expect(slab.freePageCount).toBe(slab.pageCount);
    // now a run of every page fits
    const run = slab.alloc(slab.capacityBytes);
    expect(run).toBe(64);
    expect(slab.alloc(1)).toBe(-1);
    slab.free(run);
    expect(slab.freePageCount).toBe(slab.pageCount);
  });

  test("runs take contiguous free pages; a free page between class pages does not make a run", () => {
    const slab = new Slab(0, 8 * 16 * 1024);
    expect(slab.pageBytes).toBe(16 * 1024);
    expect(slab.pageCount).toBe(8);
    // one chunk of the largest class on each page: 8 class pages (a quarter page each, 4 per page)
    const big = slab.pageBytes / 4;
    const pages: number[][] = [];
    for (let p = 0; p < 8; p++) {
      const four = [slab.alloc(big), slab.alloc(big), slab.alloc(big), slab.alloc(big)];
      pages.push(four);
    }
    expect(slab.alloc(big)).toBe(-1);
    // empty pages 1, 3 and 4: a two-page run fits only at 3..4
    for (const p of [1, 3, 4]) for (const o of pages[p]!) slab.free(o);
    expect(slab.freePageCount).toBe(3);
    const run = slab.alloc(slab.pageBytes + 1);
    expect(run).toBe(3 * slab.pageBytes);
    expect(slab.alloc(slab.pageBytes + 1)).toBe(-1);
    expect(slab.alloc(slab.pageBytes)).toBe(slab.pageBytes); // a one-page run fits on page 1
    expect(slab.freePageCount).toBe(0);
    slab.free(run);
    expect(slab.freePageCount).toBe(2);
  });
});
