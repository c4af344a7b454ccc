/**
 * The rdma:// handshake against peers that pass the first checks and fail later, and the QP
 * attributes each mode ends with (src/rdma/socket-mode.ts, cm-mode.ts, cm.ts, hello.ts), over the
 * softrc TEST FIXTURE in setup-peer.ts children (test/rdma/setup-harness.ts). Raw TCP sockets
 * from this process play the other side: a socket-mode client, a client or a listener of the
 * fixture's rdma_cm side socket (its frames: test/rdma/softrc/cm.c).
 */
import { describe, expect, test } from "bun:test";
import { decodeRefusal, encodeHello, HELLO_SOCKET_BYTES, REFUSED_PROTOCOL, type HelloFields } from "../../src/rdma/hello.ts";
import { MIN_RNR_TIMER } from "../../src/rdma/qp-setup.ts";
import { until } from "../helpers/peer.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";
import { F_DREQ, F_REJ, F_REP, F_RTU, FIXTURE_GID, listenerWithBareQp, rawClient, rawSocketHello, rawSocketHelloAnswered, reqFrame, spawnSetupPeer, UNTIL_MS } from "./setup-harness.ts";

const fx = useSoftRc();
const spawnPeer = (dir: string) => spawnSetupPeer(fx, dir);
const portOf = (url: string) => Number(new URL(url).port);
const READY = 0x52;
/** IBV_MTU_1024 and IBV_MTU_4096 (the fixture port's active MTU). */
const MTU_1024 = 3;
const MTU_4096 = 5;

const base: HelloFields = {
  qpNum: 0, psn: 0, lid: 0, gid: FIXTURE_GID,
  window: 16, recvSlotBytes: 4096, maxMessageBytes: 1 << 20,
  zoneAddr: 0n, zoneRkey: 0, zoneBytes: 0,
};

/** The refusal in the socket-mode frames `got` holds after `skip` bytes. */
function refusalAt(got: number[], skip = 0) {
  const len = got[skip]! | (got[skip + 1]! << 8);
  return decodeRefusal(new Uint8Array(got.slice(skip + 2, skip + 2 + len)));
}

/** Polls the server's stats until `cond` holds (bounded). */
async function statsUntil(server: ReturnType<typeof spawnPeer>, cond: (st: Record<string, any>) => boolean) {
  let st = await server.ask("stats");
  for (let i = 0; i < 500 && !cond(st); i++) {
    await Bun.sleep(10);
    st = await server.ask("stats");
  }
  return st;
}

describe("socket mode: a peer the data path would refuse", () => {
  test("a hello with a window or receive slot out of the data path's bounds is refused protocol at once (told why), before any endpoint exists", async () => {
    const { server, other, url, idle, qpNum } = await listenerWithBareQp(fx, { url: "rdma://127.0.0.1:0?mode=socket" });
    const bad = [{ window: 2 }, { recvSlotBytes: 2 << 20 }];
    for (const b of bad) {
      const raw = await rawSocketHello(url, { ...base, qpNum, ...b });
      await until(() => raw.state.closed, "the listener refusing the hello", UNTIL_MS);
      const r = refusalAt(raw.got);
      expect(r.reason).toBe(REFUSED_PROTOCOL);
      expect(r.text).toContain(b.window !== undefined ? "window 2" : `receive slots of ${2 << 20} bytes`);
    }
    const st = await server.ask("stats");
    expect(st.stats).toMatchObject({ accepted: 0, refusedProtocol: 2 });
    expect(await server.ask("probe")).toMatchObject({ qp: idle.qp, mr: idle.mr });
    expect([await server.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);

  test("ep.open() failing at READY (its memory cannot be registered) releases the endpoint, refuses the client (protocol) and counts it; the listener goes on", async () => {
    const { server, other, url, idle, qpNum } = await listenerWithBareQp(fx, { url: "rdma://127.0.0.1:0?mode=socket" });
    const raw = await rawSocketHelloAnswered(url, { ...base, qpNum });
    await server.ask("fault", { spec: "reg_mr_fail=1" }); // the connection's first registration fails
    raw.s.write(new Uint8Array([READY]));
    await until(() => raw.state.closed, "the listener turning the client away", UNTIL_MS);
    expect(refusalAt(raw.got, 2 + HELLO_SOCKET_BYTES).reason).toBe(REFUSED_PROTOCOL);
    const st = await statsUntil(server, (x) => x.stats.refusedProtocol > 0);
    expect(st.stats).toMatchObject({ accepted: 0, refusedProtocol: 1 });
    expect(st.refusals[0].message).toContain("opening a client's connection failed");
    expect(await server.ask("probe")).toMatchObject({ qp: idle.qp, mr: idle.mr });
    expect(await other.ask("connect", { url })).toMatchObject({ ok: true, echoed: true });
    expect([await server.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);

  test("path MTU: each side's hello carries its active MTU and both QPs use the smaller", async () => {
    const { server, other, url, qpNum } = await listenerWithBareQp(fx, { url: "rdma://127.0.0.1:0?mode=socket" }, false);
    const raw = await rawSocketHelloAnswered(url, { ...base, qpNum, mtu: MTU_1024 });
    expect(raw.got[2 + 46]! | (raw.got[2 + 47]! << 8)).toBe(MTU_4096); // the listener's own
    raw.s.write(new Uint8Array([READY]));
    await statsUntil(server, (x) => x.stats.accepted === 1);
    expect((await server.ask("qpAttrs")).server.map((a: { pathMtu: number }) => a.pathMtu)).toEqual([MTU_1024]);
    raw.s.end();
    // Two hotpath ends (both 4096): 4096 both ways.
    expect(await other.ask("hold", { url })).toMatchObject({ ok: true });
    const st = await statsUntil(server, (x) => x.open === 1 && x.stats.accepted === 2);
    expect(st.open).toBe(1);
    expect((await server.ask("qpAttrs")).server.map((a: { pathMtu: number }) => a.pathMtu)).toEqual([MTU_4096]);
    expect((await other.ask("qpAttrs")).held.map((a: { pathMtu: number }) => a.pathMtu)).toEqual([MTU_4096]);
    expect([await server.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);
});

describe("cm mode", () => {
  test("a connect request whose hello the data path would refuse (window 2) is rejected with a protocol refusal, nothing kept", async () => {
    const { server, other, url, idle, qpNum } = await listenerWithBareQp(fx, { url: "rdma://127.0.0.1:0" });
    const raw = await rawClient(portOf(url));
    raw.s.write(reqFrame(encodeHello({ ...base, window: 2 }, "cm"), qpNum));
    await until(() => raw.got.length >= 12 && raw.got.length >= 12 + raw.got[1]!, "an answer frame", UNTIL_MS);
    expect(raw.got[0]).toBe(F_REJ);
    const r = decodeRefusal(new Uint8Array(raw.got.slice(12, 12 + raw.got[1]!)));
    expect(r.reason).toBe(REFUSED_PROTOCOL);
    expect(r.text).toContain("window 2");
    raw.s.end();
    expect((await server.ask("stats")).stats).toMatchObject({ accepted: 0, refusedProtocol: 1 });
    expect(await server.ask("probe")).toMatchObject({ qp: idle.qp, mr: idle.mr });
    expect([await server.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);

  test("ep.open() failing at ESTABLISHED releases the endpoint, disconnects the client and counts it protocol; the listener goes on", async () => {
    const { server, other, url, idle, qpNum } = await listenerWithBareQp(fx, { url: "rdma://127.0.0.1:0" });
    const raw = await rawClient(portOf(url));
    raw.s.write(reqFrame(encodeHello(base, "cm"), qpNum));
    await until(() => raw.got.length >= 12, "a REP frame", UNTIL_MS);
    expect(raw.got[0]).toBe(F_REP);
    await server.ask("fault", { spec: "reg_mr_fail=1" });
    raw.s.write(reqFrame(new Uint8Array(0), 0, F_RTU)); // the server's side is ESTABLISHED
    await until(() => raw.state.closed || raw.got.includes(F_DREQ), "the listener disconnecting", UNTIL_MS);
    const st = await statsUntil(server, (x) => x.stats.refusedProtocol > 0);
    expect(st.stats).toMatchObject({ accepted: 0, refusedProtocol: 1 });
    expect(st.refusals[0].message).toContain("opening a client's connection failed");
    raw.s.end();
    expect(await server.ask("probe")).toMatchObject({ qp: idle.qp, mr: idle.mr });
    expect(await other.ask("connect", { url })).toMatchObject({ ok: true, echoed: true });
    expect([await server.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);

  test("both QPs end with qp-setup's MIN_RNR_TIMER (rdma_cm leaves 0) and the device's READ/atomic depth, as socket mode's", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: "rdma://127.0.0.1:0" });
    expect(await client.ask("hold", { url })).toMatchObject({ ok: true });
    await statsUntil(server, (x) => x.open === 1);
    const want = { minRnrTimer: MIN_RNR_TIMER, maxRdAtomic: 16, maxDestRdAtomic: 16, rnrRetry: 3 };
    expect((await server.ask("qpAttrs")).server).toEqual([expect.objectContaining(want)]);
    expect((await client.ask("qpAttrs")).held).toEqual([expect.objectContaining(want)]);
    expect([await server.end(), await client.end()]).toEqual([0, 0]);
  }, 30_000);

  test("a lost RTU: the client's first message raises IBV_EVENT_COMM_EST on the server's QP, rdma_notify establishes it, and the message is answered", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: "rdma://127.0.0.1:0", opts: { rdma: { handshakeTimeoutMs: 5000 } } });
    await client.ask("fault", { spec: "lose_rtu=1" }); // the fixture's CM drops the client's RTU
    expect(await client.ask("connect", { url })).toMatchObject({ ok: true, echoed: true });
    const st = await server.ask("stats");
    expect(st.stats).toMatchObject({ accepted: 1, refusedProtocol: 0 });
    expect([await server.end(), await client.end()]).toEqual([0, 0]);
  }, 30_000);

  test("a DISCONNECTED that arrives right behind ESTABLISHED (before the connection's handler exists) still closes the client's connection", async () => {
    const dir = fx.registry();
    const client = spawnPeer(dir);
    const other = spawnPeer(dir);
    const { qpNum } = await other.ask("bareQp");
    // A raw rdma_cm listener: answers the REQ with a REP and a DREQ in one write.
    const sockets: Array<{ end(): void }> = [];
    const srv = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        binaryType: "uint8array",
        open(s) {
          sockets.push(s);
        },
        data(s) {
          const rep = reqFrame(encodeHello(base, "cm"), qpNum, F_REP, 16, 16);
          const dreq = reqFrame(new Uint8Array(0), 0, F_DREQ);
          s.write(new Uint8Array([...rep, ...dreq]));
        },
      },
    });
    try {
      const held = await client.ask("hold", { url: `rdma://127.0.0.1:${srv.port}` });
      expect(held).toMatchObject({ ok: true });
      const { closedWith } = await client.ask("held", { waitMs: 5000 });
      expect(closedWith).toEqual([expect.stringMatching(/^TransportClosedError: .*\(RDMA_CM_EVENT_DISCONNECTED\)$/)]);
    } finally {
      for (const s of sockets) s.end();
      srv.stop(true);
    }
    expect([await client.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);
});
