/**
 * Server-side failures are never invisible (issue 10): `onError(err, ctx)` sees every handler
 * exception, bad return, onRequest failure, session that ends with an error and peer the
 * listener refuses, each with its own `ctx.source`. Without onError, each is one line on
 * stderr, rate-limited: a child process whose handler throws 10,000 times prints a bounded
 * number of lines that name the error, plus counts of the rest that add up to 10,000.
 */

import { afterEach, describe, expect, test } from "bun:test";
import {
  AuthError,
  ProtocolError,
  RemoteError,
  Server,
  connect,
  listen,
  rpcConnect,
  serve,
  wire,
  type ServerErrorContext,
} from "../../src/index.ts";
import { REPORT_LINES_PER_WINDOW, REPORT_WINDOW_MS, RateLimitedLog } from "../../src/rpc/report.ts";

const TOKEN = "a-token-of-more-than-16-bytes";
const FLOOD = 10_000;
const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

/** Resolves once `cond()` holds; a watchdog fails the test instead of a hang. */
async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

describe("onError sees every failure, with its source", () => {
  test("handler throws and rejections, bad returns: each reported once with method and session", async () => {
    const reports: Array<{ err: unknown; ctx: ServerErrorContext }> = [];
    const s = await serve(
      "tcp://127.0.0.1:0",
      {
        1: () => {
          throw new RangeError("sync throw");
        },
        2: async () => {
          throw "a string";
        },
        3: () => 42 as never,
        4: (h) => h.data,
      },
      { onError: (err, ctx) => void reports.push({ err, ctx }) },
    );
    open.push(s);
    const c = await rpcConnect(s.url);
    open.push(c);
    for (const m of [1, 2, 3]) await expect(c.request(m)).rejects.toBeInstanceOf(RemoteError);
    expect(reports.map((r) => [r.ctx.source, r.ctx.method])).toEqual([
      ["handler", 1],
      ["handler", 2],
      ["return", 3],
    ]);
    expect(reports[0]!.err).toBeInstanceOf(RangeError);
    expect(reports[1]!.err).toBe("a string");
    for (const r of reports) expect(r.ctx.session).toBe([...s.server.sessions][0]!);
    // A clean close by the client is not a failure.
    c.close();
    await until(() => s.server.sessions.size === 0, "the session to end");
    expect(reports.length).toBe(3);
  });

  test(`${FLOOD} handler throws: ${FLOOD} reports`, async () => {
    let handler = 0;
    const s = await serve("tcp://127.0.0.1:0", { 1: () => {
      throw new Error("again");
    } }, { onError: (_e, ctx) => void (ctx.source === "handler" && handler++) });
    open.push(s);
    const c = await rpcConnect(s.url);
    open.push(c);
    const results = await Promise.all(Array.from({ length: FLOOD }, () => c.request(1).catch((e) => e)));
    expect(results.every((e) => e instanceof RemoteError)).toBe(true);
    expect(handler).toBe(FLOOD);
  });

  test("onRequest throwing: source onRequest", async () => {
    const reports: ServerErrorContext[] = [];
    const l = await listen("tcp://127.0.0.1:0");
    const server = new Server({
      onRequest: () => {
        throw new Error("router broke");
      },
      onError: (_e, ctx) => void reports.push(ctx),
    });
    server.attach(l);
    open.push(server);
    const c = await rpcConnect(l.url);
    open.push(c);
    await expect(c.request(7)).rejects.toBeInstanceOf(RemoteError);
    expect(reports.map((r) => [r.source, r.method])).toEqual([["onRequest", 7]]);
  });

  test("a session aborted by a malformed frame: source session, the ProtocolError, method null", async () => {
    const reports: Array<{ err: unknown; ctx: ServerErrorContext }> = [];
    const closes: unknown[] = [];
    const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data }, {
      onError: (err, ctx) => void reports.push({ err, ctx }),
      onSessionClose: (_s, e) => void closes.push(e),
    });
    open.push(s);
    const conn = await connect(s.url);
    open.push(conn);
    conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    const head = new Uint8Array(wire.WIRE_HEADER_BYTES);
    wire.writeWireHeader(head, wire.KIND_REQUEST, 1, 0, 1, 0, 0);
    head[wire.WIRE_VERSION_OFFSET] = 99; // a version nobody speaks
    conn.trySend(head, new Uint8Array(0));
    await until(() => closes.length === 1, "the session to close");
    expect(reports.length).toBe(1);
    const { err, ctx } = reports[0]!;
    expect(err).toBeInstanceOf(ProtocolError);
    expect(ctx.source).toBe("session");
    expect(ctx.method).toBeNull();
    expect(ctx.session).not.toBeNull();
    expect((err as Error).message).toContain("wire version 99");
  });

  test("a peer the listener refuses: source refused, with the reason and the listener", async () => {
    const reports: Array<{ err: unknown; ctx: ServerErrorContext }> = [];
    const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data }, { auth: { token: TOKEN }, onError: (err, ctx) => void reports.push({ err, ctx }) });
    open.push(s);
    await expect(rpcConnect(s.url, { auth: { token: TOKEN + "?" } })).rejects.toBeInstanceOf(AuthError);
    await until(() => reports.length === 1, "the refusal to be reported");
    const { err, ctx } = reports[0]!;
    expect(err).toBeInstanceOf(AuthError);
    expect(ctx.source).toBe("refused");
    if (ctx.source !== "refused") throw new Error("unreachable");
    expect(ctx.reason).toBe("auth");
    expect(ctx.listener).toBe(s.listener);
    expect(ctx.session).toBeNull();
  });

  test("an onError that throws is printed, and the server keeps serving", async () => {
    const s = await serve("tcp://127.0.0.1:0", { 1: () => {
      throw new Error("x");
    }, 2: (h) => h.data }, { onError: () => {
      throw new Error("the reporter broke");
    } });
    open.push(s);
    const c = await rpcConnect(s.url);
    open.push(c);
    await expect(c.request(1)).rejects.toBeInstanceOf(RemoteError);
    expect(await c.request(2, new Uint8Array([3]))).toEqual(new Uint8Array([3]));
  });

  test("a handler table that is refused leaves nothing listening", async () => {
    const name = `onerror-${process.pid}-${Math.random().toString(36).slice(2)}`;
    await expect(serve(`shm://${name}`, { 1: "not a function" } as never)).rejects.toThrow("not a function");
    // The name is free: the refused serve() never listened on it.
    const l = await listen(`shm://${name}`);
    l.close(true);
  });
});

describe("the default report: one line per failure, rate-limited", () => {
  test(`a child server whose handler throws ${FLOOD} times prints a bounded number of lines naming the error, and counts the rest`, async () => {
    const proc = Bun.spawn(["bun", `${import.meta.dir}/throwing-server.ts`], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const watchdog = setTimeout(() => proc.kill(9), 50_000);
    try {
      const stderr = new Response(proc.stderr).text();
      const reader = proc.stdout.getReader();
      let out = "";
      while (!out.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the child exited before it was ready");
        out += new TextDecoder().decode(value);
      }
      const url = JSON.parse(out.slice(0, out.indexOf("\n"))).url;
      const c = await rpcConnect(url);
      const t0 = performance.now();
      for (let sent = 0; sent < FLOOD; sent += 500) {
        const batch = await Promise.all(Array.from({ length: 500 }, () => c.request(1).catch((e) => e)));
        expect(batch.every((e) => e instanceof RemoteError && e.remoteName === "TypeError")).toBe(true);
      }
      const elapsedMs = performance.now() - t0;
      expect(await c.request(2, new Uint8Array([1]))).toEqual(new Uint8Array([1]));
      c.close();
      proc.stdin.end(); // the child closes its server, which prints the last count, and exits
      expect(await proc.exited).toBe(0);
      const lines = (await stderr).split("\n").filter((l) => l !== "");
      const summaries = lines.filter((l) => l.includes("not printed"));
      const printed = lines.filter((l) => !summaries.includes(l));
      for (const l of printed) {
        expect(l).toMatch(/^hotpath server: method 1 from .+: the handler threw TypeError: bad input \d+$/);
      }
      // Every failure was printed or counted, exactly once.
      const counted = summaries.reduce((n, l) => n + Number(/(\d+) more failures? not printed/.exec(l)![1]), 0);
      expect(printed.length + counted).toBe(FLOOD);
      expect(summaries.at(-1)).toContain("the last: method 1 from ");
      expect(summaries.at(-1)).toContain("TypeError: bad input");
      // Bounded: at most the limit per window the flood spanned, and one summary per window.
      const windows = Math.ceil(elapsedMs / REPORT_WINDOW_MS) + 1;
      expect(printed.length).toBeLessThanOrEqual(REPORT_LINES_PER_WINDOW * windows);
      expect(summaries.length).toBeLessThanOrEqual(windows);
      expect(printed.length).toBeGreaterThanOrEqual(REPORT_LINES_PER_WINDOW);
    } finally {
      clearTimeout(watchdog);
      if (proc.exitCode === null) proc.kill(9);
    }
  }, 60_000);

  test("the summary comes when the window ends, without another failure", async () => {
    const lines: string[] = [];
    const log = new RateLimitedLog((l) => void lines.push(l));
    for (let i = 0; i < REPORT_LINES_PER_WINDOW + 5; i++) log.line(`hotpath server: failure ${i}`);
    expect(lines.length).toBe(REPORT_LINES_PER_WINDOW);
    await until(() => lines.length === REPORT_LINES_PER_WINDOW + 1, "the summary", REPORT_WINDOW_MS * 5);
    expect(lines.at(-1)).toContain("5 more failures not printed");
    expect(lines.at(-1)).toContain(`the last: failure ${REPORT_LINES_PER_WINDOW + 4}`);
    log.flush();
    expect(lines.length).toBe(REPORT_LINES_PER_WINDOW + 1);
  });
});
