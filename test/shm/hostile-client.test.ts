/**
 * A hostile server cannot hurt its clients beyond their session with it: a real listener in
 * this process whose accepted sessions the scripted hostile peer (test/helpers/hostile-shm.ts)
 * scribbles on. Each attack fails the client's pending calls with a ProtocolError naming what
 * was wrong, the client's connection closes and drops its mapping, the hostile server sees the
 * session closed, and the same client's other connection, to a good server, keeps working.
 *
 * shm: the good server in its own process; inproc: in this thread (the same segment code over a
 * SharedArrayBuffer).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { listen, ProtocolError, rpcConnect, serve, TransportClosedError, type Listener } from "../../src/index.ts";
import { ATTACK_RING_SLOTS, clientVictim, GoodClient, HostileSession, newClientCalls, SEGMENT_ATTACKS, until } from "../helpers/hostile-shm.ts";
import { spawnPeer } from "../helpers/peer.ts";
import { procFigures } from "../helpers/proc-figures.ts";
import * as m from "../conformance/methods.ts";

const HOSTILE = new URL("../helpers/hostile-shm.ts", import.meta.url).pathname;
/** A pending call that has not failed within this long after the attack is a hang. */
const FAIL_WATCHDOG_MS = 5000;

function watchdog<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${FAIL_WATCHDOG_MS} ms`)), FAIL_WATCHDOG_MS)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

interface GoodServer {
  url: string;
  close(): Promise<void>;
}

function hostileServerSuite(name: "shm" | "inproc", startGood: () => Promise<GoodServer>) {
  describe(`${name}: a hostile server hurts no one but its own session`, () => {
    let good: GoodServer;
    let goodClient: GoodClient;
    let evilListener: Listener;
    const sessions: HostileSession[] = [];
    beforeAll(async () => {
      good = await startGood();
      goodClient = new GoodClient(await rpcConnect(good.url));
      evilListener = await listen(`${name}://hostile-srv-${process.pid}`);
      evilListener.onConnection((conn) => void sessions.push(new HostileSession(conn, "server")));
    });
    afterAll(async () => {
      await goodClient?.stop();
      expect(goodClient.failures).toEqual([]);
      evilListener?.close(true);
      await good?.close();
    });

    for (const attack of SEGMENT_ATTACKS) {
      test(attack.name, async () => {
        const mapsBefore = procFigures().hotpathMaps;
        const victim = await rpcConnect(evilListener.url, { segment: { ringSlots: ATTACK_RING_SLOTS } });
        await until(() => sessions.length > 0, "the hostile server's session");
        const evil = sessions.shift()!;
        const failures: Array<Promise<unknown>> = [];
        try {
          expect(await victim.request(m.M_ECHO, new Uint8Array([1, 2, 3]), { timeoutMs: 5000 })).toEqual(new Uint8Array([1, 2, 3]));
          failures.push(victim.request(m.M_NEVER, new Uint8Array(1), { timeoutMs: 30_000 }).catch((e) => e));
          await attack.run(evil, clientVictim(evil, victim, failures));
          // Every pending call fails with the ProtocolError that names the fault.
          for (const f of failures) {
            const e = await watchdog(f, "failure of a pending call");
            expect(e).toBeInstanceOf(ProtocolError);
            expect((e as Error).message).toMatch(attack.fault);
            expect((e as Error).message).toContain(`${name} session ${evilListener.url}: `);
          }
          expect(victim.closed).toBe(true);
          expect(victim.conn.closeError).toBeInstanceOf(ProtocolError);
          // The hostile server sees its session closed.
          await until(() => evil.conn.closed, "close of the hostile server's session");
          expect(evil.conn.closeError).toBeInstanceOf(TransportClosedError);
        } finally {
          evil.close();
          victim.close();
        }
        // Both ends let go of the segment; the client's other connection keeps working.
        if (name === "shm") await until(() => procFigures().hotpathMaps <= mapsBefore, "unmap of the attacked segment");
        await goodClient.nextCall();
        await newClientCalls(good.url);
        expect(goodClient.failures).toEqual([]);
      }, 30_000);
    }
  });
}

hostileServerSuite("shm", async () => {
  const peer = await spawnPeer(HOSTILE, [`shm://hostile-good-${process.pid}`]);
  return { url: peer.ready.url, close: () => peer.kill() };
});

hostileServerSuite("inproc", async () => {
  const serving = await serve(`inproc://hostile-good-${process.pid}`, { [m.M_ECHO]: (h) => h.data });
  return {
    url: serving.url,
    async close() {
      serving.close();
    },
  };
});
