/**
 * Rendezvous (highest-random-weight) hashing: which of several kv servers owns a key.
 *
 * Contract: the owner of `key` is the URL u maximizing `Bun.hash.murmur32v3(key, urlSeed(u))`,
 * where `urlSeed(u)` is murmur32v3, seed 0, of the UTF-8 bytes of `routingUrl(u)`: the URL with
 * its scheme lowercased and, for network schemes (tcp, tcps, tls, ucx, rdma), its host lowercased
 * (both are case-insensitive, so `TCP://Host:7000` and `tcp://host:7000` are one server and route
 * alike). Nothing else is rewritten: `localhost` and `127.0.0.1` are different strings and route
 * differently, and a shm/inproc name keeps its case (it is a case-sensitive name). (The shared
 * spec hashed the URL as given; the normalization is the one deviation.) A tie goes to the URL
 * that comes first in the list.
 *
 * Every client of one set of servers must list the same servers, by the same URLs (up to the
 * case rules above), in the same order: clients that spell a server differently (`localhost`
 * here, `127.0.0.1` there) disagree on owners and will not find each other's keys. Adding a
 * server moves only the keys the new one wins (about 1/n of them); removing one moves only its
 * own keys.
 *
 *   const r = new Rendezvous(["tcp://a:7000", "tcp://b:7000"]);
 *   r.urls[r.owner(keyBytes)]; // "tcp://b:7000"
 *
 * Pure and allocation-free per lookup; any thread.
 */

import { UsageError } from "../errors.ts";

const utf8 = new TextEncoder();

/** Schemes whose host is a network host name (case-insensitive); other schemes' hosts are names kept as written. */
const NETWORK_SCHEMES: ReadonlySet<string> = new Set(["tcp", "tcps", "tls", "ucx", "rdma"]);
/** scheme "://" authority-host rest; the host is a bracketed IPv6 literal or runs to ":", "/", "?" or "#". */
const URL_PARTS = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(\[[^\]]*\]|[^/:?#]*)(.*)$/s;

/** The form of `url` that routing hashes: scheme lowercased, and the host too for network schemes (see the module comment). Text that is not scheme://... is returned as it is. Pure. */
export function routingUrl(url: string): string {
  const m = URL_PARTS.exec(url);
  if (m === null) return url;
  const scheme = m[1]!.toLowerCase();
  const host = NETWORK_SCHEMES.has(scheme) ? m[2]!.toLowerCase() : m[2]!;
  return `${scheme}://${host}${m[3]!}`;
}

/** A server's seed: murmur32v3, seed 0, of the UTF-8 bytes of its routingUrl. */
export function urlSeed(url: string): number {
  return Bun.hash.murmur32v3(utf8.encode(routingUrl(url)), 0) >>> 0;
}

/** The rendezvous weight of `key` on the server with seed `seed`. */
export function weight(key: Uint8Array, seed: number): number {
  return Bun.hash.murmur32v3(key, seed) >>> 0;
}

export class Rendezvous {
  readonly urls: readonly string[];
  private readonly seeds: Uint32Array;

  /** UsageError for an empty list or a server listed twice (also when spelled in two cases: same routingUrl). */
  constructor(urls: readonly string[]) {
    if (urls.length === 0) throw new UsageError("kv: no server URL given");
    if (new Set(urls.map(routingUrl)).size !== urls.length) throw new UsageError(`kv: a server URL is listed twice in ${JSON.stringify(urls)}`);
    this.urls = [...urls];
    this.seeds = new Uint32Array(urls.map(urlSeed));
  }

  /** The index in `urls` of the server that owns `key`. */
  owner(key: Uint8Array): number {
    const seeds = this.seeds;
    if (seeds.length === 1) return 0;
    let best = 0;
    let bestWeight = weight(key, seeds[0]!);
    for (let i = 1; i < seeds.length; i++) {
      const w = weight(key, seeds[i]!);
      if (w > bestWeight) {
        best = i;
        bestWeight = w;
      }
    }
    return best;
  }
}
