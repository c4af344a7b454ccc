/**
 * bench/worker-pool.bench.ts's reply check: each call carries its own sequence number, so a
 * correct reply delivered to another call in flight (byte-identical if every call sent the same
 * bytes) fails the round with ReplyMismatch; an honest pool passes it. The driver under test is a
 * real workerPool; the crossing driver wraps it and hands each reply to another call in flight.
 */
import { expect, test } from "bun:test";
import { measureRound, ReplyMismatch, type Driver } from "../../bench/worker-pool.bench.ts";
import { XOR_METHOD } from "../../bench/peers/worker-pool-handlers.ts";
import { workerPool } from "../../src/index.ts";

const HANDLERS = new URL("../../bench/peers/worker-pool-handlers.ts", import.meta.url);
const WATCHDOG_MS = 30_000;
const ROUND = { warm: 5, timed: 5, windowMs: 100, bodyBytes: 1024 };

/** Each reply goes to the call whose reply came before it (pairs crossed) while other calls are in flight. */
function crossing(inner: Driver): Driver & { crossed: number } {
  let inFlight = 0;
  let parked: { reply: Uint8Array; resolve: (r: Uint8Array) => void } | null = null;
  const d = {
    crossed: 0,
    call(data: Uint8Array): Promise<Uint8Array> {
      inFlight++;
      return new Promise<Uint8Array>((resolve, reject) => {
        inner.call(data).then((reply) => {
          inFlight--;
          if (parked !== null) {
            const other = parked;
            parked = null;
            d.crossed++;
            other.resolve(reply);
            resolve(other.reply);
          } else if (inFlight > 0) parked = { reply, resolve };
          else resolve(reply);
        }, reject);
      });
    },
    close: () => inner.close(),
  };
  return d;
}

test("the worker-pool bench's check: a reply handed to another call in flight fails the round; the pool's own replies pass", async () => {
  const pool = await workerPool(HANDLERS, { size: 1, window: 64 });
  try {
    const honest: Driver = { call: (data) => pool.request(XOR_METHOD, data), close: async () => {} };
    const r = await measureRound(honest, "honest", ROUND);
    expect(r.calls).toBeGreaterThan(0);
    const swapped = crossing(honest);
    const e = await measureRound(swapped, "crossed", ROUND).then(() => null, (err: unknown) => err);
    expect(swapped.crossed).toBeGreaterThan(0);
    expect(e).toBeInstanceOf(ReplyMismatch);
  } finally {
    await pool.close();
  }
}, WATCHDOG_MS);
