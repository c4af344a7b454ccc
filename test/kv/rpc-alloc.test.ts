/**
 * The kv hot path allocates nothing per GET or PUT in steady state over shm: the client's getCb /
 * putCb / poll / onResult and the server's GET (lookup, reply built in place) and PUT, with a real kvServe and a real
 * kvConnect in this process (shm, spin mode; the test drives the server's poll() itself between
 * the client's calls, so both sides run in this thread). After warm-up, round trips are counted
 * with bench/loopback.ts's objectsPer() (heapStats().objectTypeCounts summed, Bun.gc(true)
 * before each reading, the readings' own objects subtracted). Every result is checked inside the
 * counted window by a loop that allocates nothing: found, the version its PUT returned, every
 * byte of the value; an absent key comes back not found. Values up to the server's
 * SMALL_VALUE_BYTES (128) are copied without a view; larger ones cost a view of the arena and
 * the transport's reply buffer (2 objects), not tested here.
 */

import { afterAll, expect, test } from "bun:test";
import { objectsPer } from "../../bench/loopback.ts";
import { SEND_OK } from "../../src/contract/transport.ts";
import { kvConnect, kvServe, type KvClient, type KvServer } from "../../src/kv/index.ts";

const ROUND_TRIPS = 50_000;
/** What the measuring itself may leave per round trip (a few objects over the whole run). */
const ALLOWED_PER_ROUND_TRIP = 0.01;
const KEYS = 64;
const SPIN = { mode: "spin", spinNs: 0 } as const;

const open: Array<{ close(): unknown }> = [];
afterAll(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

async function pair(): Promise<{ kv: KvServer; client: KvClient }> {
  const url = `shm://kv-alloc-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const kv = await kvServe({ listen: [url], memoryBytes: 4 << 20, wait: SPIN });
  open.push(kv);
  const client = await kvConnect(kv.urls[0]!, { pool: { connect: { wait: SPIN } }, oneSided: "never" });
  open.push(client);
  return { kv, client };
}

test.each([0, 64, 128])("GET of a %i-byte value over shm: 0 objects per round trip, every result checked", async (size) => {
  const { kv, client } = await pair();
  const keys = Array.from({ length: KEYS }, (_, i) => new TextEncoder().encode(`alloc-key-${String(i).padStart(4, "0")}-${"x".repeat(16)}`));
  const values = keys.map((_, k) => Uint8Array.from({ length: size }, (_, i) => (i * 31 + k * 7 + 1) & 0xff));
  const versions = new Float64Array(KEYS);
  for (let k = 0; k < KEYS; k++) versions[k] = await client.put(keys[k]!, values[k]!);
  // As long as the others: the segment transports cache one body view per ring entry and length.
  const absent = new TextEncoder().encode(`alloc-key-nope-${"x".repeat(16)}`);
  expect(absent.length).toBe(keys[0]!.length);

  let wrong = 0;
  let done = 0;
  let expectKey = 0;
  client.onResult = (ud, err, found, version, value) => {
    done++;
    if (ud === -1) {
      if (err !== null || found || value !== null) wrong++;
      return;
    }
    if (err !== null || !found || value === null || ud !== expectKey || version !== versions[ud]!) return void wrong++;
    const want = values[ud]!;
    if (value.length !== want.length) return void wrong++;
    for (let i = 0; i < want.length; i++) if (value[i] !== want[i]) wrong++;
  };
  const oneCall = (key: Uint8Array, ud: number) => {
    const target = done + 1;
    if (client.getCb(key, ud) !== SEND_OK) throw new Error("getCb not sent");
    for (let spins = 0; done < target; spins++) {
      kv.server.poll();
      client.poll();
      if (spins > 1_000_000) throw new Error("no result arrived");
    }
  };
  const rounds = (n: number) => {
    for (let i = 0; i < n; i++) {
      const k = i & (KEYS - 1);
      expectKey = k;
      oneCall(keys[k]!, k);
      if ((i & 15) === 15) oneCall(absent, -1);
    }
  };
  rounds(ROUND_TRIPS); // warm-up: JIT, caches, pools
  const perRoundTrip = objectsPer(ROUND_TRIPS, rounds);
  console.log(`kv GET ${size} B over shm: ${perRoundTrip.toFixed(4)} heap objects per round trip over ${ROUND_TRIPS} round trips`);
  expect(wrong).toBe(0);
  expect(done).toBeGreaterThan(ROUND_TRIPS * 2);
  expect(perRoundTrip).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
}, 120_000);

test("PUT of a 64-byte value over shm: 0 objects per round trip; every version above the key's last, the last values read back", async () => {
  const { kv, client } = await pair();
  const keys = Array.from({ length: KEYS }, (_, i) => new TextEncoder().encode(`alloc-put-${String(i).padStart(4, "0")}-${"y".repeat(16)}`));
  const values = keys.map(() => new Uint8Array(64));
  const last = new Float64Array(KEYS);
  let wrong = 0;
  let done = 0;
  client.onResult = (ud, err, found, version, value) => {
    done++;
    if (err !== null || !found || value !== null || !(version > last[ud]!)) wrong++;
    last[ud] = version;
  };
  const rounds = (n: number) => {
    for (let i = 0; i < n; i++) {
      const k = i & (KEYS - 1);
      const v = values[k]!;
      v[0] = i & 0xff; // each PUT of a key sends other bytes
      v[63] = (i >>> 8) & 0xff;
      const target = done + 1;
      if (client.putCb(keys[k]!, v, k) !== SEND_OK) throw new Error("putCb not sent");
      for (let spins = 0; done < target; spins++) {
        kv.server.poll();
        client.poll();
        if (spins > 1_000_000) throw new Error("no result arrived");
      }
    }
  };
  rounds(ROUND_TRIPS); // warm-up
  const perRoundTrip = objectsPer(ROUND_TRIPS, rounds);
  console.log(`kv PUT 64 B over shm: ${perRoundTrip.toFixed(4)} heap objects per round trip over ${ROUND_TRIPS} round trips`);
  expect(wrong).toBe(0);
  expect(perRoundTrip).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
  for (let k = 0; k < KEYS; k++) {
    const got = kv.store.get(keys[k]!);
    expect(got?.version).toBe(last[k]!);
    expect(Buffer.compare(got!.value, values[k]!)).toBe(0);
  }
}, 120_000);

test("PUT bodies of one length with other key lengths reuse no stale views: each key gets exactly its value", async () => {
  const { kv, client } = await pair();
  const enc = new TextEncoder();
  // Same body length (4 + key + value = 34), keys of 10, 20 and 29 bytes: the same transport
  // slot, hence the same body view, carries each of them in turn.
  const cases = [
    { key: enc.encode("k".repeat(10)), value: new Uint8Array(20).fill(1) },
    { key: enc.encode("m".repeat(20)), value: new Uint8Array(10).fill(2) },
    { key: enc.encode("n".repeat(29)), value: new Uint8Array(1).fill(3) },
  ];
  let done = 0;
  let failed: Error | null = null;
  client.onResult = (_ud, err) => {
    done++;
    if (err !== null) failed = err;
  };
  for (let i = 0; i < 3000; i++) {
    const c = cases[i % 3]!;
    c.value[0] = i & 0xff;
    const target = done + 1;
    if (client.putCb(c.key, c.value, i) !== SEND_OK) throw new Error("putCb not sent");
    while (done < target) {
      kv.server.poll();
      client.poll();
    }
    const got = kv.store.get(c.key);
    if (got === null || Buffer.compare(got.value, c.value) !== 0) throw new Error(`PUT ${i}: key of ${c.key.length} bytes holds ${got === null ? "nothing" : `[${[...got.value]}]`}, sent [${[...c.value]}]`);
  }
  expect(failed).toBeNull();
  expect(kv.store.stats().keys).toBe(3);
});
