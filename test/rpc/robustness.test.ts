/**
 * Regressions from review: a reply the transport refuses becomes an error response (the session
 * goes on); a call() refused for its size takes no slot; a closed TCP connection still delivers
 * what was queued before close().
 */
import { expect, test } from "bun:test";
import { connect, listen, RemoteError, rpcConnect, SEND_FULL, SEND_OK, serve, UsageError, type RxMessage } from "../../src/index.ts";

test("serve(): a reply larger than maxMessageBytes reaches the caller as an error, and the session goes on", async () => {
  const s = await serve("tcp://127.0.0.1:0", { 1: () => new Uint8Array(2000), 2: (h) => h.data }, { maxMessageBytes: 1000 });
  const c = await rpcConnect(s.url);
  try {
    const e = await c.request(1, new Uint8Array(1), { timeoutMs: 5000 }).catch((x) => x);
    expect(e).toBeInstanceOf(RemoteError);
    expect(e.message).toContain("exceeds");
    expect(await c.request(2, new Uint8Array([9]), { timeoutMs: 5000 })).toEqual(new Uint8Array([9]));
  } finally {
    c.close();
    s.close();
  }
});

test("call(): oversized data throws UsageError and takes no slot", async () => {
  const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
  const c = await rpcConnect(s.url, { window: 2, maxMessageBytes: 100 });
  try {
    let done = 0;
    c.onResponse = () => void done++;
    for (let i = 0; i < 4; i++) expect(() => c.call(1, new Uint8Array(101), i)).toThrow(UsageError);
    expect(c.inFlight).toBe(0);
    expect(c.call(1, new Uint8Array(10), 0)).toBe(SEND_OK);
    expect(c.call(1, new Uint8Array(10), 1)).toBe(SEND_OK);
    expect(c.call(1, new Uint8Array(10), 2)).toBe(SEND_FULL);
    while (done < 2) if (c.poll() === 0) await c.wait(1000);
  } finally {
    c.close();
    s.close();
  }
});

test("tcp close(): output queued before close is still delivered", async () => {
  const l = await listen("tcp://127.0.0.1:0");
  let got = 0;
  let bytes = 0;
  let closed = false;
  l.onConnection((conn) =>
    conn.setReceiver({
      onMessage(m: RxMessage) {
        got++;
        bytes += m.bodyLength;
        m.release();
      },
      onClose() {
        closed = true;
      },
    }),
  );
  const a = await connect(l.url);
  a.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
  const mib = new Uint8Array(1 << 20);
  let sent = 0;
  for (let i = 0; i < 12; i++) {
    while (a.trySend(new Uint8Array(4), mib) === SEND_FULL) await a.wait(100);
    sent++;
  }
  a.close(); // some of it is still in the output buffer here
  for (let i = 0; i < 500 && !closed; i++) await Bun.sleep(10);
  expect(closed).toBe(true);
  expect(got).toBe(sent);
  expect(bytes).toBe(sent * (1 << 20));
  l.close(true);
});

test("Server.wait(): one wait covers every session, including one that connects during the wait", async () => {
  const { Server } = await import("../../src/index.ts");
  const l = await listen("tcp://127.0.0.1:0");
  const server = new Server();
  server.attach(l);
  try {
    const waiting = server.wait(5000);
    const c = await rpcConnect(l.url);
    const reply = c.request(1, new Uint8Array([5]), { timeoutMs: 5000 });
    expect(await waiting).toBe(true);
    const h = server.recv()!;
    expect([...h.data]).toEqual([5]);
    h.reply(h.data);
    expect(await reply).toEqual(new Uint8Array([5]));
    expect(await server.wait(20)).toBe(false);
    c.close();
  } finally {
    server.close();
  }
});
