/**
 * URL registry: `connect(url)` / `listen(url)` dispatch on the URL's scheme to a registered
 * TransportFactory. `connect(url, { fallback })` tries the URL's own transport, then each
 * fallback in order (a scheme name reuses the URL's host and port; a whole URL is used as
 * given), skipping unavailable transports and failed connects with their reasons recorded in
 * `connection.via.skipped`.
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
import type { ConnectOptions, Connection, Listener, ListenOptions, TransportFactory } from "./transport.ts";

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

function candidates(url: string, fallback: string[]): string[] {
  const primary = parseUrl(url);
  const out = [primary.href];
  for (const fb of fallback) {
    if (fb.includes("://")) out.push(parseUrl(fb).href);
    else out.push(`${fb}://${primary.host}${primary.pathname === "/" ? "" : primary.pathname}`);
  }
  return out;
}

function unavailableError(factory: TransportFactory, reason: string): HotpathError {
  return factory.unavailableError ? factory.unavailableError(reason) : new TransportUnavailableError(factory.scheme, reason);
}

export async function connect(url: string, opts: ConnectOptions = {}): Promise<ChosenConnection> {
  const skipped: SkippedTransport[] = [];
  for (const candidate of candidates(url, opts.fallback ?? [])) {
    const u = parseUrl(candidate);
    const factory = factoryFor(u);
    const unavailable = factory.unavailableReason();
    if (unavailable !== null) {
      skipped.push({ url: candidate, reason: unavailable, error: unavailableError(factory, unavailable) });
      continue;
    }
    try {
      const conn = await factory.connect(u, opts);
      return Object.assign(conn, { via: { chosen: candidate, skipped } });
    } catch (e) {
      if (!(e instanceof HotpathError) || e instanceof UsageError) throw e;
      skipped.push({ url: candidate, reason: e.message, error: e });
    }
  }
  if (skipped.length === 1) throw skipped[0]!.error;
  const reasons = skipped.map((s) => `${s.url}: ${s.reason}`).join("; ");
  throw new ConnectError(`connect ${url}: no transport connected (${reasons})`);
}

export async function listen(url: string, opts: ListenOptions = {}): Promise<Listener> {
  const u = parseUrl(url);
  const factory = factoryFor(u);
  const unavailable = factory.unavailableReason();
  if (unavailable !== null) throw unavailableError(factory, unavailable);
  return factory.listen(u, opts);
}
