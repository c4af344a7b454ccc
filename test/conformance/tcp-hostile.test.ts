/**
 * A scripted hostile peer on raw sockets against the TCP transport: no hello, a wrong magic or
 * version, garbage, truncated frames, 4 GiB length claims, a header whose lengths disagree, a
 * response never asked for. Each aborts only the offending connection (or, for an oversized
 * body behind a sound head, only that call); the server keeps serving other clients. Raw peers
 * speak the hello first, as the protocol requires.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ConnectError, MessageTooLargeError, ProtocolError, rpcConnect, wire } from "../../src/index.ts";
import { HELLO_BUSY, HELLO_BYTES, TCP_PROTOCOL_VERSION } from "../../src/tcp/hello.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { frame, hello, rawSession, requestHead, rssBytes } from "../tcp/raw.ts";
import * as m from "./methods.ts";

const SERVER = new URL("../tcp/server.ts", import.meta.url).pathname;
/** Short enough for a test, long enough that a normal client is never caught by it. */
const HANDSHAKE_TIMEOUT_MS = 300;

/** A raw listener (a hostile or foreign server) with the given open and data handlers. */
function evilServer(onOpen: (s: import("bun").Socket) => void, onData: (s: import("bun").Socket, d: Uint8Array) => void = () => {}) {
  return Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: onOpen, data: onData } });
}

describe("tcp: hostile peer", () => {
  let peer: Peer;
  let port: number;
  beforeAll(async () => {
    peer = await spawnPeer(SERVER, ["tcp://127.0.0.1:0", JSON.stringify({ tcp: { handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS } })]);
    port = Number(new URL(peer.ready.url).port);
  });
  afterAll(async () => {
    await peer.kill();
  });

  async function stillServes() {
    const c = await rpcConnect(peer.ready.url);
    try {
      expect(await c.request(m.M_ECHO, new Uint8Array([4, 2]), { timeoutMs: 5000 })).toEqual(new Uint8Array([4, 2]));
    } finally {
      c.close();
    }
    expect(peer.proc.exitCode).toBeNull();
  }

  test("the server's hello comes first: magic, version, its limits", async () => {
    const r = await rawSession(port, [], { waitMs: 50 });
    expect([...r.serverHello]).toEqual([...hello()]);
  });

  test("a peer that never sends a hello is dropped after handshakeTimeoutMs", async () => {
    const r = await rawSession(port, [], { sendHello: false, waitMs: 5000 });
    expect(r.outcome).toBe("closed");
    expect(r.after.length).toBe(0);
    await stillServes();
  });

  test("a frame without a hello (a peer of another protocol) is dropped at once, unanswered", async () => {
    const r = await rawSession(port, [frame(requestHead(3), new Uint8Array(3))], { sendHello: false, waitMs: HANDSHAKE_TIMEOUT_MS / 2 });
    expect(r.outcome).toBe("closed");
    expect(r.after.length).toBe(0);
    await stillServes();
  });

  test("a hello with the wrong magic or another version is dropped, unanswered", async () => {
    for (const bad of [hello({ magic: 0x12345678 }), hello({ version: TCP_PROTOCOL_VERSION + 1 })]) {
      const r = await rawSession(port, [bad, frame(requestHead(3), new Uint8Array(3))], { sendHello: false, waitMs: HANDSHAKE_TIMEOUT_MS / 2 });
      expect(r.outcome).toBe("closed");
      expect(r.after.length).toBe(0);
    }
    await stillServes();
  });

  test("garbage bytes: the server drops the connection and keeps serving", async () => {
    const r = await rawSession(port, [new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")]);
    expect(r.outcome).toBe("closed");
    expect(r.after.length).toBe(0);
    await stillServes();
  });

  test("a 4 GiB body claim behind a sound head: that call gets an error, no memory is held for it, the session goes on", async () => {
    const before = rssBytes(peer.proc.pid);
    const claim = frame(requestHead(0xffffffff, 5, 1), new Uint8Array(0), wire.WIRE_HEADER_BYTES, 0xffffffff);
    // 64 MiB of the claimed body: discarded as it arrives, never buffered (read buffers are
    // garbage at once; the bound leaves room for the collector to be late).
    const r = await rawSession(port, [claim, ...Array.from({ length: 64 }, () => new Uint8Array(1 << 20))], { waitMs: 300 });
    expect(r.outcome).toBe("open");
    expect(r.after[8]).toBe(wire.KIND_ERROR);
    console.log(`server RSS growth after a skipped 64 MiB body: ${((rssBytes(peer.proc.pid) - before) / 2 ** 20).toFixed(1)} MiB`);
    expect(rssBytes(peer.proc.pid) - before).toBeLessThan(32 << 20);
    await stillServes();
  });

  test("a 4 GiB length prefix behind a head over maxHeadBytes: dropped at once, before any body arrives", async () => {
    const r = await rawSession(port, [frame(requestHead(0), new Uint8Array(0), 1 << 30, 0xffffffff)]);
    expect(r.outcome).toBe("closed");
    await stillServes();
  });

  test("a head longer than any wire header allows: dropped", async () => {
    const r = await rawSession(port, [frame(new Uint8Array(0), new Uint8Array(0), 1 << 30, 0)]);
    expect(r.outcome).toBe("closed");
    await stillServes();
  });

  test("a header whose lengths disagree with the frame: dropped, no reply", async () => {
    const r = await rawSession(port, [frame(requestHead(50), new Uint8Array(10))]);
    expect(r.outcome).toBe("closed");
    expect(r.after.length).toBe(0);
    await stillServes();
  });

  test("a valid request then a malformed one in the same write: the valid one is answered before the drop", async () => {
    const good = frame(requestHead(3, 1, 1), new Uint8Array([1, 2, 3]));
    const bad = frame(requestHead(50, 2, 1), new Uint8Array(10));
    const r = await rawSession(port, [new Uint8Array([...good, ...bad])]);
    expect(r.outcome).toBe("closed");
    expect(r.after.length).toBe(8 + wire.WIRE_HEADER_BYTES + 3);
    expect(r.after[8]).toBe(wire.KIND_RESPONSE);
    expect([...r.after.subarray(8 + wire.WIRE_HEADER_BYTES)]).toEqual([1, 2, 3]);
    await stillServes();
  });

  test("a head shorter than the wire header: dropped", async () => {
    const r = await rawSession(port, [frame(new Uint8Array(5))]);
    expect(r.outcome).toBe("closed");
    await stillServes();
  });

  test("a response sent to the server: dropped", async () => {
    const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
    wire.writeWireHeader(h, wire.KIND_RESPONSE, m.M_ECHO, 3, 3, 0, 0);
    const r = await rawSession(port, [frame(h)]);
    expect(r.outcome).toBe("closed");
    await stillServes();
  });

  test("a truncated frame then EOF: the session ends, the server keeps serving", async () => {
    const full = frame(requestHead(100), new Uint8Array(100));
    const r = await rawSession(port, [full.subarray(0, 3), full.subarray(3, 40)], { endAfter: true });
    expect(r.outcome).toBe("closed");
    expect(r.after.length).toBe(0);
    await stillServes();
  });

  test("a valid frame split byte by byte (hello included) is answered", async () => {
    const full = new Uint8Array([...hello(), ...frame(requestHead(3), new Uint8Array([7, 8, 9]))]);
    const received: Uint8Array[] = [];
    const sock = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: (_s, d) => void received.push(d.slice()) } });
    for (const b of full) {
      sock.write(new Uint8Array([b]));
      await Bun.sleep(1);
    }
    const want = HELLO_BYTES + 8 + wire.WIRE_HEADER_BYTES + 3;
    for (let i = 0; i < 300 && received.reduce((n, r) => n + r.length, 0) < want; i++) await Bun.sleep(5);
    sock.end();
    const all = Buffer.concat(received).subarray(HELLO_BYTES);
    expect(all.length).toBe(want - HELLO_BYTES);
    expect(all[8]).toBe(wire.KIND_RESPONSE);
    expect([...all.subarray(8 + wire.WIRE_HEADER_BYTES)]).toEqual([7, 8, 9]);
  });

  test("a hostile server answering a call never issued: the client aborts with ProtocolError", async () => {
    const evil = evilServer(
      (s) => void s.write(hello()),
      (s) => {
        const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
        wire.writeWireHeader(h, wire.KIND_RESPONSE, m.M_ECHO, 40, 999, 0, 0);
        s.write(frame(h));
      },
    );
    try {
      const c = await rpcConnect(`tcp://127.0.0.1:${evil.port}`);
      const e = await c.request(m.M_ECHO, new Uint8Array(1), { timeoutMs: 5000 }).catch((x) => x);
      expect(e).toBeInstanceOf(ProtocolError);
      expect(c.closed).toBe(true);
    } finally {
      evil.stop(true);
    }
  });

  test("a hostile server sending garbage after its hello: the client aborts with ProtocolError", async () => {
    const evil = evilServer(
      (s) => void s.write(hello()),
      (s) => void s.write(new Uint8Array(64).fill(0xff)),
    );
    try {
      const c = await rpcConnect(`tcp://127.0.0.1:${evil.port}`);
      const e = await c.request(m.M_ECHO, new Uint8Array(1), { timeoutMs: 5000 }).catch((x) => x);
      expect(e).toBeInstanceOf(ProtocolError);
      expect(e.message).toContain("exceeds");
    } finally {
      evil.stop(true);
    }
  });

  test("a server of another protocol, or another version, or at its limit: connect fails with a ConnectError that says so", async () => {
    const cases: Array<[Uint8Array, string]> = [
      [new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"), "not a hotpath server: got 'HTTP/1.1 400 Bad Request\\r\\n\\r\\n'"],
      [hello({ version: 7 }), `version 7, this side speaks version ${TCP_PROTOCOL_VERSION}`],
      [hello({ status: HELLO_BUSY }), "connection limit"],
    ];
    for (const [first, says] of cases) {
      const evil = evilServer((s) => void s.write(first));
      try {
        const e = await rpcConnect(`tcp://127.0.0.1:${evil.port}`, { connectTimeoutMs: 5000 }).catch((x) => x);
        expect(e).toBeInstanceOf(ConnectError);
        expect(e.message).toContain(says);
      } finally {
        evil.stop(true);
      }
    }
  });

  test("a server that accepts but never sends its hello: ConnectError after connectTimeoutMs", async () => {
    const evil = evilServer(() => {});
    try {
      const e = await rpcConnect(`tcp://127.0.0.1:${evil.port}`, { connectTimeoutMs: 200 }).catch((x) => x);
      expect(e).toBeInstanceOf(ConnectError);
      expect(e.message).toContain("no hello");
    } finally {
      evil.stop(true);
    }
  });

  test("an oversized reply from a server that ignores the client's limit fails that call only", async () => {
    // Echoes M_ECHO requests; answers M_DIGEST with 4 KiB, over the client's 1 KiB limit.
    let buf = new Uint8Array(0);
    const evil = evilServer(
      (s) => void s.write(hello()),
      (s, d) => {
        buf = new Uint8Array([...buf, ...d]);
        if (buf.length >= HELLO_BYTES && buf[0] === hello()[0]) buf = buf.subarray(HELLO_BYTES);
        while (buf.length >= 8) {
          const dv = new DataView(buf.buffer, buf.byteOffset);
          const len = 8 + dv.getUint32(0, true) + dv.getUint32(4, true);
          if (buf.length < len) return;
          const head = buf.subarray(8, 8 + wire.WIRE_HEADER_BYTES);
          const body = buf.subarray(8 + wire.WIRE_HEADER_BYTES, len);
          buf = buf.subarray(len);
          if (wire.wireKind(head) !== wire.KIND_REQUEST) continue; // a cancel (or GOAWAY announcement) gets no answer
          const method = wire.wireMethod(head);
          const reply = method === m.M_DIGEST ? new Uint8Array(4096) : body.slice();
          const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
          wire.writeWireHeader(h, wire.KIND_RESPONSE, method, wire.wireCallSlot(head), wire.wireCallGen(head), 0, reply.length);
          s.write(frame(h, reply));
        }
      },
    );
    try {
      const c = await rpcConnect(`tcp://127.0.0.1:${evil.port}`, { maxMessageBytes: 1024 });
      const echo = c.request(m.M_ECHO, new Uint8Array([1]), { timeoutMs: 5000 });
      const e = await c.request(m.M_DIGEST, new Uint8Array(1), { timeoutMs: 5000 }).catch((x) => x);
      expect(e).toBeInstanceOf(MessageTooLargeError);
      expect(e.message).toContain("4096");
      expect(await echo).toEqual(new Uint8Array([1]));
      expect(c.closed).toBe(false);
      expect(await c.request(m.M_ECHO, new Uint8Array([2]), { timeoutMs: 5000 })).toEqual(new Uint8Array([2]));
      c.close();
    } finally {
      evil.stop(true);
    }
  });
});

