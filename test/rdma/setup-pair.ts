/**
 * rdma:// listener and client in ONE process over the softrc TEST FIXTURE (HOTPATH_IBVERBS /
 * HOTPATH_RDMACM set by the parent, test/rdma/setup.test.ts): listen on port 0 in mode
 * `argv[2]` ("cm" or "socket"), connect to listener.url, bytes both ways, caps, then the client
 * closes (the server's connection sees TransportClosedError), a second client is closed by
 * listener.close(true), and the fixture's live objects are back to where they started. Prints
 * one JSON line; then returns without exiting, so the process exits only if nothing of the
 * transport still holds it (the parent checks that it does).
 */
import { connect, listen } from "../../src/connect/registry.ts";
import type { Connection, RxMessage } from "../../src/contract/transport.ts";
import { live } from "./peer-common.ts";

const mode = process.argv[2] === "socket" ? "socket" : "cm";
const until = async (cond: () => boolean, what: string, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await Bun.sleep(2);
  }
};

/** Messages into an array (copied), and the close reason. */
function collect(c: Connection) {
  const got: { head: number[]; body: number[] }[] = [];
  const state = { closed: null as string | null };
  c.setReceiver({
    onMessage(m: RxMessage) {
      got.push({ head: [...m.head], body: [...m.body] });
      m.release();
    },
    onClose(e) {
      state.closed = e === null ? "local" : e.constructor.name;
    },
  });
  return { got, state };
}

const liveBefore = live("all");
const l = await listen(`rdma://127.0.0.1:0${mode === "socket" ? "?mode=socket" : ""}`);
const accepted: Connection[] = [];
l.onConnection((c) => accepted.push(c));
const url = l.url;
const c = await connect(url);
await until(() => accepted.length === 1, "accepted connection");
const s = accepted[0]!;
const sc = collect(s);
const cc = collect(c);
const body = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
const sent = c.trySend(new Uint8Array([1, 2, 3]), body);
await until(() => (s.poll(), sc.got.length === 1), "message at the server");
const back = s.trySend(new Uint8Array([9]), new Uint8Array([4, 5, 6]));
await until(() => (c.poll(), cc.got.length === 1), "reply at the client");
const caps = c.caps;
const bytesOk = sc.got[0]!.body.every((b, i) => b === body[i]) && sc.got[0]!.body.length === body.length;
c.close();
await until(() => (s.poll(), sc.state.closed !== null), "server side closed");

// A second client, closed by the listener (closeConnections).
const c2 = await connect(url);
const c2s = collect(c2);
await until(() => accepted.length === 2, "second accepted connection");
l.close(true);
await until(() => (c2.poll(), c2s.state.closed !== null), "second client closed by listener.close(true)");
await until(() => live("all") === liveBefore + (mode === "cm" ? 1 : 0), "fixture objects released", 10_000).catch(() => {});

console.log(
  JSON.stringify({
    mode,
    url,
    sent,
    back,
    serverGot: { head: sc.got[0]!.head, bodyLength: sc.got[0]!.body.length, bytesOk },
    clientGot: cc.got[0],
    caps,
    transport: c.transport,
    peer: c.peer,
    serverClosedWith: sc.state.closed,
    clientClosedWith: cc.state.closed,
    secondClosedWith: c2s.state.closed,
    stats: l.stats,
    liveBefore,
    liveAfter: live("all"),
    liveContexts: live("context"),
  }),
);
