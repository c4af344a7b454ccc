/**
 * ucx delivery edge cases, against a peer in another process (raw-peer.ts), over UCX's tcp and
 * shared-memory transports:
 *   - re-entrancy (issue 8, defect 5): a receiver that calls poll() and wait() from inside its
 *     delivery callback never gets a nested delivery (UCX forbids progressing the worker from
 *     inside its own callbacks); every message still arrives, in order.
 *   - a throwing receiver (defect 7): the exception closes that connection with it (the peer
 *     sees the close), never escapes into UCX; the listener keeps accepting.
 *   - oversized messages (defect 8): a peer that ignores the stated limit sends bodies above it
 *     (eager and rendezvous sizes); they are skipped and reported to onOversized in order,
 *     and the connection keeps working.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { useEnv } from "../helpers/env.ts";
import { listen, ProtocolError, type Connection, type HotpathError, type Listener } from "../../src/index.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const RAW_PEER = new URL("./raw-peer.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function until(cond: () => boolean, what: string, conn: Connection, ms = 15000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`watchdog: ${what} did not happen within ${ms} ms`);
    await conn.wait(20);
  }
}

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe(`ucx delivery (UCX_TLS=${tls})`, () => {
    let listener: Listener;
    const accepted: Connection[] = [];
    const peers: Peer[] = [];
    useEnv({ UCX_TLS: tls });
    beforeAll(async () => {
      listener = await listen("ucx://127.0.0.1:0", { maxMessageBytes: 4096 });
      listener.onConnection((c) => accepted.push(c));
    });
    afterAll(async () => {
      for (const p of peers) await p.kill();
      listener.close(true);
    });

    async function peerConnection(...args: string[]): Promise<{ peer: Peer; conn: Connection }> {
      const before = accepted.length;
      const peer = await spawnPeer(RAW_PEER, [listener.url, ...args], { UCX_TLS: tls }).catch((e) => {
        throw e;
      });
      peers.push(peer);
      const deadline = Date.now() + 15000;
      while (accepted.length === before) {
        if (Date.now() > deadline) throw new Error("watchdog: no connection accepted");
        await Bun.sleep(5);
      }
      return { peer, conn: accepted[accepted.length - 1]! };
    }

    const go = (conn: Connection) => expect(conn.trySend(new TextEncoder().encode("go"))).toBe(0);

    test("poll() and wait() inside a delivery never nest deliveries; all 3000 messages arrive in order", async () => {
      const N = 3000;
      const got: string[] = [];
      let depth = 0;
      let nested = 0;
      let waitResults = 0;
      const { conn } = await peerConnection("burst", String(N));
      conn.setReceiver({
        onMessage(m) {
          depth++;
          if (depth > 1) nested++;
          got.push(dec.decode(m.head));
          m.release();
          conn.poll();
          conn.wait(0).then((r) => {
            if (r) waitResults++;
          });
          depth--;
        },
        onClose() {},
      });
      go(conn);
      await until(() => got.length >= N, `${N} messages`, conn);
      expect(nested).toBe(0);
      expect(got.length).toBe(N);
      expect(got.every((h, i) => h === `m${i}`)).toBe(true);
      expect(conn.closed).toBe(false);
      await Bun.sleep(0);
      expect(waitResults).toBeGreaterThan(0);
    });

    for (const [what, thrown] of [
      ["a TypeError", () => new TypeError("receiver bug")],
      ["a null-prototype object", () => Object.create(null)],
      ["an Error whose name getter throws", () => Object.defineProperty(new Error("x"), "name", { get() { throw new Error("no name"); } })],
    ] as const) {
      test(`a receiver that throws ${what} closes that connection with the error; the listener keeps accepting`, async () => {
        const { peer, conn } = await peerConnection("burst", "50");
        let closes = 0;
        let closeError: HotpathError | null = null;
        let seen = 0;
        conn.setReceiver({
          onMessage(m) {
            m.release();
            if (++seen === 3) throw thrown();
          },
          onClose(e) {
            closes++;
            closeError = e;
          },
        });
        go(conn);
        await until(() => closes > 0, "close after the throw", conn);
        expect(seen).toBe(3);
        expect(conn.closed).toBe(true);
        expect(closeError).toBeInstanceOf(ProtocolError);
        expect(String((closeError as HotpathError | null)?.message)).toContain("receiver failed");
        // The peer sees its connection close.
        const deadline = Date.now() + 15000;
        let line = "";
        while (!line.includes("closed")) {
          if (Date.now() > deadline) throw new Error("watchdog: the peer never saw the close");
          line = await peer.nextLine(15000);
        }
        // Others are unaffected: a new peer connects and delivers.
        const next = await peerConnection("burst", "10");
        const got: string[] = [];
        next.conn.setReceiver({ onMessage: (m) => (got.push(dec.decode(m.head)), m.release()), onClose() {} });
        go(next.conn);
        await until(() => got.length === 10, "10 messages on a new connection", next.conn);
        expect(closes).toBe(1);
      });
    }

    test("bodies above maxMessageBytes from a peer that ignores the limit are skipped and reported in order", async () => {
      const { conn } = await peerConnection("sizes");
      expect(conn.caps.maxMessageBytes).toBe(4096);
      const events: string[] = [];
      conn.setReceiver({
        onMessage(m) {
          events.push(`msg ${dec.decode(m.head)} ${m.body.length}`);
          m.release();
        },
        onOversized(head, bodyLength) {
          events.push(`oversized ${dec.decode(head)} ${bodyLength}`);
        },
        onClose(e) {
          events.push(`close ${e?.message}`);
        },
      });
      await until(() => events.length >= 4, "4 messages", conn);
      expect(events).toEqual(["msg ok 1000", "oversized big 5000", `oversized huge ${1 << 20}`, "msg ok 10"]);
      expect(conn.closed).toBe(false);
    });
  });
}
