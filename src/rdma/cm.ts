/**
 * rdma_cm's event channel for one thread (control path): one RdmaEventChannel shared by every
 * cm-mode connect and listener of the thread, its events dispatched by id. An id's events go to
 * its CmSession (an inbox a connect or handshake awaits with next(), then `onEvent` once the
 * connection is open); a CONNECT_REQUEST goes to the listener of its listen id.
 *
 * Waiting: the channel's fd is watched by an fd waiter of its own (fd-waiter.ts: a helper thread
 * in poll(), level-triggered), which exists before any runtime does (a client resolving its
 * address, a listener with no connection yet) and outlives them; CmSession.next() also drains
 * the channel before it waits, so an event queued at once (the software fixture answers inside
 * the resolve calls) costs no round trip through the helper. No busy polling, no polling timer.
 *
 * Lifetime: acquire() / release() count users (connects under way, listeners, open
 * connections); the last release stops the waiter, destroys the ids left and closes the channel
 * (then the contexts it lent: every runtime made on them must be released first, which holds
 * when each user releases its runtime before the channel). While it has users the channel keeps
 * the process alive (a keep-alive timer that never fires), as a socket does.
 *
 * Stale events: an id is destroyed only after its queued events were taken from the channel and
 * dropped (destroyId), so no event names freed memory; a CONNECT_REQUEST for a listener that is
 * gone is rejected and its id destroyed.
 *
 * Example:
 *   const cm = CmChannel.acquire();
 *   const s = cm.session();
 *   s.id.resolveAddr("10.0.0.2", 7471, 2000);
 *   const ev = await s.next(2000);        // ADDR_RESOLVED, or null after 2 s
 *   s.close(); cm.release();
 *
 * Threading: the JS thread that acquired it; every callback runs there, from the event loop.
 */

import { describeThrown } from "../errors.ts";
import { RdmaEventChannel, type RdmaCmEvent, type RdmaCmId } from "../ffi/rdmacm.ts";
import { RDMA } from "../ffi/verbs-layout.ts";
import { FdWaiter } from "./fd-waiter.ts";

/** The keep-alive timer's period: it never needs to fire, only to exist (below setTimeout's 2^31 ms limit). */
const KEEP_ALIVE_MS = 1 << 30;

/** One id's events. Owner: the connect or listener that made it; closed through close(). */
export class CmSession {
  private readonly inbox: RdmaCmEvent[] = [];
  private wake: (() => void) | null = null;
  private closed = false;
  private handler: ((ev: RdmaCmEvent) => void) | null = null;

  constructor(
    private readonly cm: CmChannel,
    readonly id: RdmaCmId,
  ) {}

  /**
   * Once set, events go here (in order) instead of the inbox (an open connection's
   * DISCONNECTED). Setting it first hands it what the inbox holds, in order: an event that came
   * with or right after the one next() returned (a DISCONNECTED behind ESTABLISHED) is not lost.
   */
  get onEvent(): ((ev: RdmaCmEvent) => void) | null {
    return this.handler;
  }
  set onEvent(h: ((ev: RdmaCmEvent) => void) | null) {
    this.handler = h;
    while (h !== null && this.handler === h && !this.closed && this.inbox.length > 0) h(this.inbox.shift()!);
  }

  /** @internal from the channel's dispatch. */
  deliver(ev: RdmaCmEvent): void {
    if (this.closed) return;
    if (this.handler !== null) {
      this.handler(ev);
      return;
    }
    this.inbox.push(ev);
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** The next event of this id, or null after `timeoutMs` (or once closed). Drains the channel first. */
  async next(timeoutMs: number): Promise<RdmaCmEvent | null> {
    this.cm.pump();
    if (this.inbox.length > 0) return this.inbox.shift()!;
    if (this.closed || timeoutMs <= 0) return null;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve();
      }, timeoutMs);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    return this.inbox.shift() ?? null;
  }

  /** Destroys the id (its QP with it), after dropping its queued events. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.inbox.length = 0;
    const w = this.wake;
    this.wake = null;
    w?.();
    this.cm.destroyId(this.id);
  }
}

let current: CmChannel | null = null;

/** The thread's rdma_cm event channel and its dispatch. Get it with acquire(); give it back with release(). */
export class CmChannel {
  readonly channel: RdmaEventChannel;
  private users = 0;
  private readonly sessions = new Map<number, CmSession>();
  private readonly listeners = new Map<number, (ev: RdmaCmEvent) => void>();
  private readonly queue: RdmaCmEvent[] = [];
  private dispatching = false;
  private readonly keepAlive: ReturnType<typeof setInterval>;
  private readonly waiter = new FdWaiter();

  private constructor() {
    this.channel = RdmaEventChannel.create();
    try {
      this.waiter.watch(this.channel.fd, () => this.pump());
    } catch (e) {
      this.waiter.stop();
      this.channel.close();
      throw e;
    }
    this.keepAlive = setInterval(() => {}, KEEP_ALIVE_MS);
  }

  /** This thread's channel (made on first use: RdmaUnavailableError when rdma_cm has no device), one more user. */
  static acquire(): CmChannel {
    current ??= new CmChannel();
    current.users++;
    return current;
  }

  /** One user fewer; the last closes the channel (see the module comment). */
  release(): void {
    if (--this.users > 0) return;
    if (current === this) current = null;
    clearInterval(this.keepAlive);
    this.waiter.stop();
    try {
      for (const s of [...this.sessions.values()]) s.close();
    } finally {
      this.channel.close();
    }
  }

  /** A new id and its session. */
  session(): CmSession {
    return this.adopt(this.channel.createId());
  }

  /** A session for an id a CONNECT_REQUEST brought. */
  adopt(id: RdmaCmId): CmSession {
    const s = new CmSession(this, id);
    this.sessions.set(id.handle, s);
    return s;
  }

  /** CONNECT_REQUESTs to the listening id `id` go to `onRequest` (its own events are dropped). */
  listen(id: RdmaCmId, onRequest: (ev: RdmaCmEvent) => void): void {
    this.listeners.set(id.handle, onRequest);
  }

  /** Takes every pending event off the channel into the queue. */
  private collect(): void {
    if (this.channel.handle === 0) return;
    for (;;) {
      const ev = this.channel.tryGetEvent();
      if (ev === null) return;
      this.queue.push(ev);
    }
  }

  /** Drains the channel and dispatches its events in order (re-entrant calls only collect). */
  pump(): void {
    this.collect();
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      for (let ev = this.queue.shift(); ev !== undefined; ev = this.queue.shift()) {
        try {
          this.dispatch(ev);
        } catch (e) {
          console.error(`hotpath rdma: an rdma_cm event handler threw: ${describeThrown(e)}`);
        }
        this.collect();
      }
    } finally {
      this.dispatching = false;
    }
  }

  private dispatch(ev: RdmaCmEvent): void {
    if (ev.type === RDMA.RDMA_CM_EVENT_CONNECT_REQUEST) {
      const onRequest = ev.listenId === null ? undefined : this.listeners.get(ev.listenId.handle);
      if (onRequest !== undefined) return onRequest(ev);
      // Its listener is gone: turn the peer away and let go of the new id.
      try {
        ev.id.reject();
      } catch {
        // the peer learns it from the id's destruction instead
      }
      this.destroyId(ev.id);
      return;
    }
    const s = this.sessions.get(ev.id.handle);
    if (s !== undefined) return s.deliver(ev);
    if (this.listeners.has(ev.id.handle)) return;
    // No owner: an event for an id destroyed meanwhile (its memory is gone). Its wrapper was
    // made by tryGetEvent; a zero handle keeps the channel's close from destroying it again.
    ev.id.handle = 0;
  }

  /**
   * Destroys `id` (and its QP) after taking its queued events off the channel and dropping them;
   * for a listening id, the connect requests queued for it are rejected and destroyed too.
   */
  destroyId(id: RdmaCmId): void {
    if (id.handle === 0) return;
    const h = id.handle;
    this.collect();
    const orphans: RdmaCmId[] = [];
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const ev = this.queue[i]!;
      if (ev.id.handle === h) this.queue.splice(i, 1);
      else if (ev.type === RDMA.RDMA_CM_EVENT_CONNECT_REQUEST && ev.listenId?.handle === h) {
        this.queue.splice(i, 1);
        orphans.push(ev.id);
      }
    }
    this.sessions.delete(h);
    this.listeners.delete(h);
    for (const o of orphans) {
      try {
        o.reject();
      } catch {
        // destroying it tells the peer as well
      }
      this.destroyId(o);
    }
    id.close();
  }
}
