/**
 * The one-sided GET's pooled ops and kept buffers over ucx (UCX_TLS=tcp,self and shm,self),
 * against a kv server in a process of its own:
 * - every value returned is the caller's own: later GETs on the same connection (which reuse
 *   the op and its buffers) leave it as it was, for records kept in the op's buffer and for
 *   those over it (a buffer of their own), and 64 GETs in flight at once each get their key's
 *   value and version;
 * - a remembered record is used only while the group names it: a key rewritten twice (its new
 *   record in the old one's memory, at the same offset and length) or deleted reads as what the
 *   server holds now;
 * - a one-sided GET allocates a dozen JS heap objects or so (its promise and settling
 *   functions, the value and its KvValue, the caller's await), nothing per RMA read: counted
 *   with heapStats over GETs polled to completion, in windows no collection ran through.
 */
import { describe, expect, test } from "bun:test";
import { heapWindow } from "../../bench/measure.ts";
import { kvConnect } from "../../src/kv/client.ts";
import { oneSidedClient } from "../../src/kv/one-sided.ts";
import { useOneSidedPeer } from "./helpers.ts";

const SRC = new URL("../../src/", import.meta.url).pathname;
const HELPERS = new URL("../helpers/", import.meta.url).pathname;
const SERVER = `
import { kvServe } from "${SRC}kv/server.ts";
import { exitWhenParentGoes } from "${HELPERS}peer.ts";
const kv = await kvServe({ listen: [process.argv[2]], memoryBytes: 16 << 20, writeBufferBytes: 0 });
console.log(JSON.stringify({ url: kv.urls[0] }));
exitWhenParentGoes();
`;

const enc = new TextEncoder();
const fill = (n: number, b: number) => new Uint8Array(n).fill(b);
const uniform = (v: Uint8Array, b: number) => v.every((x) => x === b);


for (const tls of ["tcp,self", "shm,self"]) {
  describe(`kv one-sided GET ops and buffers over ucx (UCX_TLS=${tls})`, () => {
    const t = useOneSidedPeer(tls, SERVER, "hotpath-kv-one-sided-ops-");

    test("values are the caller's own: later GETs reuse the buffers, not the values; 64 in flight each get their own", async () => {
      for (const size of [1, 64, 4000, 20_000]) {
        const a = enc.encode(`own-a-${size}`);
        const b = enc.encode(`own-b-${size}`);
        const va = await t.slow.put(a, fill(size, 0xa1));
        const vb = await t.slow.put(b, fill(size, 0xb2));
        oneSidedClient.resetStats();
        const first = await t.fast.get(a); // read, then remembered
        const again = await t.fast.get(a); // the remembered record, read beside the group
        const other = await t.fast.get(b);
        for (const [got, byte, version] of [[first, 0xa1, va], [again, 0xa1, va], [other, 0xb2, vb]] as const) {
          expect([got!.value.length, uniform(got!.value, byte), got!.version]).toEqual([size, true, version]);
        }
        expect(oneSidedClient.stats).toMatchObject({ hits: 3, hintHits: 1, fallbacks: 0 });
      }
      const keys = Array.from({ length: 64 }, (_, i) => enc.encode(`in-flight-${i}`));
      const versions = await Promise.all(keys.map((k, i) => t.slow.put(k, fill(10 + i * 37, i))));
      for (let round = 0; round < 2; round++) {
        oneSidedClient.resetStats();
        const got = await Promise.all(keys.map((k) => t.fast.get(k)));
        got.forEach((g, i) => expect([i, g!.value.length, uniform(g!.value, i), g!.version]).toEqual([i, 10 + i * 37, true, versions[i]]));
        expect(oneSidedClient.stats.hits).toBe(64);
        if (round === 1) expect(oneSidedClient.stats.hintHits).toBe(64);
      }
    });

    test("a remembered record is used only while the group names it: rewritten into the same memory, or deleted", async () => {
      const key = enc.encode("stale-hint");
      const v1 = await t.slow.put(key, fill(100, 1));
      expect((await t.fast.get(key))!.version).toBe(v1);
      expect((await t.fast.get(key))!.version).toBe(v1);
      // Two rewrites: the second reuses the first record's chunk (same offset, same length).
      await t.slow.put(key, fill(100, 2));
      const v3 = await t.slow.put(key, fill(100, 3));
      oneSidedClient.resetStats();
      const got = await t.fast.get(key);
      expect([got!.version, uniform(got!.value, 3)]).toEqual([v3, true]);
      expect(oneSidedClient.stats).toMatchObject({ hits: 1, hintHits: 0 });
      expect(await t.slow.del(key)).toBe(true);
      expect(await t.fast.get(key)).toBeNull();
      const v4 = await t.slow.put(key, fill(100, 4));
      const back = await t.fast.get(key);
      expect([back!.version, uniform(back!.value, 4)]).toEqual([v4, true]);
    });

    test("a one-sided GET allocates a dozen JS objects or so, none per RMA read", async () => {
      // A client whose connection only progresses when polled, so each GET is driven to its end here.
      const spin = await kvConnect(t.peer.ready.url, { pool: { connect: { wait: { mode: "spin", spinNs: 0 } } } });
      try {
        const keys = Array.from({ length: 16 }, (_, i) => enc.encode(`alloc-${i}`));
        for (const k of keys) await t.slow.put(k, fill(64, 7));
        const sc = spin.servers[0]!;
        const rpc = sc.rpc!;
        const one = async (k: Uint8Array) => {
          const s = oneSidedClient.stats;
          const before = s.hits + s.fallbacks;
          const p = oneSidedClient.oneSidedGet(sc, k);
          const deadline = Date.now() + 10_000; // a watchdog, not a timing assert
          while (s.hits + s.fallbacks === before) {
            if (Date.now() > deadline) throw new Error("a one-sided GET never completed");
            rpc.conn.poll();
          }
          const got = await p;
          if (got === undefined || got === null || !uniform(got.value, 7)) throw new Error("wrong value");
        };
        await spin.get(keys[0]!); // HELLO and the regions attached
        for (let i = 0; i < 300; i++) await one(keys[i % 16]!);
        const perGet: number[] = [];
        for (let w = 0; w < 40 && perGet.length < 3; w++) {
          const objs = await heapWindow(async () => {
            for (let i = 0; i < 200; i++) await one(keys[i % 16]!);
          });
          if (objs !== null) perGet.push(objs / 200);
        }
        expect(perGet.length).toBeGreaterThan(0);
        // Measured about 11 (the promise and its two settling functions, the value copy, its
        // KvValue, and this test's own async call and await); before GetOp it was about 62.
        expect(Math.min(...perGet)).toBeLessThan(16);
      } finally {
        await spin.close();
      }
    });
  });
}
