/**
 * RoomRetry: runs a send loop again once the transport may have room, from a clean stack, at
 * most one retry scheduled at a time. What the client's waiting requests and cancels, a
 * stream's blocked sends and a session's reply backlog share.
 *
 * Contract: later() is for a transport that answered Full: where the connection's wait() runs
 * on the event loop it waits for room (or input) up to `waitMs`, else (spin / blocking modes,
 * whose wait() would hold the thread) a `timerMs` timer retries, so the event loop never
 * freezes. soon() retries in a microtask (room appeared: a slot was freed). `run` is called
 * with nothing scheduled; it may call later() / soon() again. The owner's thread.
 *
 * Example: const room = new RoomRetry(conn, () => this.pump(), 10, 10); ... if (full) room.later();
 */

import type { Connection } from "../contract/transport.ts";

export class RoomRetry {
  private scheduled = false;
  private readonly fire = () => {
    this.scheduled = false;
    this.run();
  };
  private readonly waitThenFire = () => {
    this.conn.wait(this.waitMs).then(this.fire);
  };

  constructor(
    private readonly conn: Connection,
    private readonly run: () => void,
    private readonly waitMs: number,
    private readonly timerMs: number,
  ) {}

  /** A retry is scheduled. */
  get pending(): boolean {
    return this.scheduled;
  }

  /** The transport was full: run again once it may have room. */
  later(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    if (this.conn.waitsOnEventLoop) queueMicrotask(this.waitThenFire);
    else setTimeout(this.fire, this.timerMs);
  }

  /** Run again in a microtask. */
  soon(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(this.fire);
  }
}
