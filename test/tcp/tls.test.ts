/**
 * tcp over TLS (Bun's TLS) with a CA and server certificate the test makes with openssl: calls
 * over tcps://, tls:// and tcp:// with tls options, with and without a token; the hello and the
 * token proofs inside TLS (nothing of them readable on the wire); clear ConnectErrors for an
 * untrusted certificate, a wrong serverName, a plain client at a TLS listener and a TLS client
 * at a plain one; usage errors for incomplete options; backpressure and the slow-consumer limit
 * over a TLS socket; a TLS listener at its connection limit.
 */

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import {
  ConnectError,
  SEND_FULL,
  SEND_OK,
  TransportClosedError,
  UsageError,
  connect,
  listen,
  rpcConnect,
  serve,
  type Connection,
  type HotpathError,
  type Listener,
  type RefusalReason,
} from "../../src/index.ts";
import { hello, until } from "./raw.ts";
import { contains, joined, makeCerts, recordingProxy, type TestCerts } from "./tls-fixture.ts";
import * as m from "../conformance/methods.ts";

const TOKEN = "a-token-for-the-tls-tests-0123456789";
const te = new TextEncoder();
let certs: TestCerts;
beforeAll(() => {
  certs = makeCerts();
});
afterAll(() => {
  certs.remove();
});

const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

async function tlsServer(url = "tcps://127.0.0.1:0", extra: object = {}) {
  const serving = await serve(url, { [m.M_ECHO]: (h) => h.data }, { tls: { cert: certs.cert, key: certs.key }, ...extra });
  open.push(serving);
  const refusals: Array<{ error: HotpathError; reason: RefusalReason }> = [];
  serving.listener.onRefused((error, reason) => void refusals.push({ error, reason }));
  return { serving, refusals, port: Number(new URL(serving.url).port) };
}

async function echo(url: string, opts: object, data = new Uint8Array([1, 2, 3])): Promise<Uint8Array> {
  const c = await rpcConnect(url, { connectTimeoutMs: 5000, ...opts });
  try {
    return await c.request(m.M_ECHO, data, { timeoutMs: 5000 });
  } finally {
    c.close();
  }
}

async function pair(listenOpts: object, connectOpts: object): Promise<{ listener: Listener; a: Connection; b: Connection }> {
  const listener = await listen("tcps://127.0.0.1:0", { tls: { cert: certs.cert, key: certs.key }, ...listenOpts });
  open.push({ close: () => listener.close(true) });
  const accepted = new Promise<Connection>((resolve) => listener.onConnection(resolve));
  const a = await connect(listener.url, { tls: { ca: certs.ca }, ...connectOpts });
  open.push(a);
  return { listener, a, b: await accepted };
}

describe("tcp TLS: calls", () => {
  test("tcps:// and tls:// listeners keep their scheme; calls work; tcp:// with tls options is TLS too", async () => {
    for (const scheme of ["tcps", "tls"]) {
      const { serving } = await tlsServer(`${scheme}://127.0.0.1:0`);
      expect(serving.url.startsWith(`${scheme}://127.0.0.1:`)).toBe(true);
      expect(await echo(serving.url, { tls: { ca: certs.ca } })).toEqual(new Uint8Array([1, 2, 3]));
      // The same listener through a tcp:// URL with tls options.
      expect(await echo(serving.url.replace(`${scheme}://`, "tcp://"), { tls: { ca: certs.ca } })).toEqual(new Uint8Array([1, 2, 3]));
    }
    const { serving } = await tlsServer("tcp://127.0.0.1:0");
    expect(serving.url.startsWith("tcp://")).toBe(true);
    expect(await echo(serving.url.replace("tcp://", "tcps://"), { tls: { ca: certs.ca } })).toEqual(new Uint8Array([1, 2, 3]));
  });

  test("serverName: a DNS name the certificate carries works for an IP URL; a CA given as an array of PEMs works", async () => {
    const { serving } = await tlsServer();
    expect(await echo(serving.url, { tls: { ca: [certs.otherCa, te.encode(certs.ca)], serverName: "localhost" } })).toEqual(new Uint8Array([1, 2, 3]));
  });

  test("TLS and a token together: calls work; a wrong token is an AuthError inside TLS", async () => {
    const { serving, refusals } = await tlsServer("tcps://127.0.0.1:0", { auth: { token: TOKEN } });
    expect(await echo(serving.url, { tls: { ca: certs.ca }, auth: { token: TOKEN } })).toEqual(new Uint8Array([1, 2, 3]));
    const e = await rpcConnect(serving.url, { tls: { ca: certs.ca }, auth: { token: TOKEN + "?" } }).catch((x) => x);
    expect(e.name).toBe("AuthError");
    await until(() => refusals.length === 1, "the refusal");
    expect(refusals[0]!.reason).toBe("auth");
    expect(serving.listener.stats.refusedAuth).toBe(1);
  });

  test("the hello, the token proofs and the calls travel inside TLS: none of their bytes are on the wire", async () => {
    const { port } = await tlsServer("tcps://127.0.0.1:0", { auth: { token: TOKEN } });
    const proxy = recordingProxy(port);
    open.push(proxy);
    const payload = te.encode("a distinctive payload that must not be seen on the wire");
    expect(await echo(`tcps://127.0.0.1:${proxy.port}`, { tls: { ca: certs.ca }, auth: { token: TOKEN } }, payload)).toEqual(payload);
    await until(() => proxy.connections.length === 1 && proxy.connections[0]!.toClient.length > 0, "the recorded connection");
    const wire = [joined(proxy.connections[0]!.toServer), joined(proxy.connections[0]!.toClient)];
    expect(wire[0]![0]).toBe(0x16); // a TLS handshake record: the ClientHello comes first
    for (const bytes of wire) {
      expect(contains(bytes, te.encode("hptc"))).toBe(false);
      expect(contains(bytes, te.encode(TOKEN))).toBe(false);
      expect(contains(bytes, payload)).toBe(false);
    }
  });
});

describe("tcp TLS: clear failures", () => {
  test("a client that trusts another CA: ConnectError naming certificate verification", async () => {
    const { serving, refusals } = await tlsServer();
    const e = await connect(serving.url, { tls: { ca: certs.otherCa } }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("certificate did not verify");
    expect(e.message).toContain("tls.ca");
    // Without tls.ca the system's CAs do not know the test CA either.
    const e2 = await connect(serving.url).catch((x) => x);
    expect(e2).toBeInstanceOf(ConnectError);
    expect(e2.message).toContain("certificate did not verify");
    await until(() => refusals.length === 2, "the listener saw both go");
    expect(refusals.every((r) => r.reason === "protocol")).toBe(true);
  });

  test("a serverName the certificate does not carry: ConnectError saying which name", async () => {
    const { serving } = await tlsServer();
    const e = await connect(serving.url, { tls: { ca: certs.ca, serverName: "example.com" } }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain('does not carry the name "example.com"');
  });

  test("a plain tcp client at a TLS listener: a ConnectError that says TLS (no hang), a protocol refusal", async () => {
    const { serving, refusals } = await tlsServer();
    const e = await connect(serving.url.replace("tcps://", "tcp://"), { connectTimeoutMs: 5000 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("it speaks TLS: connect with a tcps:// URL");
    await until(() => refusals.length === 1, "the refusal");
    expect(refusals[0]!.reason).toBe("protocol");
    expect(refusals[0]!.error.message).toContain("does not speak TLS");
  });

  test("a TLS client at a plain listener: a ConnectError that says the peer does not speak TLS; the listener names a TLS client", async () => {
    const serving = await serve("tcp://127.0.0.1:0", { [m.M_ECHO]: (h) => h.data });
    open.push(serving);
    const refusals: HotpathError[] = [];
    serving.listener.onRefused((e) => void refusals.push(e));
    const e = await connect(serving.url.replace("tcp://", "tcps://"), { tls: { ca: certs.ca }, connectTimeoutMs: 5000 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("does not speak TLS");
    await until(() => refusals.length === 1, "the refusal");
    expect(refusals[0]!.message).toContain("a TLS client, and this listener is plain tcp");
  });

  test("incomplete or mistyped TLS options are UsageErrors", async () => {
    await expect(listen("tcps://127.0.0.1:0")).rejects.toBeInstanceOf(UsageError);
    await expect(listen("tls://127.0.0.1:0", { tls: { cert: certs.cert } as never })).rejects.toThrow(/tls\.key/);
    await expect(listen("tcps://127.0.0.1:0", { tls: { cert: "not a pem", key: certs.key } })).rejects.toBeInstanceOf(UsageError);
    await expect(listen("tcp://127.0.0.1:0", { tls: 5 as never })).rejects.toBeInstanceOf(UsageError);
    await expect(connect("tcps://127.0.0.1:1", { tls: { serverName: 7 as never } })).rejects.toBeInstanceOf(UsageError);
    await expect(connect("tcps://127.0.0.1:1", { tls: { ca: [certs.ca, 3 as never] } })).rejects.toThrow(/tls\.ca\[1\]/);
  });
});

describe("tcp TLS: limits and backpressure on a TLS socket", () => {
  test("a receiver that stops reading: trySend reports Full, and once it reads again every message arrives whole and in order", async () => {
    const { a, b } = await pair({}, { tcp: { sendBufferBytes: 1 << 20 } });
    const body = new Uint8Array(16 << 10);
    let sent = 0;
    let full = 0;
    // b has no receiver yet: it stops reading past connectionBufferBytes, and a's output backs up.
    for (let i = 0; i < 20_000 && full === 0; i++) {
      new DataView(body.buffer).setUint32(0, sent, true);
      const st = a.trySend(te.encode("m"), body);
      if (st === SEND_OK) sent++;
      else if (st === SEND_FULL) full++;
      if (i % 64 === 63) await Bun.sleep(1);
    }
    expect(full).toBe(1);
    const got: number[] = [];
    b.setReceiver({
      onMessage(msg) {
        if (msg.body.length === body.length) got.push(new DataView(msg.body.buffer, msg.body.byteOffset).getUint32(0, true));
        msg.release();
      },
      onClose() {},
    });
    // a sends the rest as room comes back (drain over TLS).
    const total = sent + 200;
    while (sent < total) {
      new DataView(body.buffer).setUint32(0, sent, true);
      if (a.trySend(te.encode("m"), body) === SEND_OK) sent++;
      else await a.wait(1000);
    }
    await until(() => got.length === total, `all ${total} messages`, 20_000);
    expect(got).toEqual(Array.from({ length: total }, (_, i) => i));
    expect(a.closed || b.closed).toBe(false);
  }, 30_000);

  test("a TLS peer that never reads its output is disconnected after slowConsumerMs", async () => {
    const listener = await listen("tcps://127.0.0.1:0", { tls: { cert: certs.cert, key: certs.key }, tcp: { sendBufferBytes: 1 << 20, slowConsumerMs: 300 } });
    open.push({ close: () => listener.close(true) });
    const accepted = new Promise<Connection>((resolve) => listener.onConnection(resolve));
    let raw!: Socket;
    raw = await Bun.connect({
      hostname: "127.0.0.1",
      port: Number(new URL(listener.url).port),
      tls: { ca: certs.ca },
      socket: { handshake: (s) => void s.write(hello()), data() {} },
    });
    open.push({ close: () => raw.terminate() });
    const b = await accepted;
    let closed: HotpathError | null | undefined;
    b.setReceiver({ onMessage: (x) => x.release(), onClose: (e) => void (closed = e) });
    raw.pause();
    const body = new Uint8Array(64 << 10);
    let full = false;
    for (let i = 0; i < 2000 && !full && !b.closed; i++) {
      if (b.trySend(te.encode("r"), body) === SEND_FULL) full = true;
      if (i % 16 === 15) await Bun.sleep(1);
    }
    expect(full).toBe(true);
    await until(() => closed !== undefined, "the slow consumer cut off", 10_000);
    expect(closed).toBeInstanceOf(TransportClosedError);
    expect(closed!.message).toContain("slowConsumerMs 300");
  }, 20_000);

  test("a TLS listener at its connection limit closes a new client at once, before the TLS handshake; counted as busy", async () => {
    const { serving } = await tlsServer("tcps://127.0.0.1:0", { tcp: { maxConnections: 1 } });
    const first = await rpcConnect(serving.url, { tls: { ca: certs.ca } });
    open.push(first);
    const e = await connect(serving.url, { tls: { ca: certs.ca }, connectTimeoutMs: 5000 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(serving.listener.stats.refusedBusy).toBe(1);
    expect(await first.request(m.M_ECHO, new Uint8Array([5]), { timeoutMs: 5000 })).toEqual(new Uint8Array([5]));
  });
});

describe("tcp TLS: a client that never starts TLS", () => {
  test("a raw TCP client that sends nothing to a TLS listener is refused after handshakeTimeoutMs (protocol)", async () => {
    const listener = await listen("tcps://127.0.0.1:0", { tls: { cert: certs.cert, key: certs.key }, tcp: { handshakeTimeoutMs: 200 } });
    open.push({ close: () => listener.close(true) });
    const refusals: HotpathError[] = [];
    listener.onRefused((e) => void refusals.push(e));
    let closed = false;
    const s = await Bun.connect({ hostname: "127.0.0.1", port: Number(new URL(listener.url).port), socket: { data() {}, close: () => void (closed = true) } });
    open.push({ close: () => s.terminate() });
    await until(() => closed && refusals.length === 1, "the silent client dropped");
    expect(refusals[0]!.message).toContain("sent no hello within handshakeTimeoutMs 200");
    expect(listener.stats.refusedProtocol).toBe(1);
  });
});
