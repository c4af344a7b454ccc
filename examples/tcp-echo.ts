/**
 * Echo over tcp: a server and a client in one process.
 *
 * The convenient APIs in their smallest form. `serve(url, handlers)` listens and answers method
 * 1 with the request's own bytes (a handler gets a request handle; `h.data` is the request,
 * and whatever bytes it returns are the response). `rpcConnect(url)` dials the server and
 * `await client.request(method, bytes, { timeoutMs })` resolves with the response, which the
 * caller owns. Port 0 lets the OS choose a free port; `server.url` says which one. tcp runs
 * between any two hosts: listen on an address others can reach (and read the README's Security
 * section first) and dial `tcp://<host>:<port>` from the other side.
 *
 * Run: bun examples/tcp-echo.ts
 */

import assert from "node:assert/strict";
import { rpcConnect, serve } from "hotpath";

const ECHO = 1;

const server = await serve("tcp://127.0.0.1:0", { [ECHO]: (h) => h.data });
const client = await rpcConnect(server.url);
try {
  const sent = new TextEncoder().encode("hello over tcp");
  const reply = await client.request(ECHO, sent, { timeoutMs: 1000 });
  assert.equal(new TextDecoder().decode(reply), "hello over tcp");
  console.log(`${server.url} answered "${new TextDecoder().decode(reply)}"`);
} finally {
  client.close();
  server.close();
}
