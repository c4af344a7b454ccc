/**
 * An HTTP front over the key-value store: GET, PUT and DELETE on `/kv/:key`.
 *
 * The store runs in its own process (`kvServe`, here on shm; add a `tcp://` URL to `listen` and
 * fronts on other hosts share it), so fronts can restart, and several can run, without losing the
 * data. The front keeps one `kvConnect` client for all its requests, made once at start; it
 * reconnects on its own. A value's version is its ETag: `PUT` with `If-Match` is a
 * compare-and-swap (`kv.cas`), answered 412 when another write came first.
 *
 * This file is both processes. Run as the front (the default), it starts itself again as the
 * store (`serve NAME`), reads its "listening" line, serves HTTP on a free port, sends its own
 * requests with fetch and checks every answer, then ends the store by closing its stdin
 * (killing it by pid if it does not exit).
 *
 * Run: bun examples/http-kv.ts
 */

import assert from "node:assert/strict";
import { kvConnect, KvFullError, KvKeyError, KvValueTooLargeError, kvServe, UsageError } from "hotpath";

if (process.argv[2] === "serve") {
  // The store: serves until its parent closes stdin.
  await using store = await kvServe({ listen: [`shm://${process.argv[3]}`], memoryBytes: 16 << 20 });
  console.log(`listening ${store.urls[0]}`);
  for await (const _ of Bun.stdin.stream()) {
    // input is ignored: end of input is the signal to stop
  }
} else {
  const child = Bun.spawn(["bun", import.meta.path, "serve", `http-kv-${process.pid}`], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  try {
    await using kv = await kvConnect([await listeningUrl(child.stdout)], { timeoutMs: 1000 });
    const etag = (version: number) => `"${version}"`;
    const http = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      routes: {
        "/kv/:key": {
          GET: async (req) => {
            const got = await kv.get(req.params.key);
            return got === null ? new Response("not found", { status: 404 }) : new Response(got.value, { headers: { etag: etag(got.version) } });
          },
          PUT: async (req) => {
            const value = new Uint8Array(await req.arrayBuffer());
            const ifMatch = req.headers.get("if-match");
            if (ifMatch === null) return new Response(null, { status: 204, headers: { etag: etag(await kv.put(req.params.key, value)) } });
            // An ETag is a version ≥ 1 in quotes; anything else matches no version (cas with 0 would mean "only if absent").
            const expected = /^"[1-9][0-9]*"$/.test(ifMatch) ? Number(ifMatch.slice(1, -1)) : NaN;
            if (!Number.isSafeInteger(expected)) return new Response("If-Match is not a version this store gave", { status: 412 });
            const { ok, version } = await kv.cas(req.params.key, expected, value);
            return new Response(null, { status: ok ? 204 : 412, headers: { etag: etag(version) } });
          },
          DELETE: async (req) => new Response(null, { status: (await kv.del(req.params.key)) ? 204 : 404 }),
        },
      },
      // What a route throws: the caller's fault (a key or value the store refuses, an If-Match that is no version), or the store's.
      error: (e) => {
        if (e instanceof KvKeyError || e instanceof KvValueTooLargeError || e instanceof UsageError) return new Response(e.message, { status: 400 });
        return new Response(`store: ${e.message}`, { status: e instanceof KvFullError ? 507 : 503 }); // e.g. KvUnavailableError, TimeoutError
      },
    });
    try {
      const at = (key: string) => `${http.url}kv/${key}`;
      // 64 writes at once, then 64 reads, all over the one client.
      const keys = Array.from({ length: 64 }, (_, i) => `user:${i}`);
      await Promise.all(keys.map((k) => fetch(at(k), { method: "PUT", body: `name of ${k}` }).then((r) => assert.equal(r.status, 204))));
      const texts = await Promise.all(keys.map((k) => fetch(at(k)).then((r) => r.text())));
      texts.forEach((t, i) => assert.equal(t, `name of ${keys[i]}`));

      // Compare-and-swap by ETag: the first writer with the current version wins.
      const tag = (await fetch(at("user:1"))).headers.get("etag")!;
      const first = await fetch(at("user:1"), { method: "PUT", body: "ada", headers: { "if-match": tag } });
      const second = await fetch(at("user:1"), { method: "PUT", body: "eve", headers: { "if-match": tag } });
      assert.deepEqual([first.status, second.status], [204, 412]);
      assert.equal(await (await fetch(at("user:1"))).text(), "ada");
      // An If-Match that is no version this store gave matches nothing, not even an absent key.
      assert.equal((await fetch(at("user:new"), { method: "PUT", body: "x", headers: { "if-match": '""' } })).status, 412);
      assert.equal((await fetch(at("user:new"))).status, 404);

      assert.equal((await fetch(at("user:2"), { method: "DELETE" })).status, 204);
      assert.equal((await fetch(at("user:2"))).status, 404);
      assert.equal((await fetch(at("k".repeat(2000)))).status, 400);
      console.log(`${http.url} over ${kv.urls[0]}: 64 PUTs and GETs, a conditional PUT won and one lost (412), a DELETE, 404 and 400 answers`);
    } finally {
      http.stop(true);
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
  throw new Error(`the store exited before it listened; it printed: ${text}`);
}

/** Closes the child's stdin (it closes the store and exits); kills it by pid after 5 s. */
async function stop(child: Bun.Subprocess<"pipe", "pipe", "inherit">): Promise<void> {
  child.stdin.end();
  const killer = setTimeout(() => child.kill(9), 5000);
  await child.exited;
  clearTimeout(killer);
}
