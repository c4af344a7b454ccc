/**
 * A growable ring-buffer queue: O(1) push/shift without Array.shift's copying. The capacity is
 * a power of two, so positions wrap with a mask (no division on the hot path).
 * Example: const q = new Fifo<number>(); q.push(1); q.shift() === 1.
 * Threading: belongs to the thread that created it.
 */
export class Fifo<T> {
  private items: (T | undefined)[];
  private mask: number;
  private head = 0;
  private count = 0;

  /** `initialCapacity` is rounded up to a power of two. */
  constructor(initialCapacity = 64) {
    let cap = 1;
    while (cap < initialCapacity) cap <<= 1;
    this.items = new Array(cap).fill(undefined);
    this.mask = cap - 1;
  }

  get length(): number {
    return this.count;
  }

  push(item: T): void {
    if (this.count === this.items.length) this.grow();
    this.items[(this.head + this.count) & this.mask] = item;
    this.count++;
  }

  /** The oldest item, left in place. */
  peek(): T | undefined {
    return this.count === 0 ? undefined : this.items[this.head];
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    this.count--;
    return item;
  }

  /** Removes every item for which `drop(item)` is true, keeping the others in order; returns how many went. Not for the hot path (O(length)). */
  removeWhere(drop: (item: T) => boolean): number {
    let kept = 0;
    const n = this.count;
    for (let i = 0; i < n; i++) {
      const item = this.items[(this.head + i) & this.mask] as T;
      this.items[(this.head + i) & this.mask] = undefined;
      if (drop(item)) continue;
      this.items[(this.head + kept) & this.mask] = item;
      kept++;
    }
    this.count = kept;
    return n - kept;
  }

  private grow(): void {
    const next: (T | undefined)[] = new Array(this.items.length * 2).fill(undefined);
    for (let i = 0; i < this.count; i++) next[i] = this.items[(this.head + i) & this.mask];
    this.items = next;
    this.mask = next.length - 1;
    this.head = 0;
  }
}
