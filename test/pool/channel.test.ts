/**
 * Channel (one target) driven by a ManualClock against real tcp servers on 127.0.0.1 in this
 * process; the connector is the registry's connect(), counted, to a URL the test points.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { connect, serve, type Serving } from "../../src/index.ts";
import { CancelledError, TimeoutError, TransportClosedError } from "../../src/errors.ts";
import { Channel, PendingLimitError, type ChannelOptions, type ConnectivityState } from "../../src/pool/channel.ts";
import { ManualClock } from "../../src/pool/clock.ts";
import { seededRandom } from "../../src/pool/backoff.ts";

const ECHO = 1;
const HOLD = 2;
const HOLD_IDEMPOTENT = 3;
const te = new TextEncoder();

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

async function echoServer(): Promise<Serving & { release(): void; held: number }> {
  const gates: Array<() => void> = [];
  const s = await serve("tcp://127.0.0.1:0", {
    [ECHO]: (h) => h.data.slice(),
    [HOLD]: (h) => {
      const data = h.data.slice();
      return new Promise<Uint8Array>((r) => gates.push(() => r(data)));
    },
    [HOLD_IDEMPOTENT]: (h) => {
      const data = h.data.slice();
      return new Promise<Uint8Array>((r) => gates.push(() => r(data)));
    },
  });
  cleanups.push(() => s.close());
  return Object.defineProperties(Object.assign(s, { release: () => { for (const g of gates.splice(0)) g(); } }), {
    held: { get: () => gates.length },
  }) as Serving & { release(): void; held: number };
}

/** A URL nothing listens on: a server's port, after that server closed. */
async function deadUrl(): Promise<string> {
  const s = await serve("tcp://127.0.0.1:0", {});
  const url = s.url;
  s.close();
  return url;
}

async function waitFor(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`watchdog: ${what} not reached within ${ms} ms`);
    await Bun.sleep(1);
  }
}

function channel(target: { url: string }, opts: ChannelOptions = {}) {
  const clock = (opts.clock as ManualClock) ?? new ManualClock();
  const states: ConnectivityState[] = [];
  let attempts = 0;
  const ch = new Channel("pool-test", {
    random: seededRandom(1),
    backoff: { initialMs: 100, multiplier: 2, maxMs: 1000, jitter: 0, minConnectTimeoutMs: 2000 },
    ...opts,
    clock,
    connector: (_url, o) => (attempts++, connect(target.url, o)),
    onStateChange: (s) => states.push(s),
  });
  cleanups.push(() => ch.close());
  return { ch, clock, states, attempts: () => attempts };
}

describe("channel", () => {
  test("IDLE -> CONNECTING -> READY on the first call; calls share the connection", async () => {
    const s = await echoServer();
    const { ch, states, attempts } = channel(s);
    expect(ch.state).toBe("IDLE");
    const replies = await Promise.all([1, 2, 3].map((i) => ch.request(ECHO, te.encode("x" + i))));
    expect(replies.map((r) => new TextDecoder().decode(r))).toEqual(["x1", "x2", "x3"]);
    expect(states).toEqual(["CONNECTING", "READY"]);
    expect(attempts()).toBe(1);
    expect(ch.connections).toBe(1);
    ch.close();
    expect(ch.state).toBe("SHUTDOWN");
    await expect(ch.request(ECHO, te.encode("late"))).rejects.toBeInstanceOf(TransportClosedError);
  });

  test("1000 callers while the target is down: one attempt per backoff step, all succeed when it comes back", async () => {
    const target = { url: await deadUrl() };
    const { ch, clock, attempts } = channel(target, { timeoutMs: 60_000 });
    const calls = Array.from({ length: 1000 }, (_, i) => ch.request(ECHO, te.encode(String(i))));
    await waitFor(() => ch.state === "TRANSIENT_FAILURE", "first failure");
    expect(attempts()).toBe(1);
    expect(ch.pendingCalls).toBe(1000);
    // Backoff steps 100, 200, 400 ms: each step is one more attempt, never more.
    for (const [step, want] of [[99, 1], [1, 2], [199, 2], [1, 3], [400, 4]] as const) {
      const before = attempts();
      clock.advance(step);
      if (attempts() !== before) await waitFor(() => ch.state === "TRANSIENT_FAILURE", `failure after ${want}`);
      expect(attempts()).toBe(want);
    }
    const s = await echoServer();
    target.url = s.url;
    clock.advance(800);
    const replies = await Promise.all(calls);
    expect(attempts()).toBe(5);
    expect(replies.every((r, i) => new TextDecoder().decode(r) === String(i))).toBe(true);
    expect(ch.state).toBe("READY");
  });

  test("100 channels whose target is down spread their retries (gRPC defaults, own random each)", async () => {
    const url = await deadUrl();
    const clock = new ManualClock();
    const retries: number[] = [];
    const chans = Array.from({ length: 100 }, (_, i) => {
      let n = 0;
      const ch = new Channel(url, {
        clock,
        random: seededRandom(1000 + i),
        connector: (u, o) => {
          if (n++ === 1) retries.push(clock.now());
          return connect(u, o);
        },
      });
      cleanups.push(() => ch.close());
      ch.request(ECHO, te.encode("x"), { timeoutMs: 0 }).catch(() => {});
      return ch;
    });
    const settled = () => chans.every((c) => c.state === "TRANSIENT_FAILURE");
    await waitFor(settled, "first attempts failed");
    for (let t = 0; t < 1300; t += 10) {
      clock.advance(10);
      await waitFor(settled, `attempts at ${clock.now()} ms failed`);
    }
    expect(retries.length).toBe(100);
    retries.sort((a, b) => a - b);
    let busiest = 0;
    for (let i = 0, j = 0; i < retries.length; i++) {
      while (retries[i]! - retries[j]! >= 100) j++;
      busiest = Math.max(busiest, i - j + 1);
    }
    console.log(`100 channels: first retries from ${retries[0]!.toFixed(0)} to ${retries[99]!.toFixed(0)} ms, busiest 100 ms window ${busiest} (uniform over 400 ms: 25)`);
    expect(busiest).toBeLessThanOrEqual(50);
    expect(retries[0]).toBeGreaterThanOrEqual(800);
    expect(retries[99]).toBeLessThanOrEqual(1200);
  });

  test("failFast fails at once in TRANSIENT_FAILURE; maxPendingCalls bounds the waiting ones; deadlines win", async () => {
    const { ch, clock } = channel({ url: await deadUrl() }, { maxPendingCalls: 3 });
    const a = ch.request(ECHO, te.encode("a"), { timeoutMs: 500 });
    const b = ch.request(ECHO, te.encode("b"), { timeoutMs: 50_000 });
    const early = ch.request(ECHO, te.encode("f"), { failFast: true }); // CONNECTING: waits, fails with the attempt
    await expect(ch.request(ECHO, te.encode("c"))).rejects.toBeInstanceOf(PendingLimitError);
    await expect(early).rejects.toBeInstanceOf(TransportClosedError);
    await waitFor(() => ch.state === "TRANSIENT_FAILURE", "failure");
    const ff = await ch.request(ECHO, te.encode("d"), { failFast: true }).catch((e) => e);
    expect(ff).toBeInstanceOf(TransportClosedError);
    expect(ff.message).toContain("TRANSIENT_FAILURE");
    clock.advance(500);
    await expect(a).rejects.toBeInstanceOf(TimeoutError);
    const ac = new AbortController();
    const c = ch.request(ECHO, te.encode("e"), { signal: ac.signal });
    ac.abort();
    await expect(c).rejects.toBeInstanceOf(CancelledError);
    expect(ch.pendingCalls).toBe(1);
    ch.close();
    await expect(b).rejects.toBeInstanceOf(TransportClosedError);
  });

  test("a call in flight when the connection dies fails with TransportClosedError; an idempotent one is retried once on a fresh connection", async () => {
    const s1 = await echoServer();
    const target = { url: s1.url };
    const { ch, clock, attempts } = channel(target, { idempotent: [HOLD_IDEMPOTENT] });
    await ch.request(ECHO, te.encode("up"));
    const plain = ch.request(HOLD, te.encode("plain"));
    const idem = ch.request(HOLD_IDEMPOTENT, te.encode("idem"));
    const idem2 = ch.request(HOLD, te.encode("idem2"), { idempotent: true });
    await waitFor(() => s1.held === 3, "the calls held by the server");
    const s2 = await echoServer();
    target.url = s2.url;
    s1.close();
    await expect(plain).rejects.toBeInstanceOf(TransportClosedError);
    clock.advance(100); // the next backoff step (READY too briefly for a reset)
    await waitFor(() => s2.held === 2, "the idempotent calls re-sent to the new server");
    s2.release();
    expect(new TextDecoder().decode(await idem)).toBe("idem");
    expect(new TextDecoder().decode(await idem2)).toBe("idem2");
    expect(attempts()).toBe(2);
    expect(ch.reconnects).toBe(1);
    expect(s2.held).toBe(0);
  });

  test("the backoff resets only after READY for backoffResetAfterMs", async () => {
    const s1 = await echoServer();
    const target = { url: s1.url };
    const { ch, clock, attempts } = channel(target, { backoffResetAfterMs: 1000 });
    await ch.request(ECHO, te.encode("up")); // attempt 1 at t=0, next allowed at t=100
    const s2 = await echoServer();
    target.url = s2.url;
    s1.close();
    await waitFor(() => ch.state === "IDLE", "loss seen");
    const call = ch.request(ECHO, te.encode("again"));
    await Bun.sleep(20);
    expect(attempts()).toBe(1); // READY too briefly: waits for the backoff step
    clock.advance(100);
    await call;
    expect(attempts()).toBe(2);
    clock.advance(1000); // READY long enough: the backoff resets
    s2.close();
    await waitFor(() => ch.state === "IDLE", "second loss seen");
    const s3 = await echoServer();
    target.url = s3.url;
    await ch.request(ECHO, te.encode("third"));
    expect(attempts()).toBe(3);
  });

  test("maxLifetimeMs replaces the connection without failing the call in flight", async () => {
    const s = await echoServer();
    const { ch, clock, attempts } = channel(s, { maxLifetimeMs: 1000 });
    const held = ch.request(HOLD, te.encode("old"));
    await waitFor(() => s.held === 1, "call held");
    clock.advance(1000);
    await waitFor(() => attempts() === 2 && ch.connections === 2, "replacement connected");
    expect(new TextDecoder().decode(await ch.request(ECHO, te.encode("new")))).toBe("new");
    s.release();
    expect(new TextDecoder().decode(await held)).toBe("old");
    expect(ch.connections).toBe(1);
    expect(ch.replaced).toBe(1);
    expect(ch.state).toBe("READY");
  });

  test("maxLifetimeMs replaces an unused connection with no state change", async () => {
    const s = await echoServer();
    const { ch, clock, states, attempts } = channel(s, { maxLifetimeMs: 1000 });
    await ch.request(ECHO, te.encode("a"));
    clock.advance(1000);
    await waitFor(() => attempts() === 2 && ch.replaced === 1, "replacement connected");
    expect(ch.connections).toBe(1);
    expect(states).toEqual(["CONNECTING", "READY"]);
    expect(new TextDecoder().decode(await ch.request(ECHO, te.encode("b")))).toBe("b");
    expect(attempts()).toBe(2);
  });

  test("a draining server's GOAWAY moves new calls to a fresh connection; the call in flight finishes", async () => {
    const s1 = await echoServer();
    const target = { url: s1.url };
    const { ch, states } = channel(target);
    await ch.request(ECHO, te.encode("up"));
    const held = ch.request(HOLD, te.encode("held"));
    await waitFor(() => s1.held === 1, "call held");
    const s2 = await echoServer();
    target.url = s2.url;
    const drained = s1.drain(5000);
    await waitFor(() => ch.replaced === 1, "replacement connected after GOAWAY");
    expect(ch.connections).toBe(2);
    expect(new TextDecoder().decode(await ch.request(ECHO, te.encode("new")))).toBe("new");
    s1.release();
    expect(new TextDecoder().decode(await held)).toBe("held");
    expect(await drained).toEqual({ sessions: 1, callsFinished: 1, callsCut: 0 });
    await waitFor(() => ch.connections === 1, "old connection closed");
    expect(states).toEqual(["CONNECTING", "READY"]);
    expect(ch.reconnects).toBe(0);
    expect(ch.state).toBe("READY");
  });

  test("idleTimeoutMs closes an unused connection; the next call connects again", async () => {
    const s = await echoServer();
    const { ch, clock, attempts } = channel(s, { idleTimeoutMs: 500, backoffResetAfterMs: 100 });
    await ch.request(ECHO, te.encode("a"));
    clock.advance(499);
    expect(ch.connections).toBe(1);
    clock.advance(1);
    expect(ch.connections).toBe(0);
    expect(ch.state).toBe("IDLE");
    await ch.request(ECHO, te.encode("b"));
    expect(attempts()).toBe(2);
  });

  test("idleTimeoutMs: the connection that replaced a GOAWAY'd one still idles out (the idle timer follows the live connection)", async () => {
    const a = await echoServer();
    const b = await echoServer();
    const target = { url: a.url };
    const { ch, clock } = channel(target, { idleTimeoutMs: 500 });
    await ch.request(ECHO, te.encode("a")); // on A: the idle timer is armed
    const held = ch.request(HOLD, te.encode("held")); // in flight on A while A drains
    await waitFor(() => a.held === 1, "held call at A");
    target.url = b.url;
    void a.drain(5000);
    await waitFor(() => ch.replaced === 1, "replacement after GOAWAY");
    expect(new TextDecoder().decode(await ch.request(ECHO, te.encode("b")))).toBe("b"); // on B
    a.release();
    expect(new TextDecoder().decode(await held)).toBe("held");
    await waitFor(() => ch.connections === 1, "A closed");
    clock.advance(500); // the timer armed while A was live fires: B has been quiet
    clock.advance(500);
    expect(ch.connections).toBe(0);
    expect(ch.state).toBe("IDLE");
  });

  test("keepalive: a server that answers the ping (UnknownMethodError) stays READY", async () => {
    const s = await echoServer();
    const { ch, clock } = channel(s, { keepaliveMs: 1000, keepaliveTimeoutMs: 200 });
    await ch.request(ECHO, te.encode("a"));
    for (let i = 0; i < 3; i++) {
      clock.advance(1000);
      await waitFor(() => ch.keepalivesAnswered === i + 1, "ping answered");
      expect(ch.state).toBe("READY");
    }
    clock.advance(200); // past the last ping's timeout: it was answered in time
    expect(ch.lastError).toBe(null);
    expect(ch.state).toBe("READY");
    expect(ch.connections).toBe(1);
  });
});
