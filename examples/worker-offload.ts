/**
 * An HTTP front that offloads CPU-heavy routes (gzip and SHA-256 of a request body) to Workers.
 *
 * Work that holds the CPU for milliseconds would stall every other request of a `Bun.serve`
 * event loop. `workerPool(moduleUrl, { size, service })` starts `size` Workers that each load the
 * handlers module (examples/worker-offload-handlers.ts) and serve it over the inproc transport:
 * a request body travels to a Worker through memory the two threads share (no structured clone,
 * no postMessage per call), and `pool.svc.*` is the same typed API as a client's. Each call goes
 * to the least busy Worker and carries the HTTP request's `{ signal, timeoutMs }`. When every
 * Worker's window is full, calls queue (`maxQueued`), and past that they fail at once with
 * `PendingLimitError`: backpressure, answered here as 503. A Worker that dies fails its calls in
 * flight with `WorkerCrashedError` and is replaced.
 *
 * It serves HTTP on a free port, sends its own requests with fetch, checks every answer, and
 * closes the pool (which ends its Workers).
 *
 * Run: bun examples/worker-offload.ts
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { PendingLimitError, TimeoutError, WorkerCrashedError, workerPool } from "hotpath";
import { Compress } from "./worker-offload-handlers.ts";

await using pool = await workerPool(new URL("./worker-offload-handlers.ts", import.meta.url), { size: 2, service: Compress, maxQueued: 256 });
const http = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  routes: {
    "/gzip": {
      POST: async (req) => {
        const zipped = await pool.svc.gzip(await req.bytes(), { signal: req.signal, timeoutMs: 5000 });
        return new Response(zipped, { headers: { "content-type": "application/gzip" } });
      },
    },
    "/sha256": {
      POST: async (req) => new Response((await pool.svc.sha256(await req.bytes(), { signal: req.signal, timeoutMs: 5000 })).toHex()),
    },
    "/health": () => new Response("ok"), // answers at once while the Workers compress
  },
  error: (e) => {
    if (e instanceof PendingLimitError || e instanceof WorkerCrashedError) return new Response("busy, try again", { status: 503, headers: { "retry-after": "1" } });
    return new Response(e.message, { status: e instanceof TimeoutError ? 504 : 500 });
  },
});
try {
  // 16 bodies of 256 KiB (random letters a..p: they compress to a little over half) at once, and a
  // health check while the Workers are busy with them.
  const bodies = Array.from({ length: 16 }, () => crypto.getRandomValues(new Uint8Array(256 << 10)).map((x) => 97 + (x & 15)));
  const start = performance.now();
  const zips = Promise.all(bodies.map((b) => fetch(`${http.url}gzip`, { method: "POST", body: b }).then((r) => r.bytes())));
  assert.equal(await (await fetch(`${http.url}health`)).text(), "ok");
  const healthMs = performance.now() - start;
  const zipped = await zips;
  const allMs = performance.now() - start;
  zipped.forEach((z, i) => assert.ok(gunzipSync(z).equals(bodies[i]!), `body ${i} came back different`));

  const hex = await (await fetch(`${http.url}sha256`, { method: "POST", body: bodies[0] })).text();
  assert.equal(hex, new Bun.CryptoHasher("sha256").update(bodies[0]!).digest("hex"));

  const { workers, restarts } = pool.stats();
  const outBytes = zipped.reduce((n, z) => n + z.length, 0);
  console.log(`${http.url}: ${workers} Workers gzipped 16 x 256 KiB into ${outBytes} bytes in ${allMs.toFixed(0)} ms (/health answered after ${healthMs.toFixed(0)} ms) and hashed one; ${restarts} restarts`);
} finally {
  http.stop(true);
}
