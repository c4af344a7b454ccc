/**
 * One-sided memory access over ucx: put, get and compare-and-swap on memory of another process.
 *
 * With RMA, one side registers memory (`conn.registerMemory(lenBytes)`) and sends its
 * `descriptor()` to the peer over an ordinary RPC call; the peer attaches to it
 * (`conn.attachRegion(descriptor)`) and then reads (`get`), writes (`put`) and swaps 64-bit words
 * (`cas`) in it without running any code on the owner's side. Every access is checked against
 * the region's length first (a UsageError, before UCX sees it). RMA is off unless both sides
 * ask for it with `ucx: { rma: true }`, because over UCX's tcp and shared-memory transports a
 * peer of an RMA context can reach all of the process's memory, not only registered regions
 * (see the README's Security section): use it only between processes that trust each other.
 * This file is both ends: it starts itself again as the owner of the memory (`serve`), then
 * ends it by closing its stdin (killed by pid if it does not exit). A region is deregistered
 * when its connection closes.
 *
 * Run: bun examples/ucx-rma.ts
 */

import assert from "node:assert/strict";
import { rpcConnect, serve, UsageError, type Connection, type LocalRegion, type UcxConnection } from "hotpath";

/** Returns the descriptor of this connection's region (registered on first use). */
const REGION = 1;
/** Returns the region's first `n` bytes (`n`: a u32 request) as the owner sees them. */
const SHOW = 2;
const REGION_BYTES = 4096;
/** A 64-bit word that the client compare-and-swaps (8-byte aligned). */
const LOCK_OFFSET = 1024;

if (process.argv[2] === "serve") {
  const regions = new WeakMap<Connection, LocalRegion>();
  const regionOf = (conn: Connection) => {
    let region = regions.get(conn);
    if (region === undefined) {
      region = (conn as UcxConnection).registerMemory(REGION_BYTES);
      region.view.fill(0);
      regions.set(conn, region);
    }
    return region;
  };
  const server = await serve(
    "ucx://127.0.0.1:0",
    {
      [REGION]: (h) => regionOf(h.session.conn).descriptor(),
      [SHOW]: (h) => {
        const n = new DataView(h.data.buffer, h.data.byteOffset, 4).getUint32(0, true);
        return regionOf(h.session.conn).view.slice(0, n);
      },
    },
    { ucx: { rma: true } },
  );
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
    const client = await rpcConnect(await listeningUrl(child.stdout), { ucx: { rma: true } });
    try {
      const conn = client.conn as UcxConnection;
      assert.equal(conn.caps.rma, true);
      const remote = conn.attachRegion(await client.request(REGION));

      // put, then get the same bytes back: the owner's CPU takes no part.
      const text = new TextEncoder().encode("written one-sided");
      await remote.put(0, text);
      assert.equal(new TextDecoder().decode(await remote.get(0, text.length)), "written one-sided");
      // The owner sees them in its own memory.
      const n = new Uint8Array(4);
      new DataView(n.buffer).setUint32(0, text.length, true);
      assert.equal(new TextDecoder().decode(await client.request(SHOW, n)), "written one-sided");

      // compare-and-swap: a lock word taken once; a second take sees who holds it.
      const first = await remote.cas(LOCK_OFFSET, 0n, 7n);
      const second = await remote.cas(LOCK_OFFSET, 0n, 9n);
      assert.deepEqual([first, second], [{ swapped: true, value: 0n }, { swapped: false, value: 7n }]);

      // Outside the region: refused before it reaches UCX.
      const outside = await remote.get(REGION_BYTES - 4, 8).catch((e: unknown) => e);
      assert.ok(outside instanceof UsageError);

      console.log(`${client.via.chosen}: put, then got back "${new TextDecoder().decode(text)}"`);
      console.log(`cas took the lock word (it held ${first.value}); a second cas found it held by ${second.value}`);
      console.log(`out of bounds: ${outside.message}`);
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
