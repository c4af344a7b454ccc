/**
 * Server-side failure reports: what `ServerOptions.onError` receives, and the default that
 * runs without one (one line to stderr per failure, rate-limited).
 *
 * Sources, each with its own context shape (narrow on `ctx.source`):
 * - "handler":   a handler threw or rejected (the caller got a RemoteError).
 * - "return":    a handler returned something that is not bytes (HandlerReturnError).
 * - "onRequest": an onRequest callback threw (the call got an error response).
 * - "session":   a session ended with an error other than the peer going away: a ProtocolError
 *                (malformed frame, a peer that does not read its replies), a native failure.
 *                A session the peer closed, or one a configured limit closed (idle, slow
 *                consumer: TransportClosedError), is not a failure; onSessionClose sees those.
 * - "refused":   a listener of serve() turned a peer away (AuthError, ProtocolError, busy).
 *
 * Example:
 *   serve(url, handlers, { onError(err, ctx) {
 *     if (ctx.source === "refused") metrics.refused(ctx.reason); else log(ctx.source, ctx.method, err);
 *   } });
 */

import { describeThrown } from "../errors.ts";
import type { Listener, RefusalReason } from "../contract/transport.ts";
import type { ServerSession } from "./server.ts";

/** Where a server-side failure came from (see the module comment). */
export type ServerErrorSource = "handler" | "return" | "onRequest" | "session" | "refused";

/** A failure of one request: its method and the session it came on. */
export interface RequestErrorContext {
  source: "handler" | "return" | "onRequest";
  method: number;
  session: ServerSession;
}

/** A session that ended with an error (not one request's failure: `method` is null). */
export interface SessionErrorContext {
  source: "session";
  method: null;
  session: ServerSession;
}

/** A peer the listener refused before any session began. */
export interface RefusedErrorContext {
  source: "refused";
  method: null;
  session: null;
  reason: RefusalReason;
  listener: Listener;
}

export type ServerErrorContext = RequestErrorContext | SessionErrorContext | RefusedErrorContext;

/**
 * Lines the default report prints per window: a new failure shows at once, while a handler
 * that fails on every call can neither flood the log nor slow the server down with writes.
 */
export const REPORT_LINES_PER_WINDOW = 10;
/** The rate limit's window; failures beyond the limit in it are counted and summed up once it ends. */
export const REPORT_WINDOW_MS = 1000;

const PREFIX = "hotpath server: ";

/** The one line the default report prints for a failure. Never throws. */
export function describeFailure(error: unknown, ctx: ServerErrorContext): string {
  const what = describeThrown(error, true);
  switch (ctx.source) {
    case "handler":
      return `hotpath server: method ${ctx.method} from ${peerOf(ctx.session)}: the handler threw ${what}`;
    case "return":
      return `hotpath server: method ${ctx.method} from ${peerOf(ctx.session)}: ${what}`;
    case "onRequest":
      return `hotpath server: method ${ctx.method} from ${peerOf(ctx.session)}: onRequest threw ${what}`;
    case "session":
      return `hotpath server: the session with ${peerOf(ctx.session)} ended: ${what}`;
    case "refused":
      return `hotpath server: ${ctx.listener.transport} listener refused a peer (${ctx.reason}): ${what}`;
  }
}

function peerOf(session: ServerSession): string {
  try {
    return session.conn.peer;
  } catch {
    return "a peer";
  }
}

/**
 * Prints at most REPORT_LINES_PER_WINDOW lines per REPORT_WINDOW_MS and then one summary line
 * with how many were left out and the last of them, when the window ends (an unref'd timer: it
 * never keeps a process alive) or at flush(). One per Server; the server's thread only.
 */
export class RateLimitedLog {
  private windowStart = -Infinity;
  private printed = 0;
  private suppressed = 0;
  private lastSuppressed = "";
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly write: (line: string) => void = (line) => console.error(line)) {}

  /** Prints `line` now, or counts it for the summary when this window's lines are spent. */
  line(line: string): void {
    const now = performance.now();
    if (now - this.windowStart >= REPORT_WINDOW_MS) {
      this.flush();
      this.windowStart = now;
      this.printed = 0;
    }
    if (this.printed < REPORT_LINES_PER_WINDOW) {
      this.printed++;
      this.write(line);
      return;
    }
    this.suppressed++;
    this.lastSuppressed = line.startsWith(PREFIX) ? line.slice(PREFIX.length) : line;
    if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, Math.max(0, this.windowStart + REPORT_WINDOW_MS - now));
      this.timer.unref?.();
    }
  }

  /** Prints the summary of lines left out so far, if any. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.suppressed === 0) return;
    const n = this.suppressed;
    this.suppressed = 0;
    this.write(`hotpath server: ${n} more failure${n === 1 ? "" : "s"} not printed (at most ${REPORT_LINES_PER_WINDOW} lines per ${REPORT_WINDOW_MS} ms; pass onError to see each); the last: ${this.lastSuppressed}`);
  }
}
