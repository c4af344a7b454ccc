/**
 * The handlers examples/worker-offload.ts runs in its Workers: `workerPool(url, { size })` loads
 * this module once in each Worker and serves its default export, the Handlers that
 * `implement()` returns. The service definition lives here too, so the front and the Workers
 * share one. A handler runs on its Worker's thread and may block it (that is the point):
 * `bytes` is a view of the request in the memory the front and the Worker share, valid until the
 * handler returns.
 */

import { gzipSync } from "node:zlib";
import { defineService, implement } from "hotpath";

export const Compress = defineService({
  /** gzip (level 9) of the request's bytes. */
  gzip: { id: 1 },
  /** SHA-256 of the request's bytes (32 bytes). */
  sha256: { id: 2 },
});

export default implement(Compress, {
  gzip: (bytes) => gzipSync(bytes, { level: 9 }),
  sha256: (bytes) => new Bun.CryptoHasher("sha256").update(bytes).digest(),
});
