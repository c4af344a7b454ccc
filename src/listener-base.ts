/**
 * What every Listener shares: the set of accepted connections, the onConnection callback (with
 * connections accepted before it was set handed over in order), and close() / dispose. A
 * transport's listener extends it, calls `accepted(conn)` for each new connection and
 * `forget(conn)` when one ends, and implements `stop()` for its own server socket.
 */

import type { Connection, Listener } from "./transport/transport.ts";

export abstract class ListenerBase<C extends Connection> implements Listener {
  abstract readonly transport: string;
  abstract readonly url: string;
  protected readonly conns = new Set<C>();
  private callback: ((c: Connection) => void) | null = null;
  private readonly pending: C[] = [];
  private stopped = false;

  /** Stops the transport's server socket; `closeActive` asks it to drop open sockets too. */
  protected abstract stop(closeActive: boolean): void;

  protected accepted(conn: C): void {
    this.conns.add(conn);
    if (this.callback) this.callback(conn);
    else this.pending.push(conn);
  }

  protected forget(conn: C): void {
    this.conns.delete(conn);
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
