/**
 * A stream client over rdma:// on the softrc TEST FIXTURE, for test/rdma/streams.test.ts,
 * against test/rdma/stream-server.ts. Prints one JSON line `{"step", ...}` per scenario (what
 * the test compares), then closes and prints {"step": "leaks", qp, mr} once its QPs and MRs
 * are gone; exits 0 (a scenario that throws exits 1 with {"step": "failed"}).
 *
 *   bun test/rdma/stream-client.ts <url> '<connect options JSON>' all '<plan JSON>'
 *       server, client and bidi streams (plan.count mixed-size messages each), a reader that
 *       stops (plan.stallWindow, plan.stallSize), a client cancel, afterwards
 *   bun test/rdma/stream-client.ts <url> '<connect options JSON>' kill
 *       reads a long server stream, prints "streaming", then reports how the stream and a
 *       request end once the server is killed (the test kills it by pid)
 *
 * Thread: the main thread of its own process.
 */
import { rpcConnect, type Client } from "../../src/index.ts";
import type { ConnectOptions } from "../../src/contract/transport.ts";
import type { ClientStream } from "../../src/rpc/stream/types.ts";
import * as p from "../rpc/stream-pattern.ts";
import { errName, errText, live, out, waitFor } from "./peer-common.ts";

/** The receive slot: messages above it travel as write-with-immediate into the landing zone. */
const RECV_SLOT_BYTES = 4096;
/** Watchdog for a wait on the other process (never a timing claim). */
const WATCHDOG_MS = 20_000;

const td = new TextDecoder();

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + WATCHDOG_MS;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`no ${what} within ${WATCHDOG_MS} ms`);
    await Bun.sleep(2);
  }
}

/** What the test asks of the "all" scenario. */
interface Plan {
  count: number;
  stallWindow: { messages: number; bytes: number };
  stallSize: number;
}

interface Stats {
  floodSent: number[];
  events: string[];
  inFlight: number;
}

async function all(client: Client<any>, plan: Plan): Promise<void> {
  const { count: COUNT, stallWindow: STALL_WINDOW, stallSize: STALL_SIZE } = plan;
  const stats = async (): Promise<Stats> => JSON.parse(td.decode(await client.request(p.M_STATS)));

  {
    const s = client.stream(p.M_SOURCE);
    await s.send(p.u32s(COUNT, 11));
    s.end();
    let i = 0;
    let bad = -1;
    let large = 0;
    for await (const m of s) {
      if (bad < 0 && !p.isPattern(m, 11, i)) bad = i;
      if (m.length > RECV_SLOT_BYTES) large++;
      i++;
    }
    await s.closed;
    out({ step: "server-stream", count: i, bad, large, trailers: s.trailers?.get("count") ?? null });
  }

  {
    const s = client.stream(p.M_SINK);
    await s.send(p.u32s(COUNT, 23));
    let large = 0;
    for (let i = 0; i < COUNT; i++) {
      const m = p.patternMessage(23, i);
      if (m.length > RECV_SLOT_BYTES) large++;
      await s.send(m);
    }
    s.end();
    const reply = p.readU32s((await s.read())!);
    const end = await s.read();
    await s.closed;
    out({ step: "client-stream", reply, large, end });
  }

  {
    const s = client.stream(p.M_ECHO);
    const reader = (async () => {
      let i = 0;
      let bad = -1;
      for await (const m of s) {
        if (bad < 0 && !p.isPattern(m, 37, i)) bad = i;
        i++;
      }
      return { count: i, bad };
    })();
    for (let i = 0; i < COUNT; i++) await s.send(p.patternMessage(37, i));
    s.end();
    const r = await reader;
    await s.closed;
    out({ step: "bidi", ...r });
  }

  {
    // A reader that stops: the server's flood stops at exactly the stream's window, calls go on.
    const s = client.stream(p.M_FLOOD, { window: STALL_WINDOW }) as ClientStream & { bufferedBytes: number };
    await s.send(p.u32s(STALL_SIZE, 0));
    await until(async () => ((await stats()).floodSent[0] ?? 0) >= STALL_WINDOW.messages, "a window of flood sends");
    const held: number[] = [];
    for (let k = 0; k < 5; k++) held.push((await stats()).floodSent[0]!);
    const unary = p.readU32s(await client.request(p.M_UNARY_ECHO, p.u32s(7)));
    const buffered = s.bufferedBytes;
    let bad = -1;
    for (let i = 0; i < 200; i++) if (bad < 0 && !p.isPattern((await s.read())!, 0, i, STALL_SIZE)) bad = i;
    await until(async () => (await stats()).floodSent[0]! >= 200, "the flood to go on");
    s.cancel();
    await until(async () => (await stats()).events.includes("flood:CancelledError"), "the flood's cancel on the server");
    out({ step: "stall", held, unary, buffered, bad, resumed: true });
  }

  {
    // A client cancel ends the server side: its signal aborts and its next send rejects.
    const s = client.stream(p.M_WAIT);
    const first = p.readU32s((await s.read())!);
    s.cancel();
    const read = errName(await s.read().catch((e) => e));
    const closed = errName(await s.closed.catch((e) => e));
    await until(async () => (await stats()).events.includes("wait:CancelledError:CancelledError"), "the server's abort");
    out({ step: "cancel", first, read, closed, aborted: s.signal.aborted, server: (await stats()).events.filter((e) => e.startsWith("wait:")) });
  }

  await until(async () => client.inFlight === 0 && (await stats()).inFlight === 0, "every stream gone on both sides");
  const replies = await Promise.all(Array.from({ length: 64 }, (_, i) => client.request(p.M_UNARY_ECHO, p.u32s(i))));
  out({ step: "afterwards", clientInFlight: client.inFlight, serverInFlight: (await stats()).inFlight, calls: replies.filter((r, i) => p.readU32s(r)[0] === i).length });
}

async function kill(client: Client<any>): Promise<void> {
  const s = client.stream(p.M_SOURCE);
  await s.send(p.u32s(0x7fffffff, 5));
  s.end();
  let got = 0;
  let bad = -1;
  const readAll = (async () => {
    for (;;) {
      const m = await s.read();
      if (m === null) return "end";
      if (bad < 0 && !p.isPattern(m, 5, got)) bad = got;
      if (++got === 100) out({ step: "streaming", got });
    }
  })();
  const read = await readAll.then((r) => r, (e) => e);
  const closed = await s.closed.then(() => null, (e) => e);
  const request = await client.request(p.M_UNARY_ECHO, p.u32s(1)).then(() => null, (e) => e);
  out({ step: "killed", read: errName(read), readMessage: errText(read), closed: errName(closed), request: errName(request), aborted: s.signal.aborted, bad, got });
}

try {
  const [url, optsJson, scenario, planJson] = process.argv.slice(2);
  const client = await rpcConnect(url!, JSON.parse(optsJson!) as ConnectOptions);
  await (scenario === "kill" ? kill(client) : all(client, JSON.parse(planJson!) as Plan));
  client.close();
  await waitFor(() => live("qp") === 0 && live("mr") === 0, WATCHDOG_MS);
  out({ step: "leaks", qp: live("qp"), mr: live("mr") });
  process.exit(0);
} catch (e) {
  out({ step: "failed", error: errText(e), stack: e instanceof Error ? e.stack : null });
  process.exit(1);
}
