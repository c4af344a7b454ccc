/**
 * Test peer for regions that outlive their connection: serves over ucx (argv[2], with RMA) and keeps
 * every region it registers, in a list that never forgets, as a server with per-client
 * regions might.
 *   1: registers a region of 1 MiB for the calling connection, fills it with the request's
 *      first byte, returns its descriptor
 *   2: reads every region ever registered (closed ones too) through its view and returns
 *      [regions u32, closed u32, then per region: sum of its bytes u32]
 *   3: the registrations UCX holds for this process's listener runtime, as [u32]
 * Prints {"url"} when listening; exits when stdin closes.
 */
import { serve } from "../../src/index.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import type { LocalRegion } from "../../src/ucx/rma.ts";
import type { UcxRuntime } from "../../src/ucx/runtime.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

const REGION_BYTES = 1 << 20;
const kept: LocalRegion[] = [];
const owners: UcxConnection[] = [];
const serving = await serve(process.argv[2]!, {
  1: (h) => {
    const conn = h.session.conn as UcxConnection;
    const r = conn.registerMemory(REGION_BYTES);
    r.view.fill(h.data[0] ?? 0);
    kept.push(r);
    owners.push(conn);
    return r.descriptor();
  },
  2: () => {
    const out = new Uint8Array(8 + 4 * kept.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, kept.length, true);
    // A closed connection has closed its regions (at once, on a clean stack).
    dv.setUint32(4, owners.filter((c) => c.closed).length, true);
    kept.forEach((r, i) => {
      let sum = 0;
      for (let j = 0; j < r.view.length; j += 4096) sum += r.view[j]!;
      dv.setUint32(8 + 4 * i, sum, true);
    });
    return out;
  },
  3: () => new Uint8Array(new Uint32Array([(serving.listener as unknown as { rt: UcxRuntime }).rt.stats().registrations]).buffer),
}, { ucx: { rma: true } });
console.log(JSON.stringify({ url: serving.url }));
exitWhenParentGoes(() => serving.close());
