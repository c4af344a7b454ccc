/**
 * A tcp RPC server in its own process for the limit tests: `bun server.ts URL [LISTEN_OPTIONS_JSON]`
 * serves the conformance methods it needs through serve() (so replies go through the RPC
 * layer's backpressure path), prints {"url", "pid"} when listening, reports every session close
 * as a line {"closed": error name, "message"}, and exits when its stdin closes. Method M_GC runs
 * a full collection, so a test can tell memory held from garbage not yet collected.
 */

import { serve } from "../../src/index.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";
import * as m from "../conformance/methods.ts";
import { M_GC } from "./raw.ts";

const url = process.argv[2]!;
const opts = process.argv[3] ? JSON.parse(process.argv[3]) : {};

const serving = await serve(
  url,
  {
    [m.M_ECHO]: (h) => h.data,
    [M_GC]: () => {
      Bun.gc(true);
    },
    [m.M_DELAY_ECHO]: async (h) => {
      const data = h.data.slice();
      await Bun.sleep(m.readU32(data));
      return data;
    },
    [m.M_DIGEST]: (h) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setUint32(0, h.data.length, true);
      new DataView(b.buffer).setUint32(4, m.checksum(h.data), true);
      return b;
    },
  },
  {
    ...opts,
    onSessionClose: (_s, e) => console.log(JSON.stringify({ closed: e ? e.name : null, message: e ? e.message : null })),
  },
);
console.log(JSON.stringify({ url: serving.url, pid: process.pid }));
exitWhenParentGoes(() => serving.close());
