/**
 * A process for test/rdma/ffi.test.ts: loads the libraries the way the transport will (no
 * override: the test strips HOTPATH_IBVERBS / HOTPATH_RDMACM) in a process of its own, so a
 * fixture another test file loaded into the test runner cannot stand in for the real library,
 * and prints one JSON line: what each entry point reports.
 */
import { RdmaUnavailableError } from "../../src/errors.ts";
import { rdmaUnavailableReason, VerbsContext, verbsDevices } from "../../src/ffi/ibverbs.ts";
import { RdmaEventChannel, rdmacmUnavailableReason } from "../../src/ffi/rdmacm.ts";

function outcome(fn: () => unknown): { unavailable: boolean; message: string } | "ok" {
  try {
    fn();
    return "ok";
  } catch (e) {
    return { unavailable: e instanceof RdmaUnavailableError, message: (e as Error).message };
  }
}

console.log(
  JSON.stringify({
    reason: rdmaUnavailableReason(),
    rdmacmLoads: rdmacmUnavailableReason() === null,
    open: outcome(() => VerbsContext.open()),
    openNamed: outcome(() => VerbsContext.open("mlx5_0")),
    devices: outcome(() => verbsDevices()),
    channel: outcome(() => RdmaEventChannel.create()),
  }),
);
