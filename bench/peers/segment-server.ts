/**
 * Echo servers for the shm / inproc benchmarks (method 1 echoes its data):
 *   spin:  the hot-path server (poll / recv / reply) busy-polling in spin mode, yielding to the
 *          event loop every 2 ms so new connections are accepted;
 *   async: serve() with the default adaptive wait policy (event-loop delivery).
 * As a process: bun bench/peers/segment-server.ts URL spin|async   (prints {"url"}; exits on stdin EOF)
 * As a Worker: post {url, mode}; it posts {url} back when listening.
 */

import { listen, serve, Server } from "../../src/index.ts";
import { ECHO_METHOD } from "./methods.ts";

export async function startSegmentServer(url: string, mode: "spin" | "async"): Promise<{ url: string; close(): void }> {
  if (mode === "async") {
    const s = await serve(url, { [ECHO_METHOD]: (h) => h.data });
    return { url: s.url, close: () => s.close() };
  }
  const listener = await listen(url, { wait: { mode: "spin", spinNs: 0 } });
  const server = new Server();
  server.attach(listener);
  let running = true;
  (async () => {
    while (running) {
      const end = Bun.nanoseconds() + 2e6;
      while (Bun.nanoseconds() < end) {
        for (let i = 0; i < 64; i++) {
          server.poll();
          for (let h = server.recv(); h !== null; h = server.recv()) h.reply(h.data);
        }
      }
      await new Promise((r) => setImmediate(r));
    }
  })();
  return {
    url: listener.url,
    close() {
      running = false;
      server.close();
    },
  };
}

declare const self: Worker;
if (import.meta.main) {
  const [url, mode] = process.argv.slice(2) as [string, "spin" | "async"];
  const s = await startSegmentServer(url, mode);
  console.log(JSON.stringify({ url: s.url }));
  (async () => {
    for await (const _ of Bun.stdin.stream()) {
      // EOF ends the benchmark
    }
    s.close();
    process.exit(0);
  })();
} else if (typeof self !== "undefined" && typeof (self as { postMessage?: unknown }).postMessage === "function") {
  self.onmessage = async (e: MessageEvent) => {
    const s = await startSegmentServer(e.data.url, e.data.mode);
    self.postMessage({ url: s.url });
  };
}
