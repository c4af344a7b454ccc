/**
 * The hot-path APIs allocate nothing per round trip in steady state: client call / poll /
 * onResponse and server poll / recv / reply, over a real shm and a real inproc connection
 * (listen + connect in this process, both sides in this thread, spin mode), for a 32-byte body
 * (inline in the descriptor) and a 4 KiB one (a slab slot). After warm-up, 100k round trips are
 * counted with bench/loopback.ts's objectsPer() (heapStats().objectTypeCounts summed, which
 * sees garbage not yet collected; Bun.gc(true) before each reading; the readings' own objects
 * subtracted; no clean reading fails). Each reply is checked byte for byte (every byte, by a plain
 * loop that allocates nothing), against its own request (user data in call order). The same
 * holds with the client's metrics on (ClientOptions.metrics), and with the server's too
 * (ServerOptions.metrics): every call recorded on each side, checked after.
 */

import { afterAll, describe, expect, test } from "bun:test";
import { Client, SEND_OK, Server, UsageError, connect, listen, type Connection, type Listener } from "../../src/index.ts";
import { objectsPer } from "../../bench/loopback.ts";

const ROUND_TRIPS = 100_000;
/** What the measuring itself may leave per round trip (a few objects over the whole run). */
const ALLOWED_PER_ROUND_TRIP = 0.01;

/** Bytes where `a` and `b` differ, every byte compared (a plain loop: allocates nothing, so it can run inside the counted window). */
function differingBytes(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

test("the reply check compares every byte (one wrong byte anywhere is seen) and allocates nothing", () => {
  const data = new Uint8Array(4096).map((_, i) => (i * 13 + 5) & 0xff);
  for (const at of [0, 5, 60, 62, 2047, 4094, 4095]) {
    const body = data.slice();
    body[at]! ^= 1;
    expect({ at, wrong: differingBytes(body, data) }).toEqual({ at, wrong: 1 });
  }
  const same = data.slice();
  differingBytes(same, data);
  expect(objectsPer(20_000, (n) => {
    for (let i = 0; i < n; i++) differingBytes(same, data);
  })).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
});

const open: Array<{ close(): void }> = [];
afterAll(() => {
  for (const o of open.splice(0)) o.close();
});

async function pair(transport: "shm" | "inproc", opts: { clientMetrics?: boolean; serverMetrics?: boolean } = {}): Promise<{ client: Client<number>; server: Server }> {
  const url = `${transport}://alloc-${process.pid}-${transport}-${Math.random().toString(36).slice(2, 8)}`;
  const listener: Listener = await listen(url, { wait: { mode: "spin", spinNs: 0 } });
  const server = new Server({ metrics: opts.serverMetrics ?? false });
  server.attach(listener);
  open.push(server);
  const conn: Connection = await connect(url, { wait: { mode: "spin", spinNs: 0 } });
  const client = new Client<number>(conn, { metrics: opts.clientMetrics ?? false });
  open.push(client);
  // The accepted side arrives through the listener's event loop.
  for (let i = 0; i < 500 && server.sessions.size === 0; i++) await Bun.sleep(10);
  expect(server.sessions.size).toBe(1);
  return { client, server };
}

/**
 * `rounds` drives n hot-path round trips of `size`-byte bodies on a fresh pair, every reply
 * checked against its request (`wrong` counts bad ones).
 */
async function roundTripper(transport: "shm" | "inproc", size: number, opts: { clientMetrics?: boolean; serverMetrics?: boolean } = {}) {
  const { client, server } = await pair(transport, opts);
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 13 + 5) & 0xff;
  const state = { wrong: 0 };
  let seen = 0;
  client.onResponse = (ud, body, err) => {
    if (err !== null || ud !== seen || body.length !== size) state.wrong++;
    else state.wrong += differingBytes(body, data);
    seen = (seen + 1) & 0xffff;
  };
  let next = 0;
  const rounds = (n: number) => {
    for (let i = 0; i < n; i++) {
      if (client.call(1, data, next) !== SEND_OK) throw new Error("call not sent");
      next = (next + 1) & 0xffff;
      server.poll();
      const h = server.recv();
      if (h === null) throw new Error("no request arrived");
      if (h.reply(h.data) !== SEND_OK) throw new Error("reply not sent");
      if (client.poll() !== 1) throw new Error("no response arrived");
    }
  };
  return { client, server, state, rounds };
}

describe.each(["shm", "inproc"] as const)("hot path allocations over %s", (transport) => {
  test.each([32, 4096])("%i-byte bodies: 0 objects per round trip", async (size) => {
    const { state, rounds } = await roundTripper(transport, size);
    rounds(ROUND_TRIPS); // warm-up: JIT, caches, pools
    const perRoundTrip = objectsPer(ROUND_TRIPS, rounds);
    console.log(`${transport} ${size} B: ${perRoundTrip.toFixed(4)} heap objects per round trip over ${ROUND_TRIPS} round trips`);
    expect(state.wrong).toBe(0);
    expect(perRoundTrip).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
  }, 60_000);

  // Metrics on (ClientOptions.metrics): each call is recorded (per-slot start in typed arrays,
  // an HDR histogram of fixed counts), so a known method costs nothing more per round trip.
  test.each([32, 4096])("client metrics on, %i-byte bodies: 0 objects per round trip, every call recorded", async (size) => {
    const { client, state, rounds } = await roundTripper(transport, size, { clientMetrics: true });
    rounds(ROUND_TRIPS); // warm-up, and the method's first record (its entry is made here)
    const perRoundTrip = objectsPer(ROUND_TRIPS, rounds);
    console.log(`${transport} ${size} B, client metrics: ${perRoundTrip.toFixed(4)} heap objects per round trip over ${ROUND_TRIPS} round trips`);
    expect(state.wrong).toBe(0);
    expect(perRoundTrip).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
    const m = client.metrics().methods;
    expect(m.length).toBe(1);
    const calls = m[0]!.calls; // warm-up + the counted runs (objectsPer runs `rounds` more than once)
    expect(calls).toBeGreaterThanOrEqual(2 * ROUND_TRIPS);
    expect({ transport: m[0]!.transport, method: m[0]!.method, errors: m[0]!.errors, bytesOut: m[0]!.bytesOut, bytesIn: m[0]!.bytesIn, latencyCount: m[0]!.latency.count })
      .toEqual({ transport, method: "1", errors: [], bytesOut: calls * size, bytesIn: calls * size, latencyCount: calls });
  }, 60_000);

  // Both sides metered (ServerOptions.metrics too: one record per consumed request handle).
  test.each([32, 4096])("client and server metrics on, %i-byte bodies: 0 objects per round trip, every call recorded on both sides", async (size) => {
    const { client, server, state, rounds } = await roundTripper(transport, size, { clientMetrics: true, serverMetrics: true });
    rounds(ROUND_TRIPS);
    const perRoundTrip = objectsPer(ROUND_TRIPS, rounds);
    console.log(`${transport} ${size} B, client + server metrics: ${perRoundTrip.toFixed(4)} heap objects per round trip over ${ROUND_TRIPS} round trips`);
    expect(state.wrong).toBe(0);
    expect(perRoundTrip).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
    const c = client.metrics().methods;
    const sv = server.metrics().methods;
    expect(c.length).toBe(1);
    expect(sv.length).toBe(1);
    const calls = c[0]!.calls;
    expect(calls).toBeGreaterThanOrEqual(2 * ROUND_TRIPS);
    const view = (m: (typeof c)[number]) => ({ transport: m.transport, method: m.method, calls: m.calls, errors: m.errors, bytesOut: m.bytesOut, bytesIn: m.bytesIn, latencyCount: m.latency.count });
    const both = { transport, method: "1", calls, errors: [], bytesOut: calls * size, bytesIn: calls * size, latencyCount: calls };
    expect(view(c[0]!)).toEqual(both);
    expect(view(sv[0]!)).toEqual(both);
  }, 60_000);
});

describe("pooled request handles", () => {
  test("a consumed handle is reissued for a later request; using it while pooled is a UsageError; a detached one is never reissued", async () => {
    const { client, server } = await pair("inproc");
    const got: Array<[number, number[]]> = [];
    client.onResponse = (ud, body, err) => {
      if (err !== null) throw err;
      got.push([ud, [...body]]);
    };
    const roundTrip = (ud: number, byte: number) => {
      expect(client.call(1, new Uint8Array([byte]), ud)).toBe(SEND_OK);
      server.poll();
      const h = server.recv();
      expect(h).not.toBeNull();
      return h!;
    };
    // 1. Consumed: every use is a UsageError until the pool reissues it.
    const h1 = roundTrip(1, 11);
    const gen1 = h1.generation;
    expect(h1.reply(h1.data)).toBe(SEND_OK);
    expect(() => h1.data).toThrow(UsageError);
    expect(() => h1.reply(new Uint8Array([0]))).toThrow(UsageError);
    expect(() => h1.appHeader).toThrow(UsageError);
    client.poll();
    // 2. Reissued: the same object, one generation on, describing the new request.
    const h2 = roundTrip(2, 22);
    expect(h2).toBe(h1);
    expect(h2.generation).toBe(gen1 + 1);
    expect([...h2.data]).toEqual([22]);
    expect(h2.reply(h2.data)).toBe(SEND_OK);
    client.poll();
    // 3. Detached (kept past its delivery): answered later, never reissued, so a late use of it
    // stays a UsageError and cannot answer the request that follows.
    const h3 = roundTrip(3, 33);
    h3.detach();
    const h4 = roundTrip(4, 44);
    expect(h4).not.toBe(h3);
    expect(h3.reply(h3.data)).toBe(SEND_OK);
    expect(() => h3.reply(new Uint8Array([99]))).toThrow(UsageError);
    expect(h4.reply(h4.data)).toBe(SEND_OK);
    client.poll();
    expect(got).toEqual([
      [1, [11]],
      [2, [22]],
      [3, [33]],
      [4, [44]],
    ]);
  });
});
