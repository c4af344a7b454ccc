/**
 * The rdma data path against peers that break the rules and against closes that race the
 * application (src/rdma/endpoint.ts, connection.ts, data-path.ts, runtime.ts) over the softrc
 * TEST FIXTURE: each scenario runs in its own child (test/rdma/guard-child.ts, killed by pid),
 * which ends with the fixture's live objects at zero; every test checks its registry is empty.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { startJsonChild } from "./softrc/json-child.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const CHILD = new URL("./guard-child.ts", import.meta.url).pathname;
/** Watchdog for one child (a hang fails the test instead of blocking it). */
const CHILD_WATCHDOG_MS = 90_000;
const NOTHING_LIVE = { context: 0, pd: 0, mr: 0, channel: 0, cq: 0, srq: 0, qp: 0 };

const fx = useSoftRc();

async function run(scenario: string, after = NOTHING_LIVE) {
  const dir = fx.registry();
  const { by } = await startJsonChild(fx, ["bun", CHILD, scenario], dir, { label: scenario, watchdogMs: CHILD_WATCHDOG_MS }).lines();
  expect(by.leaks!.live).toEqual(after);
  expect(readdirSync(dir)).toEqual([]);
  return by[scenario]!;
}

test("a peer that sends 500 messages before this side opened: at most its window of receives is kept, the connection opens to close with ProtocolError, every slot is posted again", async () => {
  const r = await run("preopen");
  expect(r).toEqual({ heldBeforeOpen: 16, closeError: "ProtocolError", heldAfter: 0, postedAfter: 2048, reservedAfter: 0, step: "preopen" });
}, 120_000);

test("views held across a close keep the connection's SRQ reservation until the last is released (the runtime admits nothing against their slots); with no user left the runtime goes and the views stay readable", async () => {
  const r = await run("held");
  expect(r.before).toBe(32);
  // A (no views) gave its window back; B's 15 held slots keep its 16 reserved.
  expect(r.whileHeld).toMatchObject({ users: 1, pins: 0, recvHeld: 15, reservedRecv: 16 });
  expect(r.firstView).toBe(100); // still readable
  expect(r.released).toMatchObject({ users: 1, pins: 0, recvHeld: 0, recvPosted: 2048, reservedRecv: 0 });
  expect(r.heldAlone).toEqual({ srq: 0, pd: 0, view: 100 });
  expect(r.srqAfter).toBe(0);
}, 120_000);

test("a peer announcing 1 MiB receive slots does not size the send slab (64 × 4096 bytes); a message above 4096 bytes goes by WRITE_WITH_IMM and arrives whole", async () => {
  const r = await run("slab");
  expect(r).toMatchObject({ st: 0, sendSlabBytes: 64 * 4096, lens: [8000], largeDelivered: 1, bClosed: false });
}, 120_000);

test("close() right after a large trySend that is only staged: the message reaches the peer before the close; sends after close() are Closed", async () => {
  const r = await run("staged");
  expect(r).toMatchObject({ st: 0, stage: 1, sendAfterClose: 2, delivered: [100_000], aError: null });
  expect(r.bError).toContain("TransportClosedError");
}, 120_000);

test("close() with a staged large message the peer never grants room for: after the drain bound the closer's onClose reports it (TransportClosedError), the peer sees a close", async () => {
  const r = await run("lost");
  expect(r).toMatchObject({ st: 0, stage: 1, delivered: [100_000] });
  expect(r.aError).toMatch(/^TransportClosedError: .*100016-byte large message not sent/);
  expect(r.bError).toContain("TransportClosedError");
}, 120_000);

test("a peer's SEND larger than the receive slot (IBV_WC_LOC_LEN_ERR) closes with ProtocolError", async () => {
  const r = await run("oversend");
  expect(r.aError).toMatch(/^ProtocolError: .*larger than the 4096-byte receive slot/);
}, 120_000);

test("a grant under a bad rkey: our WRITE_WITH_IMM fails remotely (IBV_WC_REM_ACCESS_ERR) and the connection closes with ProtocolError", async () => {
  const r = await run("badgrant");
  expect(r.st).toBe(0);
  expect(r.aError).toMatch(/^ProtocolError: .*IBV_WC_REM_ACCESS_ERR/);
}, 120_000);

test("20 connections closed with receives nobody polled (the fixture drops a destroyed QP's unpolled completions, as mlx5 does): each QP goes to ERR, its LAST_WQE_REACHED and completions are taken before the destroy, so the slab's posted count matches the SRQ's", async () => {
  const r = await run("retire");
  expect(r.start).toEqual({ slab: 2048, srq: 2048 });
  expect(r).toMatchObject({ slab: 2048, held: 0, srq: 2048 });
}, 120_000);

for (const mode of ["socket", "cm"] as const) {
  test(`${mode} mode: the 1st, 2nd, ... registration of a connection's setup fails (ENOMEM): a typed error naming ibv_reg_mr and RLIMIT_MEMLOCK, every MR, QP and reservation of that setup undone, a later connection works`, async () => {
    // rdma_cm keeps the device's context open for the process (test/rdma/setup-pair.ts: live + 1 in cm mode).
    const r = await run(`regfail-${mode}`, mode === "cm" ? { ...NOTHING_LIVE, context: 1 } : NOTHING_LIVE);
    if (process.env.GUARD_VERBOSE) console.log(JSON.stringify(r, null, 1));
    const cases = r.cases as Array<{ k: number; setupCalls: number; opened: boolean; clientError: string | null; refused: string[]; mr: number; qp: number; reserved: number[] }>;
    // Every registration of both sides was made to fail once (the last round registers fewer than k and opens).
    const last = cases[cases.length - 1]!;
    expect(last.setupCalls).toBeLessThan(last.k);
    expect(last.opened).toBe(true);
    expect(cases.length).toBeGreaterThanOrEqual(6); // each side: landing zone, send slab, large stage
    for (const c of cases.slice(0, -1)) {
      expect(c.opened).toBe(false);
      const errors = [c.clientError ?? "", ...c.refused].join("\n");
      // The side whose registration failed: connect() rejects with ConnectError (cause: verbsError's NativeError), the listener's onRefused gets ProtocolError.
      expect(errors).toMatch(/(ConnectError|ProtocolError): .*ibv_reg_mr\(\d+ bytes, access 0x\d\) failed: .*ENOMEM.*RLIMIT_MEMLOCK/);
      if (c.refused.length === 0) expect(c.clientError).toEndWith("[cause NativeError]");
    }
    for (const c of cases) expect({ k: c.k, mr: c.mr, qp: c.qp, reserved: c.reserved }).toEqual({ k: c.k, mr: 0, qp: 0, reserved: r.base.reserved });
    expect(r.later).toEqual({ st: 0, got: [100_000] });
  }, 120_000);
}
