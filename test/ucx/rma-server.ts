/**
 * RMA test peer: serves over ucx (argv[2]), with RMA, a 4096-byte registered region per connection.
 *   1: the region's descriptor (for attachRegion)
 *   2: the region's bytes [offset u32, len u32] as this process sees them (proves one-sided
 *      writes landed in this process's memory)
 * Prints {"url"} when listening; exits when stdin closes.
 */
import { serve } from "../../src/index.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import type { LocalRegion } from "../../src/ucx/rma.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

const regions = new Map<unknown, LocalRegion>();
const serving = await serve(process.argv[2]!, {
  1: (h) => {
    const conn = h.session.conn as UcxConnection;
    let r = regions.get(conn);
    if (!r) {
      r = conn.registerMemory(4096);
      r.view.fill(0);
      regions.set(conn, r);
    }
    return r.descriptor();
  },
  2: (h) => {
    const dv = new DataView(h.data.buffer, h.data.byteOffset, 8);
    const r = regions.get(h.session.conn)!;
    return r.view.slice(dv.getUint32(0, true), dv.getUint32(0, true) + dv.getUint32(4, true));
  },
}, { ucx: { rma: true } });
console.log(JSON.stringify({ url: serving.url }));
exitWhenParentGoes(() => serving.close());
