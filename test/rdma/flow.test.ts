/**
 * rdma:// flow control and the data path's large-message and batching paths, between two real
 * processes (test/rdma/peer-transport.ts, peer-rpc.ts) on the softrc TEST FIXTURE, in rdma_cm
 * mode: credit exhaustion (a receiver that stops releasing: the sender sees Full, never an RNR or
 * a ProtocolError, and resumes when released; the fixture counts the RNR NAKs its responder sent,
 * and they stay 0), signal batching with a send queue smaller than the window (sqDepth 4, window
 * 16: 10,000 messages echoed, bytes checked), write-with-immediate for 1 MiB and 16 MiB (bytes
 * checked both ways; the fixture counts one WRITE_WITH_IMM per message), and RPC with 64 calls
 * in flight. Every test ends with nothing of the fixture left in either process (softrc_live) or
 * in its registry directory. No timing is asserted; watchdogs fail a hang.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { PEER_RPC, PEER_TRANSPORT, askUntil, startRdmaPeer, type RdmaPeer } from "./peer-driver.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const fx = useSoftRc();
const URL0 = "rdma://127.0.0.1:0";

/** Both peers closed their connections: their fixture objects go, the registry empties. */
async function expectNothingLeft(dir: string, peers: RdmaPeer[]): Promise<void> {
  for (const p of peers) {
    const s = await askUntil(p, "stats", (r) => r.qp === 0 && r.mr === 0);
    expect({ pid: p.pid, qp: s.qp, mr: s.mr }).toEqual({ pid: p.pid, qp: 0, mr: 0 });
  }
  expect(readdirSync(dir)).toEqual([]);
  for (const p of peers) await p.kill();
}

test("credit exhaustion: a receiver that stops releasing makes the sender see Full, never an RNR or ProtocolError; it resumes when released", async () => {
  const dir = fx.registry();
  const rx = await startRdmaPeer(fx, PEER_TRANSPORT, dir);
  const tx = await startRdmaPeer(fx, PEER_TRANSPORT, dir);
  const WINDOW = 8;
  const { url } = await rx.ask("listen", { url: URL0, opts: { rdma: { window: WINDOW } }, behaviour: "hold" });
  await tx.ask("connect", { url });

  // One-way data keeps the last credit for a credit-returning message (src/rdma/credits.ts):
  // window - 1 messages go out, then Full until the receiver releases.
  const fill = await tx.ask("fill", { size: 100, stallMs: 300 });
  expect(fill).toMatchObject({ sent: WINDOW - 1, closed: false, closeError: null });
  const held = await askUntil(rx, "stats", (r) => r.received === WINDOW - 1);
  expect(held).toMatchObject({ received: WINDOW - 1, held: WINDOW - 1, wrong: 0, acceptedClosed: false });
  // Still Full later: nothing more went out, and the connection is open on both sides.
  expect(await tx.ask("fill", { size: 100, stallMs: 200 })).toMatchObject({ sent: 0, closed: false, closeError: null });

  await rx.ask("release");
  const rest = await tx.ask("send", { n: 500, sizes: [100, 3000, 7] });
  expect(rest).toMatchObject({ sent: 500, closed: false, closeError: null });
  const after = await askUntil(rx, "stats", (r) => r.received === WINDOW - 1 + 500);
  expect(after).toMatchObject({ received: WINDOW - 1 + 500, wrong: 0, acceptedClosed: false, acceptedCloseError: null });
  // The receiver's responder never had to NAK for want of a posted receive (it took one per SEND: small messages).
  expect(after.counts.rnrNak).toBe(0);
  expect(after.counts.recvSend).toBeGreaterThanOrEqual(WINDOW - 1 + 500);
  expect(after.counts.recvWriteImm).toBe(0);
  expect((await tx.ask("stats")).counts.rnrNak).toBe(0);

  await tx.ask("close");
  await expectNothingLeft(dir, [tx, rx]);
}, 90_000);

test("signal batching with a send queue smaller than the window (sqDepth 4, window 16): 10,000 messages echoed with their bytes", async () => {
  const dir = fx.registry();
  const rx = await startRdmaPeer(fx, PEER_TRANSPORT, dir);
  const tx = await startRdmaPeer(fx, PEER_TRANSPORT, dir);
  const rdma = { sqDepth: 4, window: 16 };
  const { url } = await rx.ask("listen", { url: URL0, opts: { rdma }, behaviour: "echo" });
  await tx.ask("connect", { url, opts: { rdma } });
  // Inline, copied, at the slot's edge, and large (past the 4096-byte receive slot: write-with-immediate).
  const sizes = [0, 1, 16, 200, 240, 241, 1000, 4000, 4080, 4081, 9000];
  const r = await tx.ask("send", { n: 10_000, sizes, echo: true, timeoutMs: 80_000 });
  expect(r).toMatchObject({ sent: 10_000, echoed: 10_000, wrong: 0, closed: false, closeError: null });
  const s = await rx.ask("stats");
  expect(s).toMatchObject({ received: 10_000, wrong: 0, acceptedClosed: false });
  expect(s.counts.rnrNak).toBe(0);
  expect((await tx.ask("stats")).counts.rnrNak).toBe(0);
  await tx.ask("close");
  await expectNothingLeft(dir, [tx, rx]);
}, 120_000);

test("write-with-immediate: 1 MiB and 16 MiB messages cross processes both ways with their bytes, one WRITE_WITH_IMM each", async () => {
  const dir = fx.registry();
  const rx = await startRdmaPeer(fx, PEER_TRANSPORT, dir);
  const tx = await startRdmaPeer(fx, PEER_TRANSPORT, dir);
  const { url } = await rx.ask("listen", { url: URL0, behaviour: "echo" });
  await tx.ask("connect", { url });
  const before = { rx: (await rx.ask("stats")).counts.recvWriteImm, tx: (await tx.ask("stats")).counts.recvWriteImm };
  const r = await tx.ask("send", { n: 4, sizes: [1 << 20, 16 << 20], echo: true });
  expect(r).toMatchObject({ sent: 4, echoed: 4, wrong: 0, closed: false, closeError: null });
  const s = await rx.ask("stats");
  expect(s).toMatchObject({ received: 4, wrong: 0 });
  // Each large message is one WRITE_WITH_IMM into the receiver's landing zone, in each direction.
  expect(s.counts.recvWriteImm - before.rx).toBe(4);
  expect((await tx.ask("stats")).counts.recvWriteImm - before.tx).toBe(4);
  await tx.ask("close");
  await expectNothingLeft(dir, [tx, rx]);
}, 90_000);

test("RPC over rdma: rpcConnect to a serve() Server, 64 calls in flight, each answered with its own bytes (small and large)", async () => {
  const dir = fx.registry();
  const server = await startRdmaPeer(fx, PEER_RPC, dir);
  const client = await startRdmaPeer(fx, PEER_RPC, dir);
  // The transport's credit window (default 16) bounds the calls in flight per connection: 80
  // receives reserved at each end leave room for 64 calls and their replies.
  const rdma = { window: 80 };
  const { url } = await server.ask("serve", { url: URL0, opts: { rdma } });
  await client.ask("connect", { url, opts: { window: 64, rdma } });
  const small = await client.ask("calls", { n: 5000, inFlight: 64, size: 8 });
  expect(small).toMatchObject({ ok: 5000, wrong: 0, maxInFlight: 64, errors: [] });
  const large = await client.ask("calls", { n: 300, inFlight: 64, size: 10_000 });
  // Large ones are issued 64 at a time too; the transport writes one at a time per direction (zones.ts).
  expect(large).toMatchObject({ ok: 300, wrong: 0, errors: [] });
  expect(await server.ask("stats")).toMatchObject({ sessions: 1, sessionErrors: [] });
  await client.ask("close");
  const gone = await server.ask("waitSessions", { n: 0 });
  // The client's close reaches the server's session as the peer's close.
  expect(gone).toMatchObject({ ok: true, sessionErrors: ["TransportClosedError"] });
  await expectNothingLeft(dir, [client, server]);
}, 90_000);
