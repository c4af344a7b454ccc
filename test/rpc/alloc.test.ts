/**
 * The hot-path APIs allocate nothing per round trip in steady state: client call / poll /
 * onResponse and server poll / recv / reply, over a real shm and a real inproc connection
 * (listen + connect in this process, both sides in this thread, spin mode), for a 32-byte body
 * (inline in the descriptor) and a 4 KiB one (a slab slot). After warm-up, 100k round trips are
 * counted with bench/loopback.ts's objectsPer() (heapStats().objectTypeCounts summed, which
 * sees garbage not yet collected; Bun.gc(true) before each reading; the readings' own objects
 * subtracted). Each reply is checked byte for byte.
 */

import { afterAll, describe, expect, test } from "bun:test";
import { Client, SEND_OK, Server, connect, listen, type Connection, type Listener } from "../../src/index.ts";
import { objectsPer } from "../../bench/loopback.ts";

const ROUND_TRIPS = 100_000;
/** What the measuring itself may leave per round trip (a few objects over the whole run). */
const ALLOWED_PER_ROUND_TRIP = 0.01;

const open: Array<{ close(): void }> = [];
afterAll(() => {
  for (const o of open.splice(0)) o.close();
});

async function pair(transport: "shm" | "inproc"): Promise<{ client: Client<number>; server: Server }> {
  const url = `${transport}://alloc-${process.pid}-${transport}-${Math.random().toString(36).slice(2, 8)}`;
  const listener: Listener = await listen(url, { wait: { mode: "spin", spinNs: 0 } });
  const server = new Server();
  server.attach(listener);
  open.push(server);
  const conn: Connection = await connect(url, { wait: { mode: "spin", spinNs: 0 } });
  const client = new Client<number>(conn);
  open.push(client);
  // The accepted side arrives through the listener's event loop.
  for (let i = 0; i < 500 && server.sessions.size === 0; i++) await Bun.sleep(10);
  expect(server.sessions.size).toBe(1);
  return { client, server };
}

describe.each(["shm", "inproc"] as const)("hot path allocations over %s", (transport) => {
  test.each([32, 4096])("%i-byte bodies: 0 objects per round trip", async (size) => {
    const { client, server } = await pair(transport);
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (i * 13 + 5) & 0xff;
    let wrong = 0;
    let seen = 0;
    client.onResponse = (ud, body, err) => {
      if (err !== null || ud !== seen || body.length !== size) wrong++;
      else for (let i = 0; i < size; i += 61) if (body[i] !== data[i]) wrong++;
      if (body[size - 1] !== data[size - 1]) wrong++;
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
    rounds(ROUND_TRIPS); // warm-up: JIT, caches, pools
    const perRoundTrip = objectsPer(ROUND_TRIPS, rounds);
    console.log(`${transport} ${size} B: ${perRoundTrip.toFixed(4)} heap objects per round trip over ${ROUND_TRIPS} round trips`);
    expect(wrong).toBe(0);
    expect(perRoundTrip).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
  }, 60_000);
});
