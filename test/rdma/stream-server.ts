/**
 * The stream test service (method ids and byte patterns: test/rpc/stream-pattern.ts) served
 * over rdma:// on the softrc TEST FIXTURE, for test/rdma/streams.test.ts: the part of
 * test/rpc/stream-peer.ts those tests use, listening with the rdma options given as JSON
 * (stream-peer.ts takes only a URL). Prints {"step": "listening", url, pid} when listening; at
 * stdin EOF it closes the server, waits for its QPs and MRs to go and prints
 * {"step": "leaks", qp, mr}, then exits 0.
 *
 *   bun test/rdma/stream-server.ts rdma://127.0.0.1:0?mode=socket '{"rdma":{"window":128}}'
 *
 * Thread: the main thread of its own process.
 */
import { serve } from "../../src/index.ts";
import type { ListenOptions } from "../../src/contract/transport.ts";
import { streamHandler } from "../../src/rpc/stream/server-stream.ts";
import { stdinLines } from "../helpers/stdin-lines.ts";
import * as p from "../rpc/stream-pattern.ts";
import { errName, live, out, waitFor } from "./peer-common.ts";

/** How long the closed server's QPs and MRs may take to go (a watchdog, not a timing claim). */
const TEARDOWN_WATCHDOG_MS = 10_000;

const floodSent: number[] = [];
const events: string[] = [];
const opts = (process.argv[3] ? JSON.parse(process.argv[3]) : {}) as ListenOptions;

const serving = await serve(
  process.argv[2]!,
  {
    [p.M_ECHO]: streamHandler(async (s) => {
      for await (const m of s) await s.send(m);
    }),
    [p.M_SOURCE]: streamHandler(async (s) => {
      const [count, seed] = p.readU32s((await s.read())!);
      for (let i = 0; i < count!; i++) await s.send(p.patternMessage(seed!, i));
      s.end({ count: String(count) });
    }),
    [p.M_SINK]: streamHandler(async (s) => {
      const [count, seed] = p.readU32s((await s.read())!);
      let received = 0;
      let bad = 0;
      for await (const m of s) {
        if (!p.isPattern(m, seed!, received)) bad++;
        received++;
      }
      await s.send(p.u32s(received, bad + (received === count ? 0 : 1)));
    }),
    [p.M_FLOOD]: streamHandler(async (s) => {
      const [size, id] = p.readU32s((await s.read())!);
      floodSent[id!] = 0;
      try {
        for (let i = 0; ; i++) {
          await s.send(p.patternMessage(0, i, size));
          floodSent[id!]!++;
        }
      } catch (e) {
        events.push(`flood:${errName(e)}`);
      }
    }),
    [p.M_WAIT]: streamHandler(async (s) => {
      await s.send(p.u32s(1));
      events.push("wait:started");
      await new Promise<void>((resolve) => (s.signal.aborted ? resolve() : s.signal.addEventListener("abort", () => resolve())));
      const after = await s.send(p.u32s(2)).then(() => "sent", (e) => errName(e));
      events.push(`wait:${errName(s.signal.reason)}:${after}`);
    }),
    [p.M_STATS]: () => {
      let inFlight = 0;
      for (const sess of serving.server.sessions) inFlight += sess.inFlight;
      return new TextEncoder().encode(JSON.stringify({ floodSent, events, inFlight: inFlight - 1 }));
    },
    [p.M_UNARY_ECHO]: (h) => h.data,
  },
  { ...opts, onError: () => {} },
);
out({ step: "listening", url: serving.url, pid: process.pid });

for await (const _ of stdinLines()) {
  // input is ignored; only EOF matters
}
serving.close();
await waitFor(() => live("qp") === 0 && live("mr") === 0, TEARDOWN_WATCHDOG_MS);
out({ step: "leaks", qp: live("qp"), mr: live("mr") });
process.exit(0);
