/**
 * Rendezvous (highest-random-weight) hashing: which of several kv servers owns a key.
 *
 * Contract: the owner of `key` is the URL u maximizing `Bun.hash.murmur32v3(key, urlSeed(u))`,
 * where `urlSeed(u)` is murmur32v3 of u's UTF-8 bytes with seed 0; a tie goes to the URL that
 * comes first in the list (so clients list their servers in one order). Every client with the
 * same list picks the same owner. Adding a server moves only the keys the new one wins (about
 * 1/n of them); removing one moves only its own keys.
 *
 *   const r = new Rendezvous(["tcp://a:7000", "tcp://b:7000"]);
 *   r.urls[r.owner(keyBytes)]; // "tcp://b:7000"
 *
 * Pure and allocation-free per lookup; any thread.
 */

import { UsageError } from "../errors.ts";

const utf8 = new TextEncoder();

/** A server's seed: murmur32v3 of its URL's UTF-8 bytes, seed 0. */
export function urlSeed(url: string): number {
  return Bun.hash.murmur32v3(utf8.encode(url), 0) >>> 0;
}

/** The rendezvous weight of `key` on the server with seed `seed`. */
export function weight(key: Uint8Array, seed: number): number {
  return Bun.hash.murmur32v3(key, seed) >>> 0;
}

export class Rendezvous {
  readonly urls: readonly string[];
  private readonly seeds: Uint32Array;

  /** UsageError for an empty list or a URL listed twice. */
  constructor(urls: readonly string[]) {
    if (urls.length === 0) throw new UsageError("kv: no server URL given");
    if (new Set(urls).size !== urls.length) throw new UsageError(`kv: a server URL is listed twice in ${JSON.stringify(urls)}`);
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
