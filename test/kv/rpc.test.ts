/**
 * kv over RPC: limits and typed errors at the caller (empty, oversized and at-the-limit keys,
 * oversized values, memory full with and without LRU eviction), what HELLO and STATS say, the
 * snapshot round trip through SAVE and a graceful stop (server processes killed by pid), a
 * corrupt or truncated snapshot refused by kvServe, and a hostile client whose malformed bodies
 * get error replies while the server keeps serving.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvFullError, KvKeyError, KvSnapshotError, KvUnavailableError, KvValueTooLargeError, RemoteError, UsageError } from "../../src/errors.ts";
import { kvConnect, kvServe, listenerMessageLimit, type KvServer } from "../../src/kv/index.ts";
import * as p from "../../src/kv/protocol.ts";
import { rpcConnect, serve } from "../../src/rpc/serve.ts";
import { transports } from "../../src/connect/registry.ts";
import { useEnv } from "../helpers/env.ts";
import type { Peer } from "../helpers/peer.ts";
import { listenUrl, startServer } from "./peers/servers.ts";
import { rejection } from "./helpers.ts";

const WATCHDOG_MS = 60_000;
const ucx = (await transports()).find((t) => t.scheme === "ucx");
const ucxReason = ucx === undefined ? "ucx is not registered" : ucx.unavailableReason;
const peers: Peer[] = [];
const servers: KvServer[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const p of peers.splice(0)) await p.kill();
  for (const s of servers.splice(0)) await s.close({ drainMs: 0 });
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function serveHere(opts: Partial<Parameters<typeof kvServe>[0]>): Promise<KvServer> {
  const s = await kvServe({ listen: [listenUrl("tcp")], memoryBytes: 4 << 20, ...opts });
  servers.push(s);
  return s;
}

describe("limits over RPC", () => {
  test("keys: empty and too long are KvKeyError naming length and limit; at the limit works", async () => {
    const s = await serveHere({ maxKeyBytes: 100 });
    await using kv = await kvConnect(s.urls[0]!);
    expect(kv.servers[0]!.hello!.maxKeyBytes).toBe(100);
    for (const key of [new Uint8Array(0), new Uint8Array(101)]) {
      for (const call of [kv.put(key, "v"), kv.get(key), kv.del(key), kv.cas(key, 0, "v"), kv.mget([key])]) {
        const e = await rejection(call);
        expect(e).toBeInstanceOf(KvKeyError);
        expect(e.message).toContain(`${key.length} bytes`);
        expect(e.message).toContain("100");
      }
    }
    const atLimit = new Uint8Array(100).fill(7);
    const v = await kv.put(atLimit, "x");
    expect((await kv.get(atLimit))!.version).toBe(v);
  });

  test("values: above maxValueBytes is KvValueTooLargeError from the server; above the transport's limit refused locally", async () => {
    const s = await serveHere({ maxValueBytes: 1000 });
    await using kv = await kvConnect(s.urls[0]!);
    expect(kv.servers[0]!.hello!.maxValueBytes).toBe(1000);
    await kv.put("ok", new Uint8Array(1000));
    const e = await rejection(kv.put("big", new Uint8Array(1001)));
    expect(e).toBeInstanceOf(KvValueTooLargeError);
    expect(e.message).toContain("1001");
    expect(e.message).toContain("1000");
    expect(await rejection(kv.cas("big", 0, new Uint8Array(1001)))).toBeInstanceOf(KvValueTooLargeError);
    // Larger than a tcp message can carry: refused before anything is sent.
    const local = await rejection(kv.put("huge", new Uint8Array(listenerMessageLimit("tcp://x"))));
    expect(local).toBeInstanceOf(KvValueTooLargeError);
    expect(local.message).toContain("can carry");
    expect(await kv.get("big")).toBeNull();
  });

  test("the server lowers maxValueBytes to what its listeners carry", async () => {
    const s = await kvServe({ listen: [listenUrl("shm"), listenUrl("tcp")], memoryBytes: 40 << 20 });
    servers.push(s);
    const limit = listenerMessageLimit(s.urls[0]!) - p.REQUEST_OVERHEAD - 1024;
    expect(listenerMessageLimit(s.urls[0]!)).toBe(16 << 20);
    expect(s.store.maxValueBytes).toBe(limit);
    await using kv = await kvConnect(s.urls);
    for (const sc of kv.servers) expect(sc.hello!.maxValueBytes).toBe(limit);
    // Over shm, a value at the limit goes through (a slab slot of 16 MiB) and comes back whole.
    const big = new Uint8Array(limit).map((_, i) => i * 7);
    const shm = await kvConnect(s.urls[0]!);
    try {
      const v = await shm.put(new Uint8Array([1]), big);
      const got = await shm.get(new Uint8Array([1]));
      expect(got!.version).toBe(v);
      expect(Bun.hash.crc32(got!.value)).toBe(Bun.hash.crc32(big));
    } finally {
      await shm.close();
    }
    await s.close();
  });

  test("memory full: KvFullError at the caller, the old value stays; with evict lru the put succeeds and old keys go", async () => {
    const value = new Uint8Array(64 << 10).fill(3);
    const full = await serveHere({ memoryBytes: 1 << 20 });
    await using kv = await kvConnect(full.urls[0]!);
    let stored = 0;
    let err: Error | null = null;
    for (let i = 0; i < 64 && err === null; i++) {
      try {
        await kv.put(`k${i}`, value);
        stored++;
      } catch (e) {
        err = e as Error;
      }
    }
    expect(err).toBeInstanceOf(KvFullError);
    expect(stored).toBeGreaterThan(0);
    for (let i = 0; i < stored; i++) expect((await kv.get(`k${i}`))!.value.length).toBe(value.length);

    const lru = await serveHere({ memoryBytes: 1 << 20, evict: "lru" });
    await using kv2 = await kvConnect(lru.urls[0]!);
    for (let i = 0; i < 64; i++) await kv2.put(`k${i}`, value);
    expect(await kv2.get("k0")).toBeNull(); // the least recently used went first
    expect((await kv2.get("k63"))!.value.length).toBe(value.length);
    const st = (await kv2.stats())[0] as { stats: { evictions: number; keys: number } };
    expect(st.stats.evictions).toBeGreaterThan(0);
    expect(st.stats.keys).toBeLessThan(64);
  });

  test("HELLO over tcp offers nothing one-sided; STATS carries the store's stats, urls and connections", async () => {
    const s = await serveHere({});
    await using kv = await kvConnect(s.urls[0]!);
    const h = kv.servers[0]!.hello!;
    expect(h.flags).toBe(0);
    expect(h.arenaDesc.length + h.writeBufDesc.length + h.writeBufBytes).toBe(0);
    expect(new DataView(h.arenaHeader.buffer, h.arenaHeader.byteOffset).getUint32(0, true)).toBe(0x564b5048);
    await kv.put("a", "b");
    const [st] = await kv.stats();
    expect((st as { stats: Record<string, unknown> }).stats).toMatchObject({ keys: 1, puts: 1, urls: s.urls, connections: 1 });
    const e = await rejection(kv.save());
    expect(e).toBeInstanceOf(RemoteError);
    expect((e as RemoteError).remoteName).toBe("UsageError");
    expect(e.message).toContain("no snapshot path");
  });
});

describe("lifecycle", () => {
  test("kvConnect to an unreachable server fails with KvUnavailableError naming it", async () => {
    const s = await serveHere({});
    const dead = listenUrl("shm"); // nobody listens there
    const e = await rejection(kvConnect([s.urls[0]!, dead], { timeoutMs: 3000 }));
    expect(e).toBeInstanceOf(KvUnavailableError);
    expect(e.message).toContain(dead);
  });

  test("every listener serves the same store; hot-path errors arrive as their classes", async () => {
    const s = await kvServe({ listen: [listenUrl("shm"), listenUrl("tcp"), listenUrl("inproc")], memoryBytes: 4 << 20 });
    servers.push(s);
    const [viaShm, viaTcp, viaInproc] = [await kvConnect(s.urls[0]!), await kvConnect(s.urls[1]!), await kvConnect(s.urls[2]!)];
    const v = await viaShm.put("shared", "one store");
    expect((await viaTcp.get("shared"))!.version).toBe(v);
    expect((await viaInproc.get("shared"))!.version).toBe(v);
    let seen = null as Error | null;
    viaTcp.onResult = (_ud, err) => (seen = err);
    expect(viaTcp.getCb(new Uint8Array(0), 1)).toBe(0);
    const end = Date.now() + 5000;
    while (seen === null && Date.now() < end) {
      viaTcp.poll();
      await viaTcp.wait(5);
    }
    expect(seen).toBeInstanceOf(KvKeyError);
    for (const c of [viaShm, viaTcp, viaInproc]) await c.close();
  });

  test("close() with a client connected drains, frees the store, and is idempotent; the client then fails fast", async () => {
    const s = await kvServe({ listen: [listenUrl("tcp")], memoryBytes: 4 << 20 });
    const kv = await kvConnect(s.urls[0]!, { pool: { backoff: { initialMs: 10, maxMs: 50 } } });
    await kv.put("k", "v");
    await Promise.all([s.close(), s.close()]);
    expect(() => s.store.get(new Uint8Array([1]))).toThrow(UsageError);
    expect(await rejection(kv.get("k"))).toBeInstanceOf(KvUnavailableError);
    await kv.close();
  });
});

describe("a server's HELLO", () => {
  test("a malformed HELLO on a later connection leaves that connection RPC-only (no unhandled rejection)", async () => {
    const header = new Uint8Array(64);
    const valid = p.encodeHello({ protocolVersion: 1, maxKeyBytes: 1024, maxValueBytes: 1000, flags: 0, arenaDesc: new Uint8Array(0), writeBufDesc: new Uint8Array(0), writeBufBytes: 0, arenaHeader: header });
    let hellos = 0;
    const absent = new Uint8Array(p.GET_RESPONSE_OVERHEAD);
    // kvConnect asks twice: the pool's HELLO (connects) and the connection's own (kept).
    const fake = await serve(listenUrl("tcp"), { [p.KV_HELLO]: () => (hellos++ < 2 ? valid : new Uint8Array(3)), [p.KV_GET]: () => absent });
    const kv = await kvConnect(fake.url, { pool: { backoff: { initialMs: 5, maxMs: 20 } } });
    try {
      expect(kv.servers[0]!.hello!.maxValueBytes).toBe(1000);
      for (const session of fake.server.sessions) session.conn.close();
      const end = Date.now() + 10_000;
      while (hellos < 3 && Date.now() < end) {
        try {
          expect(await kv.get("x")).toBeNull();
        } catch (e) {
          expect(e).toBeInstanceOf(KvUnavailableError);
        }
        await Bun.sleep(5);
      }
      expect(await kv.get("x")).toBeNull();
      await Bun.sleep(20); // the garbage HELLO's answer has been handled by now
      expect(hellos).toBeGreaterThanOrEqual(3);
      expect(kv.servers[0]!.hello).toBeNull();
    } finally {
      await kv.close();
      fake.close();
    }
  });
});

describe("one-sided offer over ucx", () => {
  useEnv({ UCX_TLS: "tcp,self" });
  test.skipIf(ucxReason !== null)("HELLO offers the arena and a write buffer by default and nothing with oneSided: false; a oneSided: never client connects without RMA", async () => {
    const on = await kvServe({ listen: [listenUrl("ucx")], memoryBytes: 4 << 20, writeBufferBytes: 64 << 10 });
    servers.push(on);
    const kv = await kvConnect(on.urls[0]!);
    const h = kv.servers[0]!.hello!;
    expect(h.flags).toBe(p.HELLO_ONE_SIDED | p.HELLO_WRITE_BUFFER);
    expect(h.arenaDesc.length).toBeGreaterThan(20);
    expect(h.writeBufBytes).toBe(64 << 10);
    expect(kv.servers[0]!.ucx).not.toBeNull();
    const never = await kvConnect(on.urls[0]!, { oneSided: "never" });
    expect(never.servers[0]!.ucx).toBeNull(); // connected without RMA: one-sided access is never tried
    await never.put("n", "v");
    expect((await never.get("n"))!.version).toBeGreaterThan(0);
    const off = await kvServe({ listen: [listenUrl("ucx")], memoryBytes: 4 << 20, oneSided: false });
    servers.push(off);
    const kvOff = await kvConnect(off.urls[0]!);
    expect(kvOff.servers[0]!.hello!.flags).toBe(0);
    await kvOff.put("k", "v");
    expect((await kvOff.get("k"))!.value.length).toBe(1);
    for (const c of [kv, never, kvOff]) await c.close();
  });
});

describe("exports", () => {
  test("hotpath's kvServe / kvConnect load the kv module on first use; loadKv() hands it over", async () => {
    const h = await import("../../src/index.ts");
    const s = await h.kvServe({ listen: [listenUrl("tcp")], memoryBytes: 4 << 20 });
    servers.push(s);
    const kv = await h.kvConnect(s.urls);
    expect(await kv.put("x", "y")).toBe(1);
    const m = await h.loadKv();
    expect(m.KvStore).toBe(s.store.constructor as typeof m.KvStore);
    expect(typeof m.kvProtocol.decodeHello).toBe("function");
    await kv.close();
  });
});

describe("wait modes", () => {
  test(
    "a spin-mode server process and a spin-mode client over shm: the promise API (polled for it) and the hot path",
    async () => {
      const server = await startServer({ listen: [listenUrl("shm")], memoryBytes: 4 << 20, wait: { mode: "spin", spinNs: 0 } });
      peers.push(server);
      // Before the client polled its spin connections for promise calls, this HELLO timed out.
      const kv = await kvConnect(server.urls[0]!, { timeoutMs: 20_000, pool: { connect: { wait: { mode: "spin", spinNs: 10_000 } } } });
      try {
        const v = await kv.put("spin", "yes");
        expect((await kv.get("spin"))!.version).toBe(v);
        let got = null as number | null;
        kv.onResult = (_ud, err, found, version) => {
          expect(err).toBeNull();
          expect(found).toBe(true);
          got = version;
        };
        expect(kv.getCb(new TextEncoder().encode("spin"), 1)).toBe(0);
        const end = Date.now() + 20_000;
        while (got === null && Date.now() < end) {
          kv.poll();
          await Bun.sleep(0);
        }
        expect(got).toBe(v);
      } finally {
        await kv.close();
        await server.kill();
      }
    },
    WATCHDOG_MS,
  );
});

describe("snapshot over RPC", () => {
  test(
    "SAVE, kill -9, restart: every key, value and version back; SIGTERM saves too; versions go on",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "hotpath-kv-snap-"));
      dirs.push(dir);
      const snapshot = join(dir, "kv.snap");
      const opts = { listen: [listenUrl("shm")], memoryBytes: 8 << 20, snapshot };
      const first = await startServer(opts);
      peers.push(first);
      const want = new Map<string, { value: Uint8Array; version: number }>();
      let kv = await kvConnect(first.urls[0]!);
      for (let i = 0; i < 300; i++) {
        const key = i % 3 === 0 ? `s${i}` : new Uint8Array([i & 0xff, i >> 8, 0, 9]);
        const value = new Uint8Array(i * 13).fill(i & 0xff);
        const version = await kv.put(key, value);
        want.set(Buffer.from(typeof key === "string" ? new TextEncoder().encode(key) : key).toString("hex"), { value, version });
      }
      await kv.del("s0");
      want.delete(Buffer.from("s0").toString("hex"));
      await kv.save();
      await kv.put("after-save", "lost"); // written after SAVE: gone with kill -9
      await kv.close();
      await first.kill(9);

      const check = async (url: string) => {
        const c = await kvConnect(url);
        for (const [hex, w] of want) {
          const got = await c.get(Buffer.from(hex, "hex"));
          expect(got!.version).toBe(w.version);
          expect(Buffer.from(got!.value).equals(Buffer.from(w.value))).toBe(true);
        }
        return c;
      };
      const second = await startServer(opts);
      peers.push(second);
      kv = await check(second.urls[0]!);
      expect(await kv.get("after-save")).toBeNull();
      const maxVersion = Math.max(...[...want.values()].map((w) => w.version));
      const v = await kv.put("graceful", "kept");
      expect(v).toBeGreaterThan(maxVersion);
      want.set(Buffer.from("graceful").toString("hex"), { value: new TextEncoder().encode("kept"), version: v });
      await kv.close();
      // SIGTERM: the server closes gracefully and saves.
      await second.kill(15);
      expect(second.proc.exitCode).toBe(0);

      const third = await startServer(opts);
      peers.push(third);
      kv = await check(third.urls[0]!);
      await kv.close();
      await third.kill();
    },
    WATCHDOG_MS,
  );

  test("a corrupt or truncated snapshot makes kvServe fail with KvSnapshotError, and nothing is left listening", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hotpath-kv-snap-"));
    dirs.push(dir);
    const snapshot = join(dir, "kv.snap");
    const url = listenUrl("shm");
    const s = await kvServe({ listen: [url], memoryBytes: 4 << 20, snapshot });
    for (let i = 0; i < 50; i++) s.store.put(new TextEncoder().encode(`k${i}`), new Uint8Array(100).fill(i));
    await s.close(); // saves
    const good = readFileSync(snapshot);
    const flipped = Buffer.from(good);
    flipped[Math.floor(good.length / 2)]! ^= 0x40;
    for (const [what, bytes] of [
      ["a flipped byte", flipped],
      ["truncated", good.subarray(0, good.length - 20)],
    ] as const) {
      writeFileSync(snapshot, bytes);
      const e = await rejection(kvServe({ listen: [url], memoryBytes: 4 << 20, snapshot }));
      expect(e, what).toBeInstanceOf(KvSnapshotError);
      expect(e.message).toContain(snapshot);
    }
    // The name is free: the failed kvServe never listened.
    writeFileSync(snapshot, good);
    const again = await kvServe({ listen: [url], memoryBytes: 4 << 20, snapshot });
    expect(again.store.stats().keys).toBe(50);
    await again.close({ save: false });
  });
});

describe("hostile client", () => {
  test("malformed KV bodies get error replies naming the problem; the session and the server keep serving", async () => {
    const s = await serveHere({});
    const bad = await rpcConnect(s.urls[0]!);
    const lie = new Uint8Array(8);
    new DataView(lie.buffer).setUint32(0, 0xfffffff0, true);
    const cases: Array<[number, Uint8Array, RegExp]> = [
      [p.KV_PUT, new Uint8Array(2), /kv PUT request: 2 bytes, too short/],
      [p.KV_PUT, lie, /keyLen 4294967280 exceeds/],
      [p.KV_CAS, new Uint8Array(11), /kv CAS request: 11 bytes/],
      [p.KV_MGET, lie, /count 4294967280 exceeds the limit/],
      [p.KV_MGET, new Uint8Array([5, 0, 0, 0, 1, 0, 0, 0]), /count 5 needs at least 20 bytes/],
      [p.KV_COMMIT, p.encodeCommit(new Uint8Array([1]), 10, 0), /no write buffer/],
      [p.KV_COMMIT, new Uint8Array(3), /kv COMMIT request: 3 bytes, too short/],
      [p.KV_HELLO, new Uint8Array(1), /kv HELLO request: 1 bytes, expected none/],
      [p.KV_STATS, new Uint8Array(4), /kv STATS request/],
      [p.KV_GET, new Uint8Array(0), /key of 0 bytes/],
      [0x4b5600ff, new Uint8Array(0), /no method/],
    ];
    for (const [method, body, pattern] of cases) {
      const e = await rejection(bad.request(method, body));
      expect(e.message).toMatch(pattern);
    }
    // The same connection still works, and so does another client.
    const ok = p.decodeVersion(await bad.request(p.KV_PUT, p.encodePut(new Uint8Array([1]), new Uint8Array([2]))));
    await using kv = await kvConnect(s.urls[0]!);
    expect((await kv.get(new Uint8Array([1])))!.version).toBe(ok);
    bad.close();
  });
});
