/**
 * A scripted hostile peer on raw sockets against the TCP transport: garbage, truncated frames,
 * a 4 GiB length prefix, a header whose lengths disagree, a response never asked for. Each
 * aborts only the offending connection; the server keeps serving other clients.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { ProtocolError, rpcConnect, wire } from "../../src/index.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import * as m from "./methods.ts";

const PEER_SERVER = new URL("./peer-server.ts", import.meta.url).pathname;

function frame(head: Uint8Array, body: Uint8Array = new Uint8Array(0), claimHead = head.length, claimBody = body.length): Uint8Array {
  const out = new Uint8Array(8 + head.length + body.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, claimHead, true);
  dv.setUint32(4, claimBody, true);
  out.set(head, 8);
  out.set(body, 8 + head.length);
  return out;
}

function requestHead(dataLen: number, slot = 0, gen = 1): Uint8Array {
  const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
  wire.writeWireHeader(h, wire.KIND_REQUEST, m.M_ECHO, slot, gen, 0, dataLen);
  return h;
}

/** Connects a raw socket, writes the script, and resolves with what came back when the server closed it. */
async function rawSession(port: number, script: Uint8Array[], opts: { endAfter?: boolean } = {}) {
  const received: Uint8Array[] = [];
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const sock: Socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, d) {
        received.push(d.slice());
      },
      close() {
        resolveClosed();
      },
      error() {
        resolveClosed();
      },
    },
  });
  for (const chunk of script) {
    sock.write(chunk);
    await Bun.sleep(5);
  }
  if (opts.endAfter) sock.end();
  const outcome = await Promise.race([closed.then(() => "closed" as const), Bun.sleep(3000).then(() => "open" as const)]);
  sock.terminate();
  return { outcome, received };
}

describe("tcp: hostile peer", () => {
  let peer: Peer;
  let port: number;
  beforeAll(async () => {
    peer = await spawnPeer(PEER_SERVER, ["tcp://127.0.0.1:0"]);
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

  test("garbage bytes: the server drops the connection and keeps serving", async () => {
    const r = await rawSession(port, [new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")]);
    expect(r.outcome).toBe("closed");
    expect(r.received.length).toBe(0);
    await stillServes();
  });

  test("a 4 GiB length prefix: dropped at once, before any body arrives", async () => {
    const r = await rawSession(port, [frame(requestHead(0), new Uint8Array(0), wire.WIRE_HEADER_BYTES, 0xffffffff)]);
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
    expect(r.received.length).toBe(0);
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
    expect(r.received.length).toBe(0);
    await stillServes();
  });

  test("a valid frame split byte by byte is answered", async () => {
    const full = frame(requestHead(3), new Uint8Array([7, 8, 9]));
    const pieces = [...full].map((b) => new Uint8Array([b]));
    const received: Uint8Array[] = [];
    const sock = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: (_s, d) => void received.push(d.slice()) } });
    for (const p of pieces) {
      sock.write(p);
      await Bun.sleep(1);
    }
    for (let i = 0; i < 300 && received.reduce((n, r) => n + r.length, 0) < 8 + 24 + 3; i++) await Bun.sleep(5);
    sock.end();
    const all = Buffer.concat(received);
    expect(all.length).toBe(8 + 24 + 3);
    expect(all[8]).toBe(wire.KIND_RESPONSE);
    expect([...all.subarray(32)]).toEqual([7, 8, 9]);
  });

  test("a hostile server answering a call never issued: the client aborts with ProtocolError", async () => {
    const evil = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s) {
          const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
          wire.writeWireHeader(h, wire.KIND_RESPONSE, m.M_ECHO, 40, 999, 0, 0);
          s.write(frame(h));
        },
      },
    });
    try {
      const c = await rpcConnect(`tcp://127.0.0.1:${evil.port}`);
      const e = await c.request(m.M_ECHO, new Uint8Array(1), { timeoutMs: 5000 }).catch((x) => x);
      expect(e).toBeInstanceOf(ProtocolError);
      expect(c.closed).toBe(true);
    } finally {
      evil.stop(true);
    }
  });

  test("a hostile server sending garbage: the client aborts with ProtocolError", async () => {
    const evil = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s) {
          s.write(new Uint8Array(64).fill(0xff));
        },
      },
    });
    try {
      const c = await rpcConnect(`tcp://127.0.0.1:${evil.port}`);
      const e = await c.request(m.M_ECHO, new Uint8Array(1), { timeoutMs: 5000 }).catch((x) => x);
      expect(e).toBeInstanceOf(ProtocolError);
      expect(e.message).toContain("exceeds");
    } finally {
      evil.stop(true);
    }
  });
});
