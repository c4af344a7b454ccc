/**
 * SlotTable: the client's fixed table of call slots (its in-flight window). Every call and
 * every stream takes a slot; a call id is (slot, generation), and a slot's generation grows
 * each time it is issued, so a late or duplicated response can never complete a later call.
 *
 * Contract: allocSlot() returns a free slot with its next generation (never 0), or -1 when
 * the window is full; the subclass (Client) sets its state and frees it. The client's thread.
 *
 * Example: class Client extends SlotTable<U> { ... const slot = this.allocSlot(); ... }
 *
 * WaitLine: the client's line of requests and streams waiting for a slot (settled ones leave it).
 *
 * Also small pieces of the client's completion path: remoteErrorOf() (an ERROR body as a
 * RemoteError), settleRequest() (a request() settles once) and splitResponse() (a response
 * that carries metadata).
 */

import { RemoteError, UsageError } from "../errors.ts";
import { copyBytes } from "../bytes.ts";
import type { RxMessage } from "../contract/transport.ts";
import { METADATA_LEN_BYTES, decodeErrorBody, metadataEnd } from "./wire.ts";
import { decodeMetadata, type Metadata } from "./metadata.ts";
import { OwnedMessage } from "./completions.ts";
import type { DeadlineQueue, PendingRequest, SlotOwner } from "./pending.ts";

export const DEFAULT_WINDOW = 256;
/** Slot indexes travel as u32, but the server indexes per-slot state by them: keep it modest. */
export const MAX_WINDOW = 1 << 16;

export const SLOT_FREE = 0;
export const SLOT_CALLBACK = 1;
export const SLOT_PROMISE = 2;
export const SLOT_DONE = 3; // completed, waiting in the completion queue for poll()
export const SLOT_CANCELLING = 4; // abandoned (timeout, abort): not reissued until its cancel went out (CancelQueue)
export const SLOT_STREAM = 5; // held by a SlotOwner (a stream): its frames go to owners[slot]

export class SlotTable<U> {
  readonly window: number;
  protected readonly gen: Uint32Array;
  protected readonly state: Uint8Array;
  protected readonly userData: (U | undefined)[];
  protected readonly pending: (PendingRequest | undefined)[];
  protected readonly owners: (SlotOwner | undefined)[];
  protected readonly freeSlots: Int32Array;
  protected freeTop: number;

  constructor(window: number) {
    if (!Number.isInteger(window) || window < 1 || window > MAX_WINDOW) throw new UsageError(`client window ${window} must be an integer in 1..${MAX_WINDOW}`);
    this.window = window;
    this.gen = new Uint32Array(window);
    this.state = new Uint8Array(window);
    this.userData = new Array(window).fill(undefined);
    this.pending = new Array(window).fill(undefined);
    this.owners = new Array(window).fill(undefined);
    this.freeSlots = new Int32Array(window);
    for (let i = 0; i < window; i++) this.freeSlots[i] = window - 1 - i;
    this.freeTop = window;
  }

  /** Calls in flight (sent, not yet delivered; abandoned ones until their cancel went out), open streams included. */
  get inFlight(): number {
    return this.window - this.freeTop;
  }

  /** A free slot with its next generation, or -1 when the window is full. */
  protected allocSlot(): number {
    if (this.freeTop === 0) return -1;
    const slot = this.freeSlots[--this.freeTop]!;
    // Generations start at 1; 0 is never issued, so a response with generation 0 is bogus.
    this.gen[slot] = (this.gen[slot]! + 1) >>> 0 || 1;
    return slot;
  }

  /** A free slot held by `owner` (a stream: SLOT_STREAM), or -1 when the window is full. */
  protected streamSlot(owner: SlotOwner): number {
    const slot = this.allocSlot();
    if (slot >= 0) {
      this.state[slot] = SLOT_STREAM;
      this.owners[slot] = owner;
    }
    return slot;
  }
}

/** The RemoteError an ERROR body (wire.ts JSON) stands for; ProtocolError when it is malformed. */
export function remoteErrorOf(body: Uint8Array): RemoteError {
  const { name, message } = decodeErrorBody(body);
  return new RemoteError(name, message);
}

/** Settles a request() once: its deadline and abort listener go, then its promise resolves or rejects. */
export function settleRequest(p: PendingRequest, deadlines: DeadlineQueue, value: Uint8Array | null, error: Error | null): void {
  if (p.done) return;
  p.done = true;
  if (p.heapIndex >= 0) deadlines.remove(p);
  if (p.listening) p.signal!.removeEventListener("abort", p);
  if (error) p.reject(error);
  else p.resolve(value!);
}

/**
 * A response whose kind has KIND_FLAG_METADATA: its data as a message the client owns (a copy;
 * `msg` is released) and its metadata when `wanted` (else null, not decoded). ProtocolError,
 * with `msg` kept, when the metadata is malformed. Cold path: allocates.
 */
export function splitResponse(msg: RxMessage, wanted: boolean): { msg: RxMessage; md: Metadata | null } {
  const body = msg.body;
  const end = metadataEnd(body);
  const md = wanted ? decodeMetadata(body.subarray(METADATA_LEN_BYTES, end)) : null;
  const own = new OwnedMessage(copyBytes(body.subarray(end)));
  msg.release();
  return { msg: own, md };
}

/**
 * The client's line of requests and streams waiting for a slot or room, first come first
 * served. An entry that settles while in line says so (left()); once more than half of the line
 * has left, the line drops them, so abandoned entries (and the copies they hold) cannot pile up
 * behind a full window. `alive(entry)` tells the ones still waiting. The client's thread.
 */
export class WaitLine<T> {
  private items: T[] = [];
  private gone = 0;

  constructor(private readonly alive: (entry: T) => boolean) {}

  get length(): number {
    return this.items.length;
  }
  peek(): T | undefined {
    return this.items[0];
  }
  push(entry: T): void {
    this.items.push(entry);
  }
  /** Removes `entry` if it is first (a left() while it was served may have removed it already). */
  shiftIf(entry: T): void {
    if (this.items[0] !== entry) return;
    this.items.shift();
    if (!this.alive(entry) && this.gone > 0) this.gone--;
  }
  /** An entry in line settled (it stays until its turn or a compaction). */
  left(): void {
    if (++this.gone * 2 <= this.items.length) return;
    this.items = this.items.filter(this.alive);
    this.gone = 0;
  }
  /** Empties the line (the client closed): the entries, in order. */
  takeAll(): T[] {
    const all = this.items;
    this.items = [];
    this.gone = 0;
    return all;
  }
}
