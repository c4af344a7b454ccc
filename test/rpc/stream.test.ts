/**
 * Streams end to end (issue 16) over tcp, shm, inproc and ucx, the server in its own process
 * (a Worker for inproc: stream-peer.ts): each stream kind carries 10,000 messages of mixed
 * sizes in order with their own bytes; a consumer that stops reading stops its producer at
 * exactly one window (messages or bytes) while other calls on the connection go on, then gets
 * everything once it reads again; cancellation from either side (cancel(), AbortSignal, an
 * iterator's return(), the server's cancel(), a handler's throw) and deadlines end both sides
 * with typed errors; 16 concurrent streams on one connection stay fair (counts, not timing);
 * afterwards no slot, credit or server stream is left.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { CancelledError, DEFAULT_STREAM_WINDOW, RemoteError, TimeoutError, UsageError, rpcConnect, type Client } from "../../src/index.ts";
import type { ClientStream } from "../../src/rpc/stream/types.ts";
import { spawnPeer, spawnWorkerPeer, type Peer } from "../helpers/peer.ts";
import * as p from "./stream-pattern.ts";

const PEER = new URL("./stream-peer.ts", import.meta.url).pathname;
const WORKER = new URL("./stream-worker.ts", import.meta.url).href;
const UCX_ENV = { UCX_TLS: "tcp,self" };
const td = new TextDecoder();
let n = 0;
const TRANSPORTS = ["tcp", "shm", "inproc", "ucx"] as const;
type Kind = (typeof TRANSPORTS)[number];
const urlFor = (kind: Kind): string => (kind === "tcp" ? "tcp://127.0.0.1:0" : kind === "ucx" ? "ucx://127.0.0.1:0" : `${kind}://stream-${process.pid}-${n++}`);

const savedTls = process.env.UCX_TLS;
afterAll(() => {
  if (savedTls === undefined) delete process.env.UCX_TLS;
  else process.env.UCX_TLS = savedTls;
});

async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await Bun.sleep(2);
  }
}

interface Stats {
  floodSent: number[];
  events: string[];
  inFlight: number;
  holdBuffered: number;
}

describe.each(TRANSPORTS)("streams over %s", (kind) => {
  let peer: Peer;
  let client: Client<any>;
  const stats = async (): Promise<Stats> => JSON.parse(td.decode(await client.request(p.M_STATS)));

  beforeAll(async () => {
    if (kind === "ucx") Object.assign(process.env, UCX_ENV);
    peer = kind === "inproc" ? await spawnWorkerPeer(WORKER, urlFor(kind)) : await spawnPeer(PEER, [urlFor(kind)], kind === "ucx" ? UCX_ENV : {});
    client = await rpcConnect(peer.ready.url, { window: 64 });
  });
  afterAll(async () => {
    client?.close();
    await peer?.kill();
  });

  const COUNT = 10_000;

  test("server stream: 10,000 mixed-size messages in order, every byte, then trailers", async () => {
    const s = client.stream(p.M_SOURCE);
    await s.send(p.u32s(COUNT, 11));
    s.end();
    let i = 0;
    for await (const m of s) {
      if (!p.isPattern(m, 11, i)) throw new Error(`message ${i} (${m.length} bytes) is not its pattern`);
      i++;
    }
    expect(i).toBe(COUNT);
    await s.closed;
    expect(s.trailers!.get("count")).toBe(String(COUNT));
  });

  test("client stream: 10,000 mixed-size messages arrive in order with their bytes", async () => {
    const s = client.stream(p.M_SINK);
    await s.send(p.u32s(COUNT, 23));
    for (let i = 0; i < COUNT; i++) await s.send(p.patternMessage(23, i));
    s.end();
    const reply = await s.read();
    expect(p.readU32s(reply!)).toEqual([COUNT, 0]);
    expect(await s.read()).toBeNull();
    await s.closed;
  });

  test("bidi stream: 10,000 mixed-size messages echoed in order with their bytes", async () => {
    const s = client.stream(p.M_ECHO);
    const reader = (async () => {
      let i = 0;
      for await (const m of s) {
        if (!p.isPattern(m, 37, i)) throw new Error(`echo ${i} (${m.length} bytes) is not its pattern`);
        i++;
      }
      return i;
    })();
    for (let i = 0; i < COUNT; i++) await s.send(p.patternMessage(37, i));
    s.end();
    expect(await reader).toBe(COUNT);
  });

  test("a reader that stops: the server's sends stop at exactly the window (messages), other calls go on, then everything arrives", async () => {
    const window = { messages: 32, bytes: 1 << 20 };
    const s = client.stream(p.M_FLOOD, { window }) as ClientStream & { bufferedBytes: number };
    await s.send(p.u32s(1024, 0));
    await until(async () => ((await stats()).floodSent[0] ?? 0) >= window.messages, "a window of sends");
    // Round trips on the same connection complete while the stream is stalled, and the count holds.
    for (let k = 0; k < 5; k++) expect((await stats()).floodSent[0]).toBe(window.messages);
    expect(p.readU32s(await client.request(p.M_UNARY_ECHO, p.u32s(7)))).toEqual([7]);
    expect(s.bufferedBytes).toBeLessThanOrEqual(window.bytes + 1024);
    expect(s.bufferedBytes).toBe(window.messages * 1024);
    for (let i = 0; i < 500; i++) {
      const m = await s.read();
      if (!p.isPattern(m!, 0, i, 1024)) throw new Error(`flood message ${i} is not its pattern`);
    }
    // Reading resumed the flood (the counter moves once a send's continuation ran: wait for it).
    await until(async () => (await stats()).floodSent[0]! >= 500, "the flood to go on");
    s.cancel();
    await until(async () => (await stats()).events.includes("flood:CancelledError"), "the flood's cancel on the server");
  });

  test("a reader that stops: bytes credit stops the server after the message that took it below zero", async () => {
    const window = { messages: 64, bytes: 1 << 20 };
    const size = 100_000; // 10 fit in 1 MiB; the 11th goes (credit still > 0), the 12th waits
    const cancelled = (await stats()).events.filter((e) => e === "flood:CancelledError").length;
    const s = client.stream(p.M_FLOOD, { window }) as ClientStream & { bufferedBytes: number };
    await s.send(p.u32s(size, 1));
    await until(async () => ((await stats()).floodSent[1] ?? 0) >= 11, "a window of sends");
    for (let k = 0; k < 5; k++) expect((await stats()).floodSent[1]).toBe(11);
    expect(s.bufferedBytes).toBe(11 * size);
    expect(s.bufferedBytes).toBeLessThanOrEqual(window.bytes + size);
    for (let i = 0; i < 40; i++) expect(p.isPattern((await s.read())!, 0, i, size)).toBe(true);
    s.cancel();
    await until(async () => (await stats()).events.filter((e) => e === "flood:CancelledError").length === cancelled + 1, "the flood's cancel on the server");
  });

  test("a server that stops reading: the client's sends stop at exactly the server's window; cancel releases them", async () => {
    const s = client.stream(p.M_HOLD);
    // The server's default window (DEFAULT_STREAM_WINDOW), sent as messages that fill its bytes exactly too.
    const W = DEFAULT_STREAM_WINDOW.messages;
    const size = Math.floor(DEFAULT_STREAM_WINDOW.bytes / W);
    let resolved = 0;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < W + 36; i++) sends.push(s.send(p.patternMessage(1, i, size)).then(() => resolved++));
    await until(() => resolved >= W, "a window of sends");
    for (let k = 0; k < 5; k++) await stats(); // round trips: the server had every frame, granted nothing more
    expect(resolved).toBe(W);
    // The server holds that window in its own memory: at most one window (+1 message) of bytes.
    const held = (await stats()).holdBuffered;
    expect(held).toBe(W * size);
    expect(held).toBeLessThanOrEqual(DEFAULT_STREAM_WINDOW.bytes + size);
    s.cancel();
    const outcomes = await Promise.allSettled(sends);
    expect(outcomes.filter((o) => o.status === "rejected").every((o) => (o as PromiseRejectedResult).reason instanceof CancelledError)).toBe(true);
    expect(outcomes.filter((o) => o.status === "rejected").length).toBe(36);
    await until(async () => (await stats()).events.includes("hold:CancelledError"), "the hold's signal on the server");
  });

  test("client cancel(): read rejects CancelledError, the server's signal aborts and its send rejects", async () => {
    const s = client.stream(p.M_WAIT, { metadata: { who: "cancel" } });
    expect(p.readU32s((await s.read())!)).toEqual([1]);
    s.cancel();
    expect(await s.read().catch((e) => e)).toBeInstanceOf(CancelledError);
    expect(await s.send(new Uint8Array(1)).catch((e) => e)).toBeInstanceOf(CancelledError);
    expect(s.signal.aborted).toBe(true);
    expect(await s.closed.catch((e) => e)).toBeInstanceOf(CancelledError);
    await until(async () => (await stats()).events.includes("wait:CancelledError:CancelledError"), "the server's abort");
    expect((await stats()).events).toContain("wait:started:none:cancel");
  });

  test("AbortSignal: aborting cancels on both sides", async () => {
    const ac = new AbortController();
    const s = client.stream(p.M_WAIT, { signal: ac.signal, metadata: { who: "abort" } });
    await s.read();
    const before = (await stats()).events.filter((e) => e === "wait:CancelledError:CancelledError").length;
    ac.abort(new Error("stop"));
    const e = await s.read().catch((x) => x);
    expect(e).toBeInstanceOf(CancelledError);
    expect(e.cause.message).toBe("stop");
    await until(async () => (await stats()).events.filter((x) => x === "wait:CancelledError:CancelledError").length === before + 1, "the server's abort");
  });

  test("an iterator's return() before the end cancels the stream", async () => {
    const s = client.stream(p.M_WAIT, { metadata: { who: "return" } });
    const before = (await stats()).events.filter((e) => e === "wait:CancelledError:CancelledError").length;
    for await (const m of s) {
      expect(p.readU32s(m)).toEqual([1]);
      break;
    }
    expect(await s.closed.catch((e) => e)).toBeInstanceOf(CancelledError);
    await until(async () => (await stats()).events.filter((x) => x === "wait:CancelledError:CancelledError").length === before + 1, "the server's abort");
  });

  test("the server's cancel(): the client reads what came, then CancelledError", async () => {
    const s = client.stream(p.M_SERVER_CANCEL);
    for (let i = 0; i < 3; i++) expect(p.isPattern((await s.read())!, 9, i)).toBe(true);
    const e = await s.read().catch((x) => x);
    expect(e).toBeInstanceOf(CancelledError);
    expect(s.signal.aborted).toBe(true);
  });

  test("a handler that throws: RemoteError with its name and message", async () => {
    const s = client.stream(p.M_THROW);
    await s.send(new Uint8Array(5));
    const e = await s.read().catch((x) => x);
    expect(e).toBeInstanceOf(RemoteError);
    expect(e.remoteName).toBe("TypeError");
    expect(e.remoteMessage).toBe("refused: 5");
    expect(await s.send(new Uint8Array(1)).catch((x) => x)).toBeInstanceOf(RemoteError);
  });

  test("deadline: the client's timeoutMs ends the stream with TimeoutError and the server's signal aborts", async () => {
    const before = (await stats()).events.filter((e) => e.startsWith("wait:") && !e.startsWith("wait:started")).length;
    const s = client.stream(p.M_WAIT, { timeoutMs: 300, metadata: { who: "deadline" } });
    await s.read();
    const e = await s.read().catch((x) => x);
    expect(e).toBeInstanceOf(TimeoutError);
    await until(async () => (await stats()).events.filter((x) => x.startsWith("wait:") && !x.startsWith("wait:started")).length === before + 1, "the server's abort");
    expect((await stats()).events).toContain("wait:started:deadline:deadline");
  });

  test("deadline on the server (hp-deadline-ms): its signal aborts with TimeoutError, the client gets TimeoutError", async () => {
    const s = client.stream(p.M_WAIT, { metadata: { "hp-deadline-ms": "200", who: "server-deadline" } });
    await s.read();
    const e = await s.read().catch((x) => x);
    expect(e).toBeInstanceOf(TimeoutError);
    await until(async () => (await stats()).events.includes("wait:TimeoutError:TimeoutError"), "the server's deadline");
  });

  test("16 concurrent streams on one connection stay fair: none completes before every other has 25%", async () => {
    const STREAMS = 16;
    const EACH = 2000;
    const counts = new Array(STREAMS).fill(0);
    let firstDone = -1;
    let atFirstDone: number[] = [];
    await Promise.all(
      Array.from({ length: STREAMS }, async (_, k) => {
        const s = client.stream(p.M_SOURCE, { window: { messages: 16, bytes: 64 << 10 } });
        await s.send(p.u32s(EACH, 100 + k));
        s.end();
        for await (const m of s) {
          if (!p.isPattern(m, 100 + k, counts[k])) throw new Error(`stream ${k} message ${counts[k]} is not its pattern`);
          counts[k]++;
        }
        if (firstDone < 0) {
          firstDone = k;
          atFirstDone = counts.slice();
        }
      }),
    );
    expect(counts).toEqual(new Array(STREAMS).fill(EACH));
    for (let k = 0; k < STREAMS; k++) expect(atFirstDone[k]).toBeGreaterThanOrEqual(EACH / 4);
  });

  test("misuse: send after end() is a UsageError; a unary request to a stream method and a stream to a unary method fail", async () => {
    const s = client.stream(p.M_ECHO);
    s.end();
    expect(await s.send(new Uint8Array(1)).catch((e) => e)).toBeInstanceOf(UsageError);
    expect(await s.read()).toBeNull();
    const e1 = await client.request(p.M_ECHO, new Uint8Array(1)).catch((e) => e);
    expect(e1.remoteName).toBe("UnknownMethodError");
    const e2 = await client.stream(p.M_UNARY_ECHO).read().catch((e) => e);
    expect(e2.remoteName).toBe("UnknownMethodError");
    const e3 = await client.stream(999).read().catch((e) => e);
    expect(e3.remoteName).toBe("UnknownMethodError");
  });

  test("afterwards: no slot, credit or server stream is left, and the connection carries a full window of calls", async () => {
    await until(async () => client.inFlight === 0 && (await stats()).inFlight === 0, "every stream gone on both sides");
    expect(client.inFlight).toBe(0);
    const replies = await Promise.all(Array.from({ length: 64 }, (_, i) => client.request(p.M_UNARY_ECHO, p.u32s(i))));
    replies.forEach((r, i) => expect(p.readU32s(r)).toEqual([i]));
    // And a window of streams at once.
    const streams = Array.from({ length: 64 }, () => client.stream(p.M_ECHO));
    await Promise.all(streams.map(async (s, i) => {
      await s.send(p.u32s(i));
      s.end();
      expect(p.readU32s((await s.read())!)).toEqual([i]);
      expect(await s.read()).toBeNull();
    }));
    await until(() => client.inFlight === 0, "the streams' slots back");
  });
});
