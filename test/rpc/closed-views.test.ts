/**
 * A response that reached the client but was not yet handed to onResponse (queued for the next
 * poll()) when the client closes: close() hands its view back to the transport (shm ring slot,
 * tcp read buffer, rdma receive slot) and keeps an owned copy, so a poll() after close still
 * delivers the response's bytes. Views are counted by a receiver that wraps the real transport's
 * messages (the connection itself is real: shm and tcp, with an in-process serve()).
 */
import { expect, test } from "bun:test";
import { Client, connect, SEND_OK, serve, type Connection, type Receiver, type RxMessage } from "../../src/index.ts";
import { until } from "../helpers/peer.ts";

/** The real connection, with each delivered message wrapped to count the views not yet released. */
function counted(conn: Connection): { conn: Connection; held: () => number } {
  let held = 0;
  const wrap = (m: RxMessage): RxMessage => {
    let released = false;
    held++;
    return {
      get head() { return m.head; },
      get body() { return m.body; },
      get headBuf() { return m.headBuf; },
      get headOffset() { return m.headOffset; },
      get headLength() { return m.headLength; },
      get bodyLength() { return m.bodyLength; },
      get headWords() { return m.headWords; },
      release() {
        if (!released) held--;
        released = true;
        m.release();
      },
    };
  };
  const proxy = new Proxy(conn, {
    get(target, key) {
      if (key === "setReceiver") return (r: Receiver) => target.setReceiver({ ...r, onMessage: (m) => r.onMessage(wrap(m)) });
      const v = Reflect.get(target, key, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { conn: proxy, held: () => held };
}

test("tcp: a response queued when the client closes is released at close(), and a later poll() still delivers its bytes", async () => {
  const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
  const { conn, held } = counted(await connect(s.url, { fallback: [] }));
  const c = new Client<number>(conn);
  try {
    const got: Array<[number, number[], unknown]> = [];
    c.onResponse = (ud, data, err) => void got.push([ud, [...data], err]);
    expect(c.call(1, new Uint8Array([7]), 5)).toBe(SEND_OK);
    // tcp delivers outside poll(): the response waits in the client's completion queue.
    await until(() => held() === 1, "the response to arrive");
    c.close();
    expect(held()).toBe(0);
    expect(c.poll()).toBe(1);
    expect(got).toEqual([[5, [7], null]]);
  } finally {
    c.close();
    s.close();
  }
});

test("shm: a response queued behind an onResponse that threw is released when the client closes", async () => {
  let handled = 0;
  const s = await serve(`shm://closed-views-${process.pid}-${Math.random().toString(36).slice(2)}`, {
    1: (h) => {
      handled++;
      return h.data;
    },
  });
  const { conn, held } = counted(await connect(s.url));
  const c = new Client<number>(conn);
  try {
    const got: Array<[number, number[]]> = [];
    c.onResponse = (ud, data) => {
      if (ud === 0) throw new Error("first response");
      got.push([ud, [...data]]);
    };
    expect(c.call(1, new Uint8Array([10]), 0)).toBe(SEND_OK);
    expect(c.call(1, new Uint8Array([11]), 1)).toBe(SEND_OK);
    await until(() => handled === 2, "both requests to be served");
    await Bun.sleep(20); // both replies in the ring: one poll() reads them
    // The first response's throw leaves the second queued for the next poll().
    expect(() => c.poll()).toThrow("first response");
    expect(held()).toBe(1);
    c.close();
    expect(held()).toBe(0);
    expect(c.poll()).toBe(1);
    expect(got).toEqual([[1, [11]]]);
  } finally {
    c.close();
    s.close();
  }
});
