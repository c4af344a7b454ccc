/**
 * RMA owner (a test peer over the software RC TEST FIXTURE): serves rdma:// (argv[2]) with a
 * 65536-byte registered region per connection, filled with zeros.
 *   1: the region's descriptor (for attachRegion)
 *   2: the region's bytes [offset u32, len u32] as this process sees them (one-sided writes landed here)
 * Prints {"url", "liveMr"} when listening; then answers each stdin line "stats" with
 * {"liveMr", "regions", "closedRegions"} (softrc_live("mr") of this process: its registered MRs);
 * exits at EOF.
 */
import { softRcProbes } from "./softrc/probes.ts";
import { serve } from "../../src/index.ts";
import type { RdmaConnection } from "../../src/rdma/connection.ts";
import type { RdmaLocalRegion } from "../../src/rdma/rma.ts";
import { stdinLines } from "../helpers/stdin-lines.ts";

export const OWNER_REGION_BYTES = 65536;
const probes = softRcProbes(process.env.HOTPATH_IBVERBS!);
const liveMr = () => probes.live("mr");

const regions = new Map<unknown, RdmaLocalRegion>();
const region = (conn: unknown) => {
  let r = regions.get(conn);
  if (r === undefined) regions.set(conn, (r = (conn as RdmaConnection).registerMemory(OWNER_REGION_BYTES)));
  return r;
};
const serving = await serve(process.argv[2]!, {
  1: (h) => region(h.session.conn).descriptor(),
  2: (h) => {
    const dv = new DataView(h.data.buffer, h.data.byteOffset, 8);
    return region(h.session.conn).bytes.slice(dv.getUint32(0, true), dv.getUint32(0, true) + dv.getUint32(4, true));
  },
});
console.log(JSON.stringify({ url: serving.url, liveMr: liveMr() }));
for await (const line of stdinLines()) {
  if (line === "stats") {
    const all = [...regions.values()];
    console.log(JSON.stringify({ liveMr: liveMr(), regions: all.length, closedRegions: all.filter((r) => r.closed).length }));
  }
}
serving.close();
process.exit(0);
