/**
 * Helpers the kv tests share: `rejection` (the error a promise rejects with) and
 * `useOneSidedPeer` (a kv server peer over ucx with a one-sided and an RPC-only client, for a
 * describe block's tests).
 *
 *   const err = await rejection(client.get(key)); expect(err).toBeInstanceOf(KvUnavailableError);
 */

import { afterAll, beforeAll } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { kvConnect, type KvClient } from "../../src/kv/client.ts";
import { useEnv } from "../helpers/env.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

/** The error `pr` rejects with; throws if it resolves. */
export async function rejection(pr: Promise<unknown>): Promise<Error> {
  try {
    await pr;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

/** What useOneSidedPeer sets up: valid inside the describe's tests. */
export interface OneSidedPeer {
  dir: string;
  peer: Peer;
  /** A client with one-sided access (the default). */
  fast: KvClient;
  /** A client with `oneSided: "never"` (every GET by RPC). */
  slow: KvClient;
}

/**
 * Call inside a describe: UCX_TLS=`tls` for its tests, and before them the server script
 * `server` (argv[2] = "ucx://127.0.0.1:0") written to a temp dir named `prefix…` and spawned,
 * with `fast` and `slow` connected; after them both clients closed, the peer killed and the dir
 * removed. The returned object is filled in beforeAll.
 */
export function useOneSidedPeer(tls: string, server: string, prefix: string): OneSidedPeer {
  const t = {} as OneSidedPeer;
  useEnv({ UCX_TLS: tls });
  beforeAll(async () => {
    t.dir = mkdtempSync(join(tmpdir(), prefix));
    writeFileSync(join(t.dir, "server.ts"), server);
    t.peer = await spawnPeer(join(t.dir, "server.ts"), ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
    t.fast = await kvConnect(t.peer.ready.url);
    t.slow = await kvConnect(t.peer.ready.url, { oneSided: "never" });
  });
  afterAll(async () => {
    await t.fast?.close();
    await t.slow?.close();
    await t.peer?.kill();
    if (t.dir !== undefined) rmSync(t.dir, { recursive: true, force: true });
  });
  return t;
}
