/**
 * RoomQueue: the streams of one connection whose frames met a full transport, retried in the
 * order they blocked (FIFO per connection) once it may have room (room.ts RoomRetry).
 *
 * Contract: a member's pump() sends what it can and returns false when the transport is full
 * again (it stays first in line); true when it has nothing left that needs room (it may still
 * wait for credit, which is not this queue's business). The owner's thread.
 *
 * Example: if (!s.pump()) queue.wait(s);
 */

import type { Connection } from "../../contract/transport.ts";
import { Fifo } from "../fifo.ts";
import { RoomRetry } from "../room.ts";

/** How long a blocked stream waits for room (event-loop modes) or sleeps (spin / blocking) before it looks again. */
const ROOM_RETRY_MS = 10;

export interface RoomMember {
  /** In a RoomQueue now (set by the queue). */
  queued: boolean;
  pump(): boolean;
}

export class RoomQueue {
  private readonly q = new Fifo<RoomMember>();
  private readonly room: RoomRetry;

  constructor(conn: Connection) {
    this.room = new RoomRetry(conn, () => this.run(), ROOM_RETRY_MS, ROOM_RETRY_MS);
  }

  /** Some member waits: a newcomer goes behind it, never past it. */
  get busy(): boolean {
    return this.q.length > 0;
  }

  wait(m: RoomMember): void {
    if (!m.queued) {
      m.queued = true;
      this.q.push(m);
    }
    this.room.later();
  }

  private run(): void {
    while (this.q.length > 0) {
      const m = this.q.peek()!;
      if (!m.pump()) return this.room.later();
      this.q.shift();
      m.queued = false;
    }
  }
}
