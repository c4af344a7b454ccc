/**
 * A transport-level test peer for the segment transports, run as a process (shm: `bun
 * segment-peer.ts <cmd> <url> …`, one JSON line on stdout when ready, exits when stdin closes)
 * or as a Worker (inproc: sent {args}, posts the same JSON object).
 *
 *   listen <url>          serves `url` in the default (adaptive) mode; per connection, every
 *                         message is echoed back (head and body), except these heads:
 *                         "sink" (from then on messages are only counted, not echoed),
 *                         "count" (replies "count" with the u32 count of sunk messages),
 *                         "close" (closes that connection), "later:<ms>" (sends "rung" after ms).
 *   connect <url> <n>     connects and sends n messages (head "hold", 100-byte bodies), reports
 *                         {sent}, then waits to be killed.
 * Replies that meet Full wait in a queue sent from a clean stack, never inside a delivery.
 */

import { connect, listen, SEND_FULL, type Connection } from "../../src/index.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

const td = new TextDecoder();
const te = new TextEncoder();

function serveConnection(conn: Connection): void {
  const queue: Array<{ head: Uint8Array; body: Uint8Array }> = [];
  let flushing = false;
  let sink = false;
  let sunk = 0;
  const flush = async () => {
    if (flushing) return;
    flushing = true;
    while (queue.length > 0 && !conn.closed) {
      const q = queue[0]!;
      if (conn.trySend(q.head, q.body) === SEND_FULL) await conn.wait(10);
      else queue.shift();
    }
    flushing = false;
  };
  const send = (head: Uint8Array, body: Uint8Array) => {
    queue.push({ head, body });
    queueMicrotask(flush);
  };
  conn.setReceiver({
    onMessage(m) {
      const head = m.head.slice();
      const body = m.body.slice();
      m.release();
      const text = head.length <= 16 ? td.decode(head) : "";
      if (text === "sink") sink = true;
      else if (text === "count") send(te.encode("count"), new Uint8Array(new Uint32Array([sunk]).buffer));
      else if (text === "close") queueMicrotask(() => conn.close());
      else if (text.startsWith("later:")) setTimeout(() => send(te.encode("rung"), new Uint8Array(0)), Number(text.slice(6)));
      else if (sink) sunk++;
      else send(head, body);
    },
    onClose() {},
  });
}

async function main(args: string[]): Promise<Record<string, unknown>> {
  const [cmd, url, n] = args;
  if (cmd === "listen") {
    const l = await listen(url!);
    l.onConnection(serveConnection);
    return { url: l.url };
  }
  if (cmd === "connect") {
    const conn = await connect(url!);
    conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    const body = new Uint8Array(100);
    let sent = 0;
    while (sent < Number(n)) {
      if (conn.trySend(te.encode("hold"), body) === SEND_FULL) await conn.wait(10);
      else sent++;
    }
    return { sent };
  }
  throw new Error(`segment-peer: unknown command ${cmd}`);
}

declare const self: Worker;
if (Bun.isMainThread) {
  const ready = await main(process.argv.slice(2));
  console.log(JSON.stringify({ ...ready, pid: process.pid }));
  exitWhenParentGoes();
} else {
  self.onmessage = async (e: MessageEvent) => self.postMessage(await main(e.data.args));
}
