/**
 * The kv arena on huge pages: the mmap constants against the C headers, and (where the machine
 * has a huge-page pool, vm.nr_hugepages > 0) a store on huge pages that takes pages from the
 * pool as it is touched and gives them all back at close(). With no pool the store falls back
 * to ordinary pages with a note (test/kv/store.test.ts).
 */
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HUGE_PAGE_BYTES, MAP_HUGETLB } from "../../src/ffi/libc.ts";
import { KvStore } from "../../src/kv/store.ts";

const PROBE = `
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/mman.h>
int main(void) {
  printf("{\\"MAP_HUGETLB\\":%d,\\"MAP_ANONYMOUS\\":%d,\\"MAP_PRIVATE\\":%d,\\"MAP_FIXED\\":%d,\\"PROT_RW\\":%d}\\n", MAP_HUGETLB, MAP_ANONYMOUS, MAP_PRIVATE, MAP_FIXED, PROT_READ | PROT_WRITE);
  return 0;
}
`;

test("MAP_HUGETLB and the mmap flags the arena uses match the C headers", () => {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-kv-probe-"));
  try {
    writeFileSync(join(dir, "probe.c"), PROBE);
    const cc = Bun.spawnSync(["cc", "-o", join(dir, "probe"), join(dir, "probe.c")]);
    expect(cc.stderr.toString()).toBe("");
    expect(cc.exitCode).toBe(0);
    const run = Bun.spawnSync([join(dir, "probe")]);
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout.toString())).toEqual({ MAP_HUGETLB, MAP_ANONYMOUS: 0x20, MAP_PRIVATE: 0x2, MAP_FIXED: 0x10, PROT_RW: 0x3 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const meminfo = (field: string) => Number(readFileSync("/proc/meminfo", "utf8").match(new RegExp(`${field}:\\s+(\\d+)`))?.[1] ?? "0");
const pool = meminfo("HugePages_Free");
if (pool < 2) console.log(`kv huge pages: only ${pool} free huge pages (vm.nr_hugepages ${readFileSync("/proc/sys/vm/nr_hugepages", "utf8").trim()}): the huge-page arena test is skipped`);

test.skipIf(pool < 2)("a store on huge pages: pages come from the pool and all go back at close()", () => {
  const before = meminfo("HugePages_Free");
  const s = KvStore.create({ memoryBytes: HUGE_PAGE_BYTES + 4096, hugepages: true });
  expect(s.hugepagesNote).toBeNull();
  expect(s.stats().hugepages).toBe(true);
  expect(s.arena.byteLength).toBe(2 * HUGE_PAGE_BYTES);
  const key = new TextEncoder().encode("k");
  s.put(key, new Uint8Array(100_000).fill(3));
  expect(s.get(key)!.value.every((x) => x === 3)).toBe(true);
  expect(meminfo("HugePages_Free")).toBeLessThan(before);
  const view = s.arena;
  s.close();
  expect(meminfo("HugePages_Free")).toBe(before);
  // a view held past close() reads zeros (ordinary pages were mapped over the range), never faults
  expect(view[s.layout.heapOffset]).toBe(0);
});
