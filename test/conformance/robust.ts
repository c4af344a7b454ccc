/**
 * The robustness part of the conformance suite (issue 8's server execution model), run for every
 * transport by runConformance(): slow and hanging handlers beside fast calls, misbehaving
 * handlers, a throwing onRequest, and limits exchanged at setup. Every test asserts completion
 * and bytes, never a time bound; the test timeout is the watchdog that fails a hang.
 */

import { describe, expect, test } from "bun:test";
import {
  Client,
  RemoteError,
  Server,
  TimeoutError,
  UsageError,
  connect,
  defineService,
  dispatcher,
  implement,
  listen,
  serve,
  rpcConnect,
  type Connection,
  type Listener,
} from "../../src/index.ts";
import type { Peer } from "../helpers/peer.ts";
import * as m from "./methods.ts";

export interface RobustFixture {
  name: string;
  listenUrl(): string;
  /** The test service (peer-server.ts) elsewhere: another process or a Worker. */
  peer(): Peer;
}

/** More than the largest ring or window in play: a wedge after ring-size calls shows. */
const PAST_RING = 300;

/** `n` echo calls, `inFlight` at a time, each answered with its own bytes. */
async function echoes(c: Client<any>, n: number, inFlight = 16): Promise<number> {
  let next = 0;
  let ok = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const data = m.u32(i * 7919);
      const got = await c.request(m.M_ECHO, data, { timeoutMs: 20_000 });
      expect(m.readU32(got)).toBe(i * 7919);
      ok++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return ok;
}

/** Makes a connection send bodies its peer declared too large (a peer that ignores the limit). */
function ignorePeerLimit(conn: Connection): void {
  Object.defineProperty(conn, "caps", { value: { ...conn.caps, peerMaxMessageBytes: conn.caps.maxMessageBytes } });
}

export function runRobustness(fx: RobustFixture): void {
  const url = () => fx.peer().ready.url as string;
  const clients: Client<any>[] = [];
  const connectClient = async () => {
    const c = await rpcConnect(url(), { window: 64 });
    clients.push(c);
    return c;
  };
  const closeClients = () => {
    for (const c of clients.splice(0)) c.close();
  };

  describe("robustness: handlers never stall other calls", () => {
    test("a slow handler beside fast calls: the fast calls all complete while it is held", async () => {
      const c = await connectClient();
      try {
        // M_GATE holds its call until M_OPEN_GATE: no clock decides who finishes first.
        let slowDone = false;
        const slow = c.request(m.M_GATE, m.u32(4000), { timeoutMs: 60_000 }).then((b) => {
          slowDone = true;
          return b;
        });
        expect(await echoes(c, 600)).toBe(600);
        expect(slowDone).toBe(false);
        expect(m.readU32(await c.request(m.M_OPEN_GATE))).toBeGreaterThanOrEqual(1);
        expect(m.readU32(await slow)).toBe(4000);
      } finally {
        closeClients();
      }
    }, 30_000);

    test("handlers that never answer (calls given up on) beside fast calls: the session keeps serving", async () => {
      const c = await connectClient();
      try {
        const gaveUp = await Promise.all(
          Array.from({ length: PAST_RING }, () => c.request(m.M_NEVER, m.u32(1), { timeoutMs: 100 }).catch((e) => e)),
        );
        for (const e of gaveUp) expect(e).toBeInstanceOf(TimeoutError);
        expect(await echoes(c, 600)).toBe(600);
      } finally {
        closeClients();
      }
    }, 30_000);
  });

  describe("robustness: misbehaving handlers", () => {
    test("every case becomes a RemoteError; the server survives and another client's calls are unaffected", async () => {
      const bad = await connectClient();
      const good = await connectClient();
      try {
        const before = m.readU32(await good.request(m.M_ERROR_COUNT));
        // Another client keeps calling while the bad one provokes every case.
        const innocent = echoes(good, 400, 8);
        for (let i = 0; i < m.MISBEHAVE_CASES.length; i++) {
          const e = await bad.request(m.M_MISBEHAVE, new Uint8Array([i]), { timeoutMs: 10_000 }).catch((x) => x);
          expect(e, m.MISBEHAVE_CASES[i]).toBeInstanceOf(RemoteError);
          // The same connection still works after each case.
          expect(m.readU32(await bad.request(m.M_ECHO, m.u32(i)))).toBe(i);
        }
        expect(await innocent).toBe(400);
        // Each case was also reported on the server (onError), not only sent back.
        const after = m.readU32(await good.request(m.M_ERROR_COUNT));
        expect(after - before).toBe(m.MISBEHAVE_CASES.length);
        // A process peer is still running (a Worker peer has no process; its answers above show it is alive).
        expect(fx.peer().proc?.exitCode ?? null).toBeNull();
      } finally {
        closeClients();
      }
    }, 30_000);

    test("a non-bytes return names what came back", async () => {
      const c = await connectClient();
      try {
        const e = await c.request(m.M_MISBEHAVE, new Uint8Array([m.MISBEHAVE_CASES.indexOf("return a number")])).catch((x) => x);
        expect(e).toBeInstanceOf(RemoteError);
        expect(e.message).toContain("number");
        expect(e.message).toContain(`method ${m.M_MISBEHAVE}`);
      } finally {
        closeClients();
      }
    });
  });

  describe("robustness: in-process server", () => {
    async function inProcess(onRequest: ConstructorParameters<typeof Server>[0], listenOpts: { maxMessageBytes?: number } = {}) {
      const listener: Listener = await listen(fx.listenUrl(), listenOpts);
      const server = new Server(onRequest);
      server.attach(listener);
      const c = new Client<any>(await connect(listener.url), { window: 64 });
      return { server, c, [Symbol.dispose]: () => (c.close(), server.close()) };
    }

    test("onRequest throwing for one request fails that call only; the server keeps serving", async () => {
      const reports: unknown[] = [];
      const echo = dispatcher({ [m.M_ECHO]: (h) => h.data });
      using s = await inProcess({
        onRequest: (h) => {
          if (h.method === m.M_THROW) throw Object.create(null);
          echo(h);
        },
        onError: (e) => void reports.push(e),
      });
      const e = await s.c.request(m.M_THROW, m.u32(1), { timeoutMs: 10_000 }).catch((x) => x);
      expect(e).toBeInstanceOf(RemoteError);
      expect(reports.length).toBe(1);
      expect(await echoes(s.c, 50)).toBe(50);
    });

    test("limits are exchanged at setup: an oversized request is refused locally, naming both limits, and calls in flight go on", async () => {
      const LIMIT = 1 << 20;
      using s = await inProcess({ onRequest: dispatcher({ [m.M_DIGEST]: (h) => m.u32(h.data.length), [m.M_DELAY_ECHO]: async (h) => h.data }) }, { maxMessageBytes: LIMIT });
      expect(s.c.conn.caps.peerMaxMessageBytes).toBe(LIMIT);
      const inFlight = [1, 2, 3, 4].map((i) => s.c.request(m.M_DELAY_ECHO, m.u32(20 * i)));
      const e = await s.c.request(m.M_DIGEST, new Uint8Array(2 * LIMIT)).catch((x) => x);
      expect(e).toBeInstanceOf(UsageError);
      expect(e.message).toContain(String(2 * LIMIT));
      expect(e.message).toContain(String(LIMIT));
      expect(e.message).toContain(String(s.c.conn.caps.maxMessageBytes));
      expect((await Promise.all(inFlight)).map((b) => m.readU32(b))).toEqual([20, 40, 60, 80]);
      expect(s.c.closed).toBe(false);
    });

    test("async typed-service handlers (implement) keep their own request bytes across awaits", async () => {
      const Echo = defineService({ ping: { id: 1 } });
      const serving = await serve(
        fx.listenUrl(),
        implement(Echo, {
          ping: async (b: Uint8Array) => {
            await Bun.sleep(b[1]! % 3 === 0 ? 15 : 1);
            return b.slice();
          },
        }),
      );
      // A small slab (shm / inproc) so request slots are reused while handlers sleep.
      const c = await rpcConnect(serving.url, { service: Echo, window: 64, segment: { ringSlots: 64, sizeClasses: [{ slotBytes: 4 << 10, slotCount: 16 }] } });
      try {
        const sent = Array.from({ length: 400 }, (_, i) => new Uint8Array(3000).fill(i % 251, 2).fill(i & 0xff, 0, 1).fill(i % 7, 1, 2));
        let next = 0;
        const worker = async () => {
          while (next < sent.length) {
            const d = sent[next++]!;
            const got = await c.svc.ping(d, { timeoutMs: 20_000 });
            expect(Buffer.from(got).equals(Buffer.from(d))).toBe(true);
          }
        };
        await Promise.all(Array.from({ length: 32 }, worker));
      } finally {
        c.close();
        serving.close();
      }
    }, 30_000);

    test("requests held by handlers are bounded (maxPendingBytes): past it a call gets ServerBusyError, and room comes back", async () => {
      const held: Array<() => void> = [];
      using s = await inProcess({
        maxPendingBytes: 64 << 10,
        onRequest: dispatcher({
          [m.M_GATE]: (h) => new Promise<Uint8Array>((resolve) => held.push(() => resolve(m.u32(h.data.length)))),
          [m.M_ECHO]: (h) => h.data,
        }),
      });
      const calls = Array.from({ length: 10 }, () => s.c.request(m.M_GATE, new Uint8Array(16 << 10), { timeoutMs: 20_000 }).catch((e) => e));
      // The server answers busy calls at once; wait until it holds the rest.
      while (held.length < 3) await Bun.sleep(1);
      await Bun.sleep(20);
      expect(held.length).toBeLessThanOrEqual(4);
      for (const open of held.splice(0)) open();
      const results = await Promise.all(calls);
      const busy = results.filter((r) => r instanceof RemoteError && r.remoteName === "ServerBusyError");
      const ok = results.filter((r) => r instanceof Uint8Array);
      expect(busy.length + ok.length).toBe(10);
      expect(busy.length).toBeGreaterThanOrEqual(6);
      for (const r of ok) expect(m.readU32(r as Uint8Array)).toBe(16 << 10);
      expect(s.server.pendingBytes).toBe(0);
      expect(m.readU32(await s.c.request(m.M_ECHO, m.u32(5)))).toBe(5);
    });

    test("error responses for oversized requests wait for room like any reply (none is dropped)", async () => {
      const LIMIT = 64 << 10;
      const listener: Listener = await listen(fx.listenUrl(), { maxMessageBytes: LIMIT });
      const server = new Server({ onRequest: dispatcher({ [m.M_ECHO]: (h) => h.data }) });
      server.attach(listener);
      // A client that delivers nothing until it polls, on a small segment (shm / inproc): the
      // error responses fill its ring and must wait in the server's backlog.
      const conn = await connect(listener.url, { wait: { mode: "spin" }, segment: { ringSlots: 8, sizeClasses: [{ slotBytes: 256 << 10, slotCount: 4 }] } });
      ignorePeerLimit(conn);
      const c = new Client<number>(conn, { window: 64 });
      const errors = new Map<number, unknown>();
      c.onResponse = (i, _d, e) => void errors.set(i, e);
      try {
        if (conn.caps.maxMessageBytes <= LIMIT) return; // cannot send past the peer's limit at all
        const N = 16;
        const big = new Uint8Array(2 * LIMIT);
        let sent = 0;
        for (let spins = 0; errors.size < N; spins++) {
          while (sent < N && c.call(m.M_ECHO, big, sent) === 0) sent++;
          if (spins > 20) c.poll(); // first let the errors pile up unread
          server.poll();
          await Bun.sleep(1);
        }
        for (let i = 0; i < N; i++) {
          expect(errors.get(i)).toBeInstanceOf(RemoteError);
          expect((errors.get(i) as RemoteError).remoteName).toBe("MessageTooLargeError");
        }
      } finally {
        c.close();
        server.close();
      }
    }, 30_000);

    test("a peer that ignores the limit: the oversized call gets an error response, the others complete", async () => {
      const LIMIT = 64 << 10;
      using s = await inProcess({ onRequest: dispatcher({ [m.M_DIGEST]: (h) => m.u32(h.data.length), [m.M_DELAY_ECHO]: async (h) => h.data }) }, { maxMessageBytes: LIMIT });
      ignorePeerLimit(s.c.conn);
      if (s.c.conn.caps.maxMessageBytes <= LIMIT) return; // the transport cannot send past the peer's limit at all
      const inFlight = [1, 2, 3, 4].map((i) => s.c.request(m.M_DELAY_ECHO, m.u32(20 * i)));
      const e = await s.c.request(m.M_DIGEST, new Uint8Array(2 * LIMIT), { timeoutMs: 10_000 }).catch((x) => x);
      expect(e).toBeInstanceOf(RemoteError);
      expect(e.remoteName).toBe("MessageTooLargeError");
      expect((await Promise.all(inFlight)).map((b) => m.readU32(b))).toEqual([20, 40, 60, 80]);
      expect(m.readU32(await s.c.request(m.M_DIGEST, new Uint8Array(100)))).toBe(100);
    });
  });
}
