/**
 * Graceful drain (server.drain / Serving.drain, src/rpc/drain.ts) against a real server
 * process (drain-server.ts) over tcp and shm: GOAWAY reaches a client that announced it
 * understands it, calls in flight finish, the drain's timeout cuts a call that never ends
 * (TransportClosedError), and a client that has not announced (as one from before GOAWAY)
 * gets no GOAWAY but still its answer. Every call is checked against its own bytes.
 */

import { afterEach, describe, expect, test } from "bun:test";
import { ProtocolError, SEND_OK, TransportClosedError, UsageError, connect, rpcConnect, serve, type RpcClient } from "../../src/index.ts";
import * as wire from "../../src/rpc/wire.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SERVER = `${import.meta.dir}/drain-server.ts`;
const M_ECHO = 1; // answers bytes XOR 0x5a
const M_SLOW = 2; // answers its bytes after u32[0] ms
const M_NEVER = 3;

const urls: Record<string, () => string> = {
  tcp: () => "tcp://127.0.0.1:0",
  shm: () => `shm://drain-${process.pid}-${Math.random().toString(36).slice(2)}`,
};

const peers: Peer[] = [];
const clients: RpcClient<{}>[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const p of peers.splice(0)) await p.kill();
});

async function server(url: string): Promise<Peer> {
  const p = await spawnPeer(SERVER, [url]);
  peers.push(p);
  return p;
}
async function client(url: string): Promise<RpcClient<{}>> {
  const c = await rpcConnect(url, { timeoutMs: 0 });
  clients.push(c);
  return c;
}
function command(p: Peer, line: string): void {
  p.proc.stdin.write(line + "\n");
  p.proc.stdin.flush();
}
async function line(p: Peer): Promise<any> {
  return JSON.parse(await p.nextLine());
}
function slowBody(ms: number, tag: number): Uint8Array {
  const b = new Uint8Array(16).fill(tag);
  new DataView(b.buffer).setUint32(0, ms, true);
  return b;
}
/** One echo round trip, checked byte for byte (announces GOAWAY support: see wire.ts). */
async function echoChecked(c: RpcClient<{}>, seq: number): Promise<void> {
  const body = new Uint8Array(8 + (seq % 64)).map((_, i) => (seq * 31 + i) & 0xff);
  const reply = await c.request(M_ECHO, body);
  expect(reply.length).toBe(body.length);
  for (let i = 0; i < body.length; i++) if (reply[i] !== (body[i]! ^ 0x5a)) throw new Error(`call ${seq}: byte ${i} differs`);
}

for (const name of Object.keys(urls)) {
  describe(`drain over ${name}`, () => {
    test("a server process drained under continuous load loses no call; the client sees GOAWAY and moves to another server", async () => {
      const a = await server(urls[name]!());
      const b = await server(urls[name]!());
      const first = await client(a.ready.url);
      let current: Promise<RpcClient<{}>> = Promise.resolve(first);
      let goaways = 0;
      first.onGoaway = (c) => {
        goaways++;
        expect(c).toBe(first);
        current = client(b.ready.url); // new calls go to the other server from now on
      };
      let seq = 0;
      let done = 0;
      let onFirst = 0;
      const failures: unknown[] = [];
      let stop = false;
      const worker = async () => {
        while (!stop) {
          const c = await current;
          const n = seq++;
          try {
            await echoChecked(c, n);
            done++;
            if (c === first) onFirst++;
          } catch (e) {
            failures.push(e);
          }
        }
      };
      const workers = Array.from({ length: 16 }, worker);
      while (onFirst < 200) await Bun.sleep(5);
      command(a, "drain 20000");
      const drained = (await line(a)).drained;
      const doneAtDrain = done;
      while (done < doneAtDrain + 200) await Bun.sleep(5);
      stop = true;
      await Promise.all(workers);
      expect(failures).toEqual([]);
      expect(done).toBe(seq);
      expect(goaways).toBe(1);
      expect(first.draining).toBe(true);
      expect(first.closed).toBe(true); // closed itself once nothing was in flight
      expect(first.inFlight).toBe(0);
      expect(drained.sessions).toBe(1);
      expect(drained.callsCut).toBe(0);
      expect((await current).draining).toBe(false);
    }, 60_000);

    test("drain stops accepting and waits for a slow handler in flight (answered with its own bytes); a request sent after GOAWAY is still served", async () => {
      const a = await server(urls[name]!());
      const c = await client(a.ready.url);
      await echoChecked(c, 1);
      const body = slowBody(400, 7);
      const reply = c.request(M_SLOW, body);
      expect(await line(a)).toEqual({ started: M_SLOW });
      command(a, "drain 20000");
      while (!c.draining) await Bun.sleep(5);
      // Stopped accepting: a new connection is refused. A request sent after GOAWAY is still served.
      expect(await rpcConnect(a.ready.url, { connectTimeoutMs: 2000 }).then((x) => (x.close(), null), (e) => e)).toBeInstanceOf(Error);
      await echoChecked(c, 2);
      expect(await reply).toEqual(body);
      expect((await line(a)).drained).toEqual({ sessions: 1, callsFinished: 2, callsCut: 0 });
    }, 30_000);

    test("the drain's timeout cuts a handler that never answers: that call fails with TransportClosedError", async () => {
      const a = await server(urls[name]!());
      const c = await client(a.ready.url);
      await echoChecked(c, 1);
      const stuck = c.request(M_NEVER, new Uint8Array([1])).then(() => null, (e) => e);
      expect(await line(a)).toEqual({ started: M_NEVER });
      command(a, "drain 300");
      expect(await stuck).toBeInstanceOf(TransportClosedError);
      expect(c.draining).toBe(true);
      expect((await line(a)).drained).toEqual({ sessions: 1, callsFinished: 0, callsCut: 1 });
    }, 30_000);

    test("a client that never looks at the hook still gets its calls in flight answered, then closes", async () => {
      const a = await server(urls[name]!());
      const c = await client(a.ready.url);
      await echoChecked(c, 1);
      const bodies = [1, 2, 3, 4, 5].map((i) => slowBody(200 + 20 * i, i));
      const replies = bodies.map((b) => c.request(M_SLOW, b));
      for (let i = 0; i < bodies.length; i++) expect(await line(a)).toEqual({ started: M_SLOW });
      command(a, "drain 20000");
      for (let i = 0; i < bodies.length; i++) expect(await replies[i]!).toEqual(bodies[i]!);
      expect((await line(a)).drained).toEqual({ sessions: 1, callsFinished: 5, callsCut: 0 });
      expect(c.draining).toBe(true);
      expect(await c.request(M_ECHO, new Uint8Array([1])).then(() => null, (e) => e)).toBeInstanceOf(TransportClosedError);
    }, 30_000);

    test("a client that has not announced GOAWAY (as one from before it) gets none; its call is answered and the server closes it", async () => {
      const a = await server(urls[name]!());
      const c = await client(a.ready.url);
      const body = slowBody(300, 9);
      const reply = c.request(M_SLOW, body); // the first call: no response yet, so no announcement
      expect(await line(a)).toEqual({ started: M_SLOW });
      command(a, "drain 20000");
      expect(await reply).toEqual(body);
      expect((await line(a)).drained).toEqual({ sessions: 1, callsFinished: 1, callsCut: 0 });
      expect(c.draining).toBe(false);
      while (!c.closed) await Bun.sleep(5); // the server closed it (a hang fails by the test's timeout)
    }, 30_000);
  });
}

describe("drain, in this process", () => {
  test("a server with no session drains at once; a second drain() is the same drain; a bad timeout is a UsageError", async () => {
    const s = await serve("tcp://127.0.0.1:0", { [M_ECHO]: (h) => h.data });
    expect(await s.server.drain(-1).then(() => null, (e) => e)).toBeInstanceOf(UsageError);
    const d = s.drain(1000);
    expect(s.drain(5)).toBe(d);
    expect(await d).toEqual({ sessions: 0, callsFinished: 0, callsCut: 0 });
    expect(await rpcConnect(s.url, { connectTimeoutMs: 2000 }).then((x) => (x.close(), null), (e) => e)).toBeInstanceOf(Error);
  });

  test("a GOAWAY sent to a server is a ProtocolError for that session only", async () => {
    const closes: unknown[] = [];
    const s = await serve("tcp://127.0.0.1:0", { [M_ECHO]: (h) => h.data }, { onSessionClose: (_s, e) => void closes.push(e), onError: () => {} });
    try {
      const other = await client(s.url);
      const conn = await connect(s.url);
      const head = new Uint8Array(wire.WIRE_HEADER_BYTES);
      wire.writeWireHeader(head, wire.KIND_GOAWAY, 0, 0, 0, 0, 0);
      expect(conn.trySend(head, new Uint8Array(0))).toBe(SEND_OK);
      while (closes.length === 0) await Bun.sleep(5);
      expect(closes[0]).toBeInstanceOf(ProtocolError);
      expect(await other.request(M_ECHO, new Uint8Array([4]))).toEqual(new Uint8Array([4]));
      conn.close();
    } finally {
      s.close();
    }
  });
});
