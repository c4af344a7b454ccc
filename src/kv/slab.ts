/**
 * The kv heap's allocator, memcached style: the heap is cut into fixed pages (a power of two
 * from 16 KiB to 1 MiB, about heapBytes / 64, so a small arena still has pages to share between
 * classes); size classes (64 B, then ×1.25 steps rounded to 8 B, up to a quarter page) carve
 * chunks out of pages they take from the page pool on demand; an allocation larger than the
 * largest class takes a contiguous run of whole pages. A class page whose chunks are all free
 * goes back to the pool at once, so memory freed in one class can serve another. Only entry
 * records live in the arena's heap; all bookkeeping is JS typed arrays outside it.
 *
 * Contract: alloc(bytes) returns an arena offset (8-byte aligned) of at least `bytes`, or -1
 * when neither a free chunk of the class nor a free page (run) is available: that is exact, there
 * is no hidden reserve. free(offset) takes back exactly what alloc gave. usedBytes counts the
 * chunk (or run) bytes handed out.
 *
 * Example:
 *   const slab = new Slab(layout.heapOffset, layout.heapBytes);
 *   const off = slab.alloc(24 + key.length + value.length);  // -1: full
 *   slab.free(off);
 *
 * Thread: the store's (one thread); not shared.
 */

/** The smallest chunk: a record header (24 B) plus a short key and value. */
export const MIN_CLASS_BYTES = 64;
/** memcached's default growth factor. */
export const CLASS_GROWTH = 1.25;
/** Page bounds: 16 KiB keeps a class page worth carving; 1 MiB is memcached's page. */
export const MIN_PAGE_BYTES = 16 * 1024;
export const MAX_PAGE_BYTES = 1024 * 1024;
/** A heap gets about this many pages while pages stay within the bounds. */
const TARGET_PAGES = 64;

/** The page size for a heap of `heapBytes`: a power of two from 16 KiB to 1 MiB, about heapBytes / 64. */
export function pageBytesFor(heapBytes: number): number {
  let p = MIN_PAGE_BYTES;
  while (p * 2 <= MAX_PAGE_BYTES && p * 2 * TARGET_PAGES <= heapBytes) p *= 2;
  return p;
}

/** The chunk sizes of the classes for pages of `pageBytes`, ascending: 64 B, ×1.25 rounded to 8 B, up to a quarter page (a class page holds at least 4 chunks). */
export function classSizes(pageBytes: number): number[] {
  const max = pageBytes / 4;
  const out: number[] = [];
  for (let c = MIN_CLASS_BYTES; c < max; c = Math.ceil((c * CLASS_GROWTH) / 8) * 8) out.push(c);
  // The quarter page ends the list; a class within 10% below it would be a wasted step.
  if (out.length > 1 && out.at(-1)! * 1.1 > max) out.pop();
  out.push(max);
  return out;
}

/** The most class ids any slab uses (classes of the largest page, plus the run class). */
export const MAX_CLASS_IDS = classSizes(MAX_PAGE_BYTES).length + 1;

const PAGE_FREE = -1;
/** A page inside a run that starts on an earlier page. */
const PAGE_RUN_TAIL = -3;
/** A page that starts a run. */
const PAGE_RUN_HEAD = -2;

/** Size-class allocator over one heap; see the module comment. Thread: one. */
export class Slab {
  readonly pageCount: number;
  /** Page size of this heap (pageBytesFor). */
  readonly pageBytes: number;
  /** Chunk sizes of the classes, ascending. */
  readonly classBytes: readonly number[];
  /** The class id of a page run (an allocation above the largest class). */
  readonly runClass: number;
  private readonly maxClassBytes: number;
  /** Bytes handed out (chunk sizes, run lengths). */
  usedBytes = 0;
  private freePages: number;
  /** Per page: its class, PAGE_FREE, PAGE_RUN_HEAD or PAGE_RUN_TAIL. */
  private readonly pageClass: Int16Array;
  /** Per page: chunks in use (class pages) or run length in pages (run heads). */
  private readonly pageUsed: Int32Array;
  /** Per page: chunks never handed out yet (carved lazily from the end). */
  private readonly pageFresh: Int32Array;
  /** Per class page: a stack of freed chunk indexes (allocated when the page joins a class). */
  private readonly pageFreeStack: Array<Uint16Array | null>;
  private readonly pageFreeTop: Int32Array;
  /** Per page: the doubly linked list of its class's pages that have a free chunk. */
  private readonly partialNext: Int32Array;
  private readonly partialPrev: Int32Array;
  private readonly partialHead: Int32Array;
  private scanCursor = 0;

  constructor(readonly heapOffset: number, heapBytes: number) {
    this.pageBytes = pageBytesFor(heapBytes);
    this.classBytes = classSizes(this.pageBytes);
    this.runClass = this.classBytes.length;
    this.maxClassBytes = this.pageBytes / 4;
    this.pageCount = Math.floor(heapBytes / this.pageBytes);
    const n = this.pageCount;
    this.freePages = n;
    this.pageClass = new Int16Array(n).fill(PAGE_FREE);
    this.pageUsed = new Int32Array(n);
    this.pageFresh = new Int32Array(n);
    this.pageFreeStack = new Array(n).fill(null);
    this.pageFreeTop = new Int32Array(n);
    this.partialNext = new Int32Array(n).fill(-1);
    this.partialPrev = new Int32Array(n).fill(-1);
    this.partialHead = new Int32Array(this.classBytes.length).fill(-1);
  }

  /** Heap bytes the pages cover (the heap's tail beyond the last whole page is unused). */
  get capacityBytes(): number {
    return this.pageCount * this.pageBytes;
  }

  /** The class for an allocation of `bytes`: 0..runClass-1, or runClass for page runs. */
  classFor(bytes: number): number {
    if (bytes > this.maxClassBytes) return this.runClass;
    const sizes = this.classBytes;
    let lo = 0;
    let hi = sizes.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sizes[mid]! >= bytes) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** The bytes an allocation of `bytes` really takes (its chunk or its run of pages). */
  footprint(bytes: number): number {
    const c = this.classFor(bytes);
    return c === this.runClass ? Math.ceil(bytes / this.pageBytes) * this.pageBytes : this.classBytes[c]!;
  }

  /** True when an allocation of `bytes` could ever succeed in this heap (an empty heap could hold it). */
  canEverHold(bytes: number): boolean {
    return this.footprint(bytes) <= this.capacityBytes;
  }

  /** Whether alloc(bytes) would succeed now, without allocating. */
  fits(bytes: number): boolean {
    const c = this.classFor(bytes);
    if (c === this.runClass) return this.findRun(Math.ceil(bytes / this.pageBytes)) >= 0;
    return this.partialHead[c]! >= 0 || this.freePages > 0;
  }

  /** A heap offset (arena-relative) for `bytes`, or -1 when there is no room. */
  alloc(bytes: number): number {
    const c = this.classFor(bytes);
    if (c === this.runClass) return this.allocRun(Math.ceil(bytes / this.pageBytes));
    let p = this.partialHead[c]!;
    if (p < 0) {
      p = this.takePage();
      if (p < 0) return -1;
      const size = this.classBytes[c]!;
      const chunks = Math.floor(this.pageBytes / size);
      this.pageClass[p] = c;
      this.pageUsed[p] = 0;
      this.pageFresh[p] = chunks;
      const stack = this.pageFreeStack[p];
      this.pageFreeStack[p] = stack !== null && stack !== undefined && stack.length >= chunks ? stack : new Uint16Array(chunks);
      this.pageFreeTop[p] = 0;
      this.pushPartial(c, p);
    }
    let chunk: number;
    if (this.pageFreeTop[p]! > 0) chunk = this.pageFreeStack[p]![--this.pageFreeTop[p]!]!;
    else chunk = ((this.pageBytes / this.classBytes[c]!) | 0) - this.pageFresh[p]--;
    this.pageUsed[p]++;
    if (this.pageFreeTop[p] === 0 && this.pageFresh[p] === 0) this.removePartial(c, p);
    this.usedBytes += this.classBytes[c]!;
    return (this.heapOffset + p * this.pageBytes + chunk * this.classBytes[c]!) | 0;
  }

  /** Gives back what alloc() returned at `offset`. UsageError-free: a bad offset throws RangeError (a store bug). */
  free(offset: number): void {
    const rel = offset - this.heapOffset;
    const p = (rel / this.pageBytes) | 0;
    if (rel < 0 || p >= this.pageCount) throw new RangeError(`kv slab: offset ${offset} is outside the heap`);
    const c = this.pageClass[p]!;
    if (c === PAGE_RUN_HEAD) {
      const len = this.pageUsed[p]!;
      for (let i = 0; i < len; i++) this.pageClass[p + i] = PAGE_FREE;
      this.freePages += len;
      this.usedBytes -= len * this.pageBytes;
      return;
    }
    if (c < 0) throw new RangeError(`kv slab: offset ${offset} is not allocated`);
    const size = this.classBytes[c]!;
    const chunk = (rel - p * this.pageBytes) / size;
    const wasFull = this.pageFreeTop[p] === 0 && this.pageFresh[p] === 0;
    this.pageUsed[p]--;
    this.usedBytes -= size;
    if (this.pageUsed[p] === 0) {
      if (!wasFull) this.removePartial(c, p);
      this.pageClass[p] = PAGE_FREE;
      this.freePages++;
      return;
    }
    this.pageFreeStack[p]![this.pageFreeTop[p]!++] = chunk;
    if (wasFull) this.pushPartial(c, p);
  }

  /** The class of the allocation at `offset` (this.runClass for a run). */
  classOf(offset: number): number {
    const c = this.pageClass[((offset - this.heapOffset) / this.pageBytes) | 0]!;
    return c === PAGE_RUN_HEAD ? this.runClass : c;
  }

  /** Pages not in use by any class or run. */
  get freePageCount(): number {
    return this.freePages;
  }

  private takePage(): number {
    if (this.freePages === 0) return -1;
    const n = this.pageCount;
    for (let i = 0; i < n; i++) {
      const p = (this.scanCursor + i) % n;
      if (this.pageClass[p] === PAGE_FREE) {
        this.scanCursor = p + 1;
        this.freePages--;
        return p;
      }
    }
    return -1;
  }

  /** The first page of `len` contiguous free pages, or -1. */
  private findRun(len: number): number {
    if (this.freePages < len) return -1;
    let start = 0;
    let have = 0;
    for (let p = 0; p < this.pageCount; p++) {
      if (this.pageClass[p] === PAGE_FREE) {
        if (have === 0) start = p;
        if (++have === len) return start;
      } else have = 0;
    }
    return -1;
  }

  private allocRun(len: number): number {
    const p = this.findRun(len);
    if (p < 0) return -1;
    this.pageClass[p] = PAGE_RUN_HEAD;
    this.pageUsed[p] = len;
    for (let i = 1; i < len; i++) this.pageClass[p + i] = PAGE_RUN_TAIL;
    this.freePages -= len;
    this.usedBytes += len * this.pageBytes;
    return this.heapOffset + p * this.pageBytes;
  }

  private pushPartial(c: number, p: number): void {
    const head = this.partialHead[c]!;
    this.partialPrev[p] = -1;
    this.partialNext[p] = head;
    if (head >= 0) this.partialPrev[head] = p;
    this.partialHead[c] = p;
  }

  private removePartial(c: number, p: number): void {
    const prev = this.partialPrev[p]!;
    const next = this.partialNext[p]!;
    if (prev >= 0) this.partialNext[prev] = next;
    else this.partialHead[c] = next;
    if (next >= 0) this.partialPrev[next] = prev;
    this.partialPrev[p] = -1;
    this.partialNext[p] = -1;
  }
}
