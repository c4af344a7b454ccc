/**
 * src/ffi's verbs and rdma_cm bindings against a device: the softrc TEST FIXTURE
 * (test/rdma/softrc/, never shipped) loaded through HOTPATH_IBVERBS / HOTPATH_RDMACM, in real
 * processes (test/ffi/verbs-softrc-child.ts) killed by pid. One process opens the fixture's
 * device through the wrappers, creates PD, completion channel, CQs, SRQ, QPs and MRs, moves two
 * RC QPs through RESET→INIT→RTR→RTS, and posts and polls through the ops CFunctions (SEND into
 * an SRQ and into a QP's own queue, WRITE, WRITE_WITH_IMM, READ, CAS, chained posts, a full SRQ,
 * the SRQ limit event, registration errors (ENOMEM naming RLIMIT_MEMLOCK), a CQ overrun's async
 * event, a bad rkey that moves the QP to ERR and flushes its receive) and destroys everything;
 * two processes connect through rdma_cm (a rejection with private data first) with private data both ways, send over the connection
 * and disconnect. Each test has its own SOFTRC_DIR (the fixture's registry), which must be empty
 * afterwards.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { IBV } from "../../src/ffi/verbs-layout.ts";
import { startJsonChild } from "./softrc/json-child.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const CHILD = new URL("../ffi/verbs-softrc-child.ts", import.meta.url).pathname;
/** Watchdog for one child's whole run (a hang fails the test instead of blocking it). */
const CHILD_WATCHDOG_MS = 30_000;

const fx = useSoftRc();

/** Starts a child role; `lines()` resolves with its JSON lines by step once it exits 0 (rejects otherwise). */
function start(role: string, args: string[], dir: string) {
  const c = startJsonChild(fx, ["bun", CHILD, role, ...args], dir, { label: role, watchdogMs: CHILD_WATCHDOG_MS });
  return { line: c.line, lines: async () => (await c.lines()).by };
}

/** What the fixture left in its registry (QP segments, doorbells): nothing, once everything was destroyed. */
function leftovers(dir: string): string[] {
  return readdirSync(dir);
}

test("the fixture's device through the wrappers: PD, CQs, SRQ, QPs, MRs; post and poll through the ops CFunctions; all destroyed", async () => {
  const dir = fx.registry();
  const r = await start("local", [], dir).lines();
  expect(r.device!.devices).toEqual(["softrc0"]);
  expect(r.device!.fork).toEqual(["unneeded", "unneeded"]);
  expect(r.device!.dev).toMatchObject({ maxQpWr: 1024, maxSge: 4, maxSrqWr: 4096, atomicCap: IBV.IBV_ATOMIC_HCA, physPortCnt: 1 });
  expect(r.device!.port).toMatchObject({ state: IBV.IBV_PORT_ACTIVE, linkLayer: IBV.IBV_LINK_LAYER_ETHERNET });
  expect(r.device!.gid).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 127, 0, 0, 1]); // ::ffff:127.0.0.1

  const qps = r.qps!;
  expect(qps.resetPost).not.toBe(0); // posting to a QP in RESET fails
  expect(qps.badModify.errno).toBe(22);
  expect(qps.badModify.message).toContain("IBV_QPS_RESET → IBV_QPS_RTS");
  expect(qps.states).toEqual([IBV.IBV_QPS_RTS, IBV.IBV_QPS_RTS]);
  expect(qps.caps.maxInlineData).toBeGreaterThanOrEqual(128);
  expect(qps.mr[2]).toBe(65536);

  const ok = (wc: Record<string, number>, wrId: number, opcode: number) => expect({ wrId: wc.wrId, status: wc.status, opcode: wc.opcode }).toEqual({ wrId, status: IBV.IBV_WC_SUCCESS, opcode });
  const s = r["send-srq"]!;
  ok(s.sendWc[0], 10, IBV.IBV_WC_SEND);
  ok(s.srqWc[0], 500, IBV.IBV_WC_RECV);
  expect(s.srqWc[0].byteLen).toBe(11);
  expect(s.got).toBe("hello srq!!");
  expect([s.woke, s.evIsCqA, s.evCqAgain, s.unacked, s.unackedAfter]).toEqual([true, true, true, 1, 0]);

  const rq = r["send-rq"]!;
  ok(rq.bSend[0], 20, IBV.IBV_WC_SEND);
  ok(rq.aRecv[0], 600, IBV.IBV_WC_RECV); // the first of the two chained receives
  expect(rq.got).toBe("to a");

  const w = r.write!;
  ok(w.writeWc[0], 31, IBV.IBV_WC_RDMA_WRITE); // the chain's second, signaled entry (the first is unsignaled)
  ok(w.immWc[0], 700, IBV.IBV_WC_RECV_RDMA_WITH_IMM);
  expect([w.immWc[0].imm, w.immWc[0].flags & IBV.IBV_WC_WITH_IMM, w.immWc[0].byteLen]).toEqual([0xdeadbeef, IBV.IBV_WC_WITH_IMM, 4]);
  expect(w.written).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  expect(w.immWritten).toEqual([1, 2, 3, 4]);

  const rc2 = r["read-cas"]!;
  ok(rc2.readWc[0], 40, IBV.IBV_WC_RDMA_READ);
  expect(rc2.read).toEqual([9, 8, 7, 6]);
  ok(rc2.cas1.wc[0], 50, IBV.IBV_WC_COMP_SWAP);
  expect([rc2.cas1.old, rc2.cas1.now]).toEqual(["41", String(2n ** 60n)]);
  expect([rc2.cas2.old, rc2.cas2.now]).toEqual([String(2n ** 60n), String(2n ** 60n)]); // compare missed: unchanged

  const srq = r.srq!;
  expect([srq.full, srq.badAt]).toEqual([12, 8]); // ENOMEM at the 9th of a chain into an SRQ of 8
  expect(srq.armed).toBe(7);
  expect(srq.event).toEqual({ name: "IBV_EVENT_SRQ_LIMIT_REACHED", isSrq: true });
  expect([srq.limitAfter, srq.rearmed]).toEqual([0, 2]); // one-shot, then armed again

  const reg = r["reg-errors"]!;
  expect(reg.einval).toMatchObject({ errno: 22, operation: `ibv_reg_mr(65536 bytes, access 0x${IBV.IBV_ACCESS_REMOTE_WRITE.toString(16)})` });
  expect(reg.enomem.errno).toBe(12);
  expect(reg.enomem.message).toContain("RLIMIT_MEMLOCK");
  expect(reg.registered).toBeGreaterThan(0);

  expect(r["cq-overrun"]!.event).toMatchObject({ name: "IBV_EVENT_CQ_ERR", isTiny: true });

  expect(r["bad-rkey"]!.badWc.map((wc: Record<string, number>) => [wc.wrId, wc.status])).toEqual([
    [70, IBV.IBV_WC_REM_ACCESS_ERR],
    [601, IBV.IBV_WC_WR_FLUSH_ERR], // the second of the chained receives, never used
  ]);
  expect(r["bad-rkey"]!.state).toBe(IBV.IBV_QPS_ERR);

  expect(r.closed!.handles).toEqual(Array(10).fill(0));
  expect(leftovers(dir)).toEqual([]);
}, 60_000);

test("rdma_cm across two processes: listen on port 0, reject with private data, connect and accept with private data both ways, send, disconnect", async () => {
  const dir = fx.registry();
  const server = start("cm-server", [], dir);
  const { port } = await server.line("listening");
  expect(port).toBeGreaterThan(0);
  const c = await start("cm-client", [String(port)], dir).lines();
  const s = await server.lines();
  expect(s.server!.privateData).toBe("hello from client");
  expect(s.server!.listenIsOurs).toBe(true);
  expect(s.server!.remoteHost).toBe("127.0.0.1");
  expect(c.rejected).toEqual({ step: "rejected", privateData: "busy, retry", sameId: true, qpClosed: true });
  expect(c.client!.accepted).toBe("welcome");
  expect([c.client!.qpState, s.server!.qpState]).toEqual([IBV.IBV_QPS_RTS, IBV.IBV_QPS_RTS]);
  expect(c.client!.wc).toMatchObject({ wrId: 9, status: IBV.IBV_WC_SUCCESS, opcode: IBV.IBV_WC_SEND });
  expect(s.server!.wc).toMatchObject({ wrId: 1, status: IBV.IBV_WC_SUCCESS, opcode: IBV.IBV_WC_RECV, byteLen: 12 });
  expect(s.server!.got).toBe("over rdma_cm");
  // The server's ack reached the client (below); its own completion may still be flushed: the
  // client disconnects once it has the ack, and a DREQ that overtakes the RC ACK moves the
  // server's QP to ERR with the send outstanding (RC semantics, on hardware too).
  expect(s.server!.ackWc.wrId).toBe(3);
  expect([IBV.IBV_WC_SUCCESS, IBV.IBV_WC_WR_FLUSH_ERR]).toContain(s.server!.ackWc.status);
  expect(c.client!.ackWc).toMatchObject({ wrId: 2, status: IBV.IBV_WC_SUCCESS, opcode: IBV.IBV_WC_RECV, byteLen: 3 });
  expect(c.client!.ack).toBe("ack");
  expect([c["client-closed"]!.disconnected, s["server-closed"]!.disconnected]).toEqual(["RDMA_CM_EVENT_DISCONNECTED", "RDMA_CM_EVENT_DISCONNECTED"]);
  expect(c["client-closed"]!.handles).toEqual([0, 0, 0, 0]);
  expect(s["server-closed"]!.handles).toEqual([0, 0, 0, 0, 0, 0]);
  expect(leftovers(dir)).toEqual([]);
}, 60_000);
