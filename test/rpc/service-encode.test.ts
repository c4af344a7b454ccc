/**
 * Typed service methods report a request that does not encode through their promise (issue
 * 10): `client.svc.m(bad)` returns a rejected promise (a UsageError naming the field), so
 * `.catch()` and `await` see it; it never throws synchronously and sends nothing. A response
 * the server cannot encode reaches the caller as RemoteError.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RemoteError, UsageError, defineService, implement, msgpack, rpcConnect, serve, struct, type RpcClient, type Serving } from "../../src/index.ts";

const Svc = defineService({
  add: { id: 1, request: struct({ a: "u8", b: "u8" }), response: struct({ sum: "u16" }) },
  big: { id: 2, request: struct({ n: "u32" }), response: struct({ v: "u8" }) },
  pack: { id: 3, request: msgpack<{ x: unknown }>(), response: msgpack<number>() },
});

let served = 0;
let s: Serving;
let c: RpcClient<typeof Svc>;
beforeAll(async () => {
  s = await serve(
    "tcp://127.0.0.1:0",
    implement(Svc, {
      add: ({ a, b }) => (served++, { sum: a + b }),
      big: ({ n }) => ({ v: n }), // out of range for a u8 when n > 255
      pack: () => (served++, 1),
    }),
    { onError: () => {} },
  );
  c = await rpcConnect(s.url, { service: Svc });
});
afterAll(() => {
  c?.close();
  s?.close();
});

describe("typed methods reject, never throw", () => {
  test("an out-of-range field: a rejected promise with a UsageError, nothing sent", async () => {
    const before = served;
    let p: Promise<unknown> | undefined;
    expect(() => {
      p = c.svc.add({ a: 300, b: 1 });
    }).not.toThrow();
    expect(p).toBeInstanceOf(Promise);
    const e = (await p!.catch((x: unknown) => x)) as Error;
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toContain('field "a"');
    expect(e.message).toContain("300");
    expect(await c.svc.add({ a: 2, b: 3 })).toEqual({ sum: 5 });
    expect(served).toBe(before + 1);
  });

  test(".catch() sees a wrong-typed value", async () => {
    const seen = await c.svc.add({ a: "1" as never, b: 1 }).then(
      () => null,
      (e) => e,
    );
    expect(seen).toBeInstanceOf(UsageError);
  });

  test("msgpack that cannot encode a value rejects too", async () => {
    const e = await c.svc.pack({ x: 1n << 70n }).catch((x) => x);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toContain("msgpack");
  });

  test("a response the server cannot encode arrives as RemoteError naming the field", async () => {
    const e = await c.svc.big({ n: 300 }).catch((x) => x);
    expect(e).toBeInstanceOf(RemoteError);
    expect(e.remoteName).toBe("UsageError");
    expect(e.message).toContain('field "v"');
    expect(await c.svc.big({ n: 7 })).toEqual({ v: 7 });
  });
});
