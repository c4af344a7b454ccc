/**
 * The tcp hello at the transport level: limits exchanged both ways before any message, connect()
 * and onConnection waiting for the peer's hello, sends refused locally above the peer's limit,
 * and oversized messages from a peer that ignores the limit skipped per message (reported to
 * Receiver.onOversized) rather than killing the connection.
 */

import { afterEach, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { ProtocolError, SEND_OK, TransportClosedError, UsageError, connect, listen, type Connection, type HotpathError, type Listener } from "../../src/index.ts";
import { hello, until } from "./raw.ts";

const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

async function pair(listenMax: number, connectMax?: number): Promise<{ listener: Listener; a: Connection; b: Connection }> {
  const listener = await listen("tcp://127.0.0.1:0", { maxMessageBytes: listenMax });
  open.push({ close: () => listener.close(true) });
  const accepted = new Promise<Connection>((resolve) => listener.onConnection(resolve));
  const a = await connect(listener.url, { maxMessageBytes: connectMax });
  open.push(a);
  return { listener, a, b: await accepted };
}

/** Lets `conn` send past the peer's limit, as a peer that ignores the hello would. */
function ignorePeerLimit(conn: Connection): void {
  Object.defineProperty(conn, "caps", { value: { ...conn.caps, peerMaxMessageBytes: conn.caps.maxMessageBytes } });
}

function record(conn: Connection, withOversized: boolean) {
  const got: Array<{ head: string; body: number }> = [];
  const skipped: Array<{ head: string; body: number }> = [];
  let closed: HotpathError | null | undefined;
  conn.setReceiver({
    onMessage(msg) {
      got.push({ head: new TextDecoder().decode(msg.head), body: msg.body.length });
      msg.release();
    },
    onClose(e) {
      closed = e;
    },
    ...(withOversized ? { onOversized: (h: Uint8Array, n: number) => void skipped.push({ head: new TextDecoder().decode(h), body: n }) } : {}),
  });
  return {
    got,
    skipped,
    get closed() {
      return closed;
    },
  };
}

const te = new TextEncoder();

describe("tcp hello: limits exchanged at setup", () => {
  test("each side learns the other's maxMessageBytes; a send above it is refused locally naming both limits", async () => {
    const { a, b } = await pair(1000, 5000);
    expect(a.caps.maxMessageBytes).toBe(5000);
    expect(a.caps.peerMaxMessageBytes).toBe(1000);
    expect(b.caps.maxMessageBytes).toBe(1000);
    expect(b.caps.peerMaxMessageBytes).toBe(5000);
    const atB = record(b, true);
    expect(a.trySend(te.encode("ok"), new Uint8Array(1000))).toBe(SEND_OK);
    let e: unknown;
    try {
      a.trySend(te.encode("big"), new Uint8Array(1001));
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(UsageError);
    expect((e as Error).message).toContain("1001");
    expect((e as Error).message).toContain("maxMessageBytes 5000");
    expect((e as Error).message).toContain("the peer's 1000");
    expect(() => a.allocBuffer(1001)).toThrow(UsageError);
    await until(() => atB.got.length === 1, "the message within the limit");
    expect(a.closed).toBe(false);
  });

  test("a peer that ignores the limit: each oversized message is skipped and reported, the connection goes on", async () => {
    const { a, b } = await pair(1000);
    const atB = record(b, true);
    ignorePeerLimit(a);
    expect(a.trySend(te.encode("one"), new Uint8Array(10))).toBe(SEND_OK);
    expect(a.trySend(te.encode("big"), new Uint8Array(300_000))).toBe(SEND_OK);
    expect(a.trySend(te.encode("two"), new Uint8Array(20))).toBe(SEND_OK);
    expect(a.trySend(te.encode("big2"), new Uint8Array(1001))).toBe(SEND_OK);
    expect(a.trySend(te.encode("three"), new Uint8Array(30))).toBe(SEND_OK);
    await until(() => atB.got.length === 3, "the messages around the skipped ones");
    expect(atB.got).toEqual([
      { head: "one", body: 10 },
      { head: "two", body: 20 },
      { head: "three", body: 30 },
    ]);
    expect(atB.skipped).toEqual([
      { head: "big", body: 300_000 },
      { head: "big2", body: 1001 },
    ]);
    expect(b.closed).toBe(false);
    expect(a.closed).toBe(false);
  });

  test("without onOversized the receiver aborts with ProtocolError, and the sender sees the close", async () => {
    const { a, b } = await pair(1000);
    const atB = record(b, false);
    const atA = record(a, false);
    ignorePeerLimit(a);
    expect(a.trySend(te.encode("ok"), new Uint8Array(1000))).toBe(SEND_OK);
    expect(a.trySend(te.encode("big"), new Uint8Array(1001))).toBe(SEND_OK);
    await until(() => atB.closed !== undefined && atA.closed !== undefined, "both sides closed");
    expect(atB.got.length).toBe(1);
    expect(atB.closed).toBeInstanceOf(ProtocolError);
    expect(atA.closed).toBeInstanceOf(TransportClosedError);
  });

  test("connect() resolves only once the listener's hello arrived", async () => {
    let server!: Socket;
    const evil = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void (server = s), data() {} } });
    open.push({ close: () => evil.stop(true) });
    let resolved = false;
    const connecting = connect(`tcp://127.0.0.1:${evil.port}`, { connectTimeoutMs: 5000 }).then((c) => ((resolved = true), c));
    await until(() => server !== undefined, "the socket accepted");
    await Bun.sleep(50);
    expect(resolved).toBe(false);
    server.write(hello({ maxMessageBytes: 777 }));
    const c = await connecting;
    open.push(c);
    expect(c.caps.peerMaxMessageBytes).toBe(777);
  });

  test("the listener hands a connection out only after the client's hello, and its first frame right after is delivered", async () => {
    const listener = await listen("tcp://127.0.0.1:0");
    open.push({ close: () => listener.close(true) });
    const conns: Connection[] = [];
    const got: string[] = [];
    listener.onConnection((c) => {
      conns.push(c);
      c.setReceiver({ onMessage: (m) => void got.push(new TextDecoder().decode(m.head)), onClose() {} });
    });
    const port = Number(new URL(listener.url).port);
    const sock = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
    open.push({ close: () => sock.terminate() });
    await Bun.sleep(50);
    expect(conns.length).toBe(0);
    const f = new Uint8Array(8 + 2);
    f[0] = 2;
    f.set(te.encode("hi"), 8);
    const h = hello();
    sock.write(h.subarray(0, 7));
    await Bun.sleep(20);
    expect(conns.length).toBe(0);
    sock.write(new Uint8Array([...h.subarray(7), ...f]));
    await until(() => got.length === 1, "the first frame");
    expect(conns.length).toBe(1);
    expect(got).toEqual(["hi"]);
  });

  test("invalid limits are UsageErrors naming the value", async () => {
    await expect(listen("tcp://127.0.0.1:0", { maxMessageBytes: 2 ** 32 })).rejects.toThrow(/maxMessageBytes.*4294967296/);
    await expect(listen("tcp://127.0.0.1:0", { tcp: { maxConnections: 0 } })).rejects.toThrow(/maxConnections.*0/);
    await expect(listen("tcp://127.0.0.1:0", { tcp: { idleTimeoutMs: -1 } })).rejects.toThrow(UsageError);
    await expect(connect("tcp://127.0.0.1:1", { tcp: { sendBufferBytes: Number.NaN } })).rejects.toThrow(/sendBufferBytes.*NaN/);
    await expect(connect("tcp://127.0.0.1:1", { connectTimeoutMs: -5 })).rejects.toThrow(/connectTimeoutMs.*-5/);
  });
});
