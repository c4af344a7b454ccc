/**
 * Worker of terminate-child.ts: an inproc echo server busy in a hot-path loop (poll / recv /
 * reply for 2 ms, then one event-loop turn), so a terminate() finds it in optimized JIT code.
 * Post {url}; it posts {url} back once listening.
 */
import { listen, Server } from "../../src/index.ts";

declare const self: Worker;
self.onmessage = async (e: MessageEvent) => {
  const listener = await listen(e.data.url as string, { wait: { mode: "spin", spinNs: 0 } });
  const server = new Server();
  server.attach(listener);
  self.postMessage({ url: listener.url });
  for (;;) {
    const end = Bun.nanoseconds() + 2e6;
    while (Bun.nanoseconds() < end) {
      server.poll();
      for (let h = server.recv(); h !== null; h = server.recv()) h.reply(h.data);
    }
    await new Promise((r) => setImmediate(r));
  }
};
