/**
 * tcp limits against a server in its own process (test/tcp/server.ts, serve() with the RPC
 * layer's reply backlog): memory attacks against the default limits, with the server's RSS
 * (/proc/<pid>/status VmRSS) held under a stated bound while a legitimate client keeps
 * completing its calls; then each time limit (slow consumer, idle, slowloris, handshake) and
 * the connection limit, with short configured values where the point is the mechanism.
 */

import { afterAll, afterEach, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { readdirSync } from "node:fs";
import { ConnectError, SEND_OK, TimeoutError, TransportClosedError, rpcConnect, wire, type Client } from "../../src/index.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import * as m from "../conformance/methods.ts";
import { M_GC, frame, hello, request, requestHead, rssBytes, until } from "./raw.ts";

const SERVER = new URL("./server.ts", import.meta.url).pathname;
const MiB = 1 << 20;

/** A raw client socket: writes a stream through drain, counts what comes back. */
class RawPeer {
  received = 0;
  closed = false;
  written = 0;
  private queue: Uint8Array[] = [];
  private constructor(private readonly sock: Socket) {}

  static async open(port: number, opts: { read?: boolean; sendHello?: boolean } = {}): Promise<RawPeer> {
    let peer!: RawPeer;
    const sock = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        data(_s, d) {
          peer.received += d.length;
        },
        drain() {
          peer.pump();
        },
        close() {
          peer.closed = true;
        },
        error() {
          peer.closed = true;
        },
      },
    });
    peer = new RawPeer(sock);
    if (opts.read === false) sock.pause();
    if (opts.sendHello !== false) peer.send(hello());
    return peer;
  }

  /** Queues bytes; they go as fast as the server reads them. */
  send(b: Uint8Array): void {
    this.queue.push(b);
    this.pump();
  }

  get queued(): number {
    return this.queue.reduce((n, b) => n + b.length, 0);
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.closed) {
      const b = this.queue[0]!;
      const w = this.sock.write(b);
      if (w < 0) return;
      this.written += w;
      if (w < b.length) {
        this.queue[0] = b.subarray(w);
        return;
      }
      this.queue.shift();
    }
  }

  close(): void {
    this.queue = [];
    this.sock.terminate();
  }

  /** A clean close: FIN after what was written. */
  end(): void {
    this.queue = [];
    this.sock.end();
  }

  /** Starts reading (after open({ read: false })). */
  resume(): void {
    this.sock.resume();
  }
}

async function startServer(listenOpts: object = {}): Promise<Peer> {
  return spawnPeer(SERVER, ["tcp://127.0.0.1:0", JSON.stringify(listenOpts)]);
}

const open: Array<{ close(): void }> = [];
const peers: Peer[] = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});
afterAll(async () => {
  for (const p of peers) await p.kill();
});

async function server(listenOpts: object = {}): Promise<{ peer: Peer; port: number; url: string }> {
  const peer = await startServer(listenOpts);
  peers.push(peer);
  return { peer, port: Number(new URL(peer.ready.url).port), url: peer.ready.url };
}

async function raw(port: number, opts: { read?: boolean; sendHello?: boolean } = {}): Promise<RawPeer> {
  const p = await RawPeer.open(port, opts);
  open.push(p);
  return p;
}

async function client(url: string): Promise<Client<any>> {
  const c = await rpcConnect(url, { window: 64 });
  open.push(c);
  return c;
}

/** `n` echo calls, 16 in flight; resolves with the calls per second. */
async function echoes(c: Client<any>, n: number): Promise<number> {
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const got = await c.request(m.M_ECHO, m.u32(i), { timeoutMs: 20_000 });
      if (m.readU32(got) !== i) throw new Error(`echo ${i} came back as ${m.readU32(got)}`);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return n / ((performance.now() - t0) / 1000);
}

/** Waits until the server's session-close reports include one whose message contains `text`. */
async function closeReport(peer: Peer, text: string, timeoutMs = 10_000): Promise<{ closed: string; message: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = JSON.parse(await peer.nextLine(Math.max(1, deadline - Date.now())));
    if (typeof line.message === "string" && line.message.includes(text)) return line;
  }
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(0) + " MiB";
}

describe("tcp limits: memory attacks against the default limits", () => {
  test("12 connections each sending 60 MiB of a 64 MiB frame: server RSS stays under its bound, a legitimate client keeps calling", async () => {
    const { peer, port, url } = await server();
    const legit = await client(url);
    await echoes(legit, 200);
    const base = rssBytes(peer.proc.pid);
    // The defaults: large split frames share serverBufferBytes (256 MiB) and each connection may
    // assemble 256 KiB alone, so that is what the server holds (32 MiB of slack). Until the
    // collector runs, the read buffers the frames were copied from may add as much again.
    const held = base + 256 * MiB + 12 * (256 << 10) + 32 * MiB;
    const peak = held + 256 * MiB;
    const attackers = await Promise.all(Array.from({ length: 12 }, () => raw(port)));
    const chunk = new Uint8Array(MiB);
    for (const a of attackers) {
      a.send(frame(requestHead(64 * MiB), new Uint8Array(0), wire.WIRE_HEADER_BYTES, 64 * MiB));
      for (let i = 0; i < 60; i++) a.send(chunk);
    }
    // Until the transfer settles: the admitted frames filled, the others stopped being read.
    let last = -1;
    for (let i = 0; i < 100; i++) {
      await Bun.sleep(100);
      const sum = attackers.reduce((n, a) => n + a.written, 0);
      if (sum === last) break;
      last = sum;
    }
    const rate = await echoes(legit, 500);
    const rss = rssBytes(peer.proc.pid);
    await legit.request(M_GC);
    const rssHeld = rssBytes(peer.proc.pid);
    console.log(`big-frame attack: server RSS ${mib(base)} -> ${mib(rss)}, ${mib(rssHeld)} after a collection (bounds ${mib(peak)}, ${mib(held)}); the server read ${mib(last)}; legit client ${rate.toFixed(0)} calls/s`);
    expect(rss).toBeLessThan(peak);
    expect(rssHeld).toBeLessThan(held);
    expect(peer.proc.exitCode).toBeNull();
  }, 60_000);

  test("50,000 × 1 KiB requests from a client that never reads its replies: server RSS stays under its bound, a legitimate client keeps its calls going", async () => {
    const { peer, port, url } = await server();
    const legit = await client(url);
    const before = await echoes(legit, 2000);
    const base = rssBytes(peer.proc.pid);
    // Reading from the flooder pauses once half its 4 MiB output budget is unread; what it
    // already sent waits in its socket, not in the server. 32 MiB of slack for the collector.
    const bound = base + 4 * MiB + 32 * MiB;
    const flood = await raw(port, { read: false });
    const data = new Uint8Array(1024).fill(7);
    for (let i = 0; i < 50_000; i++) flood.send(request(data, i % 64, 1));
    let last = -1;
    for (let i = 0; i < 100; i++) {
      await Bun.sleep(100);
      if (flood.written === last) break;
      last = flood.written;
    }
    const during = await echoes(legit, 2000);
    const rss = rssBytes(peer.proc.pid);
    console.log(`reply flood: server RSS ${mib(base)} -> ${mib(rss)} (bound ${mib(bound)}); the server read ${mib(flood.written)} of 50 MiB; legit client ${before.toFixed(0)} -> ${during.toFixed(0)} calls/s`);
    expect(flood.queued).toBeGreaterThan(0);
    expect(rss).toBeLessThan(bound);
    expect(flood.closed).toBe(false);
  }, 60_000);
});

describe("tcp limits: the mechanisms, with short configured values", () => {
  test("a large request waiting for the shared budget gets it once the stalled frames holding it are cut by frameTimeoutMs", async () => {
    const { peer, port, url } = await server({ tcp: { serverBufferBytes: 8 * MiB, frameTimeoutMs: 1000 } });
    const hogs = await Promise.all([1, 2].map(() => raw(port)));
    // Two frames of 4 MiB each (head included) take the whole budget and never finish.
    const hogBody = 4 * MiB - wire.WIRE_HEADER_BYTES;
    for (const h of hogs) h.send(new Uint8Array([...frame(requestHead(hogBody), new Uint8Array(0), wire.WIRE_HEADER_BYTES, hogBody), 1, 2, 3]));
    await Bun.sleep(100);
    const c = await client(url);
    const big = new Uint8Array(2 * MiB).fill(9);
    const digest = await c.request(m.M_DIGEST, big, { timeoutMs: 20_000 });
    expect(m.readU32(digest, 0)).toBe(big.length);
    expect(m.readU32(digest, 4)).toBe(m.checksum(big));
    await until(() => hogs.every((h) => h.closed), "the stalled frames cut");
    expect((await closeReport(peer, "frameTimeoutMs")).closed).toBe("ProtocolError");
  }, 30_000);

  test("a consumer that leaves its replies unread past slowConsumerMs is disconnected; others are not", async () => {
    const { peer, port, url } = await server({ tcp: { slowConsumerMs: 500 } });
    const flood = await raw(port, { read: false });
    const data = new Uint8Array(1024);
    for (let i = 0; i < 20_000; i++) flood.send(request(data, i % 64, 1));
    await until(() => flood.closed, "the slow consumer disconnected", 15_000);
    expect((await closeReport(peer, "slowConsumerMs")).closed).toBe("TransportClosedError");
    const c = await client(url);
    expect(await echoes(c, 100)).toBeGreaterThan(0);
  }, 30_000);

  test("idle connections are closed after idleTimeoutMs; a connection in use is not; a call running longer with nothing else moving is cut", async () => {
    const { port, url } = await server({ tcp: { idleTimeoutMs: 300 } });
    const idle = await Promise.all(Array.from({ length: 500 }, () => raw(port)));
    const idleClient = await client(url);
    await echoes(idleClient, 10);
    const busy = await client(url);
    const slow = await client(url);
    const slowCall = slow.request(m.M_DELAY_ECHO, m.u32(1500), { timeoutMs: 10_000 }).catch((e) => e);
    const t0 = Date.now();
    while (Date.now() - t0 < 1200) {
      await busy.request(m.M_ECHO, m.u32(1));
      await Bun.sleep(50);
    }
    await until(() => idle.every((p) => p.closed) && idleClient.closed, "idle connections closed", 5000);
    expect(busy.closed).toBe(false);
    // Idle is inactivity alone (documented on tcp.idleTimeoutMs): the 1.5 s call is cut at ~0.3 s.
    expect(await slowCall).toBeInstanceOf(TransportClosedError);
    expect(slow.closed).toBe(true);
  }, 30_000);

  test("a connection whose last frame was a one-way message is closed after idleTimeoutMs", async () => {
    const { peer, url } = await server({ tcp: { idleTimeoutMs: 300 } });
    const c = await client(url);
    await echoes(c, 10);
    expect(c.send(m.M_ECHO, m.u32(7))).toBe(SEND_OK);
    // The one-way message is never answered; the server must not count it as in flight forever.
    await until(() => c.closed, "the connection closed for idleness", 10_000);
    expect((await closeReport(peer, "idleTimeoutMs")).closed).toBe("TransportClosedError");
  }, 30_000);

  test("a connection whose last call timed out (request and cancel never answered) is closed after idleTimeoutMs", async () => {
    const { peer, url } = await server({ tcp: { idleTimeoutMs: 300 } });
    const c = await client(url);
    await echoes(c, 10);
    // The handler would answer after 100 ms; the call times out at 20 ms and is cancelled, so
    // its reply is dropped: two frames in, none out.
    const e = await c.request(m.M_DELAY_ECHO, m.u32(100), { timeoutMs: 20 }).catch((x) => x);
    expect(e).toBeInstanceOf(TimeoutError);
    await until(() => c.closed, "the connection closed for idleness", 10_000);
    expect((await closeReport(peer, "idleTimeoutMs")).closed).toBe("TransportClosedError");
  }, 30_000);

  test("slowloris: 100 connections writing one byte every 50 ms are closed after frameTimeoutMs", async () => {
    const { port, url } = await server({ tcp: { frameTimeoutMs: 500 } });
    const lorises = await Promise.all(Array.from({ length: 100 }, () => raw(port)));
    const stream = request(new Uint8Array(200));
    let at = 0;
    const drip = setInterval(() => {
      for (const l of lorises) if (!l.closed) l.send(stream.subarray(at, at + 1));
      at++;
    }, 50);
    try {
      await until(() => lorises.every((l) => l.closed), "slowloris connections closed", 10_000);
    } finally {
      clearInterval(drip);
    }
    expect(at).toBeLessThan(stream.length);
    const c = await client(url);
    expect(await echoes(c, 100)).toBeGreaterThan(0);
  }, 30_000);

  test("a connection that never sends its hello is dropped after handshakeTimeoutMs", async () => {
    const { port } = await server({ tcp: { handshakeTimeoutMs: 200 } });
    const silent = await Promise.all(Array.from({ length: 20 }, () => raw(port, { sendHello: false })));
    await until(() => silent.every((s) => s.closed), "silent connections dropped", 5000);
  });

  test("beyond maxConnections a client is refused with a ConnectError; a freed place is taken again", async () => {
    const { port, url } = await server({ tcp: { maxConnections: 4 } });
    const held = await Promise.all(Array.from({ length: 3 }, () => raw(port)));
    const c = await client(url);
    const e = await rpcConnect(url).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain("connection limit");
    held[0]!.close();
    await Bun.sleep(100);
    const again = await client(url);
    expect(await echoes(again, 10)).toBeGreaterThan(0);
    expect(await echoes(c, 10)).toBeGreaterThan(0);
  });
});

describe("tcp limits: connections paused for unread output still end", () => {
  test("clients that flood, leave their replies unread and then go (closed or killed) leave no socket behind", async () => {
    const { peer, port, url } = await server();
    const fds = () => readdirSync(`/proc/${peer.proc.pid}/fd`).length;
    const c = await client(url);
    await echoes(c, 10);
    const base = fds();
    const data = new Uint8Array(4096);
    for (let round = 0; round < 4; round++) {
      const floods = await Promise.all(Array.from({ length: 10 }, () => raw(port, { read: false })));
      for (const f of floods) for (let i = 0; i < 4000; i++) f.send(request(data, i % 64, 1));
      await Bun.sleep(300);
      // Some read what has arrived and close cleanly (their FIN reaches a server that is not
      // reading from them), some are cut.
      for (const f of floods) f.resume();
      await Bun.sleep(2);
      floods.forEach((f, i) => (i % 3 === 2 ? f.close() : f.end()));
    }
    // Well before slowConsumerMs (30 s) would cut them.
    await until(() => fds() <= base, `server fds back to ${base} (now ${fds()})`, 10_000);
    expect(await echoes(c, 10)).toBeGreaterThan(0);
  }, 30_000);
});
