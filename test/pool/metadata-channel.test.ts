/**
 * Metadata and deadlines through the pool (issue 16 review): Channel.request() and a
 * ConnectionPool's clients pass a call's `metadata`, `onResponseMetadata` and `parent` on to the
 * connection's request(); the channel's own deadline, the wait for a connection included, is
 * cut to what is left of the parent's (a parent already past is a TimeoutError before anything
 * is sent; a bad parent a UsageError). Real tcp servers in this process; no timed asserts (a
 * watchdog turns a hang into a failure).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { serve, type RequestHandle } from "../../src/index.ts";
import { TimeoutError, UsageError } from "../../src/errors.ts";
import { Channel } from "../../src/pool/channel.ts";
import { ConnectionPool } from "../../src/pool/pool.ts";
import { DEADLINE_KEY } from "../../src/rpc/metadata.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

/** Answers with what the call carried: its authorization and deadline metadata; sets response metadata. */
async function echoMetadata() {
  const s = await serve("tcp://127.0.0.1:0", {
    1: (h: RequestHandle) => {
      h.setResponseMetadata({ back: "yes" });
      return te.encode(JSON.stringify({ auth: h.metadata.get("authorization") ?? "none", deadline: h.metadata.get(DEADLINE_KEY) ?? "none" }));
    },
  }, { onError: () => {} });
  cleanups.push(() => s.close());
  return s;
}

/** `p`'s outcome, or "hung" when it has not settled within the watchdog's time. */
const watchdog = <T>(p: Promise<T>, ms = 10_000): Promise<T | "hung"> => Promise.race([p, Bun.sleep(ms).then(() => "hung" as const)]);

describe("Channel.request passes a call's metadata options on", () => {
  test("metadata reaches the handler, the response's metadata comes back", async () => {
    const s = await echoMetadata();
    const ch = new Channel(s.url);
    cleanups.push(() => ch.close());
    let back: string | undefined = "never called";
    const out = JSON.parse(td.decode(await ch.request(1, new Uint8Array(0), { metadata: { authorization: "Bearer t0k" }, onResponseMetadata: (md) => (back = md.get("back")) })));
    expect(out.auth).toBe("Bearer t0k");
    expect(back).toBe("yes");
  });

  test("a parent's deadline travels on and cuts the channel's own (default 30 s)", async () => {
    const s = await echoMetadata();
    const ch = new Channel(s.url);
    cleanups.push(() => ch.close());
    const out = JSON.parse(td.decode(await ch.request(1, new Uint8Array(0), { parent: { deadline: performance.now() + 5_000 } })));
    expect(Number(out.deadline)).toBeGreaterThan(0);
    expect(Number(out.deadline)).toBeLessThanOrEqual(5_000);
  });

  test("waiting for a connection ends at the parent's deadline, not the channel's", async () => {
    // A connector that never connects: the call waits for a connection until its deadline.
    const ch = new Channel("tcp://127.0.0.1:1", { connector: () => new Promise(() => {}) });
    cleanups.push(() => ch.close());
    const r = await watchdog(ch.request(1, new Uint8Array(0), { parent: { deadline: performance.now() + 50 } }).catch((e) => e));
    expect(r).toBeInstanceOf(TimeoutError);
  });

  test("a parent already past: TimeoutError; a parent without a numeric deadline: UsageError; nothing connects", async () => {
    let connects = 0;
    const ch = new Channel("tcp://127.0.0.1:1", { connector: () => (connects++, new Promise(() => {})) });
    cleanups.push(() => ch.close());
    expect(await ch.request(1, new Uint8Array(0), { parent: { deadline: performance.now() - 1 } }).catch((e) => e)).toBeInstanceOf(TimeoutError);
    expect(await ch.request(1, new Uint8Array(0), { parent: { deadline: "soon" } as never }).catch((e) => e)).toBeInstanceOf(UsageError);
    expect(connects).toBe(0);
  });
});

test("ConnectionPool: a pooled client's request carries metadata and onResponseMetadata", async () => {
  const s = await echoMetadata();
  const pool = new ConnectionPool();
  cleanups.push(() => void pool.close());
  let back: string | undefined = "never called";
  const out = JSON.parse(td.decode(await pool.client(s.url).request(1, new Uint8Array(0), { metadata: { authorization: "Bearer p00l" }, onResponseMetadata: (md) => (back = md.get("back")) })));
  expect(out.auth).toBe("Bearer p00l");
  expect(back).toBe("yes");
});
