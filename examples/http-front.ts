/**
 * An HTTP front that calls a typed backend over hotpath on every request.
 *
 * The pattern for a `Bun.serve` handler that needs another service: one `ConnectionPool` for the
 * process and one pooled client per backend (`pool.client(url, { service })`), shared by every
 * request; it connects on first use and reconnects on its own. Each call carries the HTTP
 * request's limits, `{ signal: req.signal, timeoutMs }`: a client that hangs up cancels its
 * backend call (the backend's handler sees `h.signal` abort and stops), and a backend that is too
 * slow answers 504 instead of holding the request. A backend error class registered with
 * `registerError` arrives as itself (here a 404).
 *
 * This file is both processes. Run as the front (the default), it starts itself again as the
 * backend (`serve URL`), reads its "listening" line, serves HTTP on a free port, sends its own
 * requests with fetch and checks every answer, then ends the backend by closing its stdin
 * (killing it by pid if it does not exit). The backend's transport is the first argument (or
 * `BACKEND` in the environment): `shm` (the default), `tcp`, `ucx` (needs libucp), or a URL to
 * listen on; only the URL changes.
 *
 * Run: bun examples/http-front.ts [shm|tcp|ucx|URL]
 */

import assert from "node:assert/strict";
import { CancelledError, ConnectionPool, defineService, implement, msgpack, registerError, serve, struct, TimeoutError, UsageError } from "hotpath";

const Shop = defineService({
  /** The price of `qty` of one item: a fixed layout in, a msgpack object out. */
  quote: { id: 1, request: struct({ item: "u32", qty: "u16" }), response: msgpack<{ item: number; qty: number; cents: number }>() },
  /** A report that takes the backend 5 s to build: longer than a front waits. */
  report: { id: 2, response: msgpack<{ lines: number }>() },
});
class NoSuchItemError extends Error {
  override name = "NoSuchItemError";
}
registerError(NoSuchItemError); // on both ends: the front's calls reject with a NoSuchItemError
const ITEMS = 1000;
/** How long an HTTP request waits for the backend (the first calls also wait for the connection). */
const DEADLINE_MS = 1000;
const priceOf = (item: number) => 100 + (item % 7) * 25;

if (process.argv[2] === "serve") {
  // The backend: answers until its parent closes stdin.
  const server = await serve(
    process.argv[3]!,
    implement(Shop, {
      quote: ({ item, qty }) => {
        if (item >= ITEMS) throw new NoSuchItemError(`no item ${item}`);
        return { item, qty, cents: qty * priceOf(item) };
      },
      report: async (_, h) => {
        await new Promise<void>((done) => {
          const timer = setTimeout(done, 5000);
          h.signal.addEventListener("abort", () => (clearTimeout(timer), done())); // the caller gave up: stop
        });
        return { lines: 42 };
      },
    }),
    // An unknown item is an answer, not a failure to log.
    { onError: (e, ctx) => e instanceof NoSuchItemError || console.error(`backend: ${ctx.source} failure: ${e}`) },
  );
  console.log(`listening ${server.url}`);
  for await (const _ of Bun.stdin.stream()) {
    // input is ignored: end of input is the signal to stop
  }
  server.close();
} else {
  const choice = process.argv[2] ?? process.env.BACKEND ?? "shm";
  const LISTEN: Record<string, string> = { shm: `shm://http-front-${process.pid}`, tcp: "tcp://127.0.0.1:0", ucx: "ucx://127.0.0.1:0" };
  const listenUrl = choice.includes("://") ? choice : LISTEN[choice];
  if (listenUrl === undefined) throw new Error(`backend "${choice}": give shm, tcp, ucx or a URL to listen on`);
  const backend = Bun.spawn(["bun", import.meta.path, "serve", listenUrl], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  try {
    const url = await listeningUrl(backend.stdout);
    await using pool = new ConnectionPool();
    const shop = pool.client(url, { service: Shop });
    let cancelled = 0;

    /**
     * A failed backend call as an HTTP answer. The routes catch their own failures: Bun.serve's
     * `error` option is not called for a request whose client is gone, so it would never count a
     * cancel.
     */
    const failure = (e: unknown): Response => {
      if (e instanceof NoSuchItemError) return new Response(e.message, { status: 404 });
      if (e instanceof UsageError) return new Response(e.message, { status: 400 }); // e.g. a qty that is no u16
      if (e instanceof TimeoutError) return new Response("the backend is slow", { status: 504 });
      if (e instanceof CancelledError) cancelled++; // the client hung up: nobody reads this answer
      return new Response("backend unavailable", { status: 502 });
    };
    const http = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      routes: {
        "/quote/:item": (req) => {
          const qty = Number(new URL(req.url).searchParams.get("qty") ?? 1);
          const quote = shop.svc.quote({ item: Number(req.params.item), qty }, { signal: req.signal, timeoutMs: DEADLINE_MS });
          return quote.then((q) => Response.json(q), failure);
        },
        "/report": (req) => shop.svc.report(new Uint8Array(0), { signal: req.signal, timeoutMs: DEADLINE_MS }).then((r) => Response.json(r), failure),
      },
    });
    try {
      // 64 requests at once, all over the one pooled client (one connection).
      const answers = await Promise.all(Array.from({ length: 64 }, (_, i) => fetch(`${http.url}quote/${i}?qty=3`).then((r) => r.json())));
      answers.forEach((a, i) => assert.deepEqual(a, { item: i, qty: 3, cents: 3 * priceOf(i) }));
      assert.equal(pool.stats()[0]!.connections, 1);

      const missing = await fetch(`${http.url}quote/${ITEMS}`);
      assert.equal(missing.status, 404);
      const bad = await fetch(`${http.url}quote/1?qty=70000`);
      assert.equal(bad.status, 400);
      const slow = await fetch(`${http.url}report`);
      assert.equal(slow.status, 504);

      // A client that hangs up while its backend call is in flight cancels that call.
      const hangUp = new AbortController();
      const gone = fetch(`${http.url}report`, { signal: hangUp.signal }).catch((e: Error) => e.name);
      await until(() => pool.stats()[0]!.inFlight === 1);
      hangUp.abort();
      assert.equal(await gone, "AbortError");
      await until(() => cancelled === 1 && pool.stats()[0]!.inFlight === 0);

      console.log(`${http.url} over ${url}: 64 quotes on 1 connection; 404, 400 and 504 answers; a hang-up cancelled its backend call`);
    } finally {
      http.stop(true);
    }
  } finally {
    await stop(backend);
  }
}

/** Resolves once `cond()` holds; throws after 5 s. */
async function until(cond: () => boolean): Promise<void> {
  for (const end = Date.now() + 5000; !cond(); await Bun.sleep(5)) if (Date.now() > end) throw new Error(`still waiting for ${cond}`);
}

/** The URL from the child's "listening <url>" line. */
async function listeningUrl(stdout: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of stdout) {
    text += new TextDecoder().decode(chunk);
    const line = /^listening (\S+)$/m.exec(text);
    if (line) return line[1]!;
  }
  throw new Error(`the backend exited before it listened; it printed: ${text}`);
}

/** Closes the child's stdin (it closes its server and exits); kills it by pid after 5 s. */
async function stop(child: Bun.Subprocess<"pipe", "pipe", "inherit">): Promise<void> {
  child.stdin.end();
  const killer = setTimeout(() => child.kill(9), 5000);
  await child.exited;
  clearTimeout(killer);
}
