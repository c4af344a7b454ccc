/**
 * `bun drain-server.ts <url>`: a server for the drain tests. Methods: 1 echoes its bytes XOR
 * 0x5a after a 1 ms pause; 2 prints {"started":2} and answers its bytes after as many ms as
 * its first u32 says; 3 prints {"started":3} and never answers. A stdin line `drain <ms>`
 * drains the server and prints the DrainResult as {"drained": ...}. Prints {"url"} when
 * ready and exits when stdin closes.
 */

import { serve } from "../../src/index.ts";
import { stdinLines } from "../helpers/stdin-lines.ts";

const serving = await serve(process.argv[2] ?? "tcp://127.0.0.1:0", {
  1: async (h) => {
    await Bun.sleep(1);
    return h.data.map((b) => b ^ 0x5a);
  },
  2: async (h) => {
    console.log(JSON.stringify({ started: 2 }));
    await Bun.sleep(new DataView(h.data.buffer, h.data.byteOffset).getUint32(0, true));
    return h.data.slice();
  },
  3: () => {
    console.log(JSON.stringify({ started: 3 }));
    return new Promise<Uint8Array>(() => {});
  },
}, { onError: () => {} });
console.log(JSON.stringify({ url: serving.url }));

(async () => {
  for await (const line of stdinLines()) {
    const [cmd, ms] = line.split(" ");
    if (cmd === "drain") serving.drain(Number(ms)).then((r) => console.log(JSON.stringify({ drained: r })));
  }
  serving.close();
  process.exit(0);
})();
