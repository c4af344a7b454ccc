/**
 * The kv arena's memory: one block allocated once, an ArrayBuffer, or with `hugepages` an
 * anonymous MAP_HUGETLB mapping of 2 MiB pages (the size rounded up to whole huge pages). When
 * huge pages cannot be had, the arena falls back to an ArrayBuffer and `note` says why in one
 * line (e.g. "no huge pages: /proc/sys/vm/nr_hugepages is 0 (mmap MAP_HUGETLB of 4194304 bytes
 * failed: ...); using ordinary pages").
 *
 * Contract: `bytes` is zeroed, `bytes.byteLength` is the arena size (memoryBytes, or rounded up
 * to huge pages). free() gives the memory back: huge pages go back to the kernel at once
 * (ordinary zero pages are mapped over the range, so a stale view reads zeros, never faults);
 * an ArrayBuffer is left to the GC. Twice is harmless.
 *
 * Example:
 *   const a = allocateArena(64 << 20, true);
 *   if (a.note) console.log(a.note);
 *   a.free();
 *
 * Thread: the owner's.
 */

import { readFileSync } from "node:fs";
import { HUGE_PAGE_BYTES, mapHugePages, releaseHugePages, type HugePageMapping } from "../ffi/libc.ts";
import { describeThrown } from "../errors.ts";

/** One allocated arena; see the module comment. */
export interface Arena {
  readonly bytes: Uint8Array;
  readonly hugepages: boolean;
  /** Why huge pages were not used although asked for; null otherwise. */
  readonly note: string | null;
  free(): void;
}

/** The huge-page pool as /proc/sys/vm/nr_hugepages states it ("unknown" where it cannot be read). */
function hugePagePool(): string {
  try {
    return readFileSync("/proc/sys/vm/nr_hugepages", "utf8").trim();
  } catch {
    return "unknown";
  }
}

/** Allocates an arena of `memoryBytes`; see the module comment. Throws RangeError for a size that is not a positive safe integer. */
export function allocateArena(memoryBytes: number, hugepages: boolean): Arena {
  if (!Number.isSafeInteger(memoryBytes) || memoryBytes <= 0) throw new RangeError(`kv arena: memoryBytes ${memoryBytes} must be a positive integer`);
  let note: string | null = null;
  if (hugepages) {
    const len = Math.ceil(memoryBytes / HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES;
    let mapping: HugePageMapping | null = null;
    try {
      mapping = mapHugePages(len);
    } catch (e) {
      const pool = hugePagePool();
      const why = pool === "0" ? "no huge pages: /proc/sys/vm/nr_hugepages is 0" : `huge pages unavailable (/proc/sys/vm/nr_hugepages is ${pool})`;
      note = `${why} (${describeThrown(e)}); using ordinary pages`;
    }
    if (mapping !== null) {
      const m = mapping;
      let freed = false;
      return {
        bytes: new Uint8Array(m.buffer),
        hugepages: true,
        note: null,
        free() {
          if (freed) return;
          freed = true;
          releaseHugePages(m);
        },
      };
    }
  }
  return { bytes: new Uint8Array(new ArrayBuffer(memoryBytes)), hugepages: false, note, free() {} };
}
