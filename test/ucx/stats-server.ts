/**
 * Test peer: serves over ucx (argv[2]):
 *   1: echo
 *   2: a reply of `u32` bytes (the request's first 4 bytes, little-endian)
 *   99: this process's ucx figures as JSON: requests in flight in the worker, the runtime's
 *       counters (UcxRuntime.stats()), sessions, RSS in MiB after a full GC
 * Prints {"url", "pid"} when listening; exits when stdin closes.
 */
import { serve } from "../../src/index.ts";
import type { UcxRuntime } from "../../src/ucx/runtime.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

const serving = await serve(process.argv[2]!, {
  1: (h) => h.data,
  2: (h) => new Uint8Array(new DataView(h.data.buffer, h.data.byteOffset, 4).getUint32(0, true)).fill(7),
  99: () => {
    Bun.gc(true);
    const rt = (serving.listener as unknown as { rt: UcxRuntime }).rt;
    const figures = {
      inFlight: rt.worker.inFlight,
      stats: typeof rt.stats === "function" ? rt.stats() : null,
      sessions: serving.server.sessions.size,
      rssMiB: Math.round((process.memoryUsage().rss / 1048576) * 10) / 10,
    };
    return new TextEncoder().encode(JSON.stringify(figures));
  },
});
console.log(JSON.stringify({ url: serving.url, pid: process.pid }));
exitWhenParentGoes(() => serving.close());
