/**
 * Run by rdma-device.test.ts in a child process with no fixture override (HOTPATH_IBVERBS /
 * HOTPATH_RDMACM unset), so it asks the system's libibverbs: prints one JSON line, either
 * {"reason"} (no device, or no ACTIVE port) or {"device","port","urls"} from the same choice
 * `hotpath doctor --selftest rdma` makes (activePortUrls). Example: `bun rdma-device-probe.ts`.
 */
import { rdmaUnavailableReason } from "../../src/ffi/ibverbs.ts";
import { activePortUrls, listDevices } from "../../src/cli/rdma-selftest.ts";

const why = rdmaUnavailableReason();
if (why !== null) console.log(JSON.stringify({ reason: why }));
else {
  const chosen = activePortUrls(listDevices());
  if (chosen === null) console.log(JSON.stringify({ reason: "no ACTIVE port on any device" }));
  else console.log(JSON.stringify({ device: chosen.dev.name, port: chosen.port.port, fixture: chosen.dev.fixture, urls: chosen.urls }));
}
