/**
 * The head-of-line benchmark's service (bench/hol.bench.ts): method 1 echoes, method 2 echoes
 * after the delay (ms, u32 LE) in its first 4 bytes, method 3 never answers. Run as a script it
 * serves argv[2] in its own process and prints {"url": ...}; in a Worker (inproc) it serves the
 * URL posted to it and posts {"url": ...} back.
 */

import { serve, type Serving } from "../../src/index.ts";

export const HOL_ECHO = 1;
export const HOL_SLOW = 2;
export const HOL_NEVER = 3;

export function startHolService(url: string): Promise<Serving> {
  return serve(url, {
    [HOL_ECHO]: (h) => h.data,
    [HOL_SLOW]: async (h) => {
      await Bun.sleep(new DataView(h.data.buffer, h.data.byteOffset, 4).getUint32(0, true));
      return h.data;
    },
    [HOL_NEVER]: () => new Promise<Uint8Array>(() => {}),
  });
}

declare const self: Worker;
if (typeof Bun !== "undefined" && !Bun.isMainThread) {
  self.onmessage = async (e: MessageEvent<{ url: string }>) => {
    const s = await startHolService(e.data.url);
    self.postMessage({ url: s.url });
  };
} else if (import.meta.main) {
  const s = await startHolService(process.argv[2]!);
  console.log(JSON.stringify({ url: s.url, pid: process.pid }));
  for await (const _ of Bun.stdin.stream()) {
    // EOF: the benchmark ended
  }
  s.close();
  process.exit(0);
}
