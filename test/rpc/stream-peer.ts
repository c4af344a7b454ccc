/**
 * The stream test service (method ids in stream-pattern.ts). `startStreamService(url)` serves
 * it in the calling thread; run as a script it serves argv[2] in its own process, prints
 * {"url"} when listening and exits when its stdin closes; stream-worker.ts hosts it in a Worker.
 */

import { serve, type ListenOptions, type Serving } from "../../src/index.ts";
import { streamHandler } from "../../src/rpc/stream/server-stream.ts";
import type { ServerStream } from "../../src/rpc/stream/types.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";
import * as p from "./stream-pattern.ts";

/** Serves the stream test service on `url`; `opts`: the listen options (e.g. rdma's, from test/rdma/stream-server.ts). */
export async function startStreamService(url: string, opts: ListenOptions = {}): Promise<Serving> {
  const floodSent: number[] = [];
  const events: string[] = [];
  const holding = new Set<ServerStream>(); // M_HOLD streams open now
  const name = (e: unknown) => (e instanceof Error ? e.name : String(e));
  const serving = await serve(
    url,
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
          events.push(`flood:${name(e)}`);
        }
      }),
      [p.M_HOLD]: streamHandler(async (s) => {
        holding.add(s);
        await new Promise<void>((resolve) => s.signal.addEventListener("abort", () => resolve()));
        holding.delete(s);
        events.push(`hold:${name(s.signal.reason)}`);
      }),
      [p.M_THROW]: streamHandler(async (s) => {
        const m = await s.read();
        throw new TypeError(`refused: ${m?.length}`);
      }),
      [p.M_SERVER_CANCEL]: streamHandler(async (s) => {
        for (let i = 0; i < 3; i++) await s.send(p.patternMessage(9, i));
        s.cancel("enough");
      }),
      [p.M_WAIT]: streamHandler(async (s) => {
        await s.send(p.u32s(1));
        events.push(`wait:started:${s.deadline === undefined ? "none" : "deadline"}:${s.metadata.get("who") ?? ""}`);
        await new Promise<void>((resolve) => (s.signal.aborted ? resolve() : s.signal.addEventListener("abort", () => resolve())));
        const after = await s.send(p.u32s(2)).then(() => "sent", (e) => name(e));
        events.push(`wait:${name(s.signal.reason)}:${after}`);
      }),
      [p.M_STATS]: () => {
        let inFlight = 0;
        for (const sess of serving.server.sessions) inFlight += sess.inFlight;
        let holdBuffered = 0;
        for (const h of holding) holdBuffered += (h as ServerStream & { bufferedBytes: number }).bufferedBytes;
        return new TextEncoder().encode(JSON.stringify({ floodSent, events, inFlight: inFlight - 1, holdBuffered }));
      },
      [p.M_UNARY_ECHO]: (h) => h.data,
    },
    { ...opts, onError: () => {} },
  );
  return serving;
}

if (import.meta.main) {
  const serving = await startStreamService(process.argv[2]!);
  console.log(JSON.stringify({ url: serving.url, pid: process.pid }));
  exitWhenParentGoes(() => serving.close());
}
