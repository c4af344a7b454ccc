/**
 * A CAS increment client for the kv concurrency test:
 *   bun test/kv/peers/cas-client.ts URL KEY COUNT
 * Does COUNT increments of the decimal counter at KEY (get, cas with its version, on mismatch
 * read again), then prints {"done":COUNT,"retries":N,"ms":T} and exits. Prints {"ready":true}
 * first, then waits for a line on stdin, so every client starts at once.
 */
import { kvConnect } from "../../../src/kv/index.ts";

const [url, key, countText] = process.argv.slice(2) as [string, string, string];
const count = Number(countText);
const kv = await kvConnect(url, { timeoutMs: 30_000 });
console.log(JSON.stringify({ ready: true }));
const reader = Bun.stdin.stream().getReader();
await reader.read(); // the go signal
const dec = new TextDecoder();
let retries = 0;
const t0 = performance.now();
let cur = await kv.get(key);
for (let done = 0; done < count; ) {
  const n = cur === null ? 0 : Number(dec.decode(cur.value));
  const r = await kv.cas(key, cur === null ? 0 : cur.version, String(n + 1));
  if (r.ok) {
    done++;
    // Our own write: the next increment starts from it without a read.
    cur = { value: new TextEncoder().encode(String(n + 1)), version: r.version };
  } else {
    retries++;
    cur = await kv.get(key);
  }
}
console.log(JSON.stringify({ done: count, retries, ms: Math.round(performance.now() - t0) }));
await kv.close();
process.exit(0);
