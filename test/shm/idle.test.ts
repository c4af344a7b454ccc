/**
 * Idle behaviour of segment connections under light load (issue 11, item 4): a side that has
 * nothing coming does not spin for it. Calls spaced ~2 ms apart, from another process (shm):
 * once the strategy's first probe is spent, the serve() side's connection spends no spin time
 * after its replies, and a client sending one-way messages spends none after its sends; a peer
 * parked on its event loop is woken once for the sends of one tick. The
 * figures asserted are the connections' own idle counters (SegmentConnection.idleStats()), never
 * CPU time or runtime: CPU per request is a benchmark figure (bench/serve.bench.ts).
 */

import { afterAll, describe, expect, test } from "bun:test";
import { rpcConnect, type Client } from "../../src/index.ts";
import type { IdleStats, SegmentConnection } from "../../src/segment/connection.ts";
import { PROBE_IDLES } from "../../src/segment/idle.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { M_ECHO, M_IDLE_STATS } from "./idle-peer.ts";

const PEER = new URL("./idle-peer.ts", import.meta.url).pathname;
let n = 0;
const unique = () => `idle-${process.pid}-${n++}`;
const peers: Peer[] = [];
const clients: Client[] = [];

afterAll(async () => {
  for (const c of clients) c.close();
  for (const p of peers) await p.kill();
});

const td = new TextDecoder();
const stats = (conn: unknown): IdleStats => ({ ...(conn as SegmentConnection).idleStats() });

async function serverStats(c: Client): Promise<IdleStats> {
  return JSON.parse(td.decode(await c.request(M_IDLE_STATS, new Uint8Array(0), { timeoutMs: 10_000 })));
}

async function startServer(): Promise<Client> {
  const peer = await spawnPeer(PEER, [`shm://${unique()}`]);
  peers.push(peer);
  const c = await rpcConnect(peer.ready.url);
  clients.push(c);
  return c;
}

const CALLS = 60;
const SPACING_MS = 2;
/** Calls at the same pace before the counters are read: more than the strategy's first probe (PROBE_IDLES idles per cause). */
const WARM_UP = 2 * PROBE_IDLES;

describe("a side with nothing coming does not spin (default wait mode)", () => {
  test("a serve() process answering calls spaced ~2 ms apart spends no spin time after its replies", async () => {
    const c = await startServer();
    const body = new Uint8Array(32).fill(7);
    // The same pace first: the strategy's first probe (PROBE_IDLES spins per cause) is spent here.
    for (let i = 0; i < WARM_UP; i++) {
      await Bun.sleep(SPACING_MS);
      expect(await c.request(M_ECHO, body)).toEqual(body);
    }
    const before = await serverStats(c);
    for (let i = 0; i < CALLS; i++) {
      await Bun.sleep(SPACING_MS);
      body[0] = i;
      expect(await c.request(M_ECHO, body, { timeoutMs: 10_000 })).toEqual(body);
    }
    const after = await serverStats(c);
    // Every one of those replies was followed by ~2 ms of nothing: a spin could never pay.
    expect({ spins: after.spins - before.spins, spinNs: after.spinNs - before.spinNs }).toEqual({ spins: 0, spinNs: 0 });
    // It parked instead, at least once per request.
    expect(after.parks - before.parks).toBeGreaterThanOrEqual(CALLS);
  }, 60_000);

  test("a client sending one-way messages spaced ~2 ms apart spends no spin time after its sends", async () => {
    const c = await startServer();
    const body = new Uint8Array(32).fill(3);
    expect(await c.request(M_ECHO, body)).toEqual(body);
    for (let i = 0; i < WARM_UP; i++) {
      await Bun.sleep(SPACING_MS);
      expect(c.send(M_ECHO, body)).toBe(0);
    }
    await Bun.sleep(SPACING_MS);
    const before = stats(c.conn);
    for (let i = 0; i < CALLS; i++) {
      await Bun.sleep(SPACING_MS);
      expect(c.send(M_ECHO, body)).toBe(0);
    }
    await Bun.sleep(SPACING_MS);
    const after = stats(c.conn);
    // A one-way message has no answer: nothing ever came after those sends.
    expect({ spins: after.spins - before.spins, spinNs: after.spinNs - before.spinNs }).toEqual({ spins: 0, spinNs: 0 });
    // The server still got them all, in order, and answers as before.
    expect(await c.request(M_ECHO, body)).toEqual(body);
  }, 60_000);
});

describe("a peer parked on its event loop is rung once per tick", () => {
  test("20 one-way sends in one tick, 2 ms apart, wake the serve() process at most twice (the first ring at once, the rest at the end of the tick), not once per send", async () => {
    const c = await startServer();
    const body = new Uint8Array(32).fill(5);
    expect(await c.request(M_ECHO, body)).toEqual(body);
    const before = await serverStats(c);
    await Bun.sleep(20); // the server has parked
    for (let i = 0; i < 20; i++) {
      expect(c.send(M_ECHO, body)).toBe(0);
      // Long enough for a woken server to take the message and park again before the next send.
      const until = Bun.nanoseconds() + 2e6;
      while (Bun.nanoseconds() < until);
    }
    await Bun.sleep(20);
    const after = await serverStats(c);
    // Parks between the two readings: the ones after the first reading's reply, the one wake-up
    // for the burst, the second reading's arrival. Rung per send, the server would have woken
    // (and parked again) for each of the 20.
    expect(after.parks - before.parks).toBeLessThan(10);
    expect(stats(c.conn).rings).toBeGreaterThan(0);
  }, 60_000);
});
