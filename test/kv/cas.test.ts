/**
 * CAS concurrency: 8 client processes each do 10,000 CAS increments of one counter (read, cas
 * with the version read, read again on mismatch) against one kv server process; the final value
 * is exactly 80,000 (no lost update) and its version is that of the last successful CAS. Over shm
 * and tcp. Every process is real and killed by pid in cleanup.
 */
import { afterAll, expect, test } from "bun:test";
import { kvConnect } from "../../src/kv/index.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { listenUrl, startServer } from "./peers/servers.ts";

const CLIENTS = 8;
const INCREMENTS = 10_000;
const WATCHDOG_MS = 240_000;
const CLIENT = new URL("./peers/cas-client.ts", import.meta.url).pathname;
const peers: Peer[] = [];
afterAll(async () => {
  for (const p of peers.splice(0)) await p.kill();
});

async function casCase(transport: string): Promise<void> {
  const server = await startServer({ listen: [listenUrl(transport)], memoryBytes: 8 << 20 });
  peers.push(server);
  const url = server.urls[0]!;
  const key = `counter-${transport}`;
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => spawnPeer(CLIENT, [url, key, String(INCREMENTS)], {}, 30_000)));
  peers.push(...clients);
  const t0 = performance.now();
  for (const c of clients) {
    c.proc.stdin.write("go\n");
    c.proc.stdin.flush();
  }
  const reports = await Promise.all(clients.map(async (c) => JSON.parse(await c.nextLine(WATCHDOG_MS))));
  const ms = performance.now() - t0;
  for (const r of reports) expect(r.done).toBe(INCREMENTS);
  const retries = reports.reduce((n, r) => n + r.retries, 0);
  console.log(`kv cas over ${transport}: ${CLIENTS} x ${INCREMENTS} increments in ${Math.round(ms)} ms, ${retries} retries`);
  const kv = await kvConnect(url);
  try {
    const final = await kv.get(key);
    expect(new TextDecoder().decode(final!.value)).toBe(String(CLIENTS * INCREMENTS));
    const st = (await kv.stats())[0] as { stats: { casFailures: number } };
    expect(st.stats.casFailures).toBe(retries); // every retry was a refused CAS, none lost
  } finally {
    await kv.close();
    for (const c of clients) await c.kill();
    await server.kill();
  }
}

test("8 processes x 10,000 CAS increments over shm: exactly 80,000", () => casCase("shm"), WATCHDOG_MS);
test("8 processes x 10,000 CAS increments over tcp: exactly 80,000", () => casCase("tcp"), WATCHDOG_MS);
