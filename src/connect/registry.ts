/**
 * URL registry: `connect(url)` / `listen(url)` dispatch on the URL's scheme to a registered
 * TransportFactory. `connect(url, { fallback })` tries the URL's own transport, then each
 * fallback in order (a scheme name reuses the URL's host and port, or its name; a whole URL is
 * used as given), skipping unavailable transports, failed connects and URLs formed from a
 * scheme name that do not fit that transport (`shm://name` gives no host:port for ucx or tcp),
 * each once, with its reason, in `connection.via.skipped`. Nothing is printed.
 *
 * Transports load lazily: the built-in schemes are registered as names with a loader (a dynamic
 * `import()` of the transport's setup module), and a transport's module is evaluated the first
 * time a URL or `transports()` needs it. So `import "hotpath"` evaluates no transport module:
 * no libucp, no libc FFI, no Unix-socket directory; connecting over tcp loads tcp alone. A
 * loader that fails leaves its scheme unavailable, with the failure as the reason.
 *
 * Example:
 *   const conn = await connect("ucx://10.0.0.2:7000", { fallback: ["tcp"] });
 *   conn.via.chosen   // "tcp://10.0.0.2:7000" on a machine without libucp
 *   registerTransportLoader("carrier", async () => (await import("./my-carrier.ts")).carrierTransport);
 */

import { ConnectError, describeThrown, HotpathError, TransportUnavailableError, UsageError } from "../errors.ts";
import type { ConnectOptions, Connection, Listener, ListenOptions, TransportFactory } from "../contract/transport.ts";

/** Loads a transport's module and returns its factory (called at most once per registration). */
export type TransportLoader = () => Promise<TransportFactory>;

/** A registered scheme: its factory once loaded, or how to load it (and the load under way, shared by every caller). */
interface Entry {
  readonly scheme: string;
  factory: TransportFactory | null;
  readonly load: TransportLoader | null;
  loading: Promise<TransportFactory | string> | null;
}

const entries = new Map<string, Entry>();

/** Adds a transport that is already loaded. A second registration for a scheme replaces the first. Main thread or a Worker: the registry is per thread. */
export function registerTransport(factory: TransportFactory): void {
  entries.set(factory.scheme, { scheme: factory.scheme, factory, load: null, loading: null });
}

/**
 * Adds `scheme` with a loader that is called (once) the first time a URL of that scheme or
 * transports() needs the transport; it must resolve to a factory for that same scheme. A loader
 * that throws or rejects leaves the scheme unavailable with that reason (the loader is not called
 * again). A second registration for a scheme replaces the first. Per thread, like registerTransport.
 */
export function registerTransportLoader(scheme: string, load: TransportLoader): void {
  if (typeof scheme !== "string" || !/^[a-z][a-z0-9+.-]*$/.test(scheme)) throw new UsageError(`registerTransportLoader: scheme must be a URL scheme (lowercase letters, digits, + - .), got ${JSON.stringify(scheme)}`);
  if (typeof load !== "function") throw new UsageError(`registerTransportLoader ${scheme}: the loader must be a function returning a Promise of a TransportFactory`);
  entries.set(scheme, { scheme, factory: null, load, loading: null });
}

// The built-in transports, each loaded on first use: `import "hotpath"` evaluates none of their
// modules, nor what only they import (bun:ffi with libc, libucp; test/unit/lazy-load.test.ts).
registerTransportLoader("tcp", async () => (await import("../tcp/setup.ts")).tcpTransport);
registerTransportLoader("tcps", async () => (await import("../tcp/setup.ts")).tcpsTransport);
registerTransportLoader("tls", async () => (await import("../tcp/setup.ts")).tlsTransport);
registerTransportLoader("shm", async () => (await import("../shm/setup.ts")).shmTransport);
registerTransportLoader("inproc", async () => (await import("../inproc/setup.ts")).inprocTransport);
registerTransportLoader("ucx", async () => (await import("../ucx/setup.ts")).ucxTransport);
registerTransportLoader("rdma", async () => (await import("../rdma/setup.ts")).rdmaTransport);

/** The entry's factory, loading it on first use; a string is why it cannot be loaded. */
function loaded(entry: Entry): Promise<TransportFactory | string> | TransportFactory {
  if (entry.factory !== null) return entry.factory;
  entry.loading ??= (async () => {
    try {
      const f = await entry.load!();
      if (f === null || typeof f !== "object" || f.scheme !== entry.scheme) return `its loader returned ${f === null || typeof f !== "object" ? String(f) : `a factory for "${String(f.scheme)}"`}, not one for "${entry.scheme}"`;
      if (entries.get(entry.scheme) === entry) entry.factory = f;
      return f;
    } catch (e) {
      return `its module failed to load: ${describeThrown(e)}`;
    }
  })();
  return entry.loading;
}

/** The factory for `entry`, or the reason it cannot run here (not loadable, or its own unavailableReason). */
async function usable(entry: Entry): Promise<{ factory: TransportFactory; unavailable: null } | { factory: TransportFactory | null; unavailable: string }> {
  const f = await loaded(entry);
  if (typeof f === "string") return { factory: null, unavailable: f };
  const unavailable = f.unavailableReason();
  return unavailable === null ? { factory: f, unavailable: null } : { factory: f, unavailable };
}

export interface SkippedTransport {
  url: string;
  reason: string;
  error: HotpathError;
}

export interface ConnectionVia {
  /** The URL that connected. */
  chosen: string;
  /** Earlier candidates and why each was passed over. */
  skipped: SkippedTransport[];
}

export type ChosenConnection = Connection & { readonly via: ConnectionVia };

/** Parses a transport URL; UsageError for text that is not one. Pure: any thread. */
export function parseUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`"${url}" is not a URL (expected scheme://host:port or scheme://name)`);
  }
  return parsed;
}

function entryFor(url: URL): Entry {
  const scheme = url.protocol.replace(/:$/, "");
  const e = entries.get(scheme);
  if (!e) throw new UsageError(`no transport for scheme "${scheme}" in "${url.href}" (registered: ${[...entries.keys()].join(", ")})`);
  return e;
}

/**
 * Schemes of the registered transports, in registration order, and for each null or why it
 * cannot run here. Loads every transport not loaded yet (ucx: libucp is looked for), so it is
 * the one call that pays for all of them. Call from any thread; each thread has its own registry.
 */
export async function transports(): Promise<Array<{ scheme: string; unavailableReason: string | null }>> {
  return Promise.all([...entries.values()].map(async (e) => ({ scheme: e.scheme, unavailableReason: (await usable(e)).unavailable })));
}

/** One URL to try: `derived` when the registry formed it from a scheme name and the primary URL. */
interface Candidate {
  url: string;
  entry: Entry;
  derived: boolean;
}

/**
 * The URLs to try, in order: the primary, then each fallback (a whole URL as given; a scheme
 * name with the primary's host and port, or its name). Every scheme is looked up before
 * anything connects, so a typo is a UsageError at once, on every machine.
 */
function candidates(url: string, fallback: string[]): Candidate[] {
  if (!Array.isArray(fallback)) throw new UsageError(`connect ${url}: fallback must be an array of scheme names or URLs`);
  const primary = parseUrl(url);
  const out: Candidate[] = [{ url: primary.href, entry: entryFor(primary), derived: false }];
  for (const fb of fallback) {
    if (typeof fb !== "string") throw new UsageError(`connect ${url}: fallback entries are scheme names or URLs, got ${typeof fb}`);
    if (fb.includes("://")) {
      const u = parseUrl(fb);
      out.push({ url: u.href, entry: entryFor(u), derived: false });
      continue;
    }
    const entry = entries.get(fb);
    if (!entry) throw new UsageError(`connect ${url}: fallback "${fb}" is not a registered scheme (registered: ${[...entries.keys()].join(", ")})`);
    out.push({ url: `${fb}://${primary.host}${primary.pathname === "/" ? "" : primary.pathname}`, entry, derived: true });
  }
  return out;
}

function unavailableError(scheme: string, factory: TransportFactory | null, reason: string): HotpathError {
  return factory?.unavailableError ? factory.unavailableError(reason) : new TransportUnavailableError(scheme, reason);
}

/**
 * Connects to `url`, or to the first fallback that connects (see the module comment). A
 * candidate is passed over, with its reason recorded in `via.skipped` (once each), when its
 * transport cannot run here, when its connect fails, or, for one the registry formed from a
 * scheme name, when that URL does not fit the transport (ucx and tcp need host:port; an shm
 * URL has a name): the chain goes on. Rejects with UsageError for a URL the caller wrote that
 * is malformed or names an unknown scheme; with the only candidate's own error when there was
 * one; else with a ConnectError listing every reason (`cause`: an AggregateError of them).
 * Loads each candidate's transport as it is reached (a candidate after the one that connects is
 * not loaded). Prints nothing. Call from the thread that will own the connection.
 */
export async function connect(url: string, opts: ConnectOptions = {}): Promise<ChosenConnection> {
  const skipped: SkippedTransport[] = [];
  for (const { url: candidate, entry, derived } of candidates(url, opts.fallback ?? [])) {
    const { factory, unavailable } = await usable(entry);
    if (unavailable !== null) {
      skipped.push({ url: candidate, reason: unavailable, error: unavailableError(entry.scheme, factory, unavailable) });
      continue;
    }
    try {
      const conn = await factory.connect(parseUrl(candidate), opts);
      return Object.assign(conn, { via: { chosen: candidate, skipped } });
    } catch (e) {
      if (!(e instanceof HotpathError)) throw e;
      // A URL the caller wrote is the caller's to fix; one formed here just does not fit that transport.
      if (e instanceof UsageError && !derived) throw e;
      const reason = e instanceof UsageError ? `cannot be formed from ${url}: ${e.message}` : e.message;
      skipped.push({ url: candidate, reason, error: e });
    }
  }
  if (skipped.length === 1) throw skipped[0]!.error;
  const reasons = skipped.map((s) => `${s.url}: ${s.reason}`).join("; ");
  throw new ConnectError(`connect ${url}: no transport connected (${reasons})`, { cause: new AggregateError(skipped.map((s) => s.error), "every candidate failed") });
}

/**
 * Listens on `url` with its scheme's transport, loading it on first use (UsageError for an
 * unknown scheme, the transport's error when it cannot run here). Call from the thread that will
 * own the listener.
 */
export async function listen(url: string, opts: ListenOptions = {}): Promise<Listener> {
  const u = parseUrl(url);
  const entry = entryFor(u);
  const { factory, unavailable } = await usable(entry);
  if (unavailable !== null) throw unavailableError(entry.scheme, factory, unavailable);
  return factory.listen(u, opts);
}
