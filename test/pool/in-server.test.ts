/**
 * A ConnectionPool shared by all requests of a Bun.serve process: `pool.client(url)` called in
 * every handler is one client, whose calls of one tick share a socket write (tcp), whose
 * connections wait on the event loop (never holding the HTTP server's thread), and whose calls
 * made with req.signal are cancelled on both sides when the HTTP client disconnects, leaving no
 * listener on the signal. Real processes (the backend: test/rpc/in-server-peer.ts), a real
 * Bun.serve, real sockets; no timed asserts.
 */

import { afterAll, describe, expect, test } from "bun:test";
import { getEventListeners } from "node:events";
import type { Socket } from "bun";
import { CancelledError, ConnectionPool, ManualClock, defineService } from "../../src/index.ts";
import type { TcpConnection } from "../../src/tcp/connection.ts";
import { spawnPeer, until, type Peer } from "../helpers/peer.ts";
import { countTimeouts } from "../helpers/count-timeouts.ts";
import { M_COUNTS, M_ECHO, M_HOLD } from "../rpc/in-server-peer.ts";

const PEER = new URL("../rpc/in-server-peer.ts", import.meta.url).pathname;
const Backend = defineService({ echo: { id: M_ECHO }, hold: { id: M_HOLD }, counts: { id: M_COUNTS } });
let n = 0;
const peers: Peer[] = [];
const pools: ConnectionPool[] = [];
const servers: { stop(force?: boolean): void }[] = [];

afterAll(async () => {
  for (const s of servers) s.stop(true);
  for (const p of pools) await p.close();
  for (const p of peers) await p.kill();
});

async function start(kind: "tcp" | "shm", poolOpts: ConstructorParameters<typeof ConnectionPool>[0] = {}): Promise<{ url: string; pool: ConnectionPool }> {
  const peer = await spawnPeer(PEER, [kind === "tcp" ? "tcp://127.0.0.1:0" : `shm://pool-in-server-${process.pid}-${n++}`]);
  peers.push(peer);
  const pool = new ConnectionPool(poolOpts);
  pools.push(pool);
  return { url: peer.ready.url, pool };
}

const bodyOf = (i: number) => new Uint8Array(24).fill(i & 0xff).map((x, k) => (k === 1 ? i >> 8 : x));

describe("a pool shared by the handlers of a Bun.serve", () => {
  for (const kind of ["tcp", "shm"] as const) {
    test(`${kind}: pool.client(url) in every handler is one client; 200 HTTP requests, 32 at a time, each answered by the backend (bytes checked); its connection waits on the event loop`, async () => {
      const { url, pool } = await start(kind);
      const seen = new Set<unknown>();
      const http = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        async fetch(req) {
          const backend = pool.client(url, { service: Backend });
          seen.add(backend);
          return new Response(await backend.svc.echo(await req.bytes(), { signal: req.signal, timeoutMs: 10_000 }));
        },
      });
      servers.push(http);
      let next = 0;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < 200) {
            const i = next++;
            const r = await fetch(`http://127.0.0.1:${http.port}/`, { method: "POST", body: bodyOf(i) });
            expect(new Uint8Array(await r.arrayBuffer())).toEqual(bodyOf(i));
          }
        }),
      );
      expect(seen.size).toBe(1);
      expect(pool.stats()[0]!.connections).toBe(1);
      const rpc = pool.client(url).rpc!;
      expect(rpc.conn.waitsOnEventLoop).toBe(true);
      http.stop(true);
    }, 60_000);
  }

  test("tcp: calls through the pool from 20 tasks of one tick go out in at most two socket writes per tick", async () => {
    const { url, pool } = await start("tcp");
    const backend = pool.client(url, { service: Backend });
    expect(await backend.svc.echo(bodyOf(1))).toEqual(bodyOf(1));
    const conn = backend.rpc!.conn as TcpConnection;
    const before = conn.writes;
    const calls: Promise<Uint8Array>[] = [];
    let ticks = 0;
    let tickEndQueued = false;
    await new Promise<void>((resolve) => {
      for (let i = 0; i < 20; i++) {
        setTimeout(() => {
          if (!tickEndQueued) {
            tickEndQueued = true;
            ticks++;
            setImmediate(() => (tickEndQueued = false));
          }
          calls.push(backend.svc.echo(bodyOf(i)));
          if (calls.length === 20) resolve();
        }, 0);
      }
    });
    const out = await Promise.all(calls);
    for (let i = 0; i < 20; i++) expect(out[i]).toEqual(bodyOf(i));
    expect(ticks).toBeLessThan(5);
    expect(conn.writes - before).toBeLessThanOrEqual(2 * ticks);
  }, 30_000);

  test("pooled calls arm no timer per call (with idleTimeoutMs, the idle timer stays armed while calls come and go; before, each call re-armed it)", async () => {
    const { url, pool } = await start("tcp", { idleTimeoutMs: 60_000 });
    const backend = pool.client(url, { service: Backend });
    expect(await backend.svc.echo(bodyOf(1))).toEqual(bodyOf(1));
    const created = await countTimeouts(async () => {
      for (let i = 0; i < 200; i++) expect(await backend.svc.echo(bodyOf(i), { timeoutMs: 5000 })).toEqual(bodyOf(i));
    });
    expect(created).toBeLessThanOrEqual(2);
  }, 30_000);

  test("idleTimeoutMs still counts from the last call: calls every 300 ms keep the connection, 500 ms of quiet closes it", async () => {
    const { url } = await start("tcp");
    const clock = new ManualClock();
    const pool = new ConnectionPool({ clock, idleTimeoutMs: 500 });
    pools.push(pool);
    const backend = pool.client(url, { service: Backend });
    for (let i = 0; i < 5; i++) {
      expect(await backend.svc.echo(bodyOf(i))).toEqual(bodyOf(i));
      clock.advance(300);
      expect(pool.stats()[0]!.connections).toBe(1);
    }
    clock.advance(199); // 499 ms since the last call
    expect(pool.stats()[0]!.connections).toBe(1);
    clock.advance(1);
    expect(pool.stats()[0]!.connections).toBe(0);
    expect(pool.stats()[0]!.state).toBe("IDLE");
    expect(await backend.svc.echo(bodyOf(9))).toEqual(bodyOf(9));
    expect(pool.stats()[0]!.attempts).toBe(2);
  }, 30_000);

  for (const kind of ["tcp", "shm"] as const) {
    test(`${kind}: an HTTP client that disconnects cancels the pooled call: CancelledError in the handler, the cancel at the backend, no listener left on req.signal`, async () => {
      const { url, pool } = await start(kind);
      const backend = pool.client(url, { service: Backend });
      const counts = async () => JSON.parse(new TextDecoder().decode(await backend.svc.counts(new Uint8Array(0)))) as { held: number; cancels: number };
      const seen: unknown[] = [];
      const signals: AbortSignal[] = [];
      const http = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        async fetch(req) {
          signals.push(req.signal);
          try {
            return new Response(await pool.client(url, { service: Backend }).svc.hold(await req.bytes(), { signal: req.signal }));
          } catch (e) {
            seen.push(e);
            return new Response(null, { status: 499 });
          }
        },
      });
      servers.push(http);
      const sock: Socket = await Bun.connect({ hostname: "127.0.0.1", port: http.port!, socket: { data() {} } });
      sock.write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
      let c = await counts();
      while (c.held < 1) c = await counts();
      sock.end();
      await until(() => seen.length === 1, "the handler's rejection", 10_000);
      expect(seen[0]).toBeInstanceOf(CancelledError);
      while (c.cancels < 1) c = await counts();
      expect(c).toEqual({ held: 1, cancels: 1 });
      expect(getEventListeners(signals[0]!, "abort").length).toBe(0);
      expect(pool.stats()[0]!.inFlight).toBe(0);
      http.stop(true);
    }, 60_000);
  }
});
