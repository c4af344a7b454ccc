/**
 * `bun throwing-server.ts`: a server without onError whose method 1 always throws
 * TypeError("bad input <n>") and method 2 echoes; what the default report prints goes to this
 * process's stderr for the parent to read. Prints {"url"} when ready; closes the server (which
 * prints the count of lines left out) and exits when stdin closes.
 */

import { serve } from "../../src/index.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

let n = 0;
const serving = await serve("tcp://127.0.0.1:0", {
  1: () => {
    throw new TypeError(`bad input ${++n}`);
  },
  2: (h) => h.data,
});
console.log(JSON.stringify({ url: serving.url }));
exitWhenParentGoes(() => serving.close());
