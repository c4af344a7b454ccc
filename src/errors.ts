/**
 * hotpath's error types: one base (`HotpathError`, with a stable `code`) and subclasses by
 * blast radius. Every layer imports from here, so this file imports nothing.
 *
 * - UsageError: the caller broke an API rule (bad argument, second reply). Fix the caller.
 * - NativeError: a native call failed; carries the operation and errno / status.
 * - TransportClosedError: the connection is gone; every pending call on it rejects with it.
 * - ProtocolError: the peer sent a malformed or oversized frame; that connection is aborted.
 * - RemoteError: the remote handler threw; carries the remote error's name and message. A name
 *   registered with registerError() is rebuilt as the application's own class on the caller.
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
 * reach an inherited property. Unknown names come back as "Error". registerError() adds names.
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
const BUILT_IN_NAMES = new Set(Object.keys(REMOTE_NAMES));

/** The name as it may be registered: an identifier, short enough to read in a log line. */
const REGISTERED_NAME = /^[A-Za-z_$][A-Za-z0-9_$]{0,127}$/;

type ErrorClass = abstract new (...args: any[]) => Error;

interface Registration {
  readonly name: string;
  readonly cls: ErrorClass;
  readonly rebuild: ((message: string) => Error) | undefined;
}

const registeredByName = new Map<string, Registration>();
const registeredByClass = new Map<Function, Registration>();
/** Errors built by rebuildRemoteError(): RemoteError's instanceof admits them. */
const rebuilt = new WeakSet<object>();

/** A name from the wire as RemoteError carries it: a built-in or registered name, else "Error". Any thread. */
export function allowedRemoteName(name: string): string {
  return REMOTE_NAMES[name] ?? "Error";
}

export interface RegisterErrorOptions {
  /** The name it travels under. Default: the class's name (set this where a bundler renames classes). */
  name?: string;
  /** Builds the caller's instance from the remote message. Default: `new cls(message)`. */
  rebuild?: (message: string) => Error;
}

/**
 * Registers an application error class, so that a remote handler's `throw new MyError(msg)`
 * rejects the caller's request() (and typed service methods) with an instance of MyError:
 * `e instanceof MyError`, `e.message` the remote message, `e.remoteName` "MyError", `e.cause`
 * the RemoteError, and `e instanceof RemoteError` still true. Only the caller needs to register;
 * a server sends its error's name (its class name when `name` is the inherited "Error"), and a
 * server that registers the class sends the registered name. The wire carries only the name and
 * the message: fields a constructor sets from other arguments are not carried (give `rebuild`
 * for a constructor that does not take the message first). Registering the same class again is
 * harmless; UsageError for a class that does not extend Error, a name already taken by another
 * class or a built-in one, or a name that is not an identifier. Process-wide; call at startup,
 * from any thread (each thread has its own registry).
 */
export function registerError(cls: ErrorClass, opts: RegisterErrorOptions = {}): void {
  if (typeof cls !== "function" || !(cls.prototype instanceof Error)) {
    throw new UsageError(`registerError: ${typeof cls === "function" ? `class ${cls.name || "(anonymous)"}` : `a ${typeof cls}`} does not extend Error`);
  }
  const name = opts.name ?? cls.name;
  if (typeof name !== "string" || !REGISTERED_NAME.test(name) || name in Object.prototype) {
    throw new UsageError(`registerError: name ${JSON.stringify(name)} must be an identifier of 1 to 128 characters (and not an Object property)`);
  }
  if (opts.rebuild !== undefined && typeof opts.rebuild !== "function") throw new UsageError("registerError: rebuild must be a function (message) => Error");
  if (BUILT_IN_NAMES.has(name)) throw new UsageError(`registerError: "${name}" is a built-in error name`);
  const known = registeredByName.get(name);
  if (known !== undefined && known.cls !== cls) throw new UsageError(`registerError: "${name}" is already registered for another class`);
  const old = registeredByClass.get(cls);
  if (old !== undefined && old.name !== name) unregisterError(cls);
  const reg: Registration = { name, cls, rebuild: opts.rebuild };
  registeredByName.set(name, reg);
  registeredByClass.set(cls, reg);
  REMOTE_NAMES[name] = name;
}

/** Undoes registerError() (for tests and plugins); true when the class was registered. Same thread rule. */
export function unregisterError(cls: ErrorClass): boolean {
  const reg = registeredByClass.get(cls);
  if (reg === undefined) return false;
  registeredByClass.delete(cls);
  registeredByName.delete(reg.name);
  delete REMOTE_NAMES[reg.name];
  return true;
}

/**
 * The name a server sends for a thrown value: the registered name of its class, else its
 * `name`, else (when `name` is the inherited "Error") its class name; "Error" for values that
 * are not Errors or cannot be inspected. Never throws.
 */
export function errorNameOf(e: unknown): string {
  try {
    if (!(e instanceof Error)) return "Error";
    const ctor = (e as { constructor?: unknown }).constructor;
    const reg = typeof ctor === "function" ? registeredByClass.get(ctor) : undefined;
    if (reg !== undefined) return reg.name;
    const name = String(e.name);
    if (name !== "Error") return name;
    const ctorName = typeof ctor === "function" ? ctor.name : "";
    return typeof ctorName === "string" && ctorName !== "" ? ctorName : name;
  } catch {
    return "Error";
  }
}

export class RemoteError extends HotpathError {
  /** The remote error's class name, passed through the allow-list above. */
  readonly remoteName: string;
  /** The remote error's message as it was thrown (`message` is prefixed with the name). */
  readonly remoteMessage: string;
  constructor(remoteName: string, message: string) {
    const name = allowedRemoteName(remoteName);
    super(name === "UnknownMethodError" ? "E_UNKNOWN_METHOD" : "E_REMOTE", `${name}: ${message}`);
    this.remoteName = name;
    this.remoteMessage = message;
  }

  /** Also true for an error rebuilt as a registered class (see registerError()). */
  static override [Symbol.hasInstance](v: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, v) || (this === RemoteError && v !== null && typeof v === "object" && rebuilt.has(v));
  }
}

/**
 * The error a caller's promise rejects with for `e`: an instance of the registered class for
 * its remoteName (see registerError()), else `e` itself. request() applies it; a hot-path
 * onResponse gets the RemoteError and may call it. A rebuild that throws or returns something
 * that is not an instance of the class falls back to an instance made without its
 * constructor. Never throws; a new instance each call.
 */
export function rebuildRemoteError(e: RemoteError): Error {
  const reg = registeredByName.get(e.remoteName);
  if (reg === undefined) return e;
  let out: Error | null = null;
  try {
    const made = reg.rebuild ? reg.rebuild(e.remoteMessage) : Reflect.construct(reg.cls, [e.remoteMessage]);
    if (made instanceof reg.cls) out = made as Error;
  } catch {
    out = null;
  }
  if (out === null) {
    out = Object.create(reg.cls.prototype) as Error;
    Error.captureStackTrace(out, rebuildRemoteError);
  }
  const own = (key: string, value: unknown) => Object.defineProperty(out, key, { value, writable: true, configurable: true, enumerable: false });
  try {
    own("message", e.remoteMessage);
    own("remoteName", e.remoteName);
    own("remoteMessage", e.remoteMessage);
    own("cause", e);
    if (!("code" in out)) own("code", e.code);
  } catch {
    return e; // a frozen or exotic instance: the RemoteError says it all
  }
  rebuilt.add(out);
  return out;
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

// An error is named after its class, and a bundler may rename a class's binding (Bun's code
// splitting, used by the package build, declares `class AuthError2` and exports it as
// AuthError): each class's name is pinned to the name it is exported under.
const EXPORTED_CLASSES = { HotpathError, UsageError, NativeError, TransportClosedError, ProtocolError, MessageTooLargeError, TimeoutError, CancelledError, ConnectError, AuthError, TransportUnavailableError, UcxUnavailableError, RdmaUnavailableError, RemoteError };
for (const [name, cls] of Object.entries(EXPORTED_CLASSES)) Object.defineProperty(cls, "name", { value: name });

// --- kv (src/kv): the store's errors. Registered below like an application's classes, so a
// kv handler's throw comes back to the caller as the same class (message kept) with no
// registerError() call by any kv user.

/** No memory for the value: eviction is off, or evicting could not make room. The old value (if any) stays. */
export class KvFullError extends HotpathError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_KV_FULL", message, options);
  }
}

/** A key that is empty or longer than the store's maxKeyBytes; the message names the length and the limit. */
export class KvKeyError extends HotpathError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_KV_KEY", message, options);
  }
}

/** A value longer than maxValueBytes, or than the arena can ever hold; the message names both. */
export class KvValueTooLargeError extends HotpathError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_KV_VALUE", message, options);
  }
}

/** A snapshot that cannot be read or written, is truncated, or fails a check; the message names the path and the problem. */
export class KvSnapshotError extends HotpathError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_KV_SNAPSHOT", message, options);
  }
}

/** The server owning a key is not reachable now (client side; `cause` is the pool's error); the message names its URL. */
export class KvUnavailableError extends HotpathError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_KV_UNAVAILABLE", message, options);
  }
}

const KV_CLASSES = { KvFullError, KvKeyError, KvValueTooLargeError, KvSnapshotError, KvUnavailableError };
for (const [name, cls] of Object.entries(KV_CLASSES)) {
  Object.defineProperty(cls, "name", { value: name });
  registerError(cls);
}

// --- serve (src/serve): the worker pool's errors.

/**
 * A worker pool's Worker died (a throw at its top level, process.exit in it, terminate) with this
 * call in flight. A TransportClosedError: the call's connection to that Worker is gone; the pool
 * replaces the Worker, so a retry goes to a live one. The message names the Worker's index and the cause.
 */
export class WorkerCrashedError extends TransportClosedError {
  /** The Worker's index in its pool (0..size-1). */
  readonly workerIndex: number;
  constructor(workerIndex: number, cause: string) {
    super(`workerPool: Worker ${workerIndex} crashed: ${cause}`);
    (this as { code: string }).code = "E_WORKER_CRASHED";
    this.workerIndex = workerIndex;
  }
}

/** workerPool() could not start its Workers: the handlers module is missing, throws at load, or exports no Handlers. The message names the module and the cause. */
export class WorkerStartError extends HotpathError {
  constructor(message: string) {
    super("E_WORKER_START", message);
  }
}

for (const [name, cls] of Object.entries({ WorkerCrashedError, WorkerStartError })) Object.defineProperty(cls, "name", { value: name });
