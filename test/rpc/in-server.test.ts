/**
 * A client shared by all requests of a Bun.serve process (issue 14): calls issued by many tasks
 * of one tick (as a Bun.serve handler issues one per HTTP request) go out in one flush over tcp
 * (TcpConnection.writes) and ring an shm backend at most twice (idleStats().rings); one timer
 * per client for request() deadlines, not one per request; req.signal of a real Bun.serve whose
 * client disconnects cancels the call on both sides; nothing stays behind per request
 * (listeners on the signal, queued deadlines); serve() and Bun.serve in one process each keep
 * answering while the other is loaded. Every reply's bytes are checked; no timed asserts (a
 * test's timeout is its watchdog).
 */

import { afterAll, describe, expect, test } from "bun:test";
import { getEventListeners } from "node:events";
import type { Socket } from "bun";
import { CancelledError, TimeoutError, rpcConnect, type RpcClient } from "../../src/index.ts";
import type { TcpConnection } from "../../src/tcp/connection.ts";
import type { SegmentConnection } from "../../src/segment/connection.ts";
import { spawnPeer, until, type Peer } from "../helpers/peer.ts";
import { countTimeouts } from "../helpers/count-timeouts.ts";
import { M_COUNTS, M_ECHO, M_HOLD } from "./in-server-peer.ts";

const PEER = new URL("./in-server-peer.ts", import.meta.url).pathname;
let n = 0;
const shmUrl = () => `shm://in-server-${process.pid}-${n++}`;
const urlFor = (kind: "tcp" | "shm" | "ucx") => (kind === "tcp" ? "tcp://127.0.0.1:0" : kind === "ucx" ? "ucx://127.0.0.1:0" : shmUrl());
const peers: Peer[] = [];
const clients: RpcClient<{}>[] = [];
const servers: { stop(force?: boolean): void }[] = [];

afterAll(async () => {
  for (const s of servers) s.stop(true);
  for (const c of clients) c.close();
  for (const p of peers) await p.kill();
});

async function backend(url: string, http = false): Promise<{ peer: Peer; client: RpcClient<{}> }> {
  const peer = await spawnPeer(PEER, http ? [url, "http"] : [url]);
  peers.push(peer);
  const client = await rpcConnect(peer.ready.url);
  clients.push(client);
  return { peer, client };
}

const bodyOf = (i: number) => new Uint8Array(32).fill(i & 0xff).map((x, k) => (k === 0 ? i & 0xff : k === 1 ? i >> 8 : x));

/**
 * Issues `count` requests, each from its own timer task (microtasks run between them, as between
 * a Bun.serve's handlers), checks every reply, and returns in how many ticks the tasks ran (each
 * tick that ran one queues one immediate, which runs at that tick's end): almost always one.
 */
async function requestsFromTasksOfOneTick(client: RpcClient<{}>, count: number): Promise<number> {
  const calls: Promise<Uint8Array>[] = [];
  let ticks = 0;
  let tickEndQueued = false;
  await new Promise<void>((resolve) => {
    for (let i = 0; i < count; i++) {
      setTimeout(() => {
        if (!tickEndQueued) {
          tickEndQueued = true;
          ticks++;
          setImmediate(() => (tickEndQueued = false));
        }
        calls.push(client.request(M_ECHO, bodyOf(i)));
        if (calls.length === count) resolve();
      }, 0);
    }
  });
  const out = await Promise.all(calls);
  for (let i = 0; i < count; i++) expect(out[i]).toEqual(bodyOf(i));
  return ticks;
}

type Counts = { held: number; cancels: number };
const counts = async (c: RpcClient<{}>): Promise<Counts> => JSON.parse(new TextDecoder().decode(await c.request(M_COUNTS)));

/** Asks the backend for its counts until `pred` holds; throws naming `what` after 10 s (a watchdog). */
async function untilCounts(c: RpcClient<{}>, pred: (x: Counts) => boolean, what: string): Promise<Counts> {
  const end = Date.now() + 10_000;
  for (;;) {
    const x = await counts(c);
    if (pred(x)) return x;
    if (Date.now() > end) throw new Error(`no ${what} within 10000 ms (${JSON.stringify(x)})`);
    await Bun.sleep(5);
  }
}

describe("calls of one tick share one flush", () => {
  test("tcp: 20 requests, each from its own task of one tick, go out in at most two socket writes per tick (one per request before)", async () => {
    const { client } = await backend("tcp://127.0.0.1:0");
    expect(await client.request(M_ECHO, bodyOf(7))).toEqual(bodyOf(7));
    await Bun.sleep(5);
    const conn = client.conn as TcpConnection;
    for (let round = 0; round < 3; round++) {
      const before = conn.writes;
      const ticks = await requestsFromTasksOfOneTick(client, 20);
      // Per tick: the first task's microtask flush, then the rest at the end of the tick.
      expect(ticks).toBeLessThan(5);
      expect(conn.writes - before).toBeLessThanOrEqual(2 * ticks);
    }
  }, 30_000);

  test("tcp: a lone request after a quiet tick is written in a microtask, not held for the tick's end", async () => {
    const { client } = await backend("tcp://127.0.0.1:0");
    expect(await client.request(M_ECHO, bodyOf(7))).toEqual(bodyOf(7));
    const conn = client.conn as TcpConnection;
    for (let i = 0; i < 5; i++) {
      await Bun.sleep(5); // quiet ticks: the tick-end state is reset
      const before = conn.writes;
      const reply = client.request(M_ECHO, bodyOf(i));
      await Promise.resolve(); // the flush's microtask was queued first, so it has run
      expect(conn.writes).toBe(before + 1);
      expect(await reply).toEqual(bodyOf(i));
    }
  }, 30_000);

  test("shm: 20 requests, each from its own task of one tick, ring the parked backend a few times per tick, not once per request", async () => {
    const { client } = await backend(shmUrl());
    expect(await client.request(M_ECHO, bodyOf(7))).toEqual(bodyOf(7));
    const conn = client.conn as SegmentConnection;
    for (let round = 0; round < 3; round++) {
      await Bun.sleep(20); // the backend has parked on its event loop
      const before = conn.idleStats().rings;
      const ticks = await requestsFromTasksOfOneTick(client, 20);
      expect(ticks).toBeLessThan(5);
      // The first ring of a tick goes at once, the rest wait for the end of a pump or of the
      // tick: a few rings per tick, never one per request.
      expect(conn.idleStats().rings - before).toBeLessThan(10 * ticks);
    }
  }, 30_000);
});

describe("deadlines: one timer per client", () => {
  test("200 requests with the default 30 s deadline create at most one timer between them (one each before)", async () => {
    const { client } = await backend("tcp://127.0.0.1:0");
    expect(await client.request(M_ECHO, bodyOf(1))).toEqual(bodyOf(1)); // the shared timer exists
    const created = await countTimeouts(async () => {
      for (let i = 0; i < 200; i++) expect(await client.request(M_ECHO, bodyOf(i))).toEqual(bodyOf(i));
      const all = await Promise.all(Array.from({ length: 64 }, (_, i) => client.request(M_ECHO, bodyOf(i))));
      for (let i = 0; i < 64; i++) expect(all[i]).toEqual(bodyOf(i));
    });
    expect(created).toBeLessThanOrEqual(1);
  }, 30_000);

  test("mixed deadlines on one client: short ones time out in deadline order, long ones and no-deadline ones complete", async () => {
    const { client } = await backend(shmUrl());
    const order: number[] = [];
    const calls = [400, 30, 0, 60, 20_000, 45, 10].map((ms, i) =>
      client.request(M_HOLD, bodyOf(i), { timeoutMs: ms }).then(
        () => "done",
        (e) => {
          order.push(ms);
          return e;
        },
      ),
    );
    // Held calls answer only when cancelled: the 400 ms one times out too, the others are cancelled below.
    const short = await Promise.all(calls.filter((_, i) => [1, 3, 5, 6].includes(i)));
    for (const e of short) expect(e).toBeInstanceOf(TimeoutError);
    expect(order.slice(0, 4)).toEqual([10, 30, 45, 60]);
    expect(await calls[0]).toBeInstanceOf(TimeoutError);
    expect(order).toEqual([10, 30, 45, 60, 400]);
    // The 20 s and the no-deadline calls are still in flight: a request behind them completes.
    expect(await client.request(M_ECHO, bodyOf(9))).toEqual(bodyOf(9));
    expect(client.inFlight).toBe(2);
    client.close();
    expect(await calls[2]).toHaveProperty("name", "TransportClosedError");
    expect(await calls[4]).toHaveProperty("name", "TransportClosedError");
  }, 30_000);
});

describe("deadlines tied to the HTTP request (req.signal)", () => {
  for (const kind of ["tcp", "shm", "ucx"] as const) {
    test(`${kind}: an HTTP client that disconnects mid-request cancels the backend call: CancelledError in the handler, the backend's handle signal aborts`, async () => {
      const { client } = await backend(urlFor(kind));
      const seen: unknown[] = [];
      const http = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        async fetch(req) {
          try {
            return new Response(await client.request(M_HOLD, new Uint8Array(await req.arrayBuffer()), { signal: req.signal, timeoutMs: 20_000 }));
          } catch (e) {
            seen.push(e);
            return new Response("cancelled", { status: 499 });
          }
        },
      });
      servers.push(http);
      for (let i = 1; i <= 3; i++) {
        const sock: Socket = await Bun.connect({ hostname: "127.0.0.1", port: http.port!, socket: { data() {} } });
        sock.write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        await until(() => client.inFlight === 1, "the backend call in flight", 10_000);
        await untilCounts(client, (c) => c.held === i, "the call held at the backend");
        sock.end();
        await until(() => seen.length === i, "the handler's rejection", 10_000);
        expect(seen[i - 1]).toBeInstanceOf(CancelledError);
        expect((await untilCounts(client, (c) => c.cancels >= i, "the cancel at the backend")).cancels).toBe(i);
        expect(client.inFlight).toBe(0);
      }
      http.stop(true);
    }, 60_000);
  }

  test("nothing stays behind per request: no listener left on the signals, no deadline queued, after 500 completed and 200 aborted requests", async () => {
    const { client } = await backend("tcp://127.0.0.1:0");
    const longLived = new AbortController();
    for (let i = 0; i < 500; i++) expect(await client.request(M_ECHO, bodyOf(i), { signal: longLived.signal, timeoutMs: 5000 + i })).toEqual(bodyOf(i));
    expect(getEventListeners(longLived.signal, "abort").length).toBe(0);
    const ctls = Array.from({ length: 200 }, () => new AbortController());
    const held = ctls.map((c, i) => client.request(M_HOLD, bodyOf(i), { signal: c.signal }).catch((e) => e));
    for (const c of ctls) expect(getEventListeners(c.signal, "abort").length).toBe(1);
    const deadlines = (client as unknown as { deadlines: { size: number } }).deadlines;
    expect(deadlines.size).toBe(200);
    for (const c of ctls) c.abort(new Error("gone"));
    for (const e of await Promise.all(held)) expect(e).toBeInstanceOf(CancelledError);
    for (const c of ctls) expect(getEventListeners(c.signal, "abort").length).toBe(0);
    expect(deadlines.size).toBe(0);
    expect((await untilCounts(client, (c) => c.cancels >= 200, "200 cancels at the backend")).cancels).toBe(200);
    expect(client.inFlight).toBe(0);
  }, 60_000);

  for (const kind of ["shm", "ucx"] as const) {
    test(`${kind}: 200 calls aborted in one go all reach the backend as cancels (over shm those that met a full ring were dropped before), and their slots come back`, async () => {
      const { client } = await backend(urlFor(kind));
      // A busy backend first (its idle strategy spinning), as under load.
      for (let i = 0; i < 500; i++) expect(await client.request(M_ECHO, bodyOf(i))).toEqual(bodyOf(i));
      const ctls = Array.from({ length: 200 }, () => new AbortController());
      // Issued and aborted in one synchronous run: the requests fill the ring, their cancels meet it full.
      const held = ctls.map((c, i) => client.request(M_HOLD, bodyOf(i), { signal: c.signal }).catch((e) => e));
      for (const c of ctls) c.abort();
      for (const e of await Promise.all(held)) expect(e).toBeInstanceOf(CancelledError);
      // Every call that reached the backend gets its cancel (a request aborted before it was sent never goes).
      const end = await untilCounts(client, (c) => c.held > 0 && c.cancels === c.held, "a cancel for every call held at the backend");
      expect(end.cancels).toBe(end.held);
      await until(() => client.inFlight === 0, "every slot back", 10_000);
      // The slots work again: a full window of calls completes.
      const all = await Promise.all(Array.from({ length: client.window }, (_, i) => client.request(M_ECHO, bodyOf(i))));
      for (let i = 0; i < client.window; i++) expect(all[i]).toEqual(bodyOf(i));
    }, 60_000);
  }
});

describe("serve() beside Bun.serve in one process", () => {
  for (const kind of ["tcp", "shm", "ucx"] as const) {
    test(`${kind}: HTTP keeps answering under an RPC load, and RPC under an HTTP load (bytes checked)`, async () => {
      const { peer, client } = await backend(urlFor(kind), true);
      const base = `http://127.0.0.1:${peer.ready.port}/`;
      const post = async (i: number) => {
        const r = await fetch(base, { method: "POST", body: bodyOf(i) });
        expect(r.status).toBe(200);
        expect(new Uint8Array(await r.arrayBuffer())).toEqual(bodyOf(i));
      };
      const rpc = async (i: number) => expect(await client.request(M_ECHO, bodyOf(i))).toEqual(bodyOf(i));
      /** `workers` loops of `op` until `stop` is set; returns how many ops ran. */
      const load = (workers: number, op: (i: number) => Promise<void>, stop: { done: boolean }) =>
        Promise.all(
          Array.from({ length: workers }, async (_, w) => {
            let k = 0;
            while (!stop.done) await op(w * 10_000 + k++);
            return k;
          }),
        ).then((ks) => ks.reduce((a, b) => a + b, 0));
      // HTTP probes while 32 RPC loops keep the process busy.
      const rpcStop = { done: false };
      const rpcLoad = load(32, rpc, rpcStop);
      for (let i = 0; i < 50; i++) await post(i);
      rpcStop.done = true;
      expect(await rpcLoad).toBeGreaterThan(0);
      // RPC probes while 32 HTTP loops keep it busy.
      const httpStop = { done: false };
      const httpLoad = load(32, post, httpStop);
      for (let i = 0; i < 50; i++) await rpc(i);
      httpStop.done = true;
      expect(await httpLoad).toBeGreaterThan(0);
    }, 60_000);
  }
});
