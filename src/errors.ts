/**
 * hotpath's error types: one base (`HotpathError`, with a stable `code`) and subclasses by
 * blast radius. Every layer imports from here, so this file imports nothing.
 *
 * - UsageError: the caller broke an API rule (bad argument, second reply). Fix the caller.
 * - NativeError: a native call failed; carries the operation and errno / status.
 * - TransportClosedError: the connection is gone; every pending call on it rejects with it.
 * - ProtocolError: the peer sent a malformed or oversized frame; that connection is aborted.
 * - RemoteError: the remote handler threw; carries the remote error's name and message.
 * - TimeoutError: a deadline passed (connect, request).
 * - CancelledError: the caller aborted a request through its AbortSignal.
 * - TransportUnavailableError (and per-transport subclasses): the transport cannot run here.
 * - AuthError (a ConnectError): the peer was refused for who it is (wrong or missing token, a
 *   uid the listener does not admit, a server that is not the expected uid or cannot prove the token).
 *
 * Example:
 *   try { await client.request(1, data, { timeoutMs: 50 }) }
 *   catch (e) { if (e instanceof TimeoutError) retry() }
 */

export class HotpathError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return this.constructor.name;
  }
}

export class UsageError extends HotpathError {
  constructor(message: string) {
    super("E_USAGE", message);
  }
}

export class NativeError extends HotpathError {
  readonly operation: string;
  readonly errno: number;
  constructor(operation: string, errno: number, detail: string) {
    super("E_NATIVE", `${operation} failed: ${detail} (errno ${errno})`);
    this.operation = operation;
    this.errno = errno;
  }
}

export class TransportClosedError extends HotpathError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_CLOSED", message, options);
  }
}

export class ProtocolError extends HotpathError {
  constructor(message: string) {
    super("E_PROTOCOL", message);
  }
}

/**
 * A message larger than the receiving side accepts: it was skipped and only its call failed
 * (the connection goes on). A server's refusal arrives as RemoteError("MessageTooLargeError").
 */
export class MessageTooLargeError extends HotpathError {
  constructor(message: string) {
    super("E_TOO_LARGE", message);
  }
}

export class TimeoutError extends HotpathError {
  constructor(message: string) {
    super("E_TIMEOUT", message);
  }
}

export class CancelledError extends HotpathError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_CANCELLED", message, options);
  }
}

export class ConnectError extends HotpathError {
  constructor(message: string, options?: { cause?: unknown }, code = "E_CONNECT") {
    super(code, message, options);
  }
}

/**
 * A connection refused for who the peer is, on either side: a wrong or missing token, a uid or
 * gid the listener does not admit, a listener that runs as another uid than `expectUid`, or a
 * server that could not prove it knows the token. A listener reports its own refusals as
 * AuthError through `Listener.onRefused` and counts them in `stats.refusedAuth`.
 */
export class AuthError extends ConnectError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options, "E_AUTH");
  }
}

export class TransportUnavailableError extends HotpathError {
  readonly transport: string;
  constructor(transport: string, reason: string) {
    super("E_UNAVAILABLE", `${transport} transport unavailable: ${reason}`);
    this.transport = transport;
  }
}

export class UcxUnavailableError extends TransportUnavailableError {
  constructor(reason: string) {
    super("ucx", reason);
  }
}

export class RdmaUnavailableError extends TransportUnavailableError {
  constructor(reason: string) {
    super("rdma", reason);
  }
}

/**
 * Error names a remote peer may report. The wire carries a name string; it is looked up here,
 * in an object with a null prototype, so a name such as "constructor" or "__proto__" can never
 * reach an inherited property. Unknown names come back as "Error".
 */
const REMOTE_NAMES: Record<string, string> = Object.assign(Object.create(null), {
  Error: "Error",
  TypeError: "TypeError",
  RangeError: "RangeError",
  SyntaxError: "SyntaxError",
  ReferenceError: "ReferenceError",
  HotpathError: "HotpathError",
  UsageError: "UsageError",
  TimeoutError: "TimeoutError",
  CancelledError: "CancelledError",
  UnknownMethodError: "UnknownMethodError",
  DecodeError: "DecodeError",
  HandlerReturnError: "HandlerReturnError",
  MessageTooLargeError: "MessageTooLargeError",
  ServerBusyError: "ServerBusyError",
});

export function allowedRemoteName(name: string): string {
  return REMOTE_NAMES[name] ?? "Error";
}

export class RemoteError extends HotpathError {
  /** The remote error's class name, passed through the allow-list above. */
  readonly remoteName: string;
  constructor(remoteName: string, message: string) {
    const name = allowedRemoteName(remoteName);
    super(name === "UnknownMethodError" ? "E_UNKNOWN_METHOD" : "E_REMOTE", `${name}: ${message}`);
    this.remoteName = name;
  }
}

/**
 * A short text for any thrown value, for error messages; never throws itself (values that are
 * not Errors, null-prototype objects, Errors whose name or message getters throw, Proxies).
 * `withName` puts the error's name first ("TypeError: ...").
 */
export function describeThrown(e: unknown, withName = false): string {
  try {
    if (e instanceof Error) return withName ? `${String(e.name)}: ${String(e.message)}` : String(e.message);
    return String(e);
  } catch {
    try {
      return Object.prototype.toString.call(e);
    } catch {
      return "(a value that cannot be described)";
    }
  }
}
