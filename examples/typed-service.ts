/**
 * A typed service: one definition, typed on both ends.
 *
 * `defineService` maps method names to ids and codecs: `struct({...})` is a fixed little-endian
 * layout (u64 fields are bigints), `msgpack<T>()` carries any msgpack value, and a method
 * without codecs takes and returns raw bytes. `implement(def, impl)` turns typed functions into
 * handlers for `serve()` (a function may be async), and `rpcConnect(url, { service })` gives
 * `client.svc`, whose methods take and return the decoded types. A handler that throws becomes
 * a `RemoteError` on the caller with the error's name and message (and is reported to the
 * server's `onError`); a deadline that passes is a
 * `TimeoutError` (the server is told to cancel). The same definition works over every
 * transport: only the URL changes.
 *
 * Run: bun examples/typed-service.ts
 */

import assert from "node:assert/strict";
import { defineService, implement, msgpack, RemoteError, rpcConnect, serve, struct, TimeoutError } from "hotpath";

const Inventory = defineService({
  /** Stock of one item: a fixed layout in, a msgpack object out. */
  stock: { id: 1, request: struct({ item: "u64", warehouse: "u16" }), response: msgpack<{ item: string; count: number }>() },
  /** Adds an entry; answers with the new total as a fixed layout. */
  add: { id: 2, request: msgpack<{ item: string; count: number }>(), response: struct({ total: "u32" }) },
  /** Raw bytes both ways. */
  ping: { id: 3 },
  /** Never answers in time: shows a deadline. */
  slow: { id: 4 },
});

const counts = new Map<string, number>([["item-7", 12]]);
const server = await serve(
  "tcp://127.0.0.1:0",
  implement(Inventory, {
    stock: ({ item, warehouse }) => {
      if (warehouse !== 1) throw new RangeError(`no warehouse ${warehouse}`);
      const name = `item-${item}`;
      return { item: name, count: counts.get(name) ?? 0 };
    },
    add: async ({ item, count }) => {
      counts.set(item, (counts.get(item) ?? 0) + count);
      let total = 0;
      for (const c of counts.values()) total += c;
      return { total };
    },
    ping: (bytes) => bytes,
    slow: async () => {
      await Bun.sleep(200);
      return new Uint8Array(0);
    },
  }),
  // The server's side of a failure (without onError: one line on stderr, rate-limited).
  { onError: (error, ctx) => console.log(`server: ${ctx.source} failure in method ${ctx.method}: ${error}`) },
);
const client = await rpcConnect(server.url, { service: Inventory });
try {
  const stock = await client.svc.stock({ item: 7n, warehouse: 1 });
  assert.deepEqual(stock, { item: "item-7", count: 12 });

  const { total } = await client.svc.add({ item: "item-9", count: 5 });
  assert.equal(total, 17);

  const pong = await client.svc.ping(new Uint8Array([1, 2, 3]));
  assert.equal(Buffer.compare(pong, new Uint8Array([1, 2, 3])), 0);

  const remote = await client.svc.stock({ item: 7n, warehouse: 2 }).catch((e: unknown) => e);
  assert.ok(remote instanceof RemoteError);
  console.log(`a handler's throw arrives as ${remote.name} (${remote.remoteName}): ${remote.message}`);

  const late = await client.svc.slow(new Uint8Array(0), { timeoutMs: 50 }).catch((e: unknown) => e);
  assert.ok(late instanceof TimeoutError);
  console.log(`a passed deadline: ${late.name}: ${late.message}`);

  console.log(`stock ${JSON.stringify(stock)}, total after add ${total}, ping ${pong.length} bytes`);
} finally {
  client.close();
  server.close();
}
