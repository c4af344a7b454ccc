/**
 * Echo over inproc: a server in a Worker, a client on the main thread, one process.
 *
 * `inproc://name` connects threads of one process through a SharedArrayBuffer segment (the
 * same rings and slab as shm), with no structured clone and no copy through postMessage: a
 * Worker can serve CPU-heavy methods while the main thread stays free. This file is both
 * threads: on the main thread it starts itself as a Worker, which serves the name and says
 * "listening"; the main thread calls it, then asks it to close its server and ends it.
 * Only threads of the same process may connect to an inproc name.
 *
 * Run: bun examples/inproc-echo.ts
 */

import assert from "node:assert/strict";
import { rpcConnect, serve } from "hotpath";

const ECHO = 1;
const SUM = 2;
const ADDRESS = "inproc://echo-example";

declare const self: Worker;

if (!Bun.isMainThread) {
  // The Worker: the server.
  const server = await serve(ADDRESS, {
    [ECHO]: (h) => h.data,
    // Adds up the request's bytes: work that would otherwise hold the main thread.
    [SUM]: (h) => {
      let sum = 0;
      for (const b of h.data) sum += b;
      const out = new Uint8Array(8);
      new DataView(out.buffer).setFloat64(0, sum, true);
      return out;
    },
  });
  self.onmessage = (e: MessageEvent) => {
    if (e.data !== "stop") return;
    server.close();
    self.postMessage("stopped");
  };
  self.postMessage("listening");
} else {
  const worker = new Worker(import.meta.url);
  const said = (what: string) =>
    new Promise<void>((resolve, reject) => {
      worker.onmessage = (e) => (e.data === what ? resolve() : reject(new Error(`worker said ${e.data}`)));
      worker.onerror = (e) => reject(new Error(`worker failed: ${e.message}`));
    });
  try {
    await said("listening");
    const client = await rpcConnect(ADDRESS);
    try {
      const hello = new TextEncoder().encode("hello from the main thread");
      assert.equal(Buffer.compare(await client.request(ECHO, hello), hello), 0);
      const data = new Uint8Array(1 << 20).fill(3);
      const reply = await client.request(SUM, data);
      const sum = new DataView(reply.buffer, reply.byteOffset, reply.byteLength).getFloat64(0, true);
      assert.equal(sum, 3 * data.length);
      console.log(`${ADDRESS}: the Worker echoed ${hello.length} bytes and summed ${data.length} bytes to ${sum}`);
    } finally {
      client.close();
    }
    const stopped = said("stopped");
    worker.postMessage("stop");
    await stopped;
  } finally {
    worker.terminate();
  }
}
