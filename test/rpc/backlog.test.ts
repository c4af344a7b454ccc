/**
 * Replies that meet a full transport (issue 8, defect 5): the convenient server keeps them in
 * the session's backlog and sends them from a clean stack, in order, instead of waiting inside
 * the delivery callback (which re-enters the transport: nested deliveries on shm, progress
 * inside progress on ucx). Checked over a session segment with a tiny ring and slab, so replies
 * meet Full all the time, and over tcp with a small send buffer.
 */

import { describe, expect, test } from "bun:test";
import { Client, Server, connect, dispatcher, listen, type Connection, type Receiver } from "../../src/index.ts";

const M_BIG = 1;
const REPLY_BYTES = 6000;
const CALLS = 400;

/** Counts conn.wait() calls made while one of the connection's deliveries is running. */
function watchReentrancy(conn: Connection): { readonly nested: number; readonly maxDepth: number } {
  let depth = 0;
  let nested = 0;
  let maxDepth = 0;
  const setReceiver = conn.setReceiver.bind(conn);
  conn.setReceiver = (r: Receiver) =>
    setReceiver({
      ...r,
      onMessage(m) {
        depth++;
        maxDepth = Math.max(maxDepth, depth);
        try {
          r.onMessage(m);
        } finally {
          depth--;
        }
      },
      onClose: (e) => r.onClose(e),
      onOversized: r.onOversized?.bind(r),
    });
  const wait = conn.wait.bind(conn);
  conn.wait = (ms: number) => {
    if (depth > 0) nested++;
    return wait(ms);
  };
  return {
    get nested() {
      return nested;
    },
    get maxDepth() {
      return maxDepth;
    },
  };
}

const urls: Record<string, () => string> = {
  shm: () => `shm://backlog-${process.pid}-${Math.random().toString(36).slice(2)}`,
  inproc: () => `inproc://backlog-${Math.random().toString(36).slice(2)}`,
  tcp: () => "tcp://127.0.0.1:0",
};

describe("replies that meet Full wait in the backlog, never inside a delivery", () => {
  for (const [name, url] of Object.entries(urls)) {
    test(name, async () => {
      const listener = await listen(url());
      const server = new Server({
        onRequest: dispatcher({
          [M_BIG]: (h) => {
            const out = new Uint8Array(REPLY_BYTES);
            out.fill(h.data[0]!);
            out[1] = h.data[1]!;
            return out;
          },
        }),
      });
      let watch!: ReturnType<typeof watchReentrancy>;
      listener.onConnection((conn) => {
        watch = watchReentrancy(conn);
        server.addConnection(conn);
      });
      const conn = await connect(listener.url, {
        // A ring of 8 descriptors and 4 slots: replies meet Full constantly.
        segment: { ringSlots: 8, sizeClasses: [{ slotBytes: 8 << 10, slotCount: 4 }] },
      });
      const c = new Client<any>(conn, { window: 64 });
      try {
        const replies = await Promise.all(
          Array.from({ length: CALLS }, (_, i) => c.request(M_BIG, new Uint8Array([i & 0xff, i >> 8]), { timeoutMs: 20_000 })),
        );
        replies.forEach((r, i) => {
          expect(r.length).toBe(REPLY_BYTES);
          expect(r[0]).toBe(i & 0xff);
          expect(r[1]).toBe(i >> 8);
          expect(r[REPLY_BYTES - 1]).toBe(i & 0xff);
        });
        expect(watch.nested).toBe(0);
        expect(watch.maxDepth).toBe(1);
      } finally {
        c.close();
        server.close();
      }
    }, 30_000);
  }
});
