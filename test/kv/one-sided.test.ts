/**
 * One-sided access over ucx (UCX_TLS=tcp,self and shm,self), against a kv server in a process
 * of its own:
 * - a seeded sequence of put / del over binary keys of mixed sizes, each followed by GETs: the
 *   one-sided client (oneSided "auto") returns what the RPC-only client (oneSided "never")
 *   returns and what a Map model says, value and version; the server's index is small enough
 *   that some groups overflow, so both one-sided hits and KV_GET fallbacks occur;
 * - two keys of one index hash each read their own value one-sided;
 * - large PUTs (RMA put into the write buffer + KV_COMMIT) read back byte for byte through
 *   both clients; one larger than the write buffer, and those that find it busy, go by KV_PUT;
 *   one larger than the buffer and than a message fails with KvValueTooLargeError;
 * - the arena is registered once per RMA runtime; a write buffer only for a connection that
 *   does a large put (asked for with KV_WRITE_BUFFER then: 20 clients that never do register
 *   none), deregistered when the connection closes;
 * - a COMMIT whose crc32 (or length) does not match the write buffer is refused with
 *   UsageError (a class that travels back over RPC) and stores nothing.
 */
import { describe, expect, test } from "bun:test";
import { KvValueTooLargeError, rpcConnect } from "../../src/index.ts";
import { kvConnect } from "../../src/kv/client.ts";
import { keyHash } from "../../src/kv/layout.ts";
import { oneSidedClient } from "../../src/kv/one-sided.ts";
import { decodeGetResponse, decodeHello, decodeVersion, decodeWriteBuffer, encodeCommit, HELLO_WRITE_BUFFER, KV_COMMIT, KV_GET, KV_HELLO, KV_WRITE_BUFFER } from "../../src/kv/protocol.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import { useOneSidedPeer } from "./helpers.ts";

const SRC = new URL("../../src/", import.meta.url).pathname;
/** 8 groups of 7 slots for 48 keys, a fixed hash seed: groups overflow (their keys live where only the server looks) in every run. */
// Each line on stdin is answered with the registrations of the listener's RMA runtime; EOF exits.
const SERVER = `
import { kvServe } from "${SRC}kv/server.ts";
import { UcxRuntime } from "${SRC}ucx/runtime.ts";
const kv = await kvServe({ listen: [process.argv[2]], memoryBytes: 16 << 20, groupCount: 8, hashSeed: 7, writeBufferBytes: 1 << 20 });
console.log(JSON.stringify({ url: kv.urls[0] }));
const rt = UcxRuntime.acquire({ rma: true }); // the listener's (same configuration)
for await (const _ of console) console.log(JSON.stringify({ registrations: rt.stats().registrations }));
process.exit(0);
`;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function bytes(n: number, r: () => number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

for (const tls of ["tcp,self", "shm,self"]) {
  describe(`kv one-sided access over ucx (UCX_TLS=${tls})`, () => {
    const t = useOneSidedPeer(tls, SERVER, "hotpath-kv-one-sided-");

    // First in the file: the two keys' group holds nothing else (no overflow sends them to KV_GET).
    test("two keys of one hash (a collision): each GET returns its own key's value, one-sided", async () => {
      // Find two keys whose index hash (seed 7, the server's) is equal: a birthday search.
      const seen = new Map<number, string>();
      let pair: [string, string] | null = null;
      for (let i = 0; pair === null; i++) {
        const k = `collide-${i}`;
        const h = keyHash(new TextEncoder().encode(k), 7);
        const other = seen.get(h);
        if (other !== undefined) pair = [other, k];
        else seen.set(h, k);
      }
      const [a, b] = pair;
      const va = await t.slow.put(a, "value of a");
      const vb = await t.slow.put(b, "value of b");
      oneSidedClient.resetStats();
      for (let i = 0; i < 4; i++) {
        for (const [k, v, text] of [[a, va, "value of a"], [b, vb, "value of b"]] as const) {
          const got = await t.fast.get(k);
          expect([new TextDecoder().decode(got!.value), got!.version]).toEqual([text, v]);
        }
      }
      expect(oneSidedClient.stats.hits).toBe(8);
    });

    test("a seeded put / del / get sequence: one-sided GETs return what RPC GETs and the model say", async () => {
      const r = rng(0x5eed + tls.length);
      // Binary keys of 1..40 bytes, a one-byte zero key, and keys of 300 B and of the 1024 B limit.
      const keys = Array.from({ length: 48 }, (_, i) => (i === 0 ? new Uint8Array([0]) : i === 1 ? bytes(300, r) : i === 2 ? bytes(1024, r) : bytes(1 + ((r() * 40) | 0), r)));
      const model = new Map<string, { value: Uint8Array; version: number }>();
      oneSidedClient.resetStats();
      const sizes = [0, 1, 7, 64, 300, 4096, 9000];
      for (let step = 0; step < 700; step++) {
        const key = keys[(r() * keys.length) | 0]!;
        const op = r();
        if (op < 0.55) {
          const value = bytes(sizes[(r() * sizes.length) | 0]!, r);
          const version = await t.slow.put(key, value);
          model.set(hex(key), { value, version });
        } else if (op < 0.7) {
          expect(await t.slow.del(key)).toBe(model.delete(hex(key)));
        }
        const probe = keys[(r() * keys.length) | 0]!;
        const want = model.get(hex(probe)) ?? null;
        const one = await t.fast.get(probe);
        const two = await t.slow.get(probe);
        expect(one === null ? null : { value: hex(one.value), version: one.version }).toEqual(want === null ? null : { value: hex(want.value), version: want.version });
        expect(two === null ? null : { value: hex(two.value), version: two.version }).toEqual(want === null ? null : { value: hex(want.value), version: want.version });
      }
      const s = { ...oneSidedClient.stats };
      console.log(`one-sided over ${tls}: ${s.hits} hits (${s.hintHits} in one round trip), ${s.fallbacks} fallbacks (overflow), ${s.tornRereads} torn re-reads of 700 GETs`);
      expect(s.hits).toBeGreaterThan(0);
      // Keys read again: their remembered record, read beside the group, settled some GETs (and a stale one never did: the values matched).
      expect(s.hintHits).toBeGreaterThan(0);
      expect(s.fallbacks).toBeGreaterThan(0); // overflowing groups go by KV_GET
      expect(s.hits + s.fallbacks).toBe(700);
    });

    test("large PUTs by RMA + COMMIT read back byte for byte; too large or busy ones go by KV_PUT", async () => {
      oneSidedClient.resetStats();
      const r = rng(99);
      const values = [16 << 10, 256 << 10, 1 << 20].map((n) => bytes(n, r));
      for (const [i, v] of values.entries()) {
        const version = await t.fast.put(`large-${i}`, v);
        for (const c of [t.fast, t.slow]) {
          const got = await c.get(`large-${i}`);
          expect(got?.version).toBe(version);
          expect(Buffer.from(got!.value).equals(Buffer.from(v))).toBe(true);
        }
      }
      expect(oneSidedClient.stats.largePuts).toBe(3);
      // Larger than the 1 MiB write buffer: KV_PUT.
      const big = bytes((1 << 20) + 1, r);
      await t.fast.put("large-big", big);
      expect(Buffer.from((await t.slow.get("large-big"))!.value).equals(Buffer.from(big))).toBe(true);
      expect(oneSidedClient.stats.largePutFallbacks).toBe(1);
      // Eight at once on one connection: one holds the write buffer, the others go by KV_PUT.
      const many = Array.from({ length: 8 }, () => bytes(40 << 10, r));
      const versions = await Promise.all(many.map((v, i) => t.fast.put(`many-${i}`, v)));
      for (const [i, v] of many.entries()) {
        const got = await t.slow.get(`many-${i}`);
        expect(got?.version).toBe(versions[i]!);
        expect(Buffer.from(got!.value).equals(Buffer.from(v))).toBe(true);
      }
      expect(oneSidedClient.stats.largePuts).toBeGreaterThanOrEqual(4);
      expect(oneSidedClient.stats.largePuts + oneSidedClient.stats.largePutFallbacks).toBe(12);
    });

    test("a value too large for both the write buffer and a message fails with KvValueTooLargeError; one that fits the buffer goes by RMA", async () => {
      // This client accepts messages of 256 KiB at most (so its sends are limited to that too).
      const small = await kvConnect(t.peer.ready.url, { pool: { connect: { maxMessageBytes: 256 << 10 } } });
      try {
        const r = rng(7);
        oneSidedClient.resetStats();
        const fits = bytes(512 << 10, r); // above the message limit, within the 1 MiB write buffer
        const version = await small.put("by-rma", fits);
        expect(oneSidedClient.stats.largePuts).toBe(1);
        const got = await t.slow.get("by-rma");
        expect([got?.version, Buffer.from(got!.value).equals(Buffer.from(fits))]).toEqual([version, true]);
        await expect(small.put("too-big", bytes((1 << 20) + 1, r))).rejects.toBeInstanceOf(KvValueTooLargeError);
        expect(await t.slow.get("too-big")).toBeNull();
      } finally {
        await small.close();
      }
    });

    test("the arena is registered once; a write buffer only for a connection that did a large put, and it goes with it", async () => {
      const registrations = async () => {
        t.peer.proc.stdin.write("stats\n");
        t.peer.proc.stdin.flush();
        return JSON.parse(await t.peer.nextLine()).registrations as number;
      };
      // Settles at `n` (a watchdog bounds it: a closed connection's regions go as UCX closes its endpoint).
      const settle = async (n: number) => {
        const deadline = Date.now() + 10_000;
        let now = await registrations();
        while (now !== n && Date.now() < deadline) {
          await Bun.sleep(20);
          now = await registrations();
        }
        return now;
      };
      const oneSidedStats = async () => ((await t.slow.stats())[0] as { stats: { oneSided: { writeBuffers: number; writeBufferBytes: number } } }).stats.oneSided;
      // The arena, and the write buffer of `fast` (it did large puts above; `slow` never asks, earlier tests' others closed).
      expect(await settle(2)).toBe(2);
      expect(await oneSidedStats()).toMatchObject({ writeBuffers: 1, writeBufferBytes: 1 << 20 });
      // 20 clients that read one-sided and put small values: no write buffer registered for any of them.
      const more = await Promise.all(Array.from({ length: 20 }, () => kvConnect(t.peer.ready.url)));
      for (const [i, c] of more.entries()) {
        const v = await c.put(`small-${i}`, "x");
        expect((await c.get(`small-${i}`))?.version).toBe(v);
      }
      expect(await registrations()).toBe(2);
      expect(await oneSidedStats()).toMatchObject({ writeBuffers: 1, writeBufferBytes: 1 << 20 });
      // A large put registers one on its first use, freed with its connection.
      oneSidedClient.resetStats();
      await more[0]!.put("large-later", new Uint8Array(20 << 10).fill(3));
      expect(oneSidedClient.stats.largePuts).toBe(1);
      expect(await registrations()).toBe(3);
      await Promise.all(more.map((c) => c.close()));
      expect(await settle(2)).toBe(2);
      expect(await oneSidedStats()).toMatchObject({ writeBuffers: 1, writeBufferBytes: 1 << 20 });
    });

    test("a COMMIT whose crc32 or length does not match the write buffer is refused and stores nothing", async () => {
      const c = await rpcConnect(t.peer.ready.url, { ucx: { rma: true } });
      try {
        const hello = decodeHello(await c.request(KV_HELLO));
        // HELLO names the write buffer's size; the buffer itself is asked for.
        expect([hello.flags & HELLO_WRITE_BUFFER, hello.writeBufBytes, hello.writeBufDesc.length]).toEqual([HELLO_WRITE_BUFFER, 1 << 20, 0]);
        const key = new TextEncoder().encode("commit-check");
        // No buffer asked for yet: a COMMIT is refused.
        await expect(c.request(KV_COMMIT, encodeCommit(key, 1, 0))).rejects.toMatchObject({ remoteName: "UsageError", message: expect.stringContaining("no write buffer") });
        const offer = decodeWriteBuffer(await c.request(KV_WRITE_BUFFER));
        expect(offer.bytes).toBe(1 << 20);
        const wb = (c.conn as UcxConnection).attachRegion(offer.desc);
        const value = new Uint8Array(20_000).fill(5);
        await wb.put(0, value);
        await wb.flush();
        const crc = Bun.hash.crc32(value) >>> 0;
        // A raw rpc Client reports the server's UsageError as a RemoteError of that name (kvConnect's client rebuilds the class).
        await expect(c.request(KV_COMMIT, encodeCommit(key, value.length, crc ^ 1))).rejects.toMatchObject({ remoteName: "UsageError", message: expect.stringContaining("does not match") });
        await expect(c.request(KV_COMMIT, encodeCommit(key, (1 << 20) + 1, crc))).rejects.toMatchObject({ remoteName: "UsageError", message: expect.stringContaining("the write buffer holds") });
        expect(decodeGetResponse(await c.request(KV_GET, key))).toBeNull();
        // The right crc stores exactly the bytes in the buffer.
        const version = decodeVersion(await c.request(KV_COMMIT, encodeCommit(key, value.length, crc)), "kv COMMIT response");
        const got = decodeGetResponse(await c.request(KV_GET, key));
        expect(got?.version).toBe(version);
        expect(Buffer.from(got!.value).equals(Buffer.from(value))).toBe(true);
      } finally {
        c.close();
      }
    });
  });
}
