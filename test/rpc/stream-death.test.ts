/**
 * Streams when a peer dies mid-stream (issue 16), over tcp, shm, inproc and ucx: the server
 * process killed with SIGKILL (a Worker terminated for inproc) fails the client's stream with
 * TransportClosedError, pending reads and sends included, and frees its slot; the client
 * process killed fails the server's stream: its handler's signal aborts, its send rejects, and
 * the session's stream count goes back to 0.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { DEFAULT_STREAM_WINDOW, TransportClosedError, rpcConnect, serve } from "../../src/index.ts";
import { streamHandler } from "../../src/rpc/stream/server-stream.ts";
import type { ServerStream } from "../../src/rpc/stream/types.ts";
import { spawnPeer, spawnWorkerPeer, until, type Peer } from "../helpers/peer.ts";
import * as p from "./stream-pattern.ts";

const PEER = new URL("./stream-peer.ts", import.meta.url).pathname;
const WORKER = new URL("./stream-worker.ts", import.meta.url).href;
const CLIENT = new URL("./stream-client.ts", import.meta.url).pathname;
const CLIENT_WORKER = new URL("./stream-client.ts", import.meta.url).href;
const UCX_ENV = { UCX_TLS: "tcp,self" };
let n = 0;
const TRANSPORTS = ["tcp", "shm", "inproc", "ucx"] as const;
type Kind = (typeof TRANSPORTS)[number];
const urlFor = (kind: Kind): string => (kind === "tcp" ? "tcp://127.0.0.1:0" : kind === "ucx" ? "ucx://127.0.0.1:0" : `${kind}://stream-death-${process.pid}-${n++}`);

const savedTls = process.env.UCX_TLS;
afterAll(() => {
  if (savedTls === undefined) delete process.env.UCX_TLS;
  else process.env.UCX_TLS = savedTls;
});

describe.each(TRANSPORTS)("stream peer death over %s", (kind) => {
  test("the server killed mid-stream: the client's read and send reject with TransportClosedError, its slot is free", async () => {
    if (kind === "ucx") Object.assign(process.env, UCX_ENV);
    const peer: Peer = kind === "inproc" ? await spawnWorkerPeer(WORKER, urlFor(kind)) : await spawnPeer(PEER, [urlFor(kind)], kind === "ucx" ? UCX_ENV : {});
    const client = await rpcConnect(peer.ready.url, { timeoutMs: 0 });
    try {
      const s = client.stream(p.M_FLOOD, { window: { messages: 8, bytes: 1 << 20 } });
      await s.send(p.u32s(512, 0));
      for (let i = 0; i < 100; i++) expect(p.isPattern((await s.read())!, 0, i, 512)).toBe(true);
      const up = client.stream(p.M_HOLD);
      // Past the window: some wait (their outcomes taken at once, so none is an unhandled rejection).
      const sends = Array.from({ length: DEFAULT_STREAM_WINDOW.messages + 80 }, () => up.send(new Uint8Array(100)).then(() => "sent", (x: unknown) => x));
      await peer.kill(9);
      let e: unknown;
      for (;;) {
        const r = await s.read().then((m) => (m === null ? "end" : null), (x) => x);
        if (r === null) continue; // messages that arrived before the death
        e = r;
        break;
      }
      expect(e).toBeInstanceOf(TransportClosedError);
      const failed = (await Promise.all(sends)).filter((o) => o !== "sent");
      expect(failed.length).toBeGreaterThan(0);
      for (const f of failed) expect(f).toBeInstanceOf(TransportClosedError);
      expect(await s.closed.catch((x) => x)).toBeInstanceOf(TransportClosedError);
      expect(s.signal.aborted).toBe(true);
      expect(client.inFlight).toBe(0);
    } finally {
      client.close();
      await peer.kill(9);
    }
  });

  test("the client killed mid-stream: the server's signal aborts, its send rejects, its stream is gone", async () => {
    if (kind === "ucx") Object.assign(process.env, UCX_ENV);
    let stream: ServerStream | null = null;
    let sendError: unknown = null;
    let aborted: unknown = null;
    const serving = await serve(urlFor(kind), {
      1: streamHandler(async (s) => {
        stream = s;
        await s.read();
        await s.send(new Uint8Array([9]));
        await new Promise<void>((resolve) => s.signal.addEventListener("abort", () => resolve()));
        aborted = s.signal.reason;
        sendError = await s.send(new Uint8Array(1)).then(() => "sent", (e) => e);
      }),
    }, { onError: () => {} });
    const peer: Peer = kind === "inproc"
      ? await spawnWorkerPeer(CLIENT_WORKER, { url: serving.url, method: 1 })
      : await spawnPeer(CLIENT, [serving.url, "1"], kind === "ucx" ? UCX_ENV : {});
    try {
      if (kind !== "inproc") expect(peer.ready.ready).toBe(true);
      await until(() => stream !== null, "the stream on the server", 10000);
      const session = [...serving.server.sessions][0]!; // kept: a closed session leaves server.sessions
      expect(session.inFlight).toBe(1);
      await peer.kill(9);
      await until(() => sendError !== null, "the server's send to fail", 20000);
      expect(stream!.signal.aborted).toBe(true);
      expect(aborted).toBeInstanceOf(TransportClosedError);
      expect(sendError).toBeInstanceOf(TransportClosedError);
      await until(() => session.inFlight === 0, "the dead session's stream count back to 0", 10000);
    } finally {
      await peer.kill(9);
      serving.close();
    }
  });
});
