/**
 * Test peer for close-held.test.ts (run with UCX_TLS=shm,self, which UCX reads from the
 * process environment): one RPC server and two clients A and B in this process, connected by
 * worker address. A sends a 6000-byte request (eager over shared memory, so received in place)
 * that the application receives and holds; A closes; B sends two small requests. The
 * application replies with each handle's data. Prints one JSON line of
 * what it saw: A's handle data (length, whether every byte is A's), whether B's two handles
 * share one message object, and what B's two calls got back.
 */
import { Client, Server, connect, listen } from "../../src/index.ts";

const WAIT = { wait: { mode: "spin" as const, spinNs: 0 } };
const listener = await listen("ucx://127.0.0.1:0?wireup=address", WAIT);
const server = new Server();
server.attach(listener);
const inbox = () => (server as unknown as { inbox: { length: number } }).inbox.length;
const pump = async (cond: () => boolean, what: string) => {
  for (let i = 0; i < 2000 && !cond(); i++) {
    server.poll();
    await Bun.sleep(1);
  }
  if (!cond()) throw new Error("timeout: " + what);
};
const a = new Client<string>(await connect(listener.url, WAIT));
await pump(() => server.sessions.size === 1, "A accepted");
const b = new Client<string>(await connect(listener.url, WAIT));
await pump(() => server.sessions.size === 2, "B accepted");
const td = new TextDecoder();
const te = new TextEncoder();
const got: Record<string, string> = {};
b.onResponse = (ud, body, err) => void (got[ud] = err ? `error: ${err.message}` : td.decode(body));
a.onResponse = () => {};

a.call(1, new Uint8Array(6000).fill(0x41), "a1");
await pump(() => inbox() > 0, "A's request queued");
const hA = server.recv()!; // the application holds A's request
a.close();
await pump(() => server.sessions.size === 1, "A's session closed");
const b1 = "B-request-1-xxxxxxxxxxxxxxxxxxx";
const b2 = "B-request-2-yyyyyyyyyyyyyyyyyyy";
b.call(1, te.encode(b1), "b1");
await pump(() => inbox() >= 1, "B1 queued");
const hB1 = server.recv()!;
const aData = hA.data;
const aLength = aData.length;
const aAllA = aData.every((x) => x === 0x41);
hA.reply(hA.data); // A's session is gone: the reply is refused, and the handle's message released
b.call(1, te.encode(b2), "b2");
await pump(() => inbox() >= 1, "B2 queued");
const hB2 = server.recv()!;
const msgOf = (h: object) => (h as { msg: unknown }).msg;
const shared = msgOf(hB1) === msgOf(hB2);
const b1Data = td.decode(hB1.data);
hB1.reply(hB1.data);
hB2.reply(hB2.data);
for (let i = 0; i < 2000 && Object.keys(got).length < 2; i++) {
  server.poll();
  b.poll();
  await Bun.sleep(1);
}
console.log(JSON.stringify({ aLength, aAllA, shared, b1Data, b1Reply: got.b1 ?? null, b2Reply: got.b2 ?? null, b1, b2 }));
b.close();
server.close();
process.exit(0);
