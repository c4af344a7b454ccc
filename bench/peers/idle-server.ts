/**
 * Server of the idle-wake benchmark (bench/idle-wake.bench.ts): serve() on URL in the wait policy
 * given as JSON (default: the transport's default), with stage stamps on a clock every process of
 * the host shares (CLOCK_MONOTONIC: Bun.nanoseconds() plus this process's offset to it).
 *   method 1: echo; the first 4 bytes of the body are the call's id (u32 LE)
 *   method 2: the stamps of every echo so far, as JSON { id: [wokenNs, handlerNs, ringNs, ringStartNs] }
 *     wokenNs   the last doorbell before the call (the control socket's data callback, or for
 *               inproc the waitAsync callback: SegmentConnection.onDoorbell's entry); 0 if none
 *     handlerNs the handler's entry
 *     ringNs    the first doorbell for the peer written after the handler (the socket write or
 *               the Atomics.notify returned); 0 if the reply rang nothing (the peer was awake)
 *     ringStartNs when that doorbell's write began
 *   method 3: forget the stamps
 * The stamps wrap the connection's own onDoorbell() and its ring function (instance fields, so
 * the code that runs is the connection's; each wrap adds one clock read, ~20 ns).
 *   bun bench/peers/idle-server.ts URL ['{"spinNs":0}']   prints {"url","pid"}; exits on stdin EOF
 *   as a Worker: post {url, wait}; it posts {url} back when listening (inproc rows)
 */

import { serve, type Serving } from "../../src/index.ts";
import { clockOffsetNs, stampConnection } from "./idle-clock.ts";

export const M_ECHO = 1;
export const M_STAMPS = 2;
export const M_RESET = 3;

export async function startIdleServer(url: string, wait: Record<string, unknown> | undefined): Promise<Serving> {
  const off = clockOffsetNs();
  const clock = () => Bun.nanoseconds() + off;
  const stamps = new Map<number, number[]>();
  let lastWoken = 0;
  let current: number[] | null = null;
  const onWoken = (ns: number) => void (lastWoken = ns);
  const onRing = (start: number, end: number) => {
    if (current === null || current[2] !== 0) return;
    current[2] = end;
    current[3] = start;
  };
  let serving: Serving;
  const stampAll = () => {
    for (const s of serving.server.sessions) stampConnection(s.conn, clock, onWoken, onRing);
  };
  serving = await serve(
    url,
    {
      [M_ECHO]: (h) => {
        const t = clock();
        const d = h.data;
        const id = d.length >= 4 ? (d[0]! | (d[1]! << 8) | (d[2]! << 16) | (d[3]! << 24)) >>> 0 : 0;
        current = [lastWoken, t, 0, 0];
        stamps.set(id, current);
        lastWoken = 0;
        return d;
      },
      [M_STAMPS]: () => {
        stampAll();
        current = null;
        return new TextEncoder().encode(JSON.stringify(Object.fromEntries(stamps)));
      },
      [M_RESET]: () => {
        stampAll();
        current = null;
        stamps.clear();
        return new Uint8Array(0);
      },
    },
    wait ? { wait } : {},
  );
  return serving;
}

declare const self: Worker;
if (import.meta.main) {
  const [url, waitJson] = process.argv.slice(2);
  const serving = await startIdleServer(url!, waitJson ? JSON.parse(waitJson) : undefined);
  console.log(JSON.stringify({ url: serving.url, pid: process.pid }));
  for await (const _ of Bun.stdin.stream());
  serving.close();
  process.exit(0);
} else if (!Bun.isMainThread) {
  self.onmessage = async (e: MessageEvent) => {
    const serving = await startIdleServer(e.data.url, e.data.wait);
    self.postMessage({ url: serving.url });
  };
}
