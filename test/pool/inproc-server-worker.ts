/**
 * Worker of the pool's inproc test: post {url}; it serves it (echo on 1; 2 holds the call and
 * posts "held" once it has it) and posts {url} back once listening.
 */
import { serve } from "../../src/index.ts";

declare const self: Worker;
self.onmessage = async (e: MessageEvent) => {
  const s = await serve(e.data.url as string, {
    1: (h) => h.data.slice(),
    2: () => {
      self.postMessage("held");
      return new Promise<Uint8Array>(() => {});
    },
  });
  self.postMessage({ url: s.url });
};
