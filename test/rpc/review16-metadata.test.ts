/**
 * Metadata, deadlines and interceptors at their edges (issue 16 review): a peer's deadline
 * past setTimeout's limit arms one timer, not a loop; a timeout of any length travels (clamped
 * to MAX_DEADLINE_MS); metadata with no room for the deadline entry says so; forwarding a
 * peer's metadata whose traceparent is invalid (decodeMetadata accepts it) with a deadline
 * works; the caller's onResponseMetadata through client interceptors is called once, for what
 * the chain settled with (a retried attempt's metadata never reaches it, a throw of it is
 * printed, an error response without metadata gives Metadata.EMPTY); a server interceptor that
 * passes next() a call of another handle gets a UsageError; server metrics record no one-way
 * message. Over inproc and tcp; no timed asserts.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Server, UsageError, listen, rpcConnect, serve, type RequestHandle } from "../../src/index.ts";
import { DEADLINE_KEY, MAX_DEADLINE_MS, Metadata, decodeMetadata, encodeMetadata, withRemainingDeadline } from "../../src/rpc/metadata.ts";
import { callMetadata } from "../../src/rpc/pending.ts";
import type { ClientInterceptor, ServerInterceptor } from "../../src/rpc/interceptors.ts";
import { countTimeouts } from "../helpers/count-timeouts.ts";

const te = new TextEncoder();
const td = new TextDecoder();
let n = 0;
const urlFor = (kind: "tcp" | "inproc" | "shm"): string => (kind === "tcp" ? "tcp://127.0.0.1:0" : `${kind}://review16-md-${process.pid}-${n++}`);
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

/** Encoded metadata as a peer may send it: entries written raw, nothing judged (an invalid traceparent included). */
function rawMetadata(entries: Array<[string, string]>): Uint8Array {
  const parts = entries.map(([k, v]) => {
    const kb = te.encode(k);
    const vb = te.encode(v);
    const o = new Uint8Array(3 + kb.length + vb.length);
    o[0] = kb.length;
    o[1] = vb.length & 0xff;
    o[2] = vb.length >> 8;
    o.set(kb, 3);
    o.set(vb, 3 + kb.length);
    return o;
  });
  const out = new Uint8Array(2 + parts.reduce((a, p) => a + p.length, 0));
  out[0] = 1;
  out[1] = entries.length;
  let at = 2;
  for (const p of parts) (out.set(p, at), (at += p.length));
  return out;
}

/** Runs `fn` with console.error captured (tellMetadata prints a callback's throw there). */
async function capturingErrors<T>(fn: () => Promise<T>): Promise<{ value: T; printed: unknown[][] }> {
  const real = console.error;
  const printed: unknown[][] = [];
  console.error = (...args: unknown[]) => void printed.push(args);
  try {
    return { value: await fn(), printed };
  } finally {
    console.error = real;
  }
}

describe("deadlines at their limits", () => {
  test("a peer's hp-deadline-ms past setTimeout's limit (2^31-1 ms) arms one timer for h.signal, not a 1 ms loop", async () => {
    let timers = -1;
    let aborted = true;
    const s = await serve(urlFor("tcp"), {
      1: async (h: RequestHandle) => {
        let sig: AbortSignal | null = null;
        timers = await countTimeouts(async () => {
          sig = h.signal; // arms the deadline timer
          await Bun.sleep(60);
        });
        aborted = sig!.aborted;
        return h.data.slice();
      },
    }, { onError: () => {} });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    // ~35 days, sent as given (timeoutMs 0: the client adds no deadline of its own).
    await c.request(1, te.encode("a"), { timeoutMs: 0, metadata: { [DEADLINE_KEY]: "3000000000" } });
    expect(aborted).toBe(false);
    // Before: one timer per ms while the handler ran (~60: Bun fires an over-long delay at once).
    // The count is process-wide, so another part of the process (a transport's timer) may add one.
    expect(timers).toBeGreaterThanOrEqual(1);
    expect(timers).toBeLessThanOrEqual(3);
  });

  test("a timeoutMs of any length travels (clamped to MAX_DEADLINE_MS); the handler sees it", async () => {
    const s = await serve(urlFor("inproc"), { 1: (h: RequestHandle) => te.encode(h.metadata.get(DEADLINE_KEY) ?? "none") }, { onError: () => {} });
    const c = await rpcConnect(s.url, { sendDeadline: true });
    closers.push(() => s.close(), () => c.close());
    expect(td.decode(await c.request(1, new Uint8Array(0), { timeoutMs: 1e16 }))).toBe(String(MAX_DEADLINE_MS));
    expect(td.decode(await c.request(1, new Uint8Array(0), { timeoutMs: Number.MAX_VALUE }))).toBe(String(MAX_DEADLINE_MS));
  });

  test("metadata with no room for the deadline entry: a UsageError naming hp-deadline-ms and why it travels; without a deadline it goes", async () => {
    const s = await serve(urlFor("inproc"), { 1: (h: RequestHandle) => te.encode(String(h.metadata.encodedLength)) }, { onError: () => {} });
    const c = await rpcConnect(s.url, { sendDeadline: true });
    closers.push(() => s.close(), () => c.close());
    const md = Metadata.from({ pad: "x".repeat(752) }); // 760 bytes encoded: under the 768 limit
    expect(md.encodedLength).toBe(760);
    expect(td.decode(await c.request(1, new Uint8Array(0), { metadata: md, timeoutMs: 0 }))).toBe("760");
    const e1 = await c.request(1, new Uint8Array(0), { metadata: md, timeoutMs: 1000 }).catch((e) => e);
    expect(e1).toBeInstanceOf(UsageError);
    expect(e1.message).toContain(`"${DEADLINE_KEY}"`);
    expect(e1.message).toContain("timeoutMs");
    expect(e1.message).toContain("the other entries take 760");
    const e2 = await c.request(1, new Uint8Array(0), { metadata: md, timeoutMs: 0, parent: { deadline: performance.now() + 60_000 } }).catch((e) => e);
    expect(e2).toBeInstanceOf(UsageError);
    expect(e2.message).toContain("parent's deadline");
  });
});

describe("forwarding a peer's metadata with a deadline", () => {
  test("an invalid traceparent (accepted by decodeMetadata, per W3C) is carried on as it is, the deadline replaced in its place", () => {
    const md = decodeMetadata(rawMetadata([["traceparent", "garbage"], [DEADLINE_KEY, "5000"], ["user", "ada"]]));
    const out = withRemainingDeadline(md, 120.7);
    expect(out.entries()).toEqual([["traceparent", "garbage"], [DEADLINE_KEY, "120"], ["user", "ada"]]);
    expect(decodeMetadata(encodeMetadata(out)).entries()).toEqual(out.entries());
    expect(out.encodedLength).toBe(encodeMetadata(out).length);
    // What a handler's onward call with { metadata: h.metadata, parent: h } encodes.
    const { md: sent, timeoutMs } = callMetadata({ metadata: md, parent: { deadline: performance.now() + 60_000 } }, 0, false, "test");
    expect(timeoutMs).toBeGreaterThan(0);
    expect(decodeMetadata(sent!).get("traceparent")).toBe("garbage");
    // The caller's own metadata is still judged when it is built.
    expect(() => Metadata.from({ traceparent: "garbage" })).toThrow(UsageError);
  });

  test("the deadline entry is still checked: no room for a 33rd entry", () => {
    const full = Metadata.from(Array.from({ length: 32 }, (_, i) => [`k${i}`, "v"] as [string, string]));
    expect(() => withRemainingDeadline(full, 10)).toThrow(/MAX_METADATA_ENTRIES/);
    const withKey = Metadata.from([...full.entries().slice(1), [DEADLINE_KEY, "1"]]);
    expect(withRemainingDeadline(withKey, 99).get(DEADLINE_KEY)).toBe("99");
  });
});

describe("onResponseMetadata through client interceptors: once, for what the chain settled with", () => {
  const pass: ClientInterceptor = { unary: (call, next) => next(call) };
  const retryOnce: ClientInterceptor = {
    unary: async (call, next) => {
      try {
        return await next(call);
      } catch {
        return next(call);
      }
    },
  };

  async function pair(interceptors: ClientInterceptor[]) {
    let attempts = 0;
    const s = await serve(urlFor("inproc"), {
      1: (h: RequestHandle) => (h.setResponseMetadata({ k: "v" }), h.data.slice()),
      // Fails every other attempt, with metadata saying why.
      2: (h: RequestHandle) => {
        if (attempts++ % 2 === 0) {
          h.setResponseMetadata({ why: "busy" });
          throw new Error("busy");
        }
        h.setResponseMetadata({ ok: "1" });
        return h.data.slice();
      },
      3: () => {
        throw new Error("plain");
      },
      4: (h: RequestHandle) => {
        h.setResponseMetadata({ why: `attempt-${attempts++}` });
        throw new Error("always");
      },
    }, { onError: () => {} });
    const c = await rpcConnect(s.url, { interceptors });
    closers.push(() => s.close(), () => c.close());
    return c;
  }
  const entries = (md: Metadata) => JSON.stringify(md.entries());

  test("a retried attempt's metadata never reaches the caller: only the result's", async () => {
    const c = await pair([retryOnce]);
    const seen: string[] = [];
    expect(td.decode(await c.request(2, te.encode("x"), { onResponseMetadata: (md) => seen.push(entries(md)) }))).toBe("x");
    expect(seen).toEqual([entries(Metadata.from({ ok: "1" }))]);
  });

  test("both attempts fail: once, with the metadata of the error the chain rejected with", async () => {
    const c = await pair([retryOnce]);
    const seen: string[] = [];
    const e = await c.request(4, te.encode("x"), { onResponseMetadata: (md) => seen.push(md.get("why") ?? "-") }).catch((x) => x);
    expect(e.remoteName).toBe("Error");
    expect(seen).toEqual(["attempt-1"]);
  });

  test("an error response without metadata: once, with Metadata.EMPTY (as without interceptors)", async () => {
    const c = await pair([pass]);
    const seen: Metadata[] = [];
    await c.request(3, te.encode("x"), { onResponseMetadata: (md) => seen.push(md) }).catch(() => {});
    expect(seen).toEqual([Metadata.EMPTY]);
  });

  test("a mapped error with the response's error as its cause: that response's metadata, once", async () => {
    class Mapped extends Error {}
    const mapping: ClientInterceptor = { unary: (call, next) => next(call).catch((e) => Promise.reject(new Mapped("mapped", { cause: e }))) };
    const c = await pair([mapping, pass]);
    const seen: string[] = [];
    const e = await c.request(4, te.encode("x"), { onResponseMetadata: (md) => seen.push(md.get("why") ?? "-") }).catch((x) => x);
    expect(e).toBeInstanceOf(Mapped);
    expect(seen).toEqual(["attempt-0"]);
  });

  test("a short-circuit: its result's metadata once; its throw (no response): not at all", async () => {
    const answer: ClientInterceptor = { unary: async () => ({ data: te.encode("cached"), metadata: Metadata.from({ cache: "hit" }) }) };
    const refuse: ClientInterceptor = { unary: async () => Promise.reject(new Error("refused")) };
    const seen: string[] = [];
    const a = await pair([answer]);
    expect(td.decode(await a.request(1, te.encode("x"), { onResponseMetadata: (md) => seen.push(entries(md)) }))).toBe("cached");
    const r = await pair([refuse]);
    await r.request(1, te.encode("x"), { onResponseMetadata: (md) => seen.push(entries(md)) }).catch(() => {});
    expect(seen).toEqual([entries(Metadata.from({ cache: "hit" }))]);
  });

  test("a throwing onResponseMetadata is printed and the request resolves, as without interceptors", async () => {
    const bare = await pair([]);
    const wrapped = await pair([pass, pass]);
    const cb = () => {
      throw new Error("callback bug");
    };
    const { value, printed } = await capturingErrors(async () => [
      td.decode(await bare.request(1, te.encode("a"), { onResponseMetadata: cb })),
      td.decode(await wrapped.request(1, te.encode("b"), { onResponseMetadata: cb })),
    ]);
    expect(value).toEqual(["a", "b"]);
    expect(printed.length).toBe(2);
  });

  test("a bad onResponseMetadata is a UsageError before anything is sent", async () => {
    const c = await pair([pass]);
    expect(await c.request(1, te.encode("x"), { onResponseMetadata: 5 as never }).catch((e) => e)).toBeInstanceOf(UsageError);
  });
});

describe("server interceptors: next() with another handle", () => {
  test.each([
    ["no handle", (call: any) => ({ ...call, handle: undefined })],
    ["another object", (call: any) => ({ ...call, handle: { method: call.method, data: call.data } })],
  ])("%s: a UsageError by name, the handler never runs", async (_what, change) => {
    let ran = 0;
    const bad: ServerInterceptor = { unary: (call, next) => next(change(call)) };
    const outer: ServerInterceptor = { unary: (call, next) => next(call) };
    const s = await serve(urlFor("inproc"), { 1: (h: RequestHandle) => (ran++, h.data.slice()) }, { interceptors: [outer, bad], onError: () => {} });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    const e = await c.request(1, new Uint8Array([1])).catch((x) => x);
    expect(e.remoteName).toBe("UsageError");
    expect(e.remoteMessage).toContain("not the call's own");
    expect(ran).toBe(0);
    // The same handle with other data is fine.
    const swap: ServerInterceptor = { unary: (call, next) => next({ ...call, data: te.encode("swapped") }) };
    const s2 = await serve(urlFor("inproc"), { 1: (h: RequestHandle) => h.data.slice() }, { interceptors: [outer, swap] });
    const c2 = await rpcConnect(s2.url);
    closers.push(() => s2.close(), () => c2.close());
    expect(td.decode(await c2.request(1, new Uint8Array([1])))).toBe("swapped");
  });
});

describe("server metrics record no one-way message", () => {
  test("serve(): one-way messages, answered or not, are no calls; the requests around them are", async () => {
    let oneWays = 0;
    const s = await serve(urlFor("tcp"), {
      1: (h: RequestHandle) => {
        if (h.oneWay) oneWays++;
        const b = h.allocReply(100)!;
        h.replyBuffer(b, 100);
      },
    }, { metrics: true, onError: () => {} });
    const c = await rpcConnect(s.url, { metrics: true });
    closers.push(() => s.close(), () => c.close());
    c.send(1, te.encode("one-way"));
    c.send(1, te.encode("one-way"));
    await c.request(1, te.encode("x")); // ordered after the one-ways
    expect(oneWays).toBe(2);
    const sm = s.server.metrics().methods.find((m) => m.methodId === 1)!;
    const cm = c.metrics().methods.find((m) => m.methodId === 1)!;
    expect([sm.calls, sm.bytesIn, sm.bytesOut, sm.latency.count]).toEqual([1, 1, 100, 1]);
    expect([cm.calls, cm.bytesIn]).toEqual([1, 100]);
  });

  test("hot-path Server: reply, replyBuffer and drop of one-way messages record nothing", async () => {
    const listener = await listen(urlFor("shm"));
    const server = new Server({
      metrics: true,
      onRequest: (h) => {
        if (h.method === 1) return void h.reply(h.data);
        if (h.method === 2) return void h.replyBuffer(h.allocReply(8)!, 8);
        h.drop();
      },
    });
    server.attach(listener);
    const c = await rpcConnect(listener.url);
    closers.push(() => server.close(), () => c.close());
    for (const m of [1, 2, 3]) c.send(m, new Uint8Array(4));
    await c.request(1, new Uint8Array(3)); // after the one-ways
    expect(server.metrics().methods.map((m) => [m.methodId, m.calls, m.bytesIn, m.bytesOut])).toEqual([[1, 1, 3, 3]]);
  });
});
