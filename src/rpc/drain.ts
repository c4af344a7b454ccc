/**
 * Graceful drain of a Server (server.drain(timeoutMs)): the listeners close, every session
 * whose client understands GOAWAY gets one (wire.ts), requests keep being served (a client
 * may not have seen GOAWAY yet), and the drain resolves once every session has closed, or
 * after timeoutMs, when what is left is closed and its calls are cut (their clients fail
 * them with TransportClosedError).
 *
 * Who closes a session: a GOAWAY-aware client closes its own connection once it has nothing
 * in flight (so no request can be on the wire when the connection goes); a session whose
 * client never announced GOAWAY is closed by the server as soon as it has no call in flight
 * and no reply waiting.
 *
 *   const { sessions, callsFinished, callsCut } = await server.drain(5000);
 *
 * Threading: the server's thread.
 */

/** What a drain needs of a session (ServerSession; structural, so server.ts and this file import no circle). */
export interface DrainSession {
  readonly knowsGoaway: boolean;
  readonly inFlight: number;
  readonly backlogLength: number;
  readonly conn: { readonly closed: boolean; close(): void };
  sendGoaway(): void;
}

/** What a drain needs of its Server. */
export interface DrainServer {
  readonly sessions: ReadonlySet<DrainSession>;
  close(): void;
}

/** What a drain did: sessions it found, calls answered (or dropped) during it, calls cut at the timeout. */
export interface DrainResult {
  sessions: number;
  callsFinished: number;
  callsCut: number;
}

/** One drain in progress (Server.drain() makes it; at most one per server). */
export class Drain {
  readonly done: Promise<DrainResult>;
  private resolve!: (r: DrainResult) => void;
  private readonly sessions: number;
  private finished = 0;
  private cut = 0;
  private over = false;
  private readonly timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly server: DrainServer,
    timeoutMs: number,
  ) {
    this.done = new Promise((r) => (this.resolve = r));
    this.sessions = server.sessions.size;
    for (const s of [...server.sessions]) this.adopt(s);
    this.timer = Number.isFinite(timeoutMs) ? setTimeout(() => this.timeout(), timeoutMs) : undefined;
    this.sessionClosed();
  }

  /** A session to drain: GOAWAY if its client understands it, then closed once idle. */
  adopt(s: DrainSession): void {
    this.check(s);
  }

  /** A call of a session finished (replied or dropped) while draining. */
  callDone(s: DrainSession): void {
    if (this.over) return;
    this.finished++;
    this.check(s);
  }

  /** Sends GOAWAY where not yet sent; closes a session the server itself must close (client unaware of GOAWAY) once idle. */
  check(s: DrainSession): void {
    if (this.over) return;
    s.sendGoaway(); // again, where the transport was full before (it sends once)
    if (s.knowsGoaway || s.inFlight > 0 || s.backlogLength > 0 || s.conn.closed) return;
    s.conn.close();
  }

  /** A session ended: the drain is over when none is left. */
  sessionClosed(): void {
    if (!this.over && this.server.sessions.size === 0) this.finish();
  }

  private timeout(): void {
    if (this.over) return;
    for (const s of this.server.sessions) this.cut += s.inFlight;
    this.finish();
  }

  private finish(): void {
    this.over = true;
    clearTimeout(this.timer);
    this.server.close();
    this.resolve({ sessions: this.sessions, callsFinished: this.finished, callsCut: this.cut });
  }
}
