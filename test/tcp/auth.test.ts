/**
 * tcp shared-token authentication against real sockets: calls work with the right token; a
 * wrong token, no token, a token offered to a listener without auth, a replayed client
 * handshake and server impostors (without the token, or replaying a real server's bytes) each
 * fail with AuthError on the client and are counted as refusedAuth and reported to onRefused on
 * the listener, which keeps serving. The token never appears on the wire, and no frame of an
 * unauthenticated client reaches the application.
 */

import { afterEach, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { AuthError, ConnectError, HotpathError, ProtocolError, UsageError, connect, listen, rpcConnect, serve, type Listener, type RefusalReason } from "../../src/index.ts";
import { HELLO_AUTH_OFFERED, HELLO_AUTH_REQUIRED, HELLO_BYTES } from "../../src/tcp/hello.ts";
import { AUTH_REPLY_BYTES } from "../../src/tcp/handshake.ts";
import { PROOF_BYTES } from "../../src/contract/auth.ts";
import { frame, hello, requestHead, until } from "./raw.ts";
import { contains, joined, recordingProxy } from "./tls-fixture.ts";
import * as m from "../conformance/methods.ts";

const TOKEN = "s3cret-token-of-more-than-16-bytes";
const te = new TextEncoder();

const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

async function echoServer(opts: object = {}) {
  const serving = await serve("tcp://127.0.0.1:0", { [m.M_ECHO]: (h) => h.data }, opts);
  open.push(serving);
  const refusals: Array<{ error: HotpathError; reason: RefusalReason }> = [];
  serving.listener.onRefused((error, reason) => void refusals.push({ error, reason }));
  return { serving, listener: serving.listener, refusals, port: Number(new URL(serving.url).port) };
}

async function echoOnce(url: string, opts: object): Promise<Uint8Array> {
  const c = await rpcConnect(url, opts);
  try {
    return await c.request(m.M_ECHO, new Uint8Array([7, 7]), { timeoutMs: 5000 });
  } finally {
    c.close();
  }
}

/** A raw listener that plays a server: writes `script(clientBytes)` as the client's bytes come in. */
function fakeServer(onOpen: (s: Socket) => void, onData: (s: Socket, all: Uint8Array) => void = () => {}) {
  let got = new Uint8Array(0);
  const srv = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: onOpen,
      data(s, d) {
        got = new Uint8Array([...got, ...d]);
        onData(s, got);
      },
    },
  });
  open.push({ close: () => srv.stop(true) });
  return srv;
}

describe("tcp auth: a shared token", () => {
  test("the right token: calls work, the connection is counted as accepted", async () => {
    const { serving, listener, refusals } = await echoServer({ auth: { token: TOKEN } });
    expect(await echoOnce(serving.url, { auth: { token: TOKEN } })).toEqual(new Uint8Array([7, 7]));
    expect(await echoOnce(serving.url, { auth: { token: te.encode(TOKEN) } })).toEqual(new Uint8Array([7, 7]));
    expect(listener.stats.accepted).toBe(2);
    expect(listener.stats.refusedAuth).toBe(0);
    expect(refusals).toEqual([]);
  });

  test("a wrong token: AuthError on the client, refusedAuth and onRefused on the listener, which keeps serving", async () => {
    const { serving, listener, refusals } = await echoServer({ auth: { token: TOKEN } });
    const e = await rpcConnect(serving.url, { auth: { token: TOKEN + "!" } }).catch((x) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect(e.code).toBe("E_AUTH");
    expect(e.message).toContain("refused this client's token");
    await until(() => refusals.length === 1, "the refusal reported");
    expect(refusals[0]!.reason).toBe("auth");
    expect(refusals[0]!.error).toBeInstanceOf(AuthError);
    expect(refusals[0]!.error.message).toContain("does not match");
    expect(listener.stats).toEqual({ accepted: 0, refusedAuth: 1, refusedProtocol: 0, refusedBusy: 0 });
    expect(await echoOnce(serving.url, { auth: { token: TOKEN } })).toEqual(new Uint8Array([7, 7]));
  });

  test("no token for a listener that requires one: AuthError on both sides", async () => {
    const { serving, listener, refusals } = await echoServer({ auth: { token: TOKEN } });
    const e = await rpcConnect(serving.url).catch((x) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect(e.message).toContain("requires a token");
    await until(() => refusals.length === 1, "the refusal reported");
    expect(refusals[0]!.error).toBeInstanceOf(AuthError);
    expect(refusals[0]!.error.message).toContain("offered no token");
    expect(listener.stats.refusedAuth).toBe(1);
  });

  test("a token offered to a listener without auth: the client refuses it (it could be anybody), the listener refuses the client", async () => {
    const { serving, listener, refusals } = await echoServer();
    const e = await rpcConnect(serving.url, { auth: { token: TOKEN } }).catch((x) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect(e.message).toContain("does not authenticate");
    await until(() => refusals.length === 1, "the refusal reported");
    expect(refusals[0]!.reason).toBe("auth");
    expect(listener.stats.refusedAuth).toBe(1);
    expect(listener.stats.accepted).toBe(0);
  });

  test("the token never travels: neither its bytes nor its hex appear on the wire, either way", async () => {
    const { serving } = await echoServer({ auth: { token: TOKEN } });
    const proxy = recordingProxy(Number(new URL(serving.url).port));
    open.push(proxy);
    expect(await echoOnce(`tcp://127.0.0.1:${proxy.port}`, { auth: { token: TOKEN } })).toEqual(new Uint8Array([7, 7]));
    await until(() => proxy.connections.length === 1 && proxy.connections[0]!.toClient.length > 0, "the recorded connection");
    const wire = [joined(proxy.connections[0]!.toServer), joined(proxy.connections[0]!.toClient)];
    // The handshake did happen through the proxy: a hello, a proof and its answer.
    expect(wire[0]!.length).toBeGreaterThanOrEqual(HELLO_BYTES + PROOF_BYTES);
    expect(wire[1]!.length).toBeGreaterThanOrEqual(HELLO_BYTES + AUTH_REPLY_BYTES);
    for (const bytes of wire) {
      expect(contains(bytes, te.encode(TOKEN))).toBe(false);
      expect(contains(bytes, te.encode(TOKEN.slice(0, 8)))).toBe(false);
      expect(contains(bytes, te.encode(Buffer.from(TOKEN).toString("hex")))).toBe(false);
    }
  });

  test("a replayed client handshake (a real client's recorded bytes on a new connection) is refused: the listener's nonce changed", async () => {
    const { serving, listener, refusals, port } = await echoServer({ auth: { token: TOKEN } });
    const proxy = recordingProxy(port);
    open.push(proxy);
    expect(await echoOnce(`tcp://127.0.0.1:${proxy.port}`, { auth: { token: TOKEN } })).toEqual(new Uint8Array([7, 7]));
    await until(() => proxy.connections[0]?.toClient.length! > 0, "the recorded connection");
    const recorded = joined(proxy.connections[0]!.toServer);
    expect(listener.stats.accepted).toBe(1);
    // Replay everything the good client sent (hello, proof, its request) on a fresh connection.
    const back: Uint8Array[] = [];
    let closed = false;
    const sock = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: { data: (_s, d) => void back.push(d.slice()), close: () => void (closed = true) },
    });
    open.push({ close: () => sock.terminate() });
    sock.write(recorded);
    await until(() => closed, "the replaying connection closed by the listener");
    await until(() => refusals.length === 1, "the refusal reported");
    expect(refusals[0]!.reason).toBe("auth");
    expect(refusals[0]!.error.message).toContain("does not match");
    expect(listener.stats).toEqual({ accepted: 1, refusedAuth: 1, refusedProtocol: 0, refusedBusy: 0 });
    // What came back: the listener's hello and its denial, no reply to the replayed request.
    expect(joined(back).length).toBe(HELLO_BYTES + AUTH_REPLY_BYTES);
    expect(await echoOnce(serving.url, { auth: { token: TOKEN } })).toEqual(new Uint8Array([7, 7]));
  });

  test("a client that skips the proof and sends frames: refused, nothing delivered to the application", async () => {
    const listener: Listener = await listen("tcp://127.0.0.1:0", { auth: { token: TOKEN } });
    open.push({ close: () => listener.close(true) });
    const handed: unknown[] = [];
    listener.onConnection((c) => void handed.push(c));
    const refusals: RefusalReason[] = [];
    listener.onRefused((_e, r) => void refusals.push(r));
    const sock = await Bun.connect({ hostname: "127.0.0.1", port: Number(new URL(listener.url).port), socket: { data() {} } });
    open.push({ close: () => sock.terminate() });
    // Claims a token, then sends a request where the proof should be (the listener reads it as a proof).
    sock.write(new Uint8Array([...hello({ flags: HELLO_AUTH_OFFERED }), ...frame(requestHead(40), new Uint8Array(40))]));
    await until(() => refusals.length === 1, "the refusal");
    expect(refusals).toEqual(["auth"]);
    expect(handed).toEqual([]);
  });
});

describe("tcp auth: the client refuses a server that cannot prove the token", () => {
  test("an impostor that asks for a token and answers with a made-up proof: AuthError", async () => {
    const srv = fakeServer(
      (s) => void s.write(hello({ flags: HELLO_AUTH_REQUIRED, nonce: new Uint8Array(32).fill(9) })),
      (s, all) => {
        if (all.length >= HELLO_BYTES + PROOF_BYTES) s.write(new Uint8Array(AUTH_REPLY_BYTES).fill(0, 0, 4).fill(0x5a, 4));
      },
    );
    const e = await connect(`tcp://127.0.0.1:${srv.port}`, { auth: { token: TOKEN } }).catch((x) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect(e.message).toContain("could not prove it knows the token");
  });

  test("an impostor replaying a real server's recorded handshake: AuthError (the client's nonce changed)", async () => {
    const { port } = await echoServer({ auth: { token: TOKEN } });
    const proxy = recordingProxy(port);
    open.push(proxy);
    const good = await connect(`tcp://127.0.0.1:${proxy.port}`, { auth: { token: TOKEN } });
    good.close();
    const recorded = joined(proxy.connections[0]!.toClient);
    expect(recorded.length).toBe(HELLO_BYTES + AUTH_REPLY_BYTES);
    const srv = fakeServer(
      (s) => void s.write(recorded.subarray(0, HELLO_BYTES)),
      (s, all) => {
        if (all.length >= HELLO_BYTES + PROOF_BYTES) s.write(recorded.subarray(HELLO_BYTES));
      },
    );
    const e = await connect(`tcp://127.0.0.1:${srv.port}`, { auth: { token: TOKEN } }).catch((x) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect(e.message).toContain("could not prove it knows the token");
  });

  test("an impostor that claims auth but never answers the proof: ConnectError after connectTimeoutMs, saying so", async () => {
    const srv = fakeServer((s) => void s.write(hello({ flags: HELLO_AUTH_REQUIRED })));
    const e = await connect(`tcp://127.0.0.1:${srv.port}`, { auth: { token: TOKEN }, connectTimeoutMs: 200 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("never answered this client's token proof");
  });

  test("an answer with an unknown status: ConnectError (a protocol failure, not an auth one)", async () => {
    const srv = fakeServer(
      (s) => void s.write(hello({ flags: HELLO_AUTH_REQUIRED })),
      (s, all) => {
        if (all.length >= HELLO_BYTES + PROOF_BYTES) s.write(new Uint8Array(AUTH_REPLY_BYTES).fill(7, 0, 1));
      },
    );
    const e = await connect(`tcp://127.0.0.1:${srv.port}`, { auth: { token: TOKEN } }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e).not.toBeInstanceOf(AuthError);
    expect(e.message).toContain("unknown status 7");
  });
});

describe("tcp auth: bad tokens are usage errors", () => {
  const bad: Array<[string, unknown]> = [
    ["a short string", "short"],
    ["15 bytes", new Uint8Array(15)],
    ["a number", 12345678901234567890],
    ["null", null],
    ["an array", Array.from({ length: 32 }, () => 1)],
  ];
  for (const [what, token] of bad) {
    test(`${what}: UsageError at listen and at connect, before any socket`, async () => {
      await expect(listen("tcp://127.0.0.1:0", { auth: { token: token as string } })).rejects.toBeInstanceOf(UsageError);
      // Port 1: nothing listens there; a UsageError proves the token was checked before dialling.
      await expect(connect("tcp://127.0.0.1:1", { auth: { token: token as string } })).rejects.toBeInstanceOf(UsageError);
    });
  }
  test("a listener's refusals of other kinds are counted apart (protocol)", async () => {
    const { listener, refusals, port } = await echoServer({ auth: { token: TOKEN } });
    const sock = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
    open.push({ close: () => sock.terminate() });
    sock.write(te.encode("GET / HTTP/1.1\r\n\r\n"));
    await until(() => refusals.length === 1, "the refusal");
    expect(refusals[0]!.reason).toBe("protocol");
    expect(refusals[0]!.error).toBeInstanceOf(ProtocolError);
    expect(listener.stats.refusedProtocol).toBe(1);
    expect(listener.stats.refusedAuth).toBe(0);
  });
});
