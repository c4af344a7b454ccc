/**
 * Deadlines across hops (issue 16): a client calls server A with a deadline, A's handler calls
 * server B with `{ parent: h }`, and B sees the remaining deadline (less than what A got, more
 * than 0); when the deadline passes the calls time out on every hop (A's call to B with
 * TimeoutError, B's handle signal aborted) and the client's call fails with TimeoutError. A
 * call without a deadline passes none on. On the server, h.deadline comes from the caller's
 * `hp-deadline-ms` and h.signal aborts with a TimeoutError when it passes (its timer exists
 * only once the signal was taken), after which the reply is dropped as a cancelled call's and
 * the call counts as a TimeoutError in the server's metrics; a parent whose deadline has passed fails the next hop's
 * request before anything is sent. Two servers in one process, over tcp and shm; no timed
 * asserts (the deadlines are what the test is about; the test's timeout is its watchdog).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { TimeoutError, RemoteError, rpcConnect, serve, type RequestHandle, type RpcClient } from "../../src/index.ts";
import { DEADLINE_KEY } from "../../src/rpc/metadata.ts";
import { countTimeouts } from "../helpers/count-timeouts.ts";

const te = new TextEncoder();
const td = new TextDecoder();
let n = 0;
const urlFor = (kind: "tcp" | "shm"): string => (kind === "tcp" ? "tcp://127.0.0.1:0" : `shm://deadline-hops-${process.pid}-${n++}`);
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

const M_SEEN = 1; // B: answers with the deadline it was given ("none" without)
const M_HOLD = 2; // B: waits for its signal, answers with the abort's reason
const M_RELAY = 3; // A: calls B's M_SEEN with { parent: h }
const M_RELAY_HOLD = 4; // A: calls B's M_HOLD with { parent: h }

const timeoutLike = (e: unknown): boolean => e instanceof TimeoutError || (e instanceof RemoteError && e.remoteName === "TimeoutError");

async function twoHops(kind: "tcp" | "shm") {
  const bSignals: unknown[] = [];
  const aInner: unknown[] = [];
  const b = await serve(urlFor(kind), {
    [M_SEEN]: (h: RequestHandle) => te.encode(JSON.stringify({ md: h.metadata.get(DEADLINE_KEY) ?? "none", hasDeadline: h.deadline !== undefined })),
    [M_HOLD]: async (h: RequestHandle) => {
      const signal = h.signal;
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      bSignals.push(signal.reason);
      throw signal.reason;
    },
  }, { onError: () => {} });
  closers.push(() => b.close());
  let toB: RpcClient<{}> | null = null;
  const a = await serve(urlFor(kind), {
    [M_RELAY]: async (h: RequestHandle) => {
      const inner = JSON.parse(td.decode(await toB!.request(M_SEEN, new Uint8Array(0), { parent: h })));
      return te.encode(JSON.stringify({ a: h.metadata.get(DEADLINE_KEY) ?? "none", b: inner.md, bHasDeadline: inner.hasDeadline }));
    },
    [M_RELAY_HOLD]: async (h: RequestHandle) => {
      try {
        return await toB!.request(M_HOLD, new Uint8Array(0), { parent: h });
      } catch (e) {
        aInner.push(e);
        throw e;
      }
    },
  }, { onError: () => {} });
  closers.push(() => a.close());
  toB = await rpcConnect(b.url);
  const client = await rpcConnect(a.url, { sendDeadline: true }); // its timeoutMs travels to A
  closers.push(() => toB!.close(), () => client.close());
  return { client, bSignals, aInner };
}

describe.each(["tcp", "shm"] as const)("deadline propagation across two hops over %s", (kind) => {
  test("the second hop sees the remaining deadline: less than the first's, more than 0", async () => {
    const { client } = await twoHops(kind);
    for (const timeoutMs of [5000, 60_000, 1_000_000]) {
      const r = JSON.parse(td.decode(await client.request(M_RELAY, new Uint8Array(0), { timeoutMs })));
      expect(r.a).toBe(String(timeoutMs)); // the client's explicit timeout travels as it is
      expect(Number(r.b)).toBeLessThan(timeoutMs);
      expect(Number(r.b)).toBeGreaterThan(0);
      expect(r.bHasDeadline).toBe(true);
    }
  });

  test("without a deadline none is passed on", async () => {
    const { client } = await twoHops(kind);
    const r = JSON.parse(td.decode(await client.request(M_RELAY, new Uint8Array(0), { timeoutMs: 0 })));
    expect(r).toEqual({ a: "none", b: "none", bHasDeadline: false });
  });

  test("when the deadline passes every hop times out: A's call to B, B's signal, the client's call", async () => {
    const { client, bSignals, aInner } = await twoHops(kind);
    const e = await client.request(M_RELAY_HOLD, new Uint8Array(0), { timeoutMs: 300 }).catch((x) => x);
    expect(timeoutLike(e)).toBe(true);
    for (let i = 0; i < 2000 && (aInner.length === 0 || bSignals.length === 0); i++) await Bun.sleep(5);
    expect(aInner.length).toBe(1);
    expect(timeoutLike(aInner[0])).toBe(true); // A's deadline for B (inherited from the client's), or B's own that passed first
    expect(bSignals.length).toBe(1); // B's signal aborted: its deadline passed, or A's cancel came
    expect(client.inFlight).toBe(0);
  });
});

describe("the server side of a deadline", () => {
  test("h.deadline and h.signal: the signal aborts with a TimeoutError when the caller's hp-deadline-ms passes, and the late reply is dropped", async () => {
    const reasons: unknown[] = [];
    const s = await serve(urlFor("tcp"), {
      1: async (h: RequestHandle) => {
        const d = h.deadline;
        const signal = h.signal;
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        reasons.push([typeof d, signal.reason]);
        return te.encode("after the deadline");
      },
    }, { onError: () => {}, metrics: true });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    // No client-side deadline (timeoutMs 0): only the server's timer can end this call; its
    // reply is dropped as a cancelled call's, so the client ends the call itself once it saw that.
    const stop = new AbortController();
    const call = c.request(1, new Uint8Array(0), { timeoutMs: 0, signal: stop.signal, metadata: { [DEADLINE_KEY]: "50" } }).catch((x) => x);
    for (let i = 0; i < 2000 && s.server.metrics().methods.length === 0; i++) await Bun.sleep(5);
    stop.abort();
    expect((await call).name).toBe("CancelledError");
    expect(c.lateResponses).toBe(0); // nothing came back for it
    expect(reasons.length).toBe(1);
    expect((reasons[0] as unknown[])[0]).toBe("number");
    expect((reasons[0] as unknown[])[1]).toBeInstanceOf(TimeoutError);
    expect(s.server.metrics().methods.map((m) => [m.calls, m.errors])).toEqual([[1, [{ code: "TimeoutError", count: 1 }]]]);
  });

  test("a deadline of 0 aborts the signal at once; a handle whose signal is not taken arms no timer", async () => {
    const seen: unknown[] = [];
    const s = await serve(urlFor("tcp"), {
      1: (h: RequestHandle) => {
        seen.push(h.signal.aborted, h.signal.reason instanceof TimeoutError);
        return undefined;
      },
      2: (h: RequestHandle) => te.encode(String(h.deadline !== undefined)),
    });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    // Its reply is dropped (the deadline passed): the client ends the call once the handler ran.
    const stop = new AbortController();
    const call = c.request(1, new Uint8Array(0), { timeoutMs: 0, signal: stop.signal, metadata: { [DEADLINE_KEY]: "0" } }).catch((e) => e.name);
    for (let i = 0; i < 2000 && seen.length === 0; i++) await Bun.sleep(5);
    stop.abort();
    expect(await call).toBe("CancelledError");
    expect(seen).toEqual([true, true]);
    let answers: string[] = [];
    // The client's own deadline queue arms one timer; the server's handles arm none.
    const timers = await countTimeouts(async () => {
      answers = await Promise.all(Array.from({ length: 20 }, () => c.request(2, new Uint8Array(0), { timeoutMs: 0, metadata: { [DEADLINE_KEY]: "60000" } }).then((v) => td.decode(v))));
    });
    expect(answers).toEqual(Array(20).fill("true"));
    expect(timers).toBe(0);
  });

  test("a parent whose deadline has passed fails the next hop's request before anything is sent", async () => {
    let bCalls = 0;
    const b = await serve(urlFor("tcp"), { 1: () => (bCalls++, undefined) });
    const toB = await rpcConnect(b.url);
    const inner: unknown[] = [];
    const a = await serve(urlFor("tcp"), {
      1: async (h: RequestHandle) => {
        const signal = h.signal;
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        await toB.request(1, new Uint8Array(0), { parent: h }).catch((e) => inner.push(e));
        return undefined;
      },
    });
    const c = await rpcConnect(a.url);
    closers.push(() => b.close(), () => toB.close(), () => a.close(), () => c.close());
    const stop = new AbortController();
    const call = c.request(1, new Uint8Array(0), { timeoutMs: 0, signal: stop.signal, metadata: { [DEADLINE_KEY]: "20" } }).catch((e) => e.name);
    for (let i = 0; i < 2000 && inner.length === 0; i++) await Bun.sleep(5);
    stop.abort(); // A's reply is dropped (its deadline passed): the client ends the call
    expect(await call).toBe("CancelledError");
    expect(inner.length).toBe(1);
    expect(inner[0]).toBeInstanceOf(TimeoutError);
    expect(bCalls).toBe(0);
  });
});
