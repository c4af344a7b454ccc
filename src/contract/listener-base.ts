/**
 * What every Listener shares: the set of accepted connections, the onConnection callback (with
 * connections accepted before it was set handed over in order), the refusal counters and
 * callback, and close() / dispose. A transport's listener extends it, calls `accepted(conn)`
 * for each new connection, `refused(error, reason)` for each peer it turns away, `forget(conn)`
 * when one ends, and implements `stop()` for its own server socket.
 */

import { describeThrown, type HotpathError } from "../errors.ts";
import type { Connection, Listener, ListenerStats, RefusalReason } from "./transport.ts";

const STAT_OF: Record<RefusalReason, keyof ListenerStats> = { auth: "refusedAuth", protocol: "refusedProtocol", busy: "refusedBusy" };

export abstract class ListenerBase<C extends Connection> implements Listener {
  abstract readonly transport: string;
  abstract readonly url: string;
  protected readonly conns = new Set<C>();
  private callback: ((c: Connection) => void) | null = null;
  private readonly pending: C[] = [];
  private stopped = false;
  private refusedCallback: ((error: HotpathError, reason: RefusalReason) => void) | null = null;
  readonly stats: ListenerStats = { accepted: 0, refusedAuth: 0, refusedProtocol: 0, refusedBusy: 0 };

  /** Stops the transport's server socket; `closeActive` asks it to drop open sockets too. */
  protected abstract stop(closeActive: boolean): void;

  protected accepted(conn: C): void {
    this.stats.accepted++;
    this.conns.add(conn);
    if (this.callback) this.callback(conn);
    else this.pending.push(conn);
  }

  protected forget(conn: C): void {
    this.conns.delete(conn);
  }

  /** Counts a refused peer and reports it to onRefused (a throwing callback is printed, never propagated). */
  protected refused(error: HotpathError, reason: RefusalReason): void {
    this.stats[STAT_OF[reason]]++;
    if (!this.refusedCallback) return;
    try {
      this.refusedCallback(error, reason);
    } catch (e) {
      console.error(`hotpath ${this.transport} listener ${this.url}: onRefused threw: ${describeThrown(e)}`);
    }
  }

  onRefused(cb: (error: HotpathError, reason: RefusalReason) => void): void {
    this.refusedCallback = cb;
  }

  onConnection(cb: (conn: Connection) => void): void {
    this.callback = cb;
    for (const c of this.pending.splice(0)) cb(c);
  }

  close(closeConnections = false): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stop(closeConnections);
    if (closeConnections) for (const c of this.conns) c.close();
    this.conns.clear();
  }

  [Symbol.dispose](): void {
    this.close(true);
  }
}
