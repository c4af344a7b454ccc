/**
 * Echo servers for the shm / inproc / ucx benchmarks (method 1 echoes its data):
 *   spin:  the hot-path server (poll / recv / reply) busy-polling in spin mode, yielding to the
 *          event loop every 2 ms so new connections are accepted; a reply that finds the ring
 *          full is retried (before any new request) until the client reads, never dropped;
 *   async: serve() with the default adaptive wait policy (event-loop delivery).
 * As a process: bun bench/peers/segment-server.ts URL spin|async   (prints {"url"}; exits on stdin EOF)
 * As a Worker: post {url, mode}; it posts {url} back when listening.
 */

import { listen, serve, Server, SEND_FULL, type Connection, type RequestHandle } from "../../src/index.ts";
import { ECHO_METHOD } from "./methods.ts";
import { servePeerUntilEof } from "./until-eof.ts";

/** Method 2 (ucx only): the descriptor of a 4 KiB region registered for one-sided reads. */
export const REGION_METHOD = 2;
const regions = new WeakMap<object, Uint8Array>();
function regionDescriptor(conn: Connection): Uint8Array {
  let d = regions.get(conn);
  if (d === undefined) {
    const c = conn as Connection & { registerMemory?: (n: number) => { view: Uint8Array; descriptor(): Uint8Array } };
    if (!c.registerMemory) return new Uint8Array(0);
    const r = c.registerMemory(4096);
    r.view.fill(7);
    d = r.descriptor();
    regions.set(conn, d);
  }
  return d;
}

export async function startSegmentServer(url: string, mode: "spin" | "async"): Promise<{ url: string; close(): void }> {
  if (mode === "async") {
    const s = await serve(url, { [ECHO_METHOD]: (h) => h.data });
    return { url: s.url, close: () => s.close() };
  }
  // ucx: the one-sided read of REGION_METHOD needs RMA, which a ucx listener offers only when asked (others ignore it).
  const listener = await listen(url, { wait: { mode: "spin", spinNs: 0 }, ucx: { rma: true } });
  const server = new Server();
  server.attach(listener);
  let running = true;
  // Requests whose reply met a full ring (SEND_FULL leaves the handle usable): answered first,
  // in order, once the client has read replies. A client whose window exceeds the ring gets there.
  const stalled: RequestHandle[] = [];
  const answer = (h: RequestHandle): boolean => (h.method === REGION_METHOD ? h.reply(regionDescriptor(h.session.conn)) : h.reply(h.data)) !== SEND_FULL;
  (async () => {
    while (running) {
      const end = Bun.nanoseconds() + 2e6;
      while (Bun.nanoseconds() < end) {
        for (let i = 0; i < 64; i++) {
          server.poll();
          while (stalled.length > 0 && answer(stalled[0]!)) stalled.shift();
          if (stalled.length > 0) continue;
          for (let h = server.recv(); h !== null; h = server.recv()) {
            if (answer(h)) continue;
            stalled.push(h);
            break;
          }
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
  servePeerUntilEof(await startSegmentServer(url, mode));
} else if (typeof self !== "undefined" && typeof (self as { postMessage?: unknown }).postMessage === "function") {
  self.onmessage = async (e: MessageEvent) => {
    const s = await startSegmentServer(e.data.url, e.data.mode);
    self.postMessage({ url: s.url });
  };
}
