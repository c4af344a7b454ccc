/**
 * rdma:// under the softrc TEST FIXTURE's injected faults and under kill -9, in both connection
 * modes, between real processes (test/rdma/peer-rpc.ts: an RPC server and an RPC client, each in
 * its own process, killed by pid). Every fault (rnr_storm past rnr_retry, qp_err_after,
 * cq_overrun, drop_peer, flush), injected in the server's process or in the client's while the
 * client has calls pending, must end in typed errors on both sides: the client's connection closes with
 * TransportClosedError or ProtocolError, its pending calls reject with one of those, the
 * server's session closes with one of those; never a hang (watchdogs); nothing leaked: each
 * process's live fixture objects (softrc_live("all")) and open fds back to their baseline (taken
 * after a first connection came and went, so one-time setup is in it), the fixture's registry
 * directory empty; and the server's listener serves a new client. kill -9 of the server: the
 * client's connection closes with TransportClosedError, its pending calls too, nothing leaked;
 * kill -9 of the client: the server's session closes with TransportClosedError, nothing leaked,
 * its listener serves a new client.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { PEER_RPC, askUntil, startRdmaPeer, type RdmaPeer } from "./peer-driver.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const fx = useSoftRc();
const TYPED = ["TransportClosedError", "ProtocolError"];
const PENDING = 8;

interface Fault {
  spec: string;
  /** What the fault does (softrc/README.md), for the test name. */
  what: string;
  /** Undoes what is left of it, so the next client meets a sound server. */
  reset: string;
}
const FAULTS: Fault[] = [
  { spec: "rnr_storm=1000", what: "an RNR storm past rnr_retry", reset: "rnr_storm=0" },
  { spec: "qp_err_after=1", what: "the QP receiving the next request goes to ERR silently", reset: "qp_err_after=0" },
  { spec: "cq_overrun=1", what: "the next completion overruns its CQ (IBV_EVENT_CQ_ERR)", reset: "cq_overrun=0" },
  { spec: "drop_peer=1", what: "the server stops answering", reset: "drop_peer=0" },
  { spec: "flush=1", what: "every QP of the server to ERR, outstanding WRs flushed", reset: "flush=0" },
];

/** A probe of a peer's process (stats), reduced to what must return to its baseline. */
const leakView = (r: Record<string, any>) => ({ live: r.live, qp: r.qp, mr: r.mr });

/** A client connects, calls and closes: the one-time setup of both processes is then done (baseline). */
async function warmUp(server: RdmaPeer, client: RdmaPeer, url: string): Promise<{ server: Record<string, any>; client: Record<string, any> }> {
  await client.ask("connect", { url });
  expect(await client.ask("calls", { n: 20, inFlight: 4 })).toMatchObject({ ok: 20 });
  await client.ask("close");
  expect(await server.ask("waitSessions", { n: 0 })).toMatchObject({ ok: true });
  const c = await askUntil(client, "stats", (r) => r.qp === 0);
  const s = await askUntil(server, "stats", (r) => r.qp === 0);
  return { server: s, client: c };
}

/** `p`'s fixture objects and fds are back to `base` (fds: not grown). */
async function expectBaseline(p: RdmaPeer, base: Record<string, any>, who: string): Promise<void> {
  const now = await askUntil(p, "stats", (r) => r.live === base.live && r.qp === base.qp && r.mr === base.mr && r.fds <= base.fds);
  expect({ who, ...leakView(now) }).toEqual({ who, ...leakView(base) });
  expect(now.fds).toBeLessThanOrEqual(base.fds);
}

/** The registry directory empties (a killed peer's segments are removed by the survivor's fixture). */
async function expectRegistryEmpty(dir: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (readdirSync(dir).length > 0 && Date.now() < end) await Bun.sleep(20);
  expect(readdirSync(dir)).toEqual([]);
}

/** A new client of `url` gets answers (the listener survived), then leaves. */
async function expectServes(server: RdmaPeer, client: RdmaPeer, url: string): Promise<void> {
  await client.ask("connect", { url });
  expect(await client.ask("calls", { n: 50, inFlight: 8 })).toMatchObject({ ok: 50, wrong: 0, errors: [] });
  await client.ask("close");
  expect(await server.ask("waitSessions", { n: 0 })).toMatchObject({ ok: true });
}

for (const mode of ["cm", "socket"] as const) {
  const url0 = mode === "cm" ? "rdma://127.0.0.1:0" : "rdma://127.0.0.1:0?mode=socket";

  describe(`rdma faults (${mode} mode)`, () => {
    for (const f of FAULTS) {
      for (const where of ["server", "client"] as const) {
        test(`${f.spec} in the ${where} (${f.what}): typed errors on both sides, pending calls rejected, nothing leaked, the listener serves on`, async () => {
          const dir = fx.registry();
          const server = await startRdmaPeer(fx, PEER_RPC, dir);
          const client = await startRdmaPeer(fx, PEER_RPC, dir);
          const { url } = await server.ask("serve", { url: url0 });
          const base = await warmUp(server, client, url);
          const faulty = where === "server" ? server : client;

          await client.ask("connect", { url });
          expect(await client.ask("calls", { n: 10, inFlight: 2 })).toMatchObject({ ok: 10 });
          await client.ask("pend", { n: PENDING });
          await faulty.ask("fault", { spec: f.spec });
          // Calls go on until one fails: the fault takes effect at the next request, completion or engine pass.
          const failed = await client.ask("callUntilError", { max: 1000 });
          expect(TYPED).toContain(failed.failure);

          const c = await client.ask("waitClosed");
          expect(c.closed).toBe(true);
          expect(TYPED).toContain(c.closeError);
          expect(c.pending.length).toBe(PENDING);
          for (const p of c.pending) expect(TYPED).toContain(p);
          const s = await server.ask("waitSessions", { n: 0 });
          expect(s.ok).toBe(true);
          expect(s.sessionErrors.length).toBe(2); // the warm-up's session and this one
          expect(TYPED).toContain(s.sessionErrors[1]);

          if (f.spec.startsWith("rnr_storm")) {
            // The storm's NAKs are counted by the faulty side's fixture (the flow tests' "no RNR" reads the same
            // counter): the first send and its rnr_retry (3) resends were NAKed.
            expect((await faulty.ask("stats")).counts.rnrNak).toBeGreaterThanOrEqual(4);
          }
          await faulty.ask("fault", { spec: f.reset });
          await client.ask("close");
          await expectBaseline(client, base.client, "client");
          await expectBaseline(server, base.server, "server");
          await expectRegistryEmpty(dir);

          await expectServes(server, client, url);
          await expectBaseline(server, base.server, "server");
          await expectBaseline(client, base.client, "client");
          await expectRegistryEmpty(dir);
          await client.kill();
          await server.kill();
        }, 90_000);
      }
    }

    test("kill -9 of the server: the client's connection and pending calls end with TransportClosedError, nothing leaked; it connects on elsewhere", async () => {
      const dir = fx.registry();
      const server = await startRdmaPeer(fx, PEER_RPC, dir);
      const client = await startRdmaPeer(fx, PEER_RPC, dir);
      const { url } = await server.ask("serve", { url: url0 });
      const base = await warmUp(server, client, url);
      await client.ask("connect", { url });
      expect(await client.ask("calls", { n: 10, inFlight: 2 })).toMatchObject({ ok: 10 });
      await client.ask("pend", { n: PENDING });
      await server.kill(9);

      const c = await client.ask("waitClosed");
      expect(c).toMatchObject({ closed: true, closeError: "TransportClosedError", pending: Array(PENDING).fill("TransportClosedError") });
      await client.ask("close");
      await expectBaseline(client, base.client, "client");
      await expectRegistryEmpty(dir);

      const other = await startRdmaPeer(fx, PEER_RPC, dir);
      const { url: url2 } = await other.ask("serve", { url: url0 });
      await expectServes(other, client, url2);
      await expectBaseline(client, base.client, "client");
      await expectRegistryEmpty(dir);
      await client.kill();
      await other.kill();
    }, 90_000);

    test("kill -9 of the client: the server's session ends with TransportClosedError, nothing leaked, its listener serves a new client", async () => {
      const dir = fx.registry();
      const server = await startRdmaPeer(fx, PEER_RPC, dir);
      const first = await startRdmaPeer(fx, PEER_RPC, dir);
      const { url } = await server.ask("serve", { url: url0 });
      const base = await warmUp(server, first, url);
      await first.kill();

      const victim = await startRdmaPeer(fx, PEER_RPC, dir);
      await victim.ask("connect", { url });
      expect(await victim.ask("calls", { n: 10, inFlight: 2 })).toMatchObject({ ok: 10 });
      await victim.ask("pend", { n: PENDING });
      expect(await server.ask("waitSessions", { n: 1 })).toMatchObject({ ok: true });
      await victim.kill(9);

      const s = await server.ask("waitSessions", { n: 0 });
      expect(s.ok).toBe(true);
      expect(s.sessionErrors).toEqual([expect.anything(), "TransportClosedError"]);
      await expectBaseline(server, base.server, "server");
      await expectRegistryEmpty(dir);

      const next = await startRdmaPeer(fx, PEER_RPC, dir);
      await expectServes(server, next, url);
      await expectBaseline(server, base.server, "server");
      await expectRegistryEmpty(dir);
      await next.kill();
      await server.kill();
    }, 90_000);
  });
}
