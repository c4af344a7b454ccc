/**
 * The kv store's index (server side): the arena's groups of 7 slots, an overflow map for keys
 * whose group is full, and per-entry bookkeeping (arena offset, version, slab class, LRU links)
 * in JS typed arrays outside the arena. Entries are named by small integer ids handed out from a
 * free list; the arrays grow by doubling when more entries are live than ever before.
 *
 * Contract: find() locates a key by its hash and bytes (slots first, then the overflow map when
 * the group's overflow count says there are keys outside the slots); place() makes an id
 * visible (a slot written crc last, or an overflow entry with the group's overflow count raised);
 * repoint() moves a live id to a new record (slot rewritten crc last; an overflow entry moves into
 * a slot of its group that has come free); remove() clears the slot
 * (hash 0, crc recomputed) or drops the overflow entry. The caller (store.ts) writes records and
 * frees heap memory in the spec's order around these calls.
 * LRU: one list per slab class (most recent at the head); touch() moves an id to its class's
 * head and stamps it with a use clock, so the oldest entry of all is the oldest class tail.
 *
 * Example:
 *   const id = table.find(key, h);   // -1: absent
 *   if (id >= 0) table.touch(id);
 *
 * Thread: the store's (one thread).
 */

import {
  ENTRY_HEADER_BYTES, ENTRY_KEY_LEN, GROUP_BYTES, GROUP_HEADER_BYTES, GROUP_OVERFLOW, SLOT_BYTES, SLOT_CRC, SLOT_CRC_COVERS, SLOT_ENTRY_BYTES,
  SLOT_ENTRY_OFFSET, SLOT_HASH, SLOT_VERSION, SLOTS_PER_GROUP, setU64, type KvLayout,
} from "./layout.ts";
import { MAX_CLASS_IDS } from "./slab.ts";

/** The lookup mirror: 8 u32 per group, the 7 slot hashes then the overflow count. */
const MIRROR_STRIDE = 8;
const MIRROR_OVERFLOW = 7;
/** Ids the arrays start with; they double as needed. */
const INITIAL_IDS = 1024;

/** The index over one arena; see the module comment. Thread: one. */
export class KvTable {
  /** Live entries. */
  count = 0;
  /** Per global slot (group * 7 + i): the id it holds, -1 when empty. */
  private readonly slotId: Int32Array;
  /**
   * A compact copy of the index for lookups: per group 8 u32 (the 7 slot hashes, then the
   * overflow count), 32 bytes instead of the arena's 256, so a lookup touches one cache line of
   * index instead of four (a lookup of a key set larger than the cache was bound by those misses).
   */
  private readonly mirror: Uint32Array;
  private readonly overflow = new Map<string, number>();
  private capacity = 0;
  private highWater = 0;
  private freeIds: number[] = [];
  /** Per id: arena offset of its record (-1: id free). Int32: offsets stay integers for JSC (arenas are at most 2 GiB). */
  offset = new Int32Array(0);
  version = new Float64Array(0);
  /** Per id: entry record length (header + key + value). */
  bytes = new Uint32Array(0);
  /** Per id: global slot index, -1 when it lives in the overflow map. */
  slot = new Int32Array(0);
  cls = new Uint8Array(0);
  private prev = new Int32Array(0);
  private next = new Int32Array(0);
  private use = new Float64Array(0);
  private useClock = 0;
  private readonly lruHead = new Int32Array(MAX_CLASS_IDS).fill(-1);
  private readonly lruTail = new Int32Array(MAX_CLASS_IDS).fill(-1);

  private readonly scratch = new Uint8Array(SLOT_CRC_COVERS);
  private readonly scratchView = new DataView(this.scratch.buffer);
  private readonly groupCount: number;
  private readonly indexOffset: number;

  /**
   * `lru`: keep the LRU lists (a store that evicts); without it the lists stay empty and
   * lruOf/lruOldest find nothing (a store that never evicts skips their upkeep on every write).
   */
  constructor(private readonly arena: Uint8Array, private readonly view: DataView, layout: KvLayout, private readonly lru = true) {
    this.groupCount = layout.groupCount | 0;
    this.indexOffset = layout.indexOffset | 0;
    this.slotId = new Int32Array(layout.groupCount * SLOTS_PER_GROUP).fill(-1);
    this.mirror = new Uint32Array(layout.groupCount * MIRROR_STRIDE);
    this.grow(INITIAL_IDS);
  }

  /** Keys living outside their group's slots (one-sided readers fall back to RPC for them). */
  get overflowCount(): number {
    return this.overflow.size;
  }

  /** The id of `key` (hash = keyHash(key)), or -1. */
  find(key: Uint8Array, hash: number): number {
    // `| 0` keeps every offset an int32: JSC's DataView and typed-array access with a double index
    // is about 10x slower (measured here).
    const g = (hash % this.groupCount) | 0;
    const m = this.mirror;
    const base = (g * MIRROR_STRIDE) | 0;
    for (let i = 0; i < SLOTS_PER_GROUP; i++) {
      if (m[base + i] !== hash) continue;
      const id = this.slotId[g * SLOTS_PER_GROUP + i]!;
      if (id >= 0 && this.keyEquals(id, key)) return id;
    }
    if (m[base + MIRROR_OVERFLOW] === 0) return -1;
    return this.overflow.get(keyString(key)) ?? -1;
  }

  /** Whether the record of `id` holds `key`. */
  private keyEquals(id: number, key: Uint8Array): boolean {
    const off = this.offset[id]!;
    const len = this.view.getUint32((off + ENTRY_KEY_LEN) | 0, true) | 0;
    if (len !== key.byteLength) return false;
    const a = this.arena;
    const k = (off + ENTRY_HEADER_BYTES) | 0;
    for (let i = 0; i < len; i++) if (a[k + i] !== key[i]) return false;
    return true;
  }

  /** The key bytes of `id` (a view into the arena). */
  keyOf(id: number): Uint8Array {
    const off = this.offset[id]!;
    return this.arena.subarray(off + ENTRY_HEADER_BYTES, off + ENTRY_HEADER_BYTES + this.view.getUint32(off + ENTRY_KEY_LEN, true));
  }

  /**
   * A new id for the record at `offset` (already written), made visible: the first empty slot of
   * the key's group (written crc last), else the overflow map (the group's overflow count +1).
   * The id joins its class's LRU list as most recent.
   */
  place(key: Uint8Array, hash: number, offset: number, entryBytes: number, version: number, cls: number): number {
    const id = this.newId();
    this.offset[id] = offset;
    this.version[id] = version;
    this.bytes[id] = entryBytes;
    this.cls[id] = cls;
    const g = (hash % this.groupCount) | 0;
    let slot = -1;
    for (let i = 0; i < SLOTS_PER_GROUP; i++) {
      if (this.slotId[g * SLOTS_PER_GROUP + i]! < 0) {
        slot = g * SLOTS_PER_GROUP + i;
        break;
      }
    }
    this.slot[id] = slot;
    if (slot >= 0) {
      this.slotId[slot] = id;
      this.writeSlot(slot, hash, entryBytes, offset, version);
    } else {
      this.overflow.set(keyString(key), id);
      const at = (this.indexOffset + g * GROUP_BYTES + GROUP_OVERFLOW) | 0;
      this.view.setUint32(at, ++this.mirror[g * MIRROR_STRIDE + MIRROR_OVERFLOW]!, true);
    }
    this.count++;
    if (this.lru) this.lruPush(id);
    return id;
  }

  /** Points live `id` at a new record (already written); its slot is rewritten crc last. The caller frees the old record afterwards. */
  repoint(id: number, hash: number, offset: number, entryBytes: number, version: number, cls: number): void {
    this.offset[id] = offset;
    this.version[id] = version;
    this.bytes[id] = entryBytes;
    const s = this.slot[id]!;
    if (s >= 0) this.writeSlot(s, hash, entryBytes, offset, version);
    else this.promote(id, hash, entryBytes, offset, version);
    if (!this.lru) this.cls[id] = cls;
    else if (this.cls[id] !== cls) {
      this.lruUnlink(id);
      this.cls[id] = cls;
      this.lruPush(id);
    } else this.touch(id);
  }

  /**
   * An overflow entry being rewritten moves into a slot of its group when one has come free: the
   * slot is written first (crc last), then the overflow count drops, so a reader finds the slot
   * or still sees the count and asks the server.
   */
  private promote(id: number, hash: number, entryBytes: number, offset: number, version: number): void {
    const g = (hash % this.groupCount) | 0;
    for (let i = 0; i < SLOTS_PER_GROUP; i++) {
      const slot = g * SLOTS_PER_GROUP + i;
      if (this.slotId[slot]! >= 0) continue;
      this.slotId[slot] = id;
      this.slot[id] = slot;
      this.writeSlot(slot, hash, entryBytes, offset, version);
      this.overflow.delete(keyString(this.keyOf(id)));
      const at = (this.indexOffset + g * GROUP_BYTES + GROUP_OVERFLOW) | 0;
      this.view.setUint32(at, --this.mirror[g * MIRROR_STRIDE + MIRROR_OVERFLOW]!, true);
      return;
    }
  }

  /** Makes `id` invisible (slot cleared, crc recomputed; or overflow entry dropped) and frees the id. The caller frees its record afterwards. */
  remove(id: number, hash: number): void {
    const s = this.slot[id]!;
    if (s >= 0) {
      this.slotId[s] = -1;
      this.writeSlot(s, 0, 0, 0, 0);
    } else {
      this.overflow.delete(keyString(this.keyOf(id)));
      const g = (hash % this.groupCount) | 0;
      const at = (this.indexOffset + g * GROUP_BYTES + GROUP_OVERFLOW) | 0;
      this.view.setUint32(at, --this.mirror[g * MIRROR_STRIDE + MIRROR_OVERFLOW]!, true);
    }
    if (this.lru) this.lruUnlink(id);
    this.offset[id] = -1;
    this.freeIds.push(id);
    this.count--;
  }

  /** A use (get or put): `id` becomes the most recent of its class. */
  touch(id: number): void {
    if (!this.lru) return;
    const c = this.cls[id]!;
    this.use[id] = ++this.useClock;
    if (this.lruHead[c] === id) return;
    this.lruUnlink(id);
    this.lruPush(id);
  }

  /** The least recently used id of class `cls`, or -1 when the class has none. */
  lruOf(cls: number): number {
    return this.lruTail[cls]!;
  }

  /** The least recently used id of all, or -1 when empty. */
  lruOldest(): number {
    let best = -1;
    for (let c = 0; c < MAX_CLASS_IDS; c++) {
      const t = this.lruTail[c]!;
      if (t >= 0 && (best < 0 || this.use[t]! < this.use[best]!)) best = t;
    }
    return best;
  }

  /** Calls fn for every live id (any order). */
  forEach(fn: (id: number) => void): void {
    for (let id = 0; id < this.highWater; id++) if (this.offset[id]! >= 0) fn(id);
  }

  /** Writes a slot: every field, then its crc (last, so a reader sees either the old or the new slot whole, or a crc mismatch). */
  private writeSlot(slot: number, hash: number, entryBytes: number, offset: number, version: number): void {
    const g = (slot / SLOTS_PER_GROUP) | 0;
    const i = slot - g * SLOTS_PER_GROUP;
    const at = (this.indexOffset + g * GROUP_BYTES + GROUP_HEADER_BYTES + i * SLOT_BYTES) | 0;
    // The crc is computed over a scratch copy of the fields (no view of the arena made per write).
    const sv = this.scratchView;
    sv.setUint32(SLOT_HASH, hash, true);
    sv.setUint32(SLOT_ENTRY_BYTES, entryBytes, true);
    setU64(sv, SLOT_ENTRY_OFFSET, offset);
    setU64(sv, SLOT_VERSION, version);
    const v = this.view;
    v.setUint32(at + SLOT_HASH, hash, true);
    v.setUint32(at + SLOT_ENTRY_BYTES, entryBytes, true);
    setU64(v, at + SLOT_ENTRY_OFFSET, offset);
    setU64(v, at + SLOT_VERSION, version);
    v.setUint32(at + SLOT_CRC, Bun.hash.crc32(this.scratch) >>> 0, true);
    this.mirror[g * MIRROR_STRIDE + i] = hash;
  }

  private newId(): number {
    const free = this.freeIds.pop();
    if (free !== undefined) return free;
    if (this.highWater === this.capacity) this.grow(this.capacity * 2);
    return this.highWater++;
  }

  private grow(n: number): void {
    const f64 = (a: Float64Array, fill: number) => {
      const b = new Float64Array(n).fill(fill);
      b.set(a);
      return b;
    };
    const i32 = (a: Int32Array) => {
      const b = new Int32Array(n).fill(-1);
      b.set(a);
      return b;
    };
    this.offset = i32(this.offset);
    this.version = f64(this.version, 0);
    this.use = f64(this.use, 0);
    const bytes = new Uint32Array(n);
    bytes.set(this.bytes);
    this.bytes = bytes;
    const cls = new Uint8Array(n);
    cls.set(this.cls);
    this.cls = cls;
    this.slot = i32(this.slot);
    this.prev = i32(this.prev);
    this.next = i32(this.next);
    this.capacity = n;
  }

  private lruPush(id: number): void {
    const c = this.cls[id]!;
    const head = this.lruHead[c]!;
    this.use[id] = ++this.useClock;
    this.prev[id] = -1;
    this.next[id] = head;
    if (head >= 0) this.prev[head] = id;
    else this.lruTail[c] = id;
    this.lruHead[c] = id;
  }

  private lruUnlink(id: number): void {
    const c = this.cls[id]!;
    const p = this.prev[id]!;
    const n = this.next[id]!;
    if (p >= 0) this.next[p] = n;
    else this.lruHead[c] = n;
    if (n >= 0) this.prev[n] = p;
    else this.lruTail[c] = p;
    this.prev[id] = -1;
    this.next[id] = -1;
  }
}

/** A binary key as a Map key (one char per byte); only the overflow path pays for it. */
function keyString(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1");
}
