/**
 * URL registry: `connect(url)` / `listen(url)` dispatch on the URL's scheme to a registered
 * TransportFactory. `connect(url, { fallback })` tries the URL's own transport, then each
 * fallback in order (a scheme name reuses the URL's host and port, or its name; a whole URL is
 * used as given), skipping unavailable transports, failed connects and URLs formed from a
 * scheme name that do not fit that transport (`shm://name` gives no host:port for ucx or tcp),
 * each once, with its reason, in `connection.via.skipped`. Nothing is printed.
 *
 * Example:
 *   const conn = await connect("ucx://10.0.0.2:7000", { fallback: ["tcp"] });
 *   conn.via.chosen   // "tcp://10.0.0.2:7000" on a machine without libucp
 */

import { ConnectError, HotpathError, TransportUnavailableError, UsageError } from "../errors.ts";
import { inprocTransport } from "../inproc/setup.ts";
import { shmTransport } from "../shm/setup.ts";
import { tcpTransport, tcpsTransport, tlsTransport } from "../tcp/setup.ts";
import { ucxTransport } from "../ucx/setup.ts";
import type { ConnectOptions, Connection, Listener, ListenOptions, TransportFactory } from "../contract/transport.ts";

const factories = new Map<string, TransportFactory>();

/** Adds a transport (built-in ones register themselves below). A second factory for a scheme replaces the first. */
export function registerTransport(factory: TransportFactory): void {
  factories.set(factory.scheme, factory);
}

registerTransport(tcpTransport);
registerTransport(tcpsTransport);
registerTransport(tlsTransport);
registerTransport(shmTransport);
registerTransport(inprocTransport);
registerTransport(ucxTransport);

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

function factoryFor(url: URL): TransportFactory {
  const scheme = url.protocol.replace(/:$/, "");
  const f = factories.get(scheme);
  if (!f) {
    const known = [...factories.keys()].join(", ");
    throw new UsageError(`no transport for scheme "${scheme}" in "${url.href}" (registered: ${known})`);
  }
  return f;
}

/** Schemes of the registered transports and, for each, null or why it cannot run here. */
export function transports(): Array<{ scheme: string; unavailableReason: string | null }> {
  return [...factories.values()].map((f) => ({ scheme: f.scheme, unavailableReason: f.unavailableReason() }));
}

/** One URL to try: `derived` when the registry formed it from a scheme name and the primary URL. */
interface Candidate {
  url: string;
  factory: TransportFactory;
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
  const out: Candidate[] = [{ url: primary.href, factory: factoryFor(primary), derived: false }];
  for (const fb of fallback) {
    if (typeof fb !== "string") throw new UsageError(`connect ${url}: fallback entries are scheme names or URLs, got ${typeof fb}`);
    if (fb.includes("://")) {
      const u = parseUrl(fb);
      out.push({ url: u.href, factory: factoryFor(u), derived: false });
      continue;
    }
    const factory = factories.get(fb);
    if (!factory) throw new UsageError(`connect ${url}: fallback "${fb}" is not a registered scheme (registered: ${[...factories.keys()].join(", ")})`);
    out.push({ url: `${fb}://${primary.host}${primary.pathname === "/" ? "" : primary.pathname}`, factory, derived: true });
  }
  return out;
}

function unavailableError(factory: TransportFactory, reason: string): HotpathError {
  return factory.unavailableError ? factory.unavailableError(reason) : new TransportUnavailableError(factory.scheme, reason);
}

/**
 * Connects to `url`, or to the first fallback that connects (see the module comment). A
 * candidate is passed over, with its reason recorded in `via.skipped` (once each), when its
 * transport cannot run here, when its connect fails, or, for one the registry formed from a
 * scheme name, when that URL does not fit the transport (ucx and tcp need host:port; an shm
 * URL has a name): the chain goes on. Rejects with UsageError for a URL the caller wrote that
 * is malformed or names an unknown scheme; with the only candidate's own error when there was
 * one; else with a ConnectError listing every reason (`cause`: an AggregateError of them).
 * Prints nothing. Call from the thread that will own the connection.
 */
export async function connect(url: string, opts: ConnectOptions = {}): Promise<ChosenConnection> {
  const skipped: SkippedTransport[] = [];
  for (const { url: candidate, factory, derived } of candidates(url, opts.fallback ?? [])) {
    const unavailable = factory.unavailableReason();
    if (unavailable !== null) {
      skipped.push({ url: candidate, reason: unavailable, error: unavailableError(factory, unavailable) });
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

/** Listens on `url` with its scheme's transport (UsageError for an unknown scheme, the transport's error when it cannot run here). */
export async function listen(url: string, opts: ListenOptions = {}): Promise<Listener> {
  const u = parseUrl(url);
  const factory = factoryFor(u);
  const unavailable = factory.unavailableReason();
  if (unavailable !== null) throw unavailableError(factory, unavailable);
  return factory.listen(u, opts);
}
