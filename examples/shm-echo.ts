/**
 * Echo over shm: a server process and a client process on one host.
 *
 * `shm://name` connects processes of one host through shared memory: the client maps a
 * session segment that the server maps too, and messages travel through rings in it (small
 * ones inline, larger ones in slab slots), never through a socket. This file is both ends: run
 * as a client (the default), it starts itself again as the server (`Bun.spawn`, with `serve` and
 * the name as arguments), waits for the server's "listening" line, sends a small and a 1 MiB
 * message, and then ends the server by closing its stdin (killing it by pid if it does not
 * exit). The kernel tells each side who the other is: `client.conn.peerCredentials` is the
 * server's pid, uid and gid, and a listener admits only its own uid unless `allow` says more.
 *
 * Run: bun examples/shm-echo.ts
 */

import assert from "node:assert/strict";
import { rpcConnect, serve } from "hotpath";

const ECHO = 1;

if (process.argv[2] === "serve") {
  // The server: answers until its parent closes stdin.
  const server = await serve(`shm://${process.argv[3]}`, { [ECHO]: (h) => h.data });
  console.log(`listening ${server.url}`);
  for await (const _ of Bun.stdin.stream()) {
    // input is ignored: end of input is the signal to stop
  }
  server.close();
} else {
  const name = `echo-example-${process.pid}`;
  const child = Bun.spawn(["bun", import.meta.path, "serve", name], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  try {
    const url = await listeningUrl(child.stdout);
    const client = await rpcConnect(url);
    try {
      const small = new TextEncoder().encode("hello over shared memory");
      assert.equal(Buffer.compare(await client.request(ECHO, small), small), 0);
      const large = new Uint8Array(1 << 20).map((_, i) => i % 251);
      assert.equal(Buffer.compare(await client.request(ECHO, large), large), 0);
      const peer = client.conn.peerCredentials;
      console.log(`${url}: server pid ${peer?.pid} (uid ${peer?.uid}) echoed ${small.length} and ${large.length} bytes`);
    } finally {
      client.close();
    }
  } finally {
    await stop(child);
  }
}

/** The URL from the child's "listening <url>" line. */
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
