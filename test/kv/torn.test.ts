/**
 * Torn reads: the kv server's own process rewrites two keys (64 B and 64 KiB values) as fast
 * as it can, each value's bytes all equal to a byte chosen per version, and logs every
 * (key, version, byte) it wrote; meanwhile this process reads both keys with one-sided GETs
 * over ucx (UCX_TLS=tcp,self and shm,self). Every value returned must be whole (its length, all
 * bytes equal) and its (version, byte) pair one the writer wrote. The counts of torn re-reads
 * and of GETs handed to KV_GET are printed: they show the race was real. UCX 1.13 emulates RMA
 * over tcp and shared memory with Active Messages that the server's worker answers between its
 * writes, so a torn read here is a slot or record rewritten or reused between the group read
 * and the record read; a NIC's reads that race a write byte by byte (also caught by the crcs)
 * do not happen on these transports.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { kvConnect } from "../../src/kv/client.ts";
import { oneSidedClient } from "../../src/kv/one-sided.ts";
import { useEnv } from "../helpers/env.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SRC = new URL("../../src/", import.meta.url).pathname;
const HELPERS = new URL("../helpers/", import.meta.url).pathname;
const KEYS: Array<[string, number]> = [
  ["torn-64", 64],
  ["torn-64k", 64 << 10],
];
/** How long the writer rewrites (after the reader says go). */
const WRITE_MS = 1500;

// argv: url, directory (the reader creates "go" there; the writer writes "log.json" when done).
const WRITER = `
import { existsSync, writeFileSync } from "node:fs";
import { kvServe } from "${SRC}kv/server.ts";
import { exitWhenParentGoes } from "${HELPERS}peer.ts";
const [url, dir] = process.argv.slice(2);
const kv = await kvServe({ listen: [url], memoryBytes: 32 << 20, writeBufferBytes: 0 });
const keys = ${JSON.stringify(KEYS)}.map(([k, n]) => [new TextEncoder().encode(k), n]);
const log = keys.map(() => []);
let n = 0;
const write = (i) => {
  const byte = (n++ * 37 + 11) & 0xff;
  const [key, len] = keys[i];
  log[i].push([kv.store.put(key, new Uint8Array(len).fill(byte)), byte]);
};
write(0); write(1);
console.log(JSON.stringify({ url: kv.urls[0] }));
exitWhenParentGoes();
while (!existsSync(dir + "/go")) await Bun.sleep(5);
const end = performance.now() + ${WRITE_MS};
while (performance.now() < end) {
  for (let j = 0; j < 40; j++) write(j & 1);
  await new Promise((r) => setImmediate(r)); // serve the reader's RMA (tcp) and KV_GET fallbacks
}
writeFileSync(dir + "/log.json", JSON.stringify(log));
console.log(JSON.stringify({ done: n }));
`;

for (const tls of ["tcp,self", "shm,self"]) {
  describe(`kv one-sided GETs racing the writer (UCX_TLS=${tls})`, () => {
    let dir: string;
    let peer: Peer;
    useEnv({ UCX_TLS: tls });
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "hotpath-kv-torn-"));
      writeFileSync(join(dir, "writer.ts"), WRITER);
      peer = await spawnPeer(join(dir, "writer.ts"), ["ucx://127.0.0.1:0", dir], { UCX_TLS: tls });
    });
    afterAll(async () => {
      await peer.kill();
      rmSync(dir, { recursive: true, force: true });
    });

    test("every value read is whole and a (version, byte) the writer wrote", async () => {
      const kv = await kvConnect(peer.ready.url);
      const seen = KEYS.map(() => new Map<number, number>());
      let bad = 0;
      let reads = 0;
      try {
        oneSidedClient.resetStats();
        writeFileSync(join(dir, "go"), "");
        const deadline = Date.now() + WRITE_MS + 20_000; // a watchdog, not a timing assert
        while (!existsSync(join(dir, "log.json"))) {
          if (Date.now() > deadline) throw new Error("the writer never finished");
          for (const [i, [key, len]] of KEYS.entries()) {
            const got = await kv.get(key);
            reads++;
            if (got === null || got.value.length !== len || got.value.some((b) => b !== got.value[0])) {
              bad++;
              continue;
            }
            seen[i]!.set(got.version, got.value[0]!);
          }
        }
      } finally {
        await kv.close();
      }
      const stats = { ...oneSidedClient.stats };
      console.log(`torn over ${tls}: ${reads} GETs, ${stats.hits} one-sided, ${stats.tornRereads} torn re-reads, ${stats.fallbacks} sent as KV_GET; versions seen ${seen.map((m) => m.size).join(" / ")}`);
      expect(bad).toBe(0);
      const log = JSON.parse(readFileSync(join(dir, "log.json"), "utf8")) as Array<Array<[number, number]>>;
      for (const [i, m] of seen.entries()) {
        const wrote = new Map(log[i]!);
        for (const [version, byte] of m) expect([version, wrote.get(version)]).toEqual([version, byte]);
        // The reads overlapped the writes: several versions of each key were seen.
        expect(m.size).toBeGreaterThan(1);
      }
      expect(stats.hits + stats.fallbacks).toBe(reads);
    }, 40_000);
  });
}
