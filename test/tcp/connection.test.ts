/**
 * TcpConnection's output path: the output buffer is kept across busy ticks up to the send
 * budget (no allocation per tick) and dropped only when one frame grew it past the budget;
 * close() with output the peer has not read lingers without keeping the process alive.
 */

import { afterEach, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { SEND_OK, connect, listen, type Connection, type Listener } from "../../src/index.ts";
import { hello, until } from "./raw.ts";

const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

/** A listener whose connections count the bytes of every message body they receive. */
async function pair(tcp: { sendBufferBytes?: number } = {}): Promise<{ conn: Connection; received: () => number }> {
  const l: Listener = await listen("tcp://127.0.0.1:0");
  open.push(l);
  let bytes = 0;
  l.onConnection((c) => {
    open.push(c);
    c.setReceiver({
      onMessage(msg) {
        bytes += msg.body.length;
        msg.release();
      },
      onClose() {},
    });
  });
  const conn = await connect(l.url, { tcp });
  open.push(conn);
  return { conn, received: () => bytes };
}

/** The connection's output buffer (private): the test watches whether it is reallocated. */
function outBuffer(conn: Connection): Uint8Array {
  return (conn as unknown as { out: { bytes: Uint8Array } }).out.bytes;
}

test("bursts of 160 KiB per tick reuse one output buffer; every byte arrives", async () => {
  const { conn, received } = await pair();
  const head = new Uint8Array(16);
  const body = new Uint8Array(16 << 10);
  const buffers = new Set<Uint8Array>();
  let sent = 0;
  for (let tick = 0; tick < 50; tick++) {
    for (let i = 0; i < 10; i++) {
      expect(conn.trySend(head, body)).toBe(SEND_OK);
      sent += body.length;
    }
    buffers.add(outBuffer(conn));
    await Bun.sleep(0);
  }
  await until(() => received() === sent, `all ${sent} bytes received (now ${received()})`);
  // One buffer grown once (64 KiB, then 256 KiB), not a fresh one per tick.
  expect(buffers.size).toBeLessThanOrEqual(2);
  expect(outBuffer(conn).length).toBeLessThanOrEqual(4 << 20);
});

test("a buffer grown past sendBufferBytes for one frame is let go once sent; smaller ones stay within the budget", async () => {
  const { conn, received } = await pair({ sendBufferBytes: 16 << 10 });
  const head = new Uint8Array(16);
  // Under the direct-write size, so it is copied into the output buffer (larger than the budget).
  expect(conn.trySend(head, new Uint8Array(40 << 10))).toBe(SEND_OK);
  expect(outBuffer(conn).length).toBeGreaterThan(16 << 10);
  await until(() => received() === 40 << 10, "the large frame received");
  expect(outBuffer(conn).length).toBe(0);
  expect(conn.trySend(head, new Uint8Array(4 << 10))).toBe(SEND_OK);
  const small = outBuffer(conn);
  expect(small.length).toBeLessThanOrEqual(16 << 10);
  await until(() => received() === (44 << 10), "the small frame received");
  expect(conn.trySend(head, new Uint8Array(4 << 10))).toBe(SEND_OK);
  expect(outBuffer(conn)).toBe(small);
});

test("close() with output the peer never reads does not keep the process alive", async () => {
  // A peer that sends its hello and never reads: the client's output stays queued.
  let sockets = 0;
  const server: TCPSocketListener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        sockets++;
        s.write(hello());
        s.pause();
      },
      data() {},
    },
  });
  open.push({ close: () => server.stop(true) });
  const child = Bun.spawn(["bun", new URL("./linger-child.ts", import.meta.url).pathname, String(server.port)], { stdout: "pipe", stderr: "inherit" });
  open.push({ close: () => child.kill(9) });
  // Only the first line: stdout ends when the process does, which is what is being tested.
  const reader = child.stdout.getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    line += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const report = JSON.parse(line);
  expect(report).toEqual({ full: true, closed: true });
  // The linger lasts 5 s (CLOSE_LINGER_MS); a process with nothing else to do exits well before.
  const exited = await Promise.race([child.exited, Bun.sleep(3000).then(() => "still running after close()")]);
  expect(exited).toBe(0);
  expect(sockets).toBe(1);
});

test("wait() parks on the event loop (waitsOnEventLoop): timers run while it is pending", async () => {
  const { conn } = await pair();
  expect(conn.waitsOnEventLoop).toBe(true);
  let timerRan = false;
  setTimeout(() => (timerRan = true), 5);
  const woke = await conn.wait(100);
  expect(woke).toBe(false);
  expect(timerRan).toBe(true);
});
