/**
 * Echo over ucx: a server process and a client process.
 *
 * `ucx://host:port` runs RPC over UCX (libucp, Debian package `libucx0`): the RPC header
 * travels as an Active Message header and the data as AM data, and UCX picks the way (shared
 * memory between processes of one host, tcp or an RDMA NIC across nodes; `UCX_TLS` chooses,
 * e.g. `UCX_TLS=tcp bun examples/ucx-echo.ts`). This file is both ends: it starts itself again
 * as the server (`Bun.spawn` with `serve`), reads the server's "listening" line, sends a small
 * and a 4 MiB message (UCX sends the large one by rendezvous), then closes the server's stdin,
 * which ends it (killed by pid if it does not exit). Without libucp, `serve` and `rpcConnect`
 * fail with `UcxUnavailableError` naming the package to install. Across nodes, listen on an
 * address the other node reaches and keep to trusted networks (see the README's Security
 * section).
 *
 * Run: bun examples/ucx-echo.ts
 */

import assert from "node:assert/strict";
import { rpcConnect, serve } from "hotpath";

const ECHO = 1;

if (process.argv[2] === "serve") {
  const server = await serve("ucx://127.0.0.1:0", { [ECHO]: (h) => h.data });
  console.log(`listening ${server.url}`);
  for await (const _ of Bun.stdin.stream()) {
    // input is ignored: end of input is the signal to stop
  }
  server.close();
} else {
  const child = Bun.spawn(["bun", import.meta.path, "serve"], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  try {
    const url = await listeningUrl(child.stdout);
    const client = await rpcConnect(url);
    try {
      const sent = new TextEncoder().encode("hello over ucx");
      assert.equal(Buffer.compare(await client.request(ECHO, sent, { timeoutMs: 2000 }), sent), 0);
      const large = new Uint8Array(4 << 20).map((_, i) => i % 253);
      assert.equal(Buffer.compare(await client.request(ECHO, large, { timeoutMs: 10_000 }), large), 0);
      console.log(`${client.via.chosen} echoed ${sent.length} and ${large.length} bytes`);
    } finally {
      client.close();
    }
  } finally {
    await stop(child);
  }
}

/** The URL from the child's "listening <url>" line (UCX may print lines of its own first). */
async function listeningUrl(stdout: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of stdout) {
    text += new TextDecoder().decode(chunk);
    const line = /^listening (\S+)$/m.exec(text);
    if (line) return line[1]!;
  }
  throw new Error(`the server exited before it listened; it printed: ${text}`);
}

/** Closes the child's stdin (it closes its server and exits); kills it by pid after 5 s. */
async function stop(child: Bun.Subprocess<"pipe", "pipe", "inherit">): Promise<void> {
  child.stdin.end();
  const killer = setTimeout(() => child.kill(9), 5000);
  await child.exited;
  clearTimeout(killer);
}
