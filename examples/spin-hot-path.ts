/**
 * The hot path in spin mode: call() + poll() with no Promise per call, and the poll loop that
 * spin mode needs.
 *
 * A client in `wait: { mode: "spin" }` (shm, inproc and ucx offer it; `blocking` behaves the
 * same way here) never hears from the event loop: its connection moves only when this thread
 * calls `client.poll()` (which delivers responses, invoking `onResponse` inline) or
 * `client.wait(ms)` (which spins until input may be there, for at most `ms`). So the program
 * runs a loop of both, and that loop holds the thread: timers, sockets and anything else on
 * this thread wait until it yields, so the server lives in another process (this file started
 * again with `serve`) and deadlines are checked in the loop itself. Part 1 keeps 16 calls in
 * flight through `client.call(method, data, userData)`, whose `userData` comes back in
 * `onResponse`; part 2 shows that `await client.request()` also needs the loop in this mode.
 * Spinning wants a core of its own: on a busy machine use `blocking` (spin, then park).
 *
 * Run: bun examples/spin-hot-path.ts
 */

import assert from "node:assert/strict";
import { rpcConnect, serve, SEND_CLOSED, SEND_OK, type RpcClient } from "hotpath";

const ECHO = 1;
const CALLS = 50_000;
const IN_FLIGHT = 16;
/** The whole run may take this long; a hang ends with an error instead. */
const DEADLINE_MS = 20_000;

if (process.argv[2] === "serve") {
  // The server: the default (adaptive) wait mode, answering from its event loop.
  const server = await serve(`shm://${process.argv[3]}`, { [ECHO]: (h) => h.data });
  console.log(`listening ${server.url}`);
  for await (const _ of Bun.stdin.stream()) {
    // input is ignored: end of input is the signal to stop
  }
  server.close();
} else {
  const child = Bun.spawn(["bun", import.meta.path, "serve", `spin-example-${process.pid}`], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  try {
    const client = await rpcConnect(await listeningUrl(child.stdout), { wait: { mode: "spin" } });
    try {
      await hotPath(client);
      await requestsInSpinMode(client);
    } finally {
      client.close();
    }
  } finally {
    await stop(child);
  }
}

/** Part 1: CALLS echo calls, IN_FLIGHT at a time, through call() / poll() / onResponse. */
async function hotPath(client: RpcClient<{}>): Promise<void> {
  const deadline = performance.now() + DEADLINE_MS;
  let completed = 0;
  let failure: Error | null = null;
  // Runs inside poll(); `data` is a view valid only during this call (copy what you keep).
  client.onResponse = (callNo: number, data, error) => {
    completed++;
    if (error !== null) failure ??= error;
    else if (data.length !== 32 || data[0] !== (callNo & 0xff)) failure ??= new Error(`call ${callNo}: wrong reply`);
  };
  const payload = new Uint8Array(32);
  let sent = 0;
  const t0 = performance.now();
  while (completed < CALLS && failure === null) {
    // Fill the window; SEND_FULL just means "poll, then try again".
    while (sent < CALLS && sent - completed < IN_FLIGHT) {
      payload[0] = sent & 0xff; // call() copies the data before it returns: reuse the buffer
      const status = client.call(ECHO, payload, sent);
      if (status === SEND_CLOSED) throw new Error("the connection closed");
      if (status !== SEND_OK) break;
      sent++;
    }
    if (client.poll() === 0) await client.wait(1);
    if (performance.now() > deadline) throw new Error(`only ${completed} of ${CALLS} calls completed in ${DEADLINE_MS} ms`);
  }
  if (failure !== null) throw failure;
  const us = ((performance.now() - t0) * 1000) / CALLS;
  console.log(`hot path, spin mode: ${CALLS} calls, ${IN_FLIGHT} in flight, ${us.toFixed(2)} µs per call`);
}

/** Part 2: request() in spin mode settles only while the poll loop runs. */
async function requestsInSpinMode(client: RpcClient<{}>): Promise<void> {
  const sent = new TextEncoder().encode("request() in spin mode");
  const reply = await untilSettled(client, client.request(ECHO, sent));
  assert.equal(new TextDecoder().decode(reply), "request() in spin mode");
  console.log(`request(): "${new TextDecoder().decode(reply)}"`);
}

/**
 * Drives a spin- or blocking-mode client until `promise` settles. request()'s own `timeoutMs`
 * is a timer, which does not fire while this loop holds the thread, so the deadline is checked
 * here.
 */
async function untilSettled<T>(client: RpcClient<{}>, promise: Promise<T>, timeoutMs = 5000): Promise<T> {
  let settled = false;
  const watched = promise.finally(() => (settled = true));
  const deadline = performance.now() + timeoutMs;
  while (!settled) {
    client.poll(); // delivers the response; the promise's reactions run at the next await
    await null;
    if (settled) break;
    if (performance.now() > deadline) throw new Error(`no response within ${timeoutMs} ms`);
    await client.wait(1); // spins until input may be there (at most 1 ms)
  }
  return watched;
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
