/**
 * The kv store, in process: binary keys and values in one arena (layout.ts) that one-sided
 * readers can read while the store writes (verify.ts), a slab heap (slab.ts), a hash index of
 * 7-slot groups with a server-side overflow map (table.ts), LRU eviction, versions and atomic
 * snapshots (snapshot.ts).
 *
 * Contract:
 * - Keys are 1..maxKeyBytes bytes (KvKeyError otherwise), values 0..maxValueBytes
 *   (KvValueTooLargeError); maxValueBytes defaults to the largest value the heap can ever hold.
 * - Versions: one counter per store, +1 per successful write (put, successful cas), never 0,
 *   never repeated (a snapshot saves the counter and load() continues from it);
 *   cas(key, 0, v) creates only if absent; a failed cas returns the current version (0 absent).
 * - Memory full: with evict "none" a put that cannot get memory throws KvFullError and leaves
 *   the old value in place. With "lru", entries are evicted until the put fits; a value that
 *   could never fit (even in an empty heap) throws KvValueTooLargeError at once.
 * - LRU and size classes: get and put are uses. Each slab class keeps its own LRU list. To make
 *   room for an entry of class C, the store evicts the least recently used entry of class C
 *   (which frees a chunk of exactly that size, so one eviction suffices); when class C has no
 *   entries at all, or the entry needs a run of whole pages (larger than the largest class), it
 *   evicts the least recently used entry of the whole store, again and again, until a page (or
 *   run of pages) is free. So eviction is strictly LRU within a class, and across classes only
 *   when memory has to move from one class to another.
 * - Write order (readers race it through RMA): a put writes its new record completely (crc
 *   last) into fresh memory, then rewrites the slot (crc last), then frees the old record; a
 *   del clears the slot, then frees the record. Freed memory may be reused at once.
 * - get() returns a view into the arena, valid until the next write to the store.
 *
 * Example:
 *   const s = KvStore.create({ memoryBytes: 64 << 20, evict: "lru" });
 *   const v1 = s.put(key, value);
 *   s.get(key);                       // { value, version: v1 }
 *   s.cas(key, v1, other);            // { ok: true, version: v1 + 1 }
 *   s.save("/var/lib/kv.snap"); s.close();
 *
 * Thread: one thread owns a store (JS memory; RMA readers only read the arena).
 */

import { KvFullError, KvKeyError, KvSnapshotError, KvValueTooLargeError, UsageError } from "../errors.ts";
import { allocateArena, type Arena } from "./arena.ts";
import { computeLayout, ENTRY_CRC, ENTRY_HEADER_BYTES, ENTRY_KEY_LEN, ENTRY_VALUE_LEN, ENTRY_VERSION, keyHash, setU64, writeHeader, type KvLayout, type KvValue } from "./layout.ts";
import { Slab } from "./slab.ts";
import { readSnapshot, writeSnapshot } from "./snapshot.ts";
import { KvTable } from "./table.ts";

export type { KvLayout, KvValue } from "./layout.ts";

export interface KvStoreOptions {
  /** The arena's size in bytes (the CLI's --memory MB × 2^20); rounded up to 2 MiB with hugepages. */
  memoryBytes: number;
  /** Map the arena with huge pages; falls back to ordinary pages with `hugepagesNote`. Default false. */
  hugepages?: boolean;
  /** "none" (default): full -> KvFullError; "lru": evict least recently used entries. */
  evict?: "none" | "lru";
  /** Default 1024. */
  maxKeyBytes?: number;
  /** Default: what the arena can hold. */
  maxValueBytes?: number;
  /** Default: about one slot per 128 B of heap. */
  groupCount?: number;
  /** Default: a random u32. */
  hashSeed?: number;
}

export interface KvCasResult {
  ok: boolean;
  /** The new version when ok; on mismatch the current version (0 when absent). */
  version: number;
}

export interface KvStoreStats {
  keys: number;
  heapBytes: number;
  heapUsedBytes: number;
  evictions: number;
  puts: number;
  gets: number;
  dels: number;
  casFailures: number;
  hugepages: boolean;
  /** Keys kept outside their group's slots (one-sided readers ask the server for them). */
  groupOverflows: number;
}

/** The default key limit (the 1..1024 bytes). */
const DEFAULT_MAX_KEY_BYTES = 1024;
/** Arena offsets stay int32, which JSC indexes about 10x faster than doubles (measured): at most 2 GiB. */
export const MAX_ARENA_BYTES = 2 ** 31;
/** Versions stay exact JS numbers. */
const MAX_VERSION = Number.MAX_SAFE_INTEGER;

/** The in-process store; see the module comment. Thread: one. */
export class KvStore {
  readonly arena: Uint8Array;
  readonly layout: KvLayout;
  readonly hugepagesNote: string | null;
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  private readonly mem: Arena;
  private readonly view: DataView;
  /** `arena.buffer`, read once: the getter is a native call, and write() compares against it twice per put. */
  private readonly arenaBuffer: ArrayBufferLike;
  private readonly slab: Slab;
  private readonly table: KvTable;
  private readonly lru: boolean;
  private lastVersion = 0;
  private closed = false;
  private readonly counters = { evictions: 0, puts: 0, gets: 0, dels: 0, casFailures: 0 };
  /** Scratch copy of a record's first 16 bytes, for its crc. */
  private readonly recordHeadBytes = new Uint8Array(ENTRY_CRC);
  private readonly recordHead = new DataView(this.recordHeadBytes.buffer);
  /** Length of the value lookup() found last. */
  lookupBytes = 0;
  /** Version of the value lookup() found last (0 when absent). */
  lookupVersion = 0;

  private constructor(opts: KvStoreOptions) {
    if (opts === null || typeof opts !== "object") throw new UsageError("KvStore: options { memoryBytes } are required");
    const { memoryBytes } = opts;
    if (!Number.isSafeInteger(memoryBytes) || memoryBytes < 1 << 16 || memoryBytes > MAX_ARENA_BYTES) throw new UsageError(`KvStore: memoryBytes ${memoryBytes} must be an integer from 65536 to ${MAX_ARENA_BYTES} (2 GiB)`);
    const evict = opts.evict ?? "none";
    if (evict !== "none" && evict !== "lru") throw new UsageError(`KvStore: evict must be "none" or "lru", not ${JSON.stringify(evict)}`);
    const maxKey = opts.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES;
    if (!Number.isSafeInteger(maxKey) || maxKey < 1 || maxKey > 0xffffffff) throw new UsageError(`KvStore: maxKeyBytes ${maxKey} must be an integer from 1`);
    const seed = opts.hashSeed ?? (Math.random() * 0x100000000) >>> 0;
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new UsageError(`KvStore: hashSeed ${seed} must be a u32`);
    const maxValue = opts.maxValueBytes;
    if (maxValue !== undefined && (!Number.isSafeInteger(maxValue) || maxValue < 0)) throw new UsageError(`KvStore: maxValueBytes ${maxValue} must be a non-negative integer`);
    // Every option is checked before the arena exists, so a bad one leaks no memory.
    this.mem = allocateArena(memoryBytes, opts.hugepages === true);
    this.arena = this.mem.bytes;
    this.hugepagesNote = this.mem.note;
    try {
      this.layout = computeLayout(this.arena.byteLength, opts.groupCount, seed);
    } catch (e) {
      this.mem.free();
      throw new UsageError(`KvStore: ${(e as Error).message}`);
    }
    this.arenaBuffer = this.arena.buffer;
    this.view = new DataView(this.arenaBuffer, this.arena.byteOffset, this.arena.byteLength);
    writeHeader(this.view, this.layout);
    this.slab = new Slab(this.layout.heapOffset, this.layout.heapBytes);
    this.lru = evict === "lru";
    this.table = new KvTable(this.arena, this.view, this.layout, this.lru);
    this.maxKeyBytes = maxKey;
    // The largest value an empty heap holds with a key of one byte.
    const holdable = this.slab.capacityBytes - ENTRY_HEADER_BYTES - 1;
    this.maxValueBytes = Math.min(maxValue ?? holdable, Math.max(0, holdable));
  }

  /** A new, empty store. UsageError for bad options. The caller closes it. */
  static create(opts: KvStoreOptions): KvStore {
    return new KvStore(opts);
  }

  /**
   * A store made with `opts` and filled from the snapshot at `path`, versions kept; the version
   * counter continues from the one saved in the snapshot, so no version handed out before the
   * save (a deleted key's included) is handed out again (a format 1 snapshot has no counter:
   * it continues above the largest loaded version). The whole file is read and verified before anything is
   * inserted: KvSnapshotError names the path and the problem (missing, truncated, corrupt,
   * wrong format, a key or value over this store's limits). A snapshot that does not fit in
   * this store's memory throws KvFullError (eviction is never used while loading), and the
   * store made for it is closed: nothing is ever half-loaded.
   */
  static load(path: string, opts: KvStoreOptions): KvStore {
    const { records, nextVersion } = readSnapshot(path);
    const store = new KvStore(opts);
    try {
      for (const r of records) {
        if (r.key.byteLength === 0 || r.key.byteLength > store.maxKeyBytes) throw new KvSnapshotError(`kv snapshot ${path}: a key of ${r.key.byteLength} bytes is outside this store's limit 1..${store.maxKeyBytes}`);
        if (r.value.byteLength > store.maxValueBytes) throw new KvSnapshotError(`kv snapshot ${path}: a value of ${r.value.byteLength} bytes is over this store's maxValueBytes ${store.maxValueBytes}`);
        if (!store.insert(path, r.key, r.value, r.version)) {
          throw new KvFullError(`kv snapshot ${path}: ${records.length} entries do not fit in ${store.arena.byteLength} bytes of memory (full after ${store.table.count}); nothing loaded`);
        }
        if (r.version > store.lastVersion) store.lastVersion = r.version;
      }
      if (nextVersion - 1 > store.lastVersion) store.lastVersion = nextVersion - 1;
    } catch (e) {
      store.close();
      throw e;
    }
    return store;
  }

  /** Writes `value` under `key`; returns the new version. KvKeyError, KvValueTooLargeError, KvFullError (old value kept). */
  put(key: Uint8Array, value: Uint8Array): number {
    this.check(key, value);
    this.counters.puts++;
    return this.write(key, keyHash(key, this.layout.hashSeed), value);
  }

  /** The value and version of `key`, or null. The value is a view into the arena, valid until the next write to the store. A use for LRU. */
  get(key: Uint8Array): KvValue | null {
    this.checkKey(key);
    this.counters.gets++;
    const id = this.table.find(key, keyHash(key, this.layout.hashSeed));
    if (id < 0) return null;
    this.table.touch(id); // a no-op unless the store evicts
    const off = this.table.offset[id]!;
    const start = (off + ENTRY_HEADER_BYTES + key.byteLength) | 0;
    return { value: this.arena.subarray(start, (start + this.view.getUint32((off + ENTRY_VALUE_LEN) | 0, true)) | 0), version: this.table.version[id]! };
  }

  /**
   * get() without allocating: the arena offset of `key`'s value, or -1 when absent; its length
   * and version are in `lookupBytes` and `lookupVersion` until the next call. The bytes at
   * [offset, offset + lookupBytes) of `arena` are valid until the next write to the store (for a
   * server that copies the value straight into its reply). A use for LRU, counted as a get.
   */
  lookup(key: Uint8Array): number {
    this.checkKey(key);
    this.counters.gets++;
    const id = this.table.find(key, keyHash(key, this.layout.hashSeed));
    if (id < 0) {
      this.lookupBytes = 0;
      this.lookupVersion = 0;
      return -1;
    }
    this.table.touch(id); // a no-op unless the store evicts
    const off = this.table.offset[id]!;
    this.lookupBytes = this.view.getUint32((off + ENTRY_VALUE_LEN) | 0, true);
    this.lookupVersion = this.table.version[id]!;
    return (off + ENTRY_HEADER_BYTES + key.byteLength) | 0;
  }

  /** Removes `key`; true when it was there. */
  del(key: Uint8Array): boolean {
    this.checkKey(key);
    const h = keyHash(key, this.layout.hashSeed);
    const id = this.table.find(key, h);
    if (id < 0) return false;
    this.counters.dels++;
    this.drop(id, h);
    return true;
  }

  /** Writes `value` only if the key's version is `expectedVersion` (0: only if absent). On mismatch: { ok: false, version: current (0 absent) }. */
  cas(key: Uint8Array, expectedVersion: number, value: Uint8Array): KvCasResult {
    this.check(key, value);
    if (!Number.isSafeInteger(expectedVersion) || expectedVersion < 0) throw new UsageError(`kv cas: expectedVersion ${expectedVersion} must be a non-negative integer`);
    const h = keyHash(key, this.layout.hashSeed);
    const id = this.table.find(key, h);
    const current = id < 0 ? 0 : this.table.version[id]!;
    if (current !== expectedVersion) {
      this.counters.casFailures++;
      return { ok: false, version: current };
    }
    this.counters.puts++;
    return { ok: true, version: this.write(key, h, value) };
  }

  /** Figures as of now. */
  stats(): KvStoreStats {
    this.open();
    return {
      keys: this.table.count,
      heapBytes: this.layout.heapBytes,
      heapUsedBytes: this.slab.usedBytes,
      ...this.counters,
      hugepages: this.mem.hugepages,
      groupOverflows: this.table.overflowCount,
    };
  }

  /** Writes every entry to `path` atomically (temp file in the same directory, fsync, rename, fsync of the directory). KvSnapshotError on an I/O failure (the old file stays). */
  save(path: string): void {
    this.open();
    const t = this.table;
    writeSnapshot(path, t.count, this.lastVersion + 1, (emit) => {
      t.forEach((id) => {
        const off = t.offset[id]!;
        const keyLen = this.view.getUint32(off + ENTRY_KEY_LEN, true);
        const start = off + ENTRY_HEADER_BYTES;
        emit(this.arena.subarray(start, start + keyLen), this.arena.subarray(start + keyLen, off + t.bytes[id]!), t.version[id]!);
      });
    });
  }

  /** Frees the arena (huge pages go back at once); later calls throw UsageError. Twice is harmless. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.mem.free();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private open(): void {
    if (this.closed) throw new UsageError("kv store is closed");
  }

  private checkKey(key: Uint8Array): void {
    this.open();
    if (!(key instanceof Uint8Array)) throw new UsageError("kv: a key must be a Uint8Array");
    if (key.byteLength === 0 || key.byteLength > this.maxKeyBytes) throw new KvKeyError(`kv: key of ${key.byteLength} bytes, must be 1 to ${this.maxKeyBytes}`);
  }

  private check(key: Uint8Array, value: Uint8Array): void {
    this.checkKey(key);
    if (!(value instanceof Uint8Array)) throw new UsageError("kv: a value must be a Uint8Array");
    if (value.byteLength > this.maxValueBytes) throw new KvValueTooLargeError(`kv: value of ${value.byteLength} bytes, the limit is ${this.maxValueBytes} (maxValueBytes)`);
    if (!this.slab.canEverHold(ENTRY_HEADER_BYTES + key.byteLength + value.byteLength)) {
      throw new KvValueTooLargeError(`kv: an entry of ${ENTRY_HEADER_BYTES + key.byteLength + value.byteLength} bytes (key ${key.byteLength}, value ${value.byteLength}) can never fit in a heap of ${this.slab.capacityBytes} bytes`);
    }
  }

  /** The put path after checks: memory (evicting if allowed), record, slot, then the old record freed. */
  private write(key: Uint8Array, hash: number, value: Uint8Array): number {
    // A view into this arena (another key's value) could be evicted and overwritten below: copy it first.
    const arenaBuffer = this.arenaBuffer;
    if (value.buffer === arenaBuffer) value = value.slice();
    if (key.buffer === arenaBuffer) key = key.slice();
    const bytes = ENTRY_HEADER_BYTES + key.byteLength + value.byteLength;
    const off = this.allocate(bytes, key);
    if (this.lastVersion >= MAX_VERSION) throw new UsageError("kv: the version counter is exhausted");
    const version = ++this.lastVersion;
    this.writeRecord(off, key, value, version);
    // Found after allocating: eviction may have removed this very key.
    const id = this.table.find(key, hash);
    const cls = this.slab.classFor(bytes);
    if (id < 0) {
      this.table.place(key, hash, off, bytes, version, cls);
    } else {
      const old = this.table.offset[id]!;
      this.table.repoint(id, hash, off, bytes, version, cls);
      this.slab.free(old);
    }
    return version;
  }

  /** Memory for an entry of `bytes`, evicting under "lru"; KvFullError when there is none. */
  private allocate(bytes: number, key: Uint8Array): number {
    let off = this.slab.alloc(bytes);
    if (off >= 0) return off;
    if (!this.lru) throw this.full(bytes, key);
    const cls = this.slab.classFor(bytes);
    while (off < 0) {
      // A chunk of class `cls` freed makes the next alloc succeed; a page run needs pages, from anywhere.
      let victim = cls === this.slab.runClass ? -1 : this.table.lruOf(cls);
      if (victim < 0) victim = this.table.lruOldest();
      if (victim < 0) throw this.full(bytes, key);
      const keyBytes = this.table.keyOf(victim);
      this.drop(victim, keyHash(keyBytes, this.layout.hashSeed));
      this.counters.evictions++;
      off = this.slab.alloc(bytes);
    }
    return off;
  }

  private full(bytes: number, key: Uint8Array): KvFullError {
    return new KvFullError(`kv: no memory for an entry of ${bytes} bytes (key ${key.byteLength} bytes): ${this.slab.usedBytes} of ${this.slab.capacityBytes} heap bytes in use, ${this.table.count} keys, evict ${this.lru ? "lru" : "none"}`);
  }

  /** Removes a live entry: slot cleared first, then its memory freed. */
  private drop(id: number, hash: number): void {
    const off = this.table.offset[id]!;
    this.table.remove(id, hash);
    this.slab.free(off);
  }

  /** Writes a whole record at `off`, crc last (computed from a scratch copy of the header and the sources: no view made per write). */
  private writeRecord(off: number, key: Uint8Array, value: Uint8Array, version: number): void {
    const v = this.view;
    const h = this.recordHead;
    setU64(h, ENTRY_VERSION, version);
    h.setUint32(ENTRY_KEY_LEN, key.byteLength, true);
    h.setUint32(ENTRY_VALUE_LEN, value.byteLength, true);
    setU64(v, off + ENTRY_VERSION, version);
    v.setUint32(off + ENTRY_KEY_LEN, key.byteLength, true);
    v.setUint32(off + ENTRY_VALUE_LEN, value.byteLength, true);
    v.setUint32(off + ENTRY_CRC + 4, 0, true);
    this.arena.set(key, off + ENTRY_HEADER_BYTES);
    this.arena.set(value, off + ENTRY_HEADER_BYTES + key.byteLength);
    const crc = Bun.hash.crc32(value, Bun.hash.crc32(key, Bun.hash.crc32(this.recordHeadBytes))) >>> 0;
    v.setUint32(off + ENTRY_CRC, crc, true);
  }

  /** Load path: an entry with its snapshot version, no eviction; false when it does not fit. */
  private insert(path: string, key: Uint8Array, value: Uint8Array, version: number): boolean {
    const bytes = ENTRY_HEADER_BYTES + key.byteLength + value.byteLength;
    const off = this.slab.alloc(bytes);
    if (off < 0) return false;
    this.writeRecord(off, key, value, version);
    const hash = keyHash(key, this.layout.hashSeed);
    const id = this.table.find(key, hash);
    if (id >= 0) throw new KvSnapshotError(`kv snapshot ${path}: a key appears twice (records of versions ${this.table.version[id]} and ${version})`);
    this.table.place(key, hash, off, bytes, version, this.slab.classFor(bytes));
    return true;
  }
}
