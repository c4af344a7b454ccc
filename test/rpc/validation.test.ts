/**
 * API input is validated at the boundary (issue 8, defect 9): bad deadlines, method ids and
 * data are UsageErrors that name the value, and long deadlines work (the timer is clamped and
 * re-armed instead of overflowing setTimeout).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, SEND_OK, TimeoutError, UsageError, rpcConnect, serve, type Serving } from "../../src/index.ts";

const M_ECHO = 1;
const M_SLEEP_ECHO = 2;
const M_METHOD = 3;

let serving: Serving;
let c: Client<any>;
let methodsSeen: number[] = [];

beforeAll(async () => {
  serving = await serve("tcp://127.0.0.1:0", {
    [M_ECHO]: (h) => h.data,
    [M_SLEEP_ECHO]: async (h) => {
      await Bun.sleep(h.data[0]!);
      return h.data;
    },
    [M_METHOD]: (h) => {
      methodsSeen.push(h.method);
      return h.data;
    },
  });
  c = await rpcConnect(serving.url);
});
afterAll(() => {
  c?.close();
  serving?.close();
});

describe("request() deadlines", () => {
  for (const bad of [-1, NaN, -Infinity, "10" as unknown as number]) {
    test(`timeoutMs ${String(bad)} is a UsageError naming the value`, async () => {
      const e = await c.request(M_ECHO, new Uint8Array([1]), { timeoutMs: bad }).catch((x) => x);
      expect(e).toBeInstanceOf(UsageError);
      expect(e.message).toContain(`timeoutMs ${String(bad)}`);
    });
  }

  test("Infinity means no deadline: the call completes", async () => {
    const got = await c.request(M_SLEEP_ECHO, new Uint8Array([30]), { timeoutMs: Infinity });
    expect(Array.from(got)).toEqual([30]);
  });

  for (const long of [2 ** 31, 2 ** 40]) {
    test(`a long deadline (${long} ms) does not fire at once`, async () => {
      const got = await c.request(M_SLEEP_ECHO, new Uint8Array([50]), { timeoutMs: long });
      expect(Array.from(got)).toEqual([50]);
    });
  }

  test("a short deadline still times out", async () => {
    const e = await c.request(M_SLEEP_ECHO, new Uint8Array([200]), { timeoutMs: 20 }).catch((x) => x);
    expect(e).toBeInstanceOf(TimeoutError);
  });

  test("a bad default deadline is refused when the client is made", () => {
    expect(() => new Client(c.conn, { timeoutMs: -5 })).toThrow(UsageError);
  });
});

describe("method ids and data", () => {
  for (const bad of [2 ** 32 + 1, 1.5, -1, NaN, "1" as unknown as number]) {
    test(`method ${String(bad)} is a UsageError (request, call, send) and nothing is sent`, async () => {
      methodsSeen = [];
      const e = await c.request(bad, new Uint8Array([1])).catch((x) => x);
      expect(e).toBeInstanceOf(UsageError);
      expect(e.message).toContain(String(bad));
      c.onResponse = () => {};
      expect(() => c.call(bad, new Uint8Array([1]), null)).toThrow(UsageError);
      expect(() => c.send(bad, new Uint8Array([1]))).toThrow(UsageError);
      // The connection still works and no call reached a method.
      expect(Array.from(await c.request(M_METHOD, new Uint8Array([9])))).toEqual([9]);
      expect(methodsSeen).toEqual([M_METHOD]);
    });
  }

  for (const bad of ["abc", [1, 2, 3], 42, new ArrayBuffer(3), { length: 3 }]) {
    const what = Array.isArray(bad) ? "an array" : bad instanceof ArrayBuffer ? "an ArrayBuffer" : typeof bad;
    test(`data that is ${what} is a UsageError`, async () => {
      const e = await c.request(M_ECHO, bad as unknown as Uint8Array).catch((x) => x);
      expect(e).toBeInstanceOf(UsageError);
      expect(e.message).toContain("Uint8Array");
      c.onResponse = () => {};
      expect(() => c.call(M_ECHO, bad as unknown as Uint8Array, null)).toThrow(UsageError);
    });
  }

  test("a Buffer and a subarray are fine data", async () => {
    expect(Array.from(await c.request(M_ECHO, Buffer.from([1, 2, 3])))).toEqual([1, 2, 3]);
    expect(Array.from(await c.request(M_ECHO, new Uint8Array([0, 4, 5, 0]).subarray(1, 3)))).toEqual([4, 5]);
  });

  test("a bad signal or appHeader is a UsageError", async () => {
    const e1 = await c.request(M_ECHO, new Uint8Array(1), { signal: {} as AbortSignal }).catch((x) => x);
    expect(e1).toBeInstanceOf(UsageError);
    const e2 = await c.request(M_ECHO, new Uint8Array(1), { appHeader: "hdr" as unknown as Uint8Array }).catch((x) => x);
    expect(e2).toBeInstanceOf(UsageError);
  });

  test("the hot path still sends a good call", async () => {
    let got = null as number[] | null;
    c.onResponse = (_u, data) => void (got = Array.from(data));
    expect(c.call(M_ECHO, new Uint8Array([7]), null)).toBe(SEND_OK);
    while (got === null) {
      c.poll();
      await c.wait(50);
    }
    expect(got).toEqual([7]);
  });
});

describe("serve() handlers", () => {
  test("a handler table with a bad method id or a non-function is a UsageError", async () => {
    const e1 = await serve("tcp://127.0.0.1:0", { "1.5": (h: { data: Uint8Array }) => h.data } as never).catch((x) => x);
    expect(e1).toBeInstanceOf(UsageError);
    const e2 = await serve("tcp://127.0.0.1:0", { 1: "not a function" } as never).catch((x) => x);
    expect(e2).toBeInstanceOf(UsageError);
  });
});
