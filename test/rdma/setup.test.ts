/**
 * The rdma:// control path (src/rdma/setup.ts, cm-mode.ts, socket-mode.ts, cm.ts, hello.ts,
 * options.ts). The handshake bytes and the URL / option checks are pure and tested here; everything
 * that touches verbs runs over the softrc TEST FIXTURE in child processes (test/rdma/setup-peer.ts,
 * setup-pair.ts; spawned with the fixture's env, killed by pid), never in the test runner: a
 * listener in one process and clients in others, in both connection modes, and a listener and
 * client in one process. Raw TCP clients from this process play hostile or silent peers (the
 * socket-mode handshake socket, and the fixture's rdma_cm side socket, whose REQ frame layout
 * test/rdma/softrc/cm.c defines).
 */
import { describe, expect, test } from "bun:test";
import { ProtocolError, UsageError } from "../../src/errors.ts";
import { decodeHello, decodeRefusal, encodeHello, encodeRefusal, HELLO_CM_BYTES, HELLO_SOCKET_BYTES, isRefusal, REFUSAL_TEXT_MAX, REFUSED_BUSY, REFUSED_PROTOCOL, type HelloFields } from "../../src/rdma/hello.ts";
import { listenerUrl, MAX_RDMA_HANDSHAKING, parseRdmaUrl, rdmaTuning } from "../../src/rdma/options.ts";
import { tcpBlackhole } from "../helpers/blackhole.ts";
import { until } from "../helpers/peer.ts";
import { thrown } from "../helpers/thrown.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";
import { ANSWER_WATCHDOG_MS, FIXTURE_GID, listenerWithBareQp, rawClient, rawSocketHello, rawSocketHelloAnswered, reqFrame, spawnSetupPeer, UNTIL_MS } from "./setup-harness.ts";

const PAIR = new URL("./setup-pair.ts", import.meta.url).pathname;
const ALIVE = new URL("./setup-alive.ts", import.meta.url).pathname;
const MODES = ["cm", "socket"] as const;

const hello: HelloFields = {
  qpNum: 0x123456, psn: 0xabcdef, lid: 7, gid: new Uint8Array(16).map((_, i) => i + 1),
  window: 16, recvSlotBytes: 4096, maxMessageBytes: 64 << 20,
  zoneAddr: 0x7f0012345678n, zoneRkey: 0xdeadbeef, zoneBytes: 1 << 20, mtu: 3,
};

describe("hello and refusal bytes", () => {
  test("a hello decodes to what was encoded; cm mode is 36 bytes (fits a REQ's 56), socket mode 64 with the QP's address", () => {
    const cm = encodeHello(hello, "cm");
    const sock = encodeHello(hello, "socket");
    expect([cm.length, sock.length]).toEqual([HELLO_CM_BYTES, HELLO_SOCKET_BYTES]);
    expect(HELLO_CM_BYTES).toBeLessThanOrEqual(56);
    expect(decodeHello(sock, "socket")).toEqual(hello);
    // cm mode: the QP number comes with the event, the rest of the address is rdma_cm's.
    expect(decodeHello(cm, "cm", 99)).toEqual({ ...hello, qpNum: 99, psn: 0, lid: 0, gid: new Uint8Array(16), mtu: 0 });
    // InfiniBand pads private data (a REQ's to 56 bytes): the padding is ignored.
    const padded = new Uint8Array(56);
    padded.set(cm);
    expect(decodeHello(padded, "cm", 99).zoneRkey).toBe(hello.zoneRkey);
  });

  test("bytes that are no hello of this version and mode are a ProtocolError that quotes nothing", () => {
    const cm = encodeHello(hello, "cm");
    expect(thrown(() => decodeHello(cm, "socket"))).toBeInstanceOf(ProtocolError); // too short for socket mode
    expect(thrown(() => decodeHello(cm.subarray(0, 20), "cm")).message).toContain("20 bytes");
    const badMagic = cm.slice();
    badMagic[0] = 0x41;
    expect(thrown(() => decodeHello(badMagic, "cm")).message).toContain("no hotpath rdma magic");
    const v2 = cm.slice();
    v2[4] = 2;
    expect(thrown(() => decodeHello(v2, "cm")).message).toContain("version 2");
    const noWindow = cm.slice();
    noWindow[16] = 0;
    expect(thrown(() => decodeHello(noWindow, "cm")).message).toContain("window 0");
    expect(thrown(() => decodeHello(encodeRefusal(REFUSED_BUSY, "x"), "cm")).message).toContain("refusal");
    expect(thrown(() => decodeHello(new Uint8Array(3), "cm"))).toBeInstanceOf(ProtocolError);
  });

  test("a refusal carries its reason and text, cut at a character boundary to fit a REJ's private data", () => {
    const r = encodeRefusal(REFUSED_PROTOCOL, "bad hello");
    expect(isRefusal(r)).toBe(true);
    expect(isRefusal(encodeHello(hello, "cm"))).toBe(false);
    expect(decodeRefusal(r)).toEqual({ reason: REFUSED_PROTOCOL, text: "bad hello" });
    const long = encodeRefusal(REFUSED_BUSY, "é".repeat(200));
    expect(long.length).toBeLessThanOrEqual(148);
    const t = decodeRefusal(long).text;
    expect(t).toBe("é".repeat(Math.floor(REFUSAL_TEXT_MAX / 2)));
    expect(thrown(() => decodeRefusal(r.subarray(0, 14))).message).toContain("text of 9 bytes");
  });

  test("fields that do not fit their width are a UsageError", () => {
    expect(thrown(() => encodeHello({ ...hello, window: 70_000 }, "cm"))).toBeInstanceOf(UsageError);
    expect(thrown(() => encodeHello({ ...hello, maxMessageBytes: 2 ** 32 }, "cm")).message).toContain("maxMessageBytes");
    expect(thrown(() => encodeHello({ ...hello, gid: new Uint8Array(4) }, "socket")).message).toContain("gid");
  });
});

describe("rdma:// URLs and options", () => {
  const usage = (fn: () => unknown, part: string) => {
    const e = thrown(fn);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toContain(part);
  };

  test("the URL's parts, with defaults: cm mode, HCA port 1, GID index 0; localhost is 127.0.0.1", () => {
    expect(parseRdmaUrl(new URL("rdma://10.0.0.2:7471"), false)).toEqual({ host: "10.0.0.2", port: 7471, mode: "cm", device: undefined, portNum: 1, gidIndex: 0, socketAsked: false });
    expect(parseRdmaUrl(new URL("rdma://localhost:9?mode=socket&device=mlx5_0&port=2&gid=3"), false)).toEqual({ host: "127.0.0.1", port: 9, mode: "socket", device: "mlx5_0", portNum: 2, gidIndex: 3, socketAsked: true });
    expect(parseRdmaUrl(new URL("rdma://127.0.0.1"), true).port).toBe(0);
    const u = parseRdmaUrl(new URL("rdma://127.0.0.1:0?mode=socket&gid=1"), true);
    expect(listenerUrl(u, 4242)).toBe("rdma://127.0.0.1:4242?mode=socket");
    expect(listenerUrl(parseRdmaUrl(new URL("rdma://127.0.0.1:0"), true), 4242)).toBe("rdma://127.0.0.1:4242");
  });

  test("a bad URL is a UsageError naming the bad part", () => {
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1:1?bogus=1"), false), `unknown option "bogus"`);
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1:1?mode=rc"), false), `mode="rc"`);
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1:1?port=0"), false), `port="0"`);
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1:1?gid=x"), false), `gid="x"`);
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1:1?device=a%20b"), false), `device="a b"`);
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1:1?mode=cm&mode=socket"), false), `"mode" given twice`);
    usage(() => parseRdmaUrl(new URL("rdma://server.example:1"), false), `host "server.example"`);
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1"), false), "missing port");
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1:0"), false), "port must be 1..65535");
    usage(() => parseRdmaUrl(new URL("rdma://127.0.0.1:1/x"), false), `path "/x"`);
  });

  test("rdma options and limits are checked, naming the field; auth is refused", () => {
    expect(rdmaTuning("w", {})).toEqual({ window: 16, sqDepth: 64, zoneBytes: 1 << 20, handshakeTimeoutMs: 10_000, maxMessageBytes: 64 << 20 });
    expect(rdmaTuning("w", { rdma: { window: 32, sqDepth: 8, zoneBytes: 8192, handshakeTimeoutMs: 300 }, maxMessageBytes: 1000 })).toEqual({ window: 32, sqDepth: 8, zoneBytes: 8192, handshakeTimeoutMs: 300, maxMessageBytes: 1000 });
    usage(() => rdmaTuning("w", { rdma: { window: 2 } }), "rdma.window must be an integer 3..4096");
    usage(() => rdmaTuning("w", { rdma: { sqDepth: 1 } }), "rdma.sqDepth");
    usage(() => rdmaTuning("w", { rdma: { zoneBytes: 100 } }), "rdma.zoneBytes");
    usage(() => rdmaTuning("w", { rdma: { handshakeTimeoutMs: -1 } }), "rdma.handshakeTimeoutMs");
    usage(() => rdmaTuning("w", { rdma: { windows: 3 } as never }), `unknown rdma option "windows"`);
    usage(() => rdmaTuning("w", { maxMessageBytes: 2 ** 32 }), "maxMessageBytes");
    usage(() => rdmaTuning("w", { auth: { token: "0123456789abcdef" } }), "rdma: auth is not supported yet");
  });
});

const fx = useSoftRc();
const spawnPeer = (dir: string) => spawnSetupPeer(fx, dir);

const portOf = (url: string) => Number(new URL(url).port);
const modeQuery = (mode: string) => (mode === "socket" ? "?mode=socket" : "");

describe.each(MODES)("rdma:// over the fixture, %s mode", (mode) => {
  test("a listener and a client in one process: bytes both ways, caps, close either way, listener.close(true); the process exits by itself afterwards", async () => {
    const dir = fx.registry();
    const p = fx.track(Bun.spawn(["bun", PAIR, mode], { stdout: "pipe", stderr: "pipe", env: fx.env(dir) }));
    const watchdog = setTimeout(() => p.kill(9), ANSWER_WATCHDOG_MS);
    const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(watchdog);
    // Exit code 0 without a kill: nothing of the transport held the process once everything was closed.
    expect({ code, signal: p.signalCode, stderr }).toEqual({ code: 0, signal: null, stderr: "" });
    const r = JSON.parse(stdout.trim());
    expect(r.url).toMatch(mode === "socket" ? /^rdma:\/\/127\.0\.0\.1:[1-9]\d*\?mode=socket$/ : /^rdma:\/\/127\.0\.0\.1:[1-9]\d*$/);
    expect(r.peer).toBe(r.url);
    expect([r.sent, r.back]).toEqual([0, 0]);
    expect(r.serverGot).toEqual({ head: [1, 2, 3], bodyLength: 3000, bytesOk: true });
    expect(r.clientGot).toEqual({ head: [9], body: [4, 5, 6] });
    expect(r.transport).toBe("rdma");
    expect(r.caps).toMatchObject({ zeroCopy: true, rma: true, sameHostOnly: false, maxHeadBytes: 4096, maxMessageBytes: 64 << 20, peerMaxMessageBytes: 64 << 20 });
    expect(r.caps.maxInlineBytes).toBe(256 - 12); // the fixture's inline limit less the transport header
    expect([r.serverClosedWith, r.clientClosedWith, r.secondClosedWith]).toEqual(["TransportClosedError", "local", "TransportClosedError"]);
    expect(r.stats).toEqual({ accepted: 2, refusedAuth: 0, refusedProtocol: 0, refusedBusy: 0 });
    // Nothing left but, in cm mode, the device context the fixture's rdma_cm keeps open (as librdmacm does).
    expect(r.liveAfter).toBe(r.liveBefore + (mode === "cm" ? 1 : 0));
    if (mode === "cm") expect(r.liveContexts).toBe(1);
  }, 30_000);

  test("an open listener and connection keep the process alive; listener.close(false) leaves the connection working; after close the process exits", async () => {
    const dir = fx.registry();
    const p = fx.track(Bun.spawn(["bun", ALIVE, mode], { stdout: "pipe", stderr: "pipe", env: fx.env(dir) }));
    const watchdog = setTimeout(() => p.kill(9), ANSWER_WATCHDOG_MS);
    const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(watchdog);
    expect({ code, signal: p.signalCode, stderr }).toEqual({ code: 0, signal: null, stderr: "" });
    expect(JSON.parse(stdout.trim())).toEqual({ alive: true, serverOpen: true, echoedAfterListenerClose: 100 });
  }, 30_000);

  test("across processes: a client connects to listener.url and its bytes come back; caps.peerMaxMessageBytes is the listener's", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: `rdma://127.0.0.1:0${modeQuery(mode)}`, opts: { maxMessageBytes: 1 << 20 } });
    const r = await client.ask("connect", { url, bodyBytes: 20_000 });
    expect(r).toMatchObject({ ok: true, sent: 0, echoed: true, transport: "rdma", peer: url });
    expect(r.caps.peerMaxMessageBytes).toBe(1 << 20);
    expect((await server.ask("stats")).stats).toEqual({ accepted: 1, refusedAuth: 0, refusedProtocol: 0, refusedBusy: 0 });
    // A second listener on that port: ConnectError naming it (the first keeps listening).
    expect((await client.ask("listen", { url })).error).toMatch(new RegExp(`^ConnectError: rdma listen ${url.replace(/[?.]/g, "\\$&")}: `));
    expect(await client.ask("connect", { url })).toMatchObject({ ok: true, echoed: true });
    expect([await client.end(), await server.end()]).toEqual([0, 0]);
  }, 30_000);

  test("busy: a listener whose SRQ cannot reserve another window refuses the client (ConnectError naming busy), counts it, and keeps its connection", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    // 1500 of the runtime's 2048 SRQ receives per connection: the second does not fit.
    const { url } = await server.ask("listen", { url: `rdma://127.0.0.1:0${modeQuery(mode)}`, opts: { rdma: { window: 1500 } } });
    expect(await client.ask("hold", { url })).toMatchObject({ ok: true });
    const r = await client.ask("connect", { url });
    expect(r).toMatchObject({ ok: false, name: "ConnectError" });
    expect(r.message).toContain("refused this client (busy)");
    const st = await server.ask("stats");
    expect(st.stats).toEqual({ accepted: 1, refusedAuth: 0, refusedProtocol: 0, refusedBusy: 1 });
    expect(st.refusals).toEqual([{ reason: "busy", name: "ConnectError", message: expect.stringContaining("no receives left") }]);
    expect(st.open).toBe(1);
    expect((await client.ask("held")).closedWith).toEqual([null]);
    expect([await client.end(), await server.end()]).toEqual([0, 0]);
  }, 30_000);

  test("an onConnection callback that throws aborts that connection (the client sees it closed); the listener keeps accepting", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: `rdma://127.0.0.1:0${modeQuery(mode)}`, throwOnConnection: 1 });
    expect(await client.ask("hold", { url })).toMatchObject({ ok: true });
    expect((await client.ask("held", { waitMs: 10_000 })).closedWith).toEqual([expect.stringMatching(/^TransportClosedError: /)]);
    expect(await client.ask("connect", { url })).toMatchObject({ ok: true, echoed: true });
    expect((await server.ask("stats")).stats.accepted).toBe(2);
    expect([await client.end(), await server.end()]).toEqual([0, 0]);
  }, 30_000);

  test("connectTimeoutMs bounds the handshake: a TCP listener that never answers gives ConnectError in time; nothing listening is ConnectError", async () => {
    const dir = fx.registry();
    const client = spawnPeer(dir);
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const r = await client.ask("connect", { url: `rdma://127.0.0.1:${silent.port}${modeQuery(mode)}`, opts: { connectTimeoutMs: 400 } });
      expect(r).toMatchObject({ ok: false, name: "ConnectError" });
      expect(r.message).toContain("no answer within 400 ms");
      if (mode === "socket") {
        // A port whose TCP connect never completes (SYNs dropped): the same bound. (cm mode over the
        // fixture dials its side socket with a blocking connect(), which only a real rdma_cm avoids.)
        const hole = await tcpBlackhole();
        try {
          const r2 = await client.ask("connect", { url: `rdma://127.0.0.1:${hole.port}?mode=socket`, opts: { connectTimeoutMs: 400 } });
          expect(r2).toMatchObject({ ok: false, name: "ConnectError" });
          expect(r2.message).toContain("no connection within 400 ms");
        } finally {
          hole.close();
        }
      }
      // Port 1: nothing listens there (a privileged port this test never binds).
      const none = await client.ask("connect", { url: `rdma://127.0.0.1:1${modeQuery(mode)}`, opts: { connectTimeoutMs: 2000 } });
      expect(none).toMatchObject({ ok: false, name: "ConnectError" });
      expect(none.message).toContain(mode === "socket" ? "cannot reach the listener" : "nothing listening");
      // And the client's fixture objects are all gone again (cm mode: rdma_cm's own context stays).
      expect(await client.ask("probe")).toMatchObject({ qp: 0, mr: 0 });
    } finally {
      silent.stop(true);
    }
    expect(await client.end()).toBe(0);
  }, 30_000);

  test("URL and option mistakes through connect() are UsageErrors naming the bad part", async () => {
    const dir = fx.registry();
    const client = spawnPeer(dir);
    const bad = async (url: string, opts: Record<string, unknown>, part: string) => {
      const r = await client.ask("connect", { url, opts });
      expect(r).toMatchObject({ ok: false, name: "UsageError" });
      expect(r.message).toContain(part);
    };
    await bad(`rdma://127.0.0.1:9${modeQuery(mode)}${mode === "socket" ? "&" : "?"}qos=3`, {}, `unknown option "qos"`);
    await bad(`rdma://127.0.0.1:9${modeQuery(mode)}`, { rdma: { window: 1 } }, "rdma.window");
    await bad(`rdma://127.0.0.1:9${modeQuery(mode)}`, { auth: { token: "0123456789abcdef" } }, "rdma: auth is not supported yet");
    await bad(`rdma://127.0.0.1:9${modeQuery(mode)}`, { wait: { mode: "sleepy" } }, `wait mode "sleepy"`);
    if (mode === "cm") {
      // cm mode takes the device from the address: naming another one is a mistake.
      const server = spawnPeer(dir);
      const { url } = await server.ask("listen", { url: "rdma://127.0.0.1:0" });
      await bad(`${url}?device=mlx5_9`, {}, "device=mlx5_9, but rdma_cm reaches 127.0.0.1 through softrc0");
      await bad(`${url}?port=2`, {}, "port=2, but rdma_cm reaches 127.0.0.1 through port 1 of softrc0");
      expect(await client.ask("connect", { url: `${url}?device=softrc0&port=1` })).toMatchObject({ ok: true, echoed: true });
      expect(await server.end()).toBe(0);
    } else {
      const r = await client.ask("connect", { url: "rdma://127.0.0.1:9?mode=socket&device=mlx5_9" });
      expect(r).toMatchObject({ ok: false, name: "RdmaUnavailableError" });
      expect(r.message).toContain(`no RDMA device "mlx5_9" (found: softrc0)`);
    }
    expect(await client.end()).toBe(0);
  }, 30_000);

  test("the peer's process dies: the surviving side's connection closes with TransportClosedError", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: `rdma://127.0.0.1:0${modeQuery(mode)}` });
    expect(await client.ask("hold", { url })).toMatchObject({ ok: true });
    server.proc.kill(9);
    await server.proc.exited;
    const r = await client.ask("held", { waitMs: 10_000 });
    expect(r.closedWith).toEqual([expect.stringMatching(/^TransportClosedError: /)]);
    expect(await client.end()).toBe(0);
  }, 30_000);
});

describe("hostile and silent peers", () => {
  test("socket mode: a malformed hello from a raw TCP client is refused (protocol, told why), an oversized frame claim too, and the listener keeps working", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: "rdma://127.0.0.1:0?mode=socket" });
    const raw = await rawClient(portOf(url));
    raw.s.write(new Uint8Array([10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    await until(() => raw.state.closed, "the listener closing the hostile socket", UNTIL_MS);
    const len = raw.got[0]! | (raw.got[1]! << 8);
    const refusal = decodeRefusal(new Uint8Array(raw.got.slice(2, 2 + len)));
    expect(refusal.reason).toBe(REFUSED_PROTOCOL);
    expect(refusal.text).toContain("no hotpath rdma magic");
    const big = await rawClient(portOf(url));
    big.s.write(new Uint8Array([0xff, 0xff, 1, 2]));
    await until(() => big.state.closed, "the listener closing the oversized claim", UNTIL_MS);
    const st = await server.ask("stats");
    expect(st.stats).toMatchObject({ accepted: 0, refusedProtocol: 2 });
    expect(st.refusals.map((x: { name: string }) => x.name)).toEqual(["ProtocolError", "ProtocolError"]);
    expect(st.refusals[1].message).toContain("over 1024 bytes");
    expect(await client.ask("connect", { url })).toMatchObject({ ok: true, echoed: true });
    expect([await client.end(), await server.end()]).toEqual([0, 0]);
  }, 30_000);

  test("socket mode: a client that never finishes its handshake is dropped after handshakeTimeoutMs and counted protocol", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const other = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: "rdma://127.0.0.1:0?mode=socket", opts: { rdma: { handshakeTimeoutMs: 300 } } });
    const silent = await rawClient(portOf(url));
    // A second one sends a hello (naming a real QP, so the listener's QP connects to it) but never the READY byte: its endpoint is closed too.
    const { qpNum } = await other.ask("bareQp");
    const half = await rawSocketHello(url, { ...hello, qpNum, gid: FIXTURE_GID });
    await until(() => silent.state.closed && half.state.closed, "both sockets closed by the listener", UNTIL_MS);
    const st = await server.ask("stats");
    expect(st.stats).toMatchObject({ accepted: 0, refusedProtocol: 2 });
    for (const r of st.refusals) expect(r.message).toContain("did not finish its handshake within 300 ms");
    expect(half.got.length).toBe(2 + HELLO_SOCKET_BYTES); // it got the listener's hello first
    expect((await server.ask("probe")).qp).toBe(0);
    expect([await server.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);

  test("socket mode: past MAX_RDMA_HANDSHAKING clients in their handshake a new one is refused busy; once they leave, clients connect again", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: "rdma://127.0.0.1:0?mode=socket" });
    const silent = [];
    for (let i = 0; i < MAX_RDMA_HANDSHAKING; i++) silent.push(await rawClient(portOf(url)));
    // Each has been accepted by the time the listener answers a stats command after it.
    let st = await server.ask("stats");
    const extra = await rawClient(portOf(url));
    await until(() => extra.state.closed, "the listener turning the extra client away", UNTIL_MS);
    const len = extra.got[0]! | (extra.got[1]! << 8);
    expect(decodeRefusal(new Uint8Array(extra.got.slice(2, 2 + len))).reason).toBe(REFUSED_BUSY);
    for (const r of silent) r.s.end();
    for (let i = 0; i < 500 && st.stats.refusedProtocol < MAX_RDMA_HANDSHAKING; i++) {
      await Bun.sleep(10);
      st = await server.ask("stats");
    }
    expect(st.stats).toEqual({ accepted: 0, refusedAuth: 0, refusedProtocol: MAX_RDMA_HANDSHAKING, refusedBusy: 1 });
    expect(st.refusals.find((r: { reason: string }) => r.reason === "busy").message).toContain("clients already in their handshake");
    expect(await client.ask("connect", { url })).toMatchObject({ ok: true, echoed: true });
    expect([await client.end(), await server.end()]).toEqual([0, 0]);
  }, 30_000);

  test("cm mode: a connect request with a malformed hello is rejected with a protocol refusal; one that never completes is dropped after handshakeTimeoutMs; the listener keeps working", async () => {
    const dir = fx.registry();
    const server = spawnPeer(dir);
    const client = spawnPeer(dir);
    const { url } = await server.ask("listen", { url: "rdma://127.0.0.1:0", opts: { rdma: { handshakeTimeoutMs: 300 } } });
    const hostile = await rawClient(portOf(url));
    hostile.s.write(reqFrame(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), 4242));
    // The REJ frame carries the refusal as private data.
    await until(() => hostile.got.length >= 12 && hostile.got.length >= 12 + hostile.got[1]!, "a REJ frame", UNTIL_MS);
    expect(hostile.got[0]).toBe(3); // F_REJ
    const refusal = decodeRefusal(new Uint8Array(hostile.got.slice(12, 12 + hostile.got[1]!)));
    expect(refusal.reason).toBe(REFUSED_PROTOCOL);
    hostile.s.end();
    // A well-formed request that never sends the RTU: accepted (a REP comes back), then dropped.
    const { qpNum } = await client.ask("bareQp");
    const stalled = await rawClient(portOf(url));
    stalled.s.write(reqFrame(encodeHello(hello, "cm"), qpNum));
    await until(() => stalled.got.length >= 12, "a REP frame", UNTIL_MS);
    expect(stalled.got[0]).toBe(2); // F_REP
    await until(() => stalled.state.closed, "the listener dropping the stalled request", UNTIL_MS);
    const st = await server.ask("stats");
    expect(st.stats).toMatchObject({ accepted: 0, refusedProtocol: 2 });
    expect(st.refusals[0].message).toContain("no hotpath rdma magic");
    expect(st.refusals[1].message).toContain("not established within 300 ms");
    expect(await client.ask("connect", { url })).toMatchObject({ ok: true, echoed: true });
    expect((await server.ask("stats")).stats.accepted).toBe(1);
    expect([await client.end(), await server.end()]).toEqual([0, 0]);
  }, 30_000);

  test("socket mode: the socket is the liveness token: a client that completes the handshake and then closes its socket ends the server's connection (TransportClosedError)", async () => {
    const { server, other, url, qpNum } = await listenerWithBareQp(fx, { url: "rdma://127.0.0.1:0?mode=socket" }, false);
    const raw = await rawSocketHelloAnswered(url, { ...hello, qpNum, gid: FIXTURE_GID });
    raw.s.write(new Uint8Array([0x52])); // READY
    const opened = async () => (await server.ask("stats")).stats.accepted === 1;
    for (let i = 0; i < 200 && !(await opened()); i++) await Bun.sleep(10);
    raw.s.end();
    let st = await server.ask("stats");
    for (let i = 0; i < 500 && st.closed.length === 0; i++) {
      await Bun.sleep(10);
      st = await server.ask("stats");
    }
    expect(st.stats).toMatchObject({ accepted: 1, refusedProtocol: 0 });
    expect(st.closed).toEqual([expect.stringMatching(/^TransportClosedError: .*the peer closed or died \(its socket closed\)$/)]);
    expect([await server.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);

  test("cm mode: DISCONNECTED ends the server's connection (TransportClosedError): a raw rdma_cm client establishes, then sends a DREQ", async () => {
    const { server, other, url, qpNum } = await listenerWithBareQp(fx, { url: "rdma://127.0.0.1:0" }, false);
    const raw = await rawClient(portOf(url));
    raw.s.write(reqFrame(encodeHello(hello, "cm"), qpNum));
    await until(() => raw.got.length >= 12 && raw.got.length >= 12 + raw.got[1]!, "a REP frame", UNTIL_MS);
    expect(raw.got[0]).toBe(2); // F_REP
    raw.s.write(new Uint8Array([4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])); // F_RTU: the server's side is ESTABLISHED
    let st = await server.ask("stats");
    for (let i = 0; i < 500 && st.stats.accepted === 0; i++) {
      await Bun.sleep(10);
      st = await server.ask("stats");
    }
    expect(st.stats.accepted).toBe(1);
    raw.s.write(new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])); // F_DREQ
    for (let i = 0; i < 500 && st.closed.length === 0; i++) {
      await Bun.sleep(10);
      st = await server.ask("stats");
    }
    expect(st.closed).toEqual([expect.stringMatching(/^TransportClosedError: .*the peer closed or died \(RDMA_CM_EVENT_DISCONNECTED\)$/)]);
    raw.s.end();
    expect([await server.end(), await other.end()]).toEqual([0, 0]);
  }, 30_000);
});
