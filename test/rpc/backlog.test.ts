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
/** Echoes the request's own view: a queued reply must not point into the released request slot. */
const M_ECHO = 2;
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
          [M_ECHO]: (h) => h.data,
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
        // Echoes of the request's own view, queued behind Full: each must come back as sent,
        // though the request's slot was reused by later requests while the reply waited.
        const sent = Array.from({ length: CALLS }, (_, i) => new Uint8Array(REPLY_BYTES).fill(i % 251));
        const echoes = await Promise.all(sent.map((d) => c.request(M_ECHO, d, { timeoutMs: 20_000 })));
        echoes.forEach((r, i) => expect(Buffer.from(r).equals(Buffer.from(sent[i]!))).toBe(true));
        expect(watch.nested).toBe(0);
        expect(watch.maxDepth).toBe(1);
      } finally {
        c.close();
        server.close();
        listener.close(true); // not attached to the server (onConnection is the test's own)
      }
    }, 30_000);
  }
});

describe("respond() owns what it queues", () => {
  for (const name of ["shm", "inproc"]) {
    test(`${name}: a reply queued behind Full keeps its bytes though the caller reuses its buffer`, async () => {
      const listener = await listen(urls[name]!());
      const server = new Server({
        onRequest: (h) => {
          const out = new Uint8Array(REPLY_BYTES).fill(h.data[0]!);
          h.respond(out);
          out.fill(0); // the caller's buffer is its own again once respond() returned
        },
      });
      server.attach(listener);
      // A client in spin mode delivers nothing until it polls, so the server's replies fill the
      // ring and queue in its backlog.
      const conn = await connect(listener.url, { wait: { mode: "spin" }, segment: { ringSlots: 8, sizeClasses: [{ slotBytes: 8 << 10, slotCount: 4 }] } });
      const c = new Client<number>(conn, { window: 64 });
      const got = new Map<number, Uint8Array>();
      c.onResponse = (i, data, err) => {
        if (err) throw err;
        got.set(i, data.slice());
      };
      try {
        const N = 40;
        let next = 0;
        for (let spins = 0; got.size < N; spins++) {
          while (next < N && c.call(M_BIG, new Uint8Array(3000).fill(next + 1), next) === 0) next++;
          if (spins % 8 === 7) c.poll(); // let replies pile up between polls
          await Bun.sleep(1);
        }
        for (let i = 0; i < N; i++) {
          const r = got.get(i)!;
          expect(r.length).toBe(REPLY_BYTES);
          expect(r.every((b) => b === i + 1)).toBe(true);
        }
      } finally {
        c.close();
        server.close();
      }
    }, 30_000);
  }
});

describe("a backlog never freezes the event loop where wait() holds the thread", () => {
  for (const mode of ["spin", "blocking"] as const) {
    test(`shm server in ${mode} mode, a client that stops reading: timers still fire, replies arrive later`, async () => {
      const listener = await listen(urls.shm!(), { wait: { mode } });
      const server = new Server({ onRequest: dispatcher({ [M_BIG]: (h) => new Uint8Array(REPLY_BYTES).fill(h.data[0]!) }) });
      server.attach(listener);
      const conn = await connect(listener.url, { wait: { mode: "spin" }, segment: { ringSlots: 8, sizeClasses: [{ slotBytes: 8 << 10, slotCount: 4 }] } });
      const c = new Client<number>(conn, { window: 64 });
      const got = new Map<number, number>();
      c.onResponse = (i, data) => void got.set(i, data[0]!);
      try {
        const N = 8;
        for (let i = 0; i < N; i++) expect(c.call(M_BIG, new Uint8Array([i + 1]), i)).toBe(0);
        // The server's own loop, as a spin / blocking server runs it; the client reads nothing.
        let ticks = 0;
        const timer = setInterval(() => ticks++, 10);
        const until = performance.now() + 300;
        while (performance.now() < until) {
          server.poll();
          await Bun.sleep(1);
        }
        clearInterval(timer);
        expect(ticks).toBeGreaterThan(0);
        // Now the client reads: every reply arrives, with its own bytes.
        while (got.size < N) {
          c.poll();
          server.poll();
          await Bun.sleep(1);
        }
        for (let i = 0; i < N; i++) expect(got.get(i)).toBe(i + 1);
      } finally {
        c.close();
        server.close();
      }
    }, 20_000);
  }
});
