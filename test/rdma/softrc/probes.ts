/**
 * The softrc TEST FIXTURE's probes in this process, through bun:ffi (never shipped): live verbs
 * objects (softrc_live), responder event counts (softrc_count) and fault injection
 * (softrc_fault). Open it from the path the transport loads (HOTPATH_IBVERBS), so these are the
 * transport's own counters; see softrc/README.md for the kinds and specs.
 *
 *   const rc = softRcProbes(process.env.HOTPATH_IBVERBS!);
 *   rc.live("mr");            // registered MRs of this process
 *
 * Thread: any thread of the process (the fixture's counters are process-wide).
 */
import { dlopen, FFIType, ptr } from "bun:ffi";

export interface SoftRcProbes {
  /** Live verbs objects of the fixture in this process ("all", "qp", "mr", ...). */
  live(kind?: string): number;
  /** The fixture's responder event counts in this process. */
  counts(): { rnrNak: number; recvSend: number; recvWriteImm: number };
  /** Injects a fault (softrc_fault spec, e.g. "rnr_storm=100"); throws on a spec the fixture rejects. */
  fault(spec: string): void;
}

const cstr = (s: string) => ptr(Buffer.from(`${s}\0`));

/** Opens the fixture library at `path` (the built libibverbs.so.1) for its probes. */
export function softRcProbes(path: string): SoftRcProbes {
  const { symbols: c } = dlopen(path, {
    softrc_live: { args: [FFIType.ptr], returns: FFIType.i32 },
    softrc_count: { args: [FFIType.ptr], returns: FFIType.i64 },
    softrc_fault: { args: [FFIType.ptr], returns: FFIType.i32 },
  });
  const count = (k: string) => Number(c.softrc_count(cstr(k)));
  return {
    live: (kind = "all") => c.softrc_live(cstr(kind)),
    counts: () => ({ rnrNak: count("rnr_nak"), recvSend: count("recv_send"), recvWriteImm: count("recv_write_imm") }),
    fault(spec) {
      if (c.softrc_fault(cstr(spec)) !== 0) throw new Error(`softrc_fault rejected "${spec}"`);
    },
  };
}
