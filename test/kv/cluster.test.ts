/**
 * Several kv servers behind one client: 3 server processes, keys spread by rendezvous hashing.
 * One is killed (kill -9): its keys fail fast with KvUnavailableError (promise and hot-path
 * APIs), the other servers' keys keep working; it is restarted on the same address: its keys
 * work again through the pool's reconnect, with no user code. Over tcp and shm.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { KvUnavailableError } from "../../src/errors.ts";
import { kvConnect, type KvClient } from "../../src/kv/index.ts";
import { SEND_CLOSED, SEND_FULL, SEND_OK } from "../../src/contract/transport.ts";
import { transports } from "../../src/connect/registry.ts";
import { useEnv } from "../helpers/env.ts";
import type { Peer } from "../helpers/peer.ts";
import { listenUrl, startServer } from "./peers/servers.ts";
import { rejection } from "./helpers.ts";

const WATCHDOG_MS = 60_000;
const KEYS = 300;
const peers: Peer[] = [];
afterAll(async () => {
  for (const p of peers.splice(0)) await p.kill();
});

const enc = new TextEncoder();
const ucx = (await transports()).find((t) => t.scheme === "ucx");
const ucxReason = ucx === undefined ? "ucx is not registered" : ucx.unavailableReason;

/** Hot-path GETs of `keys`: the error (or null) each one's onResult got, by index. */
async function hotGets(kv: KvClient, keys: Uint8Array[]): Promise<Array<Error | null | "closed">> {
  const out: Array<Error | null | "closed" | undefined> = new Array(keys.length);
  let pending = 0;
  kv.onResult = (ud, err) => {
    out[ud] = err;
    pending--;
  };
  for (let i = 0; i < keys.length; i++) {
    let s = kv.getCb(keys[i]!, i);
    while (s === SEND_FULL) {
      kv.poll();
      await kv.wait(5);
      s = kv.getCb(keys[i]!, i);
    }
    if (s === SEND_CLOSED) out[i] = "closed";
    else {
      expect(s).toBe(SEND_OK);
      pending++;
    }
  }
  const end = Date.now() + 10_000;
  while (pending > 0) {
    kv.poll();
    if (pending > 0) await kv.wait(5);
    if (Date.now() > end) throw new Error(`hot path: ${pending} results missing`);
  }
  kv.onResult = null;
  return out as Array<Error | null | "closed">;
}

async function clusterCase(transport: string, env: Record<string, string> = {}): Promise<void> {
  const first = await Promise.all([0, 1, 2].map(() => startServer({ listen: [listenUrl(transport)], memoryBytes: 8 << 20 }, env)));
  peers.push(...first);
  const urls = first.map((s) => s.urls[0]!);
  const kv = await kvConnect(urls, { pool: { backoff: { initialMs: 20, maxMs: 200 } } });
  try {
    const keys = Array.from({ length: KEYS }, (_, i) => enc.encode(`user:${i}`));
    const owner = keys.map((k) => urls.indexOf(kv.serverFor(k)));
    for (let i = 0; i < KEYS; i++) await kv.put(keys[i]!, `v${i}`);
    // Spread: each server holds about a third, and exactly the keys rendezvous gives it.
    const stats = await kv.stats();
    for (let s = 0; s < 3; s++) {
      const held = (stats[s] as { stats: { keys: number } }).stats.keys;
      expect(held).toBe(owner.filter((o) => o === s).length);
      expect(held).toBeGreaterThan(KEYS / 6);
    }

    // One MGET per server, the results back in key order (keys listed in a shuffled order, one absent).
    const order = [...keys.keys()].sort((a, b) => ((a * 7919) % KEYS) - ((b * 7919) % KEYS));
    const asked = [...order.map((i) => keys[i]!), enc.encode("absent")];
    const got = await kv.mget(asked);
    expect(got.length).toBe(KEYS + 1);
    for (let j = 0; j < KEYS; j++) expect(new TextDecoder().decode(got[j]!.value)).toBe(`v${order[j]}`);
    expect(got[KEYS]).toBeNull();

    const dead = 1;
    await first[dead]!.kill(9);
    const deadKeys = keys.filter((_, i) => owner[i] === dead);
    const liveKeys = keys.filter((_, i) => owner[i] !== dead);
    const t0 = performance.now();
    await rejection(kv.get(deadKeys[0]!));
    console.log(`kv cluster over ${transport}: the first call to the killed server failed after ${(performance.now() - t0).toFixed(1)} ms`);
    for (const k of deadKeys.slice(0, 20)) {
      const e = await rejection(kv.get(k));
      expect(e).toBeInstanceOf(KvUnavailableError);
      expect(e.message).toContain(urls[dead]!);
      expect(await rejection(kv.put(k, "x"))).toBeInstanceOf(KvUnavailableError);
    }
    for (const k of liveKeys) expect(new TextDecoder().decode((await kv.get(k))!.value)).toBe(`v${new TextDecoder().decode(k).slice(5)}`);
    expect(await rejection(kv.mget([liveKeys[0]!, deadKeys[0]!]))).toBeInstanceOf(KvUnavailableError);
    const st = await kv.stats();
    expect("error" in st[dead]!).toBe(true);
    expect("stats" in st[0]!).toBe(true);
    // Hot path: the dead server's keys are not sent (SEND_CLOSED) or fail with KvUnavailableError; the others answer.
    const hot = await hotGets(kv, [...deadKeys.slice(0, 10), ...liveKeys.slice(0, 30)]);
    for (let i = 0; i < 10; i++) expect(hot[i] === "closed" || hot[i] instanceof KvUnavailableError).toBe(true);
    for (let i = 10; i < 40; i++) expect(hot[i]).toBeNull();

    // Back on the same address: its keys work again through the pool, no user code.
    const again = await startServer({ listen: [urls[dead]!], memoryBytes: 8 << 20 }, env);
    peers.push(again);
    const end = Date.now() + 20_000;
    for (;;) {
      try {
        await kv.put(deadKeys[0]!, "back");
        break;
      } catch (e) {
        expect(e).toBeInstanceOf(KvUnavailableError);
        if (Date.now() > end) throw new Error(`${urls[dead]} did not come back: ${(e as Error).message}`);
        await Bun.sleep(20);
      }
    }
    expect(new TextDecoder().decode((await kv.get(deadKeys[0]!))!.value)).toBe("back");
    expect(await kv.get(deadKeys[1]!)).toBeNull(); // a fresh server (no snapshot): the old values went with it
    const hotAgain = await hotGets(kv, deadKeys.slice(0, 10));
    // The hot path finds the new connection too.
    expect(hotAgain).toEqual(new Array(10).fill(null));
    await again.kill();
  } finally {
    await kv.close();
    for (const s of first) await s.kill();
  }
}

describe("kv server killed mid-run", () => {
  test(
    "calls in flight when the server dies fail with KvUnavailableError; after the restart the same client works",
    async () => {
      const server = await startServer({ listen: [listenUrl("tcp")], memoryBytes: 8 << 20 });
      peers.push(server);
      const url = server.urls[0]!;
      const kv = await kvConnect(url, { pool: { backoff: { initialMs: 20, maxMs: 200 } } });
      try {
        let stop = false;
        const errors: Error[] = [];
        let ok = 0;
        const worker = async (w: number) => {
          for (let i = 0; !stop; i++) {
            try {
              await kv.put(`w${w}-${i % 50}`, "x".repeat(100));
              ok++;
            } catch (e) {
              errors.push(e as Error);
              if (errors.length > 200) return;
            }
          }
        };
        const running = [0, 1, 2, 3, 4, 5, 6, 7].map(worker);
        const end = Date.now() + 10_000;
        while (ok < 200 && Date.now() < end) await Bun.sleep(2);
        await server.kill(9);
        while (errors.length < 20 && Date.now() < end) await Bun.sleep(2);
        stop = true;
        await Promise.all(running);
        expect(errors.length).toBeGreaterThan(0);
        for (const e of errors) expect(e).toBeInstanceOf(KvUnavailableError);
        const again = await startServer({ listen: [url], memoryBytes: 8 << 20 });
        peers.push(again);
        for (;;) {
          try {
            await kv.put("after", "restart");
            break;
          } catch (e) {
            expect(e).toBeInstanceOf(KvUnavailableError);
            if (Date.now() > end + 10_000) throw e;
            await Bun.sleep(20);
          }
        }
        expect(new TextDecoder().decode((await kv.get("after"))!.value)).toBe("restart");
        await again.kill();
      } finally {
        await kv.close();
        await server.kill();
      }
    },
    WATCHDOG_MS,
  );
});

describe("kv cluster", () => {
  test("3 servers over tcp: kill one, its keys fail fast, the others work; restart, its keys work again", () => clusterCase("tcp"), WATCHDOG_MS);
  test("3 servers over shm: same", () => clusterCase("shm"), WATCHDOG_MS);
  describe("ucx", () => {
    const env = { UCX_TLS: "tcp,self" };
    useEnv(env);
    test.skipIf(ucxReason !== null)("3 servers over ucx (UCX_TLS=tcp,self): same", () => clusterCase("ucx", env), WATCHDOG_MS);
  });
});
