/**
 * The consumer project's service, as a team using hotpath writes it: one definition that its
 * server and client both import. Copied into a temporary project by pack.test.ts, where
 * "hotpath" is the installed tarball (this folder is outside the repository's own type check).
 */
import { bytes, defineService, msgpack, raw, struct } from "hotpath";

export const Kv = defineService({
  get: { id: 1, request: struct({ key: "u64", shard: "u8", tag: bytes(4) }), response: msgpack<{ value: string; tag: number[] }>() },
  echo: { id: 2, request: raw, response: raw },
  /** Throws the application's own error class. */
  fail: { id: 3 },
  /** Answers after 100 ms: the caller is idle (parked) when the reply arrives. */
  slow: { id: 4 },
  /** ucx with RMA: registers 4 KiB filled with 7s and answers its descriptor. */
  region: { id: 5 },
  /** Never answers (the caller's deadline ends it). */
  never: { id: 6 },
  /** The hot-path listener's stats and refusals. */
  refusals: { id: 7, response: msgpack<{ accepted: number; refusedAuth: number; reasons: string[] }>() },
  /** What the server's onError saw, as "source". */
  reported: { id: 8, response: msgpack<string[]>() },
});

/** Raw methods of the hot-path server (a Server over listen(), answered with poll / recv / reply). */
export const HOT_ECHO = 100;
/** Detached, then answered reversed on a timer. */
export const HOT_LATER = 101;

/** The shared token of the hot-path listener (tcp, ucx). */
export const TOKEN = "consumer-project-shared-token-0123456789";

export class OutOfStock extends Error {}
/** Registered under an explicit name on both sides: a bundler may rename the class. */
export const OUT_OF_STOCK = "OutOfStock";
