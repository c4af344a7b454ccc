/**
 * The pool tests' server process: serves argv[2] (echo on 1; 2 and 3 hold the call and print
 * "held" once they have it), prints {"url": ...} when listening, exits when its stdin closes.
 * A stdin line `drain <ms>` calls serving.drain(ms), prints "draining" once the listener is
 * closed (drain closes it before returning), then {"drained": DrainResult} and exits 0.
 */
import { serve } from "../../src/index.ts";
import { stdinLines } from "../helpers/stdin-lines.ts";

const s = await serve(process.argv[2]!, {
  1: (h) => h.data.slice(),
  2: () => {
    console.log("held");
    return new Promise<Uint8Array>(() => {});
  },
  3: () => {
    console.log("held");
    return new Promise<Uint8Array>(() => {});
  },
});
(async () => {
  for await (const line of stdinLines()) {
    const [cmd, ms] = line.split(" ");
    if (cmd !== "drain") continue;
    const done = s.drain(Number(ms));
    console.log("draining");
    done.then((r) => {
      console.log(JSON.stringify({ drained: r }));
      process.exit(0);
    });
  }
  s.close(); // stdin closed: the parent is gone
  process.exit(0);
})();
console.log(JSON.stringify({ url: s.url, pid: process.pid }));
