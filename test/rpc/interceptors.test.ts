/**
 * Client and server interceptors (issue 16): the first in the array is the outermost on both
 * sides (a log of enter/exit across client and server); a short-circuit answers without next()
 * (nothing sent: the server records no call; or the handler never runs); error mapping (a
 * client interceptor turns a RemoteError into its own class, a server interceptor turns a
 * handler's throw into another name); metadata and data an interceptor passes on reach the
 * handler, response metadata it sets reaches the caller; interceptors without `unary` change
 * nothing; bad interceptor lists are UsageErrors; serverStreamChain() runs stream interceptors
 * in order around a stream handler. Over inproc, tcp and shm.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Client, RemoteError, UsageError, connect, registerError, rpcConnect, serve, type RequestHandle } from "../../src/index.ts";
import { Metadata } from "../../src/rpc/metadata.ts";
import { serverStreamChain, type ClientInterceptor, type ServerInterceptor } from "../../src/rpc/interceptors.ts";
import type { ServerStream } from "../../src/rpc/stream/types.ts";

const te = new TextEncoder();
const td = new TextDecoder();
let n = 0;
const urlFor = (kind: "inproc" | "tcp" | "shm"): string => (kind === "tcp" ? "tcp://127.0.0.1:0" : `${kind}://interceptors-${process.pid}-${n++}`);
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

class MappedClientError extends Error {
  override name = "MappedClientError";
}
class InterceptorMappedError extends Error {
  override name = "InterceptorMappedError";
}
registerError(InterceptorMappedError);

async function pair(kind: "inproc" | "tcp" | "shm", handlers: Record<number, (h: RequestHandle) => unknown>, server: ServerInterceptor[], client: ClientInterceptor[], reports: unknown[] = []) {
  const s = await serve(urlFor(kind), handlers as never, { interceptors: server, metrics: true, onError: (e, ctx) => reports.push([ctx.source, (e as Error).message]) });
  const c = await rpcConnect(s.url, { interceptors: client });
  closers.push(() => s.close(), () => c.close());
  return { s, c };
}

const logging = (log: string[], who: string): ClientInterceptor & ServerInterceptor => ({
  async unary(call: any, next: any) {
    log.push(`${who}>`);
    try {
      return await next(call);
    } finally {
      log.push(`<${who}`);
    }
  },
});

describe.each(["inproc", "tcp", "shm"] as const)("interceptors over %s", (kind) => {
  test("order: the first is the outermost, on the client and on the server", async () => {
    const log: string[] = [];
    const { c } = await pair(kind, { 1: (h) => (log.push("handler"), h.data.slice()) }, [logging(log, "s1") as ServerInterceptor, logging(log, "s2") as ServerInterceptor], [logging(log, "c1") as ClientInterceptor, logging(log, "c2") as ClientInterceptor]);
    expect(td.decode(await c.request(1, te.encode("ping")))).toBe("ping");
    expect(log).toEqual(["c1>", "c2>", "s1>", "s2>", "handler", "<s2", "<s1", "<c2", "<c1"]);
    // A failing call unwinds the same way.
    log.length = 0;
    const { c: c2 } = await pair(kind, { 1: () => { log.push("handler"); throw new RangeError("no"); } }, [logging(log, "s1") as ServerInterceptor], [logging(log, "c1") as ClientInterceptor]);
    expect(await c2.request(1).catch((e) => e.remoteName)).toBe("RangeError");
    expect(log).toEqual(["c1>", "s1>", "handler", "<s1", "<c1"]);
  });

  test("client short-circuit: next() never called, nothing sent (the server records no call)", async () => {
    let ran = 0;
    const md = Metadata.from({ cached: "yes" });
    const cache: ClientInterceptor = { unary: async (call) => ({ data: te.encode(`cached:${call.method}`), metadata: md }) };
    const { s, c } = await pair(kind, { 1: () => (ran++, te.encode("live")) }, [], [cache]);
    let got: Metadata | null = null;
    expect(td.decode(await c.request(1, te.encode("q"), { onResponseMetadata: (m) => (got = m) }))).toBe("cached:1");
    expect(got!.get("cached")).toBe("yes");
    const refuse: ClientInterceptor = { unary: () => { throw new MappedClientError("refused locally"); } };
    const c2 = await rpcConnect(s.url, { interceptors: [refuse] });
    closers.push(() => c2.close());
    expect(await c2.request(1).catch((e) => e)).toBeInstanceOf(MappedClientError);
    expect(ran).toBe(0);
    expect(s.server.metrics().methods).toEqual([]);
  });

  test("server short-circuit: the handler never runs; a throw is the error response, by name", async () => {
    let ran = 0;
    const reports: unknown[] = [];
    const gate: ServerInterceptor = {
      unary: async (call, next) => {
        const who = call.metadata.get("user");
        if (who === "cached") return te.encode("from the gate");
        if (who !== "alice") throw new InterceptorMappedError(`user ${who ?? "(none)"} may not call ${call.method}`);
        return next(call);
      },
    };
    const { c } = await pair(kind, { 1: () => (ran++, te.encode("handled")) }, [gate], [], reports);
    expect(td.decode(await c.request(1, te.encode("q"), { metadata: { user: "cached" } }))).toBe("from the gate");
    const e = await c.request(1, te.encode("q"), { metadata: { user: "mallory" } }).catch((x) => x);
    expect(e).toBeInstanceOf(InterceptorMappedError);
    expect(e).toBeInstanceOf(RemoteError);
    expect(e.message).toBe("user mallory may not call 1");
    expect(ran).toBe(0);
    expect(td.decode(await c.request(1, te.encode("q"), { metadata: { user: "alice" } }))).toBe("handled");
    expect(ran).toBe(1);
    expect(reports).toEqual([]); // an interceptor's own answer is not a failure to report
  });

  test("error mapping: the server turns a handler's throw into another name, the client turns a RemoteError into its class", async () => {
    const reports: unknown[] = [];
    const mapServer: ServerInterceptor = {
      unary: (call, next) => next(call).catch((e) => { throw new InterceptorMappedError(`mapped: ${(e as Error).message}`); }),
    };
    const { c, s } = await pair(kind, { 1: () => { throw new TypeError("handler broke"); } }, [mapServer], [], reports);
    const e = await c.request(1).catch((x) => x);
    expect(e).toBeInstanceOf(InterceptorMappedError);
    expect(e.message).toBe("mapped: handler broke");
    expect(reports).toEqual([["handler", "handler broke"]]); // the handler's failure, reported once
    const mapClient: ClientInterceptor = {
      unary: (call, next) => next(call).catch((err) => { throw err instanceof RemoteError ? new MappedClientError(`client saw ${err.remoteName}`) : err; }),
    };
    const c2 = await rpcConnect(s.url, { interceptors: [mapClient] });
    closers.push(() => c2.close());
    const e2 = await c2.request(1).catch((x) => x);
    expect(e2).toBeInstanceOf(MappedClientError);
    expect(e2.message).toBe("client saw InterceptorMappedError");
  });

  test("metadata and data passed on by interceptors reach the handler; response metadata comes back", async () => {
    const addTrace: ClientInterceptor = { unary: (call, next) => next({ ...call, metadata: Metadata.from([...call.metadata, ["trace-id", "t-1"]]) }) };
    const rewrite: ServerInterceptor = {
      unary: async (call, next) => {
        call.setResponseMetadata({ "seen-trace": call.metadata.get("trace-id") ?? "none" });
        const out = await next({ ...call, data: te.encode(`<${td.decode(call.data)}>`), metadata: Metadata.from([...call.metadata, ["role", "admin"]]) });
        return te.encode(`${td.decode(out)}!`);
      },
    };
    const seen: string[] = [];
    const { c } = await pair(kind, {
      1: (h) => {
        seen.push(`${h.metadata.get("auth")}|${h.metadata.get("trace-id")}|${h.metadata.get("role")}`);
        return h.data.slice();
      },
    }, [rewrite], [addTrace]);
    let got: Metadata | null = null;
    const out = await c.request(1, te.encode("x"), { metadata: { auth: "k" }, onResponseMetadata: (m) => (got = m) });
    expect(td.decode(out)).toBe("<x>!");
    expect(seen).toEqual(["k|t-1|admin"]);
    expect(got!.get("seen-trace")).toBe("t-1");
  });
});

describe("response metadata through client interceptors", () => {
  test("an error response's metadata reaches the caller's onResponseMetadata once; a success's the result's", async () => {
    const pass: ClientInterceptor = { unary: (call, next) => next(call) };
    const { c } = await pair("inproc", {
      1: (h) => { h.setResponseMetadata({ why: "denied" }); throw new RangeError("no"); },
      2: (h) => (h.setResponseMetadata({ ok: "yes" }), undefined),
    }, [], [pass, pass]);
    const seen: string[] = [];
    const e = await c.request(1, new Uint8Array(0), { onResponseMetadata: (md) => seen.push(md.get("why") ?? "-") }).catch((x) => x);
    expect(e.remoteName).toBe("RangeError");
    await c.request(2, new Uint8Array(0), { onResponseMetadata: (md) => seen.push(md.get("ok") ?? "-") });
    expect(seen).toEqual(["denied", "yes"]);
  });
});

describe("interceptor lists", () => {
  test("interceptors without unary change nothing; a handler's bad return is a HandlerReturnError through the chain", async () => {
    const reports: unknown[] = [];
    const streamOnly: ServerInterceptor = { stream: (s, next) => next(s) };
    const { c } = await pair("inproc", { 1: (h) => h.data.slice(), 2: () => 42 }, [streamOnly], [{ stream: (call, next) => next(call) }]);
    expect(td.decode(await c.request(1, te.encode("same")))).toBe("same");
    const { c: c2 } = await pair("inproc", { 2: () => 42 }, [logging([], "s") as ServerInterceptor], [], reports);
    expect(await c2.request(2).catch((e) => e.remoteName)).toBe("HandlerReturnError");
    expect(reports.length).toBe(1);
    expect((reports[0] as unknown[])[0]).toBe("return");
  });

  test("a bad list is a UsageError before anything listens", async () => {
    for (const bad of [{}, [null], [{ unary: 1 }], [{ stream: "x" }]]) {
      await expect(serve(urlFor("inproc"), { 1: () => undefined }, { interceptors: bad as never })).rejects.toBeInstanceOf(UsageError);
    }
  });

  test("a bad client list is a UsageError when the client is made", async () => {
    const s = await serve(urlFor("inproc"), { 1: () => undefined });
    closers.push(() => s.close());
    for (const bad of [{ length: 1 }, [7], [{ unary: "x" }]]) {
      const conn = await connect(s.url);
      closers.push(() => conn.close());
      expect(() => new Client(conn, { interceptors: bad as never })).toThrow(UsageError);
    }
  });

  test("a server interceptor that passes next() something other than a call fails the call with a UsageError by name", async () => {
    const broken: ServerInterceptor = { unary: (_call, next) => next({ nope: true } as never) };
    let ran = 0;
    const { c } = await pair("inproc", { 1: () => (ran++, undefined) }, [broken], []);
    expect(await c.request(1).catch((e) => e.remoteName)).toBe("UsageError");
    expect(ran).toBe(0);
  });

  test("a client interceptor that resolves with something other than a result: the caller gets a UsageError", async () => {
    const s = await serve(urlFor("inproc"), { 1: () => undefined });
    const bad = await rpcConnect(s.url, { interceptors: [{ unary: async () => "nope" as never }] });
    closers.push(() => s.close(), () => bad.close());
    expect(await bad.request(1).catch((e) => e)).toBeInstanceOf(UsageError);
  });
});

describe("serverStreamChain", () => {
  test("runs stream interceptors in order around the handler; a throw anywhere rejects", async () => {
    const log: string[] = [];
    const wrap = (who: string): ServerInterceptor => ({
      async stream(s, next) {
        log.push(`${who}>`);
        try {
          await next(s);
        } finally {
          log.push(`<${who}`);
        }
      },
    });
    const fake = { method: 7 } as unknown as ServerStream;
    const run = serverStreamChain([wrap("a"), { unary: (c, next) => next(c) }, wrap("b")], async (s) => {
      log.push(`handler ${s.method}`);
    });
    await run(fake);
    expect(log).toEqual(["a>", "b>", "handler 7", "<b", "<a"]);
    log.length = 0;
    const failing = serverStreamChain([wrap("a")], () => { throw new RangeError("sync throw"); });
    expect(await failing(fake).catch((e) => e.message)).toBe("sync throw");
    expect(log).toEqual(["a>", "<a"]);
    const refuse = serverStreamChain([{ stream: () => { throw new InterceptorMappedError("no stream"); } }], async () => { log.push("ran"); });
    expect(await refuse(fake).catch((e) => e.name)).toBe("InterceptorMappedError");
    expect(log).toEqual(["a>", "<a"]);
    const none = serverStreamChain([], async (s) => { log.push(`bare ${s.method}`); });
    await none(fake);
    expect(log.at(-1)).toBe("bare 7");
  });
});
