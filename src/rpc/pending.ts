/**
 * Pieces of the client kept apart from client.ts: the state of one convenient-path request
 * (PendingRequest) and the argument checks every entry point shares.
 *
 * Contract: the checks throw UsageError naming the argument and its value; they allocate only
 * when they throw. Example: checkSizes(conn, 1000, data, undefined) throws when data is too big.
 * Threading: the client's thread.
 */

import { UsageError, type HotpathError } from "../errors.ts";
import { SEND_FULL, sendLimit, type Connection } from "../contract/transport.ts";
import { EMPTY_BYTES } from "../bytes.ts";
import { GOAWAY_HELLO_METHOD, KIND_CANCEL, WIRE_HEADER_BYTES, writeWireHeader } from "./wire.ts";
import { checkBytes, checkMethod, describeValue } from "./validate.ts";

/** One request() in flight or waiting for room: its promise, deadline timer and abort hook. */
export class PendingRequest {
  slot = -1;
  done = false;
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  onAbort: (() => void) | undefined = undefined;
  constructor(
    readonly method: number,
    public data: Uint8Array,
    public appHeader: Uint8Array | undefined,
    readonly signal: AbortSignal | undefined,
    readonly resolve: (v: Uint8Array) => void,
    readonly reject: (e: Error) => void,
  ) {}
}

/** setTimeout's largest delay (a signed 32-bit ms count); longer deadlines re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A deadline timer for `p` at time `at`; one longer than setTimeout allows fires early and re-arms for the rest. */
export function armDeadline(p: PendingRequest, at: number, timeoutMs: number, onTimeout: (p: PendingRequest, timeoutMs: number) => void): void {
  const left = at - performance.now();
  p.timer = setTimeout(() => {
    if (p.done) return;
    if (at - performance.now() > 1) return armDeadline(p, at, timeoutMs, onTimeout);
    onTimeout(p, timeoutMs);
  }, Math.min(Math.max(0, left), MAX_TIMER_MS));
}

/**
 * Tells the server this client understands GOAWAY (wire.ts: a CANCEL with generation 0 and
 * GOAWAY_HELLO_METHOD). Returns false when the transport is full (nothing sent). Own head
 * bytes: a send of the client may be under way on its header buffer. The client's thread.
 */
export function announceGoaway(conn: Connection): boolean {
  const head = new Uint8Array(WIRE_HEADER_BYTES);
  writeWireHeader(head, KIND_CANCEL, GOAWAY_HELLO_METHOD, 0, 0, 0, 0);
  return conn.trySend(head, EMPTY_BYTES) !== SEND_FULL;
}

/** UsageError unless method is a u32, data a Uint8Array and appHeader (if given) one too. */
export function checkArgs(method: number, data: unknown, appHeader: unknown, what: string): void {
  checkMethod(method, what);
  checkBytes(data, what);
  if (appHeader !== undefined && !(appHeader instanceof Uint8Array)) throw new UsageError(`${what}: appHeader must be a Uint8Array, got ${describeValue(appHeader)}`);
}

/** UsageError when data exceeds the connection's send limit or appHeader `appHeaderLimit`. */
export function checkSizes(conn: Connection, appHeaderLimit: number, data: Uint8Array, appHeader: Uint8Array | undefined): void {
  const caps = conn.caps;
  if (data.length > sendLimit(caps)) {
    throw new UsageError(
      `rpc: ${data.length} bytes of data exceed the limit of ${sendLimit(caps)} bytes on ${conn.transport} (this side's maxMessageBytes ${caps.maxMessageBytes}, the peer's ${caps.peerMaxMessageBytes})`,
    );
  }
  if (appHeader && appHeader.length > appHeaderLimit) {
    throw new UsageError(`rpc: application header of ${appHeader.length} bytes exceeds ${appHeaderLimit} on ${conn.transport}`);
  }
}

export interface ClientOptions {
  /** Calls in flight at most (slots). Default 256. */
  window?: number;
  /** Deadline for request() when the call gives none, in ms ≥ 0. Default 30000; 0 or Infinity means none. */
  timeoutMs?: number;
}

export interface RequestOptions {
  /**
   * Rejects with TimeoutError after this long (and tells the server to cancel): ms ≥ 0, any
   * length (long deadlines re-arm their timer). 0 or Infinity: no deadline.
   */
  timeoutMs?: number;
  /** Aborting rejects with CancelledError and sends a cancel to the server. */
  signal?: AbortSignal;
  /** Fixed application header sent apart from the data. */
  appHeader?: Uint8Array;
}

/** Hot-path completion: `data` is valid only during the call; `error` is set for failed calls. */
export type OnResponse<U> = (userData: U, data: Uint8Array, error: HotpathError | null) => void;

