/**
 * rdma:// keeps the process alive while a listener or connection is open, and lets it exit once
 * they are closed (as a socket does), over the softrc TEST FIXTURE (the parent's env): listens
 * in mode `argv[2]`, connects to itself, then schedules an UNREF'd timer and returns. Only an
 * open listener or connection can keep the process running until the timer fires; the timer
 * prints `{"alive":true,...}`, closes the listener with close(false) (the connection stays
 * usable: a message goes through after it), then closes the connection, and the process must
 * exit by itself (the parent checks its exit code, with a watchdog).
 */
import { connect, listen } from "../../src/connect/registry.ts";
import type { Connection } from "../../src/contract/transport.ts";

const mode = process.argv[2] === "socket" ? "socket" : "cm";
const l = await listen(`rdma://127.0.0.1:0${mode === "socket" ? "?mode=socket" : ""}`);
let server: Connection | null = null;
l.onConnection((c) => {
  server = c;
  c.setReceiver({
    onMessage(m) {
      const body = m.body.slice();
      m.release();
      c.trySend(new Uint8Array([1]), body);
    },
    onClose() {},
  });
});
const c = await connect(l.url);
let echoed = 0;
c.setReceiver({
  onMessage(m) {
    echoed = m.body.length;
    m.release();
  },
  onClose() {},
});
const t = setTimeout(async () => {
  l.close(false);
  c.trySend(new Uint8Array([2]), new Uint8Array(100));
  const end = Date.now() + 10_000;
  while (echoed === 0 && Date.now() < end) {
    c.poll();
    await Bun.sleep(2);
  }
  console.log(JSON.stringify({ alive: true, serverOpen: server !== null && !(server as Connection).closed, echoedAfterListenerClose: echoed }));
  c.close();
}, 600);
t.unref();
