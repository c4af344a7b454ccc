/**
 * Request handles kept past their reply, hot-path completion order, and requests nobody
 * received: a late use of a handle never answers another request (serve() pools none; a pooled
 * handle's signal is reset when reissued), onResponse runs in arrival order even when an error
 * response is queued first, and a session's unreceived requests go when it closes (and all of
 * them with Server.close()), so they hold no transport memory.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Client, SEND_OK, Server, connect, listen, rpcConnect, serve, UsageError } from "../../src/index.ts";

const te = new TextEncoder();
const td = new TextDecoder();
let n = 0;
const name = (what: string) => `inproc://handles-${what}-${process.pid}-${n++}`;
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

async function rawPair(what: string) {
  const url = name(what);
  const listener = await listen(url, { wait: { mode: "spin", spinNs: 0 } });
  const server = new Server();
  server.attach(listener);
  const client = new Client<number>(await connect(url, { wait: { mode: "spin", spinNs: 0 } }));
  closers.push(() => server.close(), () => client.close());
  for (let i = 0; i < 200 && server.sessions.size === 0; i++) await Bun.sleep(5);
  expect(server.sessions.size).toBe(1);
  return { server, client };
}

describe("request handles", () => {
  test("serve(): a sync handler that answers again later cannot answer the next request (its late respond is dropped)", async () => {
    const late: string[] = [];
    const s = await serve(name("serve"), {
      1: (h) => {
        setTimeout(() => {
          try {
            h.respond(te.encode("late-for-call-1"));
            late.push("respond accepted");
          } catch (e) {
            late.push((e as Error).name);
          }
        }, 20);
        return te.encode("first-for-call-1");
      },
      2: async (h) => {
        const t = td.decode(h.data);
        await Bun.sleep(60);
        return te.encode(`answer-to-${t}`);
      },
    });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    expect(td.decode(await c.request(1, te.encode("one")))).toBe("first-for-call-1");
    expect(td.decode(await c.request(2, te.encode("two")))).toBe("answer-to-two");
    expect(late.length).toBe(1);
  });

  test("serve(): every late use of a consumed handle is a UsageError", async () => {
    let kept: any = null;
    const s = await serve(name("serve-late"), {
      1: (h) => {
        kept = h;
        return h.data;
      },
      2: async () => te.encode("two"),
    });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    await c.request(1, te.encode("x"));
    const pending = c.request(2, te.encode("y"));
    await Bun.sleep(5);
    expect(() => kept.reply(te.encode("stolen"))).toThrow(UsageError);
    expect(() => kept.data).toThrow(UsageError);
    expect(td.decode(await pending)).toBe("two");
  });

  test("a pooled handle's signal is fresh when reissued, and a consumed handle's signal is a UsageError", async () => {
    const { server, client } = await rawPair("signal");
    client.onResponse = () => {};
    expect(client.call(1, te.encode("a"), 1)).toBe(SEND_OK);
    server.poll();
    const a = server.recv()!;
    a.cancel(); // the client gave up on it
    a.drop();
    expect(() => a.signal).toThrow(UsageError);
    expect(client.call(1, te.encode("b"), 2)).toBe(SEND_OK);
    server.poll();
    const b = server.recv()!;
    expect(b.cancelled).toBe(false);
    expect(b.signal.aborted).toBe(false);
    expect(td.decode(b.data)).toBe("b");
    b.reply(te.encode("B"));
  });

  test("hot path: onResponse runs in arrival order when an error response is queued before OK responses", async () => {
    const { server, client } = await rawPair("order");
    const order: string[] = [];
    client.onResponse = (ud, _b, err) => order.push(`${ud}${err ? "(error)" : ""}`);
    for (const ud of [1, 2, 3, 4]) expect(client.call(1, new Uint8Array([ud]), ud)).toBe(SEND_OK);
    server.poll();
    const hs = [server.recv()!, server.recv()!, server.recv()!, server.recv()!];
    hs[0]!.reply(new Uint8Array([1]));
    hs[1]!.replyError("Boom", "call 2 fails");
    hs[2]!.reply(new Uint8Array([3]));
    hs[3]!.reply(new Uint8Array([4]));
    for (let i = 0; i < 100 && order.length < 4; i++) client.poll();
    expect(order).toEqual(["1", "2(error)", "3", "4"]);
  });

  test("a session's requests nobody received go when it closes; Server.close() drops the rest", async () => {
    const { server, client } = await rawPair("inbox");
    client.onResponse = () => {};
    for (let i = 0; i < 3; i++) expect(client.call(1, te.encode(`r${i}`), i)).toBe(SEND_OK);
    server.poll();
    client.close();
    for (let i = 0; i < 200 && server.sessions.size > 0; i++) {
      server.poll();
      await Bun.sleep(5);
    }
    expect(server.sessions.size).toBe(0);
    expect(server.recv()).toBeNull();

    const second = await rawPair("inbox-close");
    second.client.onResponse = () => {};
    expect(second.client.call(1, te.encode("kept"), 9)).toBe(SEND_OK);
    second.server.poll();
    second.server.close();
    expect(second.server.recv()).toBeNull();
  });
});
