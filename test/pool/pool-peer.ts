/**
 * The pool tests' server process: serves argv[2] (echo on 1; 2 and 3 hold the call and print
 * "held" once they have it), prints {"url": ...} when listening, exits when its stdin closes.
 */
import { serve } from "../../src/index.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

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
exitWhenParentGoes(() => s.close());
console.log(JSON.stringify({ url: s.url, pid: process.pid }));
