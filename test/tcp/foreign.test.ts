/**
 * Peers that are not hotpath: a real HTTP server (Bun.serve on port 0), raw sockets that send
 * text or binary garbage (fewer bytes than a hello then close, or more), a peer of the previous
 * protocol version. The client's ConnectError quotes what arrived ("not a hotpath server: got
 * 'HTTP/1.1 505 …'"), printable text quoted with control characters escaped, binary as hex;
 * the listener refuses such clients as "protocol", quoting them too.
 */

import { afterEach, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { ConnectError, ProtocolError, connect, listen, type HotpathError, type RefusalReason } from "../../src/index.ts";
import { HELLO_BYTES } from "../../src/tcp/hello.ts";
import { describeForeignBytes } from "../../src/tcp/hello.ts";
import { hello, until } from "./raw.ts";

const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

/** A raw server that writes `first` when a client connects, then closes unless `keepOpen`. */
function rawServer(first: Uint8Array, keepOpen = false) {
  const srv = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        if (keepOpen) s.write(first);
        else s.end(first);
      },
      data() {},
    },
  });
  open.push({ close: () => srv.stop(true) });
  return `tcp://127.0.0.1:${srv.port}`;
}

const te = new TextEncoder();

describe("tcp: a client pointed at something that is not hotpath", () => {
  test("an HTTP server (Bun.serve): ConnectError quoting its status line", async () => {
    const http = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("hello") });
    open.push({ close: () => http.stop(true) });
    const e = await connect(`tcp://127.0.0.1:${http.port}`, { connectTimeoutMs: 5000 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("not a hotpath server: got 'HTTP/1.1 ");
    expect(e.message).toContain("\\r\\n");
    expect(e.message).not.toContain("\r");
  });

  test("fewer bytes than a hello, then close: the quote is what arrived", async () => {
    const url = rawServer(te.encode("HTTP/1.1 400\r\n\r\n"));
    const e = await connect(url).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("not a hotpath server: got 'HTTP/1.1 400\\r\\n\\r\\n'");
  });

  test("more bytes than a hello, left open: truncated, and no wait for the rest", async () => {
    const url = rawServer(te.encode("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" + "x".repeat(200)), true);
    const e = await connect(url, { connectTimeoutMs: 5000 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("not a hotpath server: got 'SSH-2.0-OpenSSH_9.2p1 Debian-2\\r\\nxxx");
    expect(e.message).toContain("…'");
    expect(e.message.length).toBeLessThan(300);
  });

  test("binary garbage: shown as hex", async () => {
    const url = rawServer(new Uint8Array([0x00, 0xff, 0x13, 0x37, 0x80, 0x81, 0x82, 0x01, 0x02]));
    const e = await connect(url).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("not a hotpath server: got 9 binary bytes (00 ff 13 37 80 81 82 01 02)");
  });

  test("a peer that matches the magic, then closes mid-hello: says how far it got", async () => {
    const url = rawServer(hello().subarray(0, 10));
    const e = await connect(url).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain(`the peer closed the connection after 10 of the ${HELLO_BYTES} hello bytes`);
  });

  test("a server of the previous protocol version (a 16-byte version 1 hello): told from its first bytes", async () => {
    const url = rawServer(hello({ version: 1 }).subarray(0, 16), true);
    const e = await connect(url, { connectTimeoutMs: 5000 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("speaks hotpath tcp protocol version 1, this side speaks version 2");
  });

  test("quotes escape control characters, quotes and backslashes", () => {
    expect(describeForeignBytes(te.encode("a'b\\c\td\x01e"))).toBe("'a\\'b\\\\c\\td\\x01e'");
  });
});

describe("tcp: a listener reached by something that is not a hotpath client", () => {
  async function listener() {
    const l = await listen("tcp://127.0.0.1:0", { tcp: { handshakeTimeoutMs: 300 } });
    open.push({ close: () => l.close(true) });
    const refusals: Array<{ error: HotpathError; reason: RefusalReason }> = [];
    l.onRefused((error, reason) => void refusals.push({ error, reason }));
    return { l, refusals, port: Number(new URL(l.url).port) };
  }

  async function rawClient(port: number, bytes: Uint8Array, end = false): Promise<Socket> {
    const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
    open.push({ close: () => s.terminate() });
    if (end) s.end(bytes);
    else s.write(bytes);
    return s;
  }

  test("an HTTP request: refused as protocol, the ProtocolError quotes it", async () => {
    const { l, refusals, port } = await listener();
    await rawClient(port, te.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await until(() => refusals.length === 1, "the refusal");
    expect(refusals[0]!.reason).toBe("protocol");
    expect(refusals[0]!.error).toBeInstanceOf(ProtocolError);
    expect(refusals[0]!.error.message).toContain("is not a hotpath client: sent 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'");
    expect(l.stats).toEqual({ accepted: 0, refusedAuth: 0, refusedProtocol: 1, refusedBusy: 0 });
  });

  test("silence, a partial hello then EOF, another version: each refused as protocol and counted once", async () => {
    const { l, refusals, port } = await listener();
    await rawClient(port, new Uint8Array(0));
    await rawClient(port, hello().subarray(0, 12), true);
    await rawClient(port, hello({ version: 3 }));
    await until(() => refusals.length === 3, "three refusals");
    const texts = refusals.map((r) => r.error.message).sort();
    expect(texts.some((t) => t.includes("sent no hello within handshakeTimeoutMs 300"))).toBe(true);
    expect(texts.some((t) => t.includes(`closed the connection after 12 of the ${HELLO_BYTES} hello bytes`))).toBe(true);
    expect(texts.some((t) => t.includes("speaks hotpath tcp protocol version 3"))).toBe(true);
    expect(refusals.every((r) => r.reason === "protocol" && r.error instanceof ProtocolError)).toBe(true);
    expect(l.stats.refusedProtocol).toBe(3);
  });

  test("beyond maxConnections: refused as busy (ConnectError), counted in refusedBusy", async () => {
    const l = await listen("tcp://127.0.0.1:0", { tcp: { maxConnections: 1 } });
    open.push({ close: () => l.close(true) });
    const reasons: Array<[RefusalReason, HotpathError]> = [];
    l.onRefused((e, r) => void reasons.push([r, e]));
    const first = await connect(l.url);
    open.push(first);
    const e = await connect(l.url).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("connection limit");
    expect(reasons.length).toBe(1);
    expect(reasons[0]![0]).toBe("busy");
    expect(reasons[0]![1]).toBeInstanceOf(ConnectError);
    expect(l.stats).toEqual({ accepted: 1, refusedAuth: 0, refusedProtocol: 0, refusedBusy: 1 });
  });
});
