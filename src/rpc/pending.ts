/**
 * Pieces of the client kept apart from client.ts: the state of one convenient-path request
 * (PendingRequest) and the argument checks every entry point shares.
 *
 * Contract: the checks throw UsageError naming the argument and its value; they allocate only
 * when they throw. Example: checkSizes(conn, 1000, data, undefined) throws when data is too big.
 * Threading: the client's thread.
 */

import { UsageError } from "../errors.ts";
import { sendLimit, type Connection } from "../contract/transport.ts";
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
