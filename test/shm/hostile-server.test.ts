/**
 * A hostile client cannot hurt anyone else: each attack of the scripted hostile peer
 * (test/helpers/hostile-shm.ts) against a real server ends only the attacker's session, with a
 * ProtocolError on the server naming what was wrong; the attacker sees its session closed, the
 * server drops its mapping, a well-behaved client calling throughout gets every answer right,
 * a new client connects and calls after each attack, and the server's CPU is not pinned.
 *
 * shm: the server in its own process (its CPU read from /proc). inproc: the server in this
 * thread (the same segment code over a SharedArrayBuffer), answering promptly after each attack.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, rpcConnect, serve, TransportClosedError, type HotpathError, type Serving } from "../../src/index.ts";
import { ATTACK_RING_SLOTS, GoodClient, HEADER_REWRITE, HostileSession, newClientCalls, SEGMENT_ATTACKS, serverVictim, until } from "../helpers/hostile-shm.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { procFigures } from "../helpers/proc-figures.ts";
import * as m from "../conformance/methods.ts";

const HOSTILE = new URL("../helpers/hostile-shm.ts", import.meta.url).pathname;
/** Well above an echo server with one client calling every few ms, far below a pinned core. */
const MAX_IDLE_CPU_PERCENT = 40;

interface ServerUnderAttack {
  url: string;
  /** The next session close the server reports with a ProtocolError. */
  nextProtocolError(): Promise<{ message: string }>;
  /** After an attack: the server still well (shm: its CPU over a second is far from a pinned core). */
  checkHealthy(): Promise<void>;
  close(): Promise<void>;
}

function hostileSuite(name: string, start: () => Promise<ServerUnderAttack>) {
  describe(`${name}: a hostile client hurts no one else`, () => {
    let srv: ServerUnderAttack;
    let good: GoodClient;
    beforeAll(async () => {
      srv = await start();
      good = new GoodClient(await rpcConnect(srv.url));
    });
    afterAll(async () => {
      await good?.stop();
      expect(good.failures).toEqual([]);
      await srv?.close();
    });

    for (const attack of SEGMENT_ATTACKS) {
      test(attack.name, async () => {
        const evil = new HostileSession(await connect(srv.url, { segment: { ringSlots: ATTACK_RING_SLOTS } }), "client");
        try {
          await evil.roundTrip();
          await attack.run(evil, serverVictim(evil));
          // The attacker sees its session closed by the server.
          await until(() => evil.conn.closed, "close of the attacker's session");
          expect(evil.conn.closeError).toBeInstanceOf(TransportClosedError);
          const report = await srv.nextProtocolError();
          expect(report.message).toMatch(attack.fault);
          expect(report.message).toContain(`${name} session ${srv.url} (client): `);
        } finally {
          evil.close();
        }
        await srv.checkHealthy();
        await newClientCalls(srv.url);
        await good.nextCall();
        expect(good.failures).toEqual([]);
      }, 30_000);
    }

    test(`${HEADER_REWRITE}: nothing re-reads it, the session goes on`, async () => {
      const evil = new HostileSession(await connect(srv.url, { segment: { ringSlots: ATTACK_RING_SLOTS } }), "client");
      try {
        await evil.roundTrip();
        evil.rewriteHeader();
        for (let i = 0; i < 3 * ATTACK_RING_SLOTS; i++) await evil.roundTrip(i % 2 === 0 ? 8 : 300);
        expect(evil.conn.closed).toBe(false);
      } finally {
        evil.close();
      }
      await newClientCalls(srv.url);
      expect(good.failures).toEqual([]);
    }, 30_000);
  });
}

/** The shm server's CPU over the second after each attack, percent of one core. */
const cpu: number[] = [];
afterAll(() => {
  if (cpu.length > 0) console.log(`shm server CPU in the second after each attack: max ${Math.max(...cpu).toFixed(1)} %, mean ${(cpu.reduce((a, b) => a + b, 0) / cpu.length).toFixed(1)} % (${cpu.length} attacks)`);
});

hostileSuite("shm", async () => {
  const peer: Peer = await spawnPeer(HOSTILE, [`shm://hostile-${process.pid}`]);
  const pid = peer.ready.pid as number;
  return {
    url: peer.ready.url,
    async nextProtocolError() {
      for (;;) {
        const r = JSON.parse(await peer.nextLine(5000));
        if (r.closed === "ProtocolError") return r;
      }
    },
    async checkHealthy() {
      // The attacker's mapping is gone from the server (only the well-behaved client's is left).
      await until(() => procFigures(pid).hotpathMaps <= 1, "unmap of the attacker's segment in the server");
      const before = procFigures(pid).cpuMs;
      const t0 = performance.now();
      await Bun.sleep(1000);
      const percent = ((procFigures(pid).cpuMs - before) / (performance.now() - t0)) * 100;
      cpu.push(percent);
      expect(percent).toBeLessThan(MAX_IDLE_CPU_PERCENT);
    },
    close: () => peer.kill(),
  };
});

hostileSuite("inproc", async () => {
  const errors: HotpathError[] = [];
  const serving: Serving = await serve(
    `inproc://hostile-${process.pid}`,
    { [m.M_ECHO]: (h) => h.data, [m.M_NEVER]: () => new Promise<Uint8Array>(() => {}) },
    { onSessionClose: (_s, e) => void (e?.name === "ProtocolError" && errors.push(e)) },
  );
  return {
    url: serving.url,
    async nextProtocolError() {
      await until(() => errors.length > 0, "ProtocolError on the server");
      return errors.shift()!;
    },
    async checkHealthy() {
      // This thread is the server: a timer and a new client's call run promptly (the watchdog).
      await Bun.sleep(50);
    },
    async close() {
      serving.close();
    },
  };
});
