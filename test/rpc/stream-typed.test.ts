/**
 * Typed stream methods (service.ts MethodDef `stream`): "server", "client" and "bidi" methods
 * through defineService / implement / rpcConnect over tcp and shm, values through their codecs
 * per message; a value that does not encode rejects its send; a message that does not decode
 * is a DecodeError on the reading side; an implementation's throw reaches the client. The types
 * are checked by tsc (this file is part of `bunx tsc --noEmit`): the expectType lines below
 * fail to compile when a method's shape drifts.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { RemoteError, UsageError, defineService, implement, msgpack, rpcConnect, serve, struct } from "../../src/index.ts";
import type { ClientStreamCall, ServerStreamCall, TypedStream } from "../../src/rpc/stream/typed.ts";
import type { ServerStream } from "../../src/rpc/stream/types.ts";

const Point = struct({ x: "f64", y: "f64" });
const Svc = defineService({
  range: { id: 1, stream: "server", request: struct({ from: "u32", count: "u32" }), response: struct({ n: "u32" }) },
  sum: { id: 2, stream: "client", request: Point, response: msgpack<{ total: number; count: number }>() },
  chat: { id: 3, stream: "bidi", request: msgpack<{ text: string }>(), response: msgpack<{ echo: string; at: number }>() },
  ping: { id: 4 },
  fail: { id: 5, stream: "server", request: msgpack<string>(), response: msgpack<string>() },
});

/** Compile-time checks: `expectType<T>()(v)` compiles only when v is a T. */
const expectType = <T>() => <V extends T>(v: V): V => v;

let n = 0;
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

const impl = implement(Svc, {
  async *range({ from, count }, s) {
    expectType<ServerStream>()(s);
    for (let i = 0; i < count; i++) yield { n: from + i };
  },
  async sum(points) {
    let total = 0;
    let count = 0;
    for await (const p of points) {
      total += p.x * p.y;
      count++;
    }
    return { total, count };
  },
  async chat(s) {
    let k = 0;
    for await (const m of s) await s.send({ echo: m.text.toUpperCase(), at: k++ });
  },
  ping: (b) => b,
  async *fail(why) {
    yield "first";
    throw new RangeError(`no: ${why}`);
  },
});

describe.each(["tcp", "shm"] as const)("typed stream methods over %s", (kind) => {
  const url = () => (kind === "tcp" ? "tcp://127.0.0.1:0" : `shm://typed-${process.pid}-${n++}`);

  test("server, client and bidi methods carry values through their codecs", async () => {
    const s = await serve(url(), impl, { onError: () => {} });
    const c = await rpcConnect(s.url, { service: Svc });
    closers.push(() => s.close(), () => c.close());

    const call = c.svc.range({ from: 10, count: 500 });
    expectType<ServerStreamCall<{ n: number }>>()(call);
    const got: number[] = [];
    for await (const { n } of call) got.push(n);
    expect(got).toEqual(Array.from({ length: 500 }, (_, i) => 10 + i));

    const up = c.svc.sum();
    expectType<ClientStreamCall<{ x: number; y: number }, { total: number; count: number }>>()(up);
    for (let i = 0; i < 100; i++) await up.send({ x: i, y: 2 });
    expect(await up.end()).toEqual({ total: 9900, count: 100 });

    const chat = c.svc.chat();
    expectType<TypedStream<{ text: string }, { echo: string; at: number }>>()(chat);
    await chat.send({ text: "hi" });
    await chat.send({ text: "there" });
    chat.end();
    const echoes = [];
    for await (const m of chat) echoes.push(m);
    expect(echoes).toEqual([{ echo: "HI", at: 0 }, { echo: "THERE", at: 1 }]);

    expectType<Promise<Uint8Array>>()(c.svc.ping(new Uint8Array([1])));
    expect(Array.from(await c.svc.ping(new Uint8Array([1, 2])))).toEqual([1, 2]);
    await c.svc.range({ from: 0, count: 1 }).stream.closed;
    expect(c.inFlight).toBe(0);
  });

  test("errors: a value that does not encode rejects its send; an implementation's throw reaches the client after what it yielded", async () => {
    const s = await serve(url(), impl, { onError: () => {} });
    const c = await rpcConnect(s.url, { service: Svc });
    closers.push(() => s.close(), () => c.close());
    const up = c.svc.sum();
    expect(await up.send({ x: "nope" as unknown as number, y: 1 }).catch((e) => e)).toBeInstanceOf(UsageError);
    expect(await up.end()).toEqual({ total: 0, count: 0 });

    const seen: string[] = [];
    const e = await (async () => {
      for await (const v of c.svc.fail("why")) seen.push(v);
    })().catch((x) => x);
    expect(seen).toEqual(["first"]);
    expect(e).toBeInstanceOf(RemoteError);
    expect(e.remoteName).toBe("RangeError");
    expect(e.remoteMessage).toBe("no: why");
  });

  test("a message that does not decode is a DecodeError on the reader, and the stream is cancelled", async () => {
    // The raw server answers the typed "range" method with bytes that are not its struct, then waits.
    const s = await serve(url(), { 1: implement(defineService({ r: { id: 1, stream: "server" } }), { async *r(_req, st) { yield new Uint8Array(3); await new Promise((resolve) => st.signal.addEventListener("abort", resolve)); } })[1]! }, { onError: () => {} });
    const c = await rpcConnect(s.url, { service: Svc });
    closers.push(() => s.close(), () => c.close());
    const call = c.svc.range({ from: 0, count: 1 });
    const e = await (async () => {
      for await (const _ of call) {
        // nothing decodes
      }
    })().catch((x) => x);
    expect(e.name).toBe("DecodeError");
    expect(call.stream.signal.aborted).toBe(true);
  });
});
