/**
 * The stream test service (test/rpc/stream-peer.ts's startStreamService(): method ids and byte
 * patterns in test/rpc/stream-pattern.ts) served over rdma:// on the softrc TEST FIXTURE, for
 * test/rdma/streams.test.ts, listening with the rdma options given as JSON. Prints
 * {"step": "listening", url, pid} when listening; at stdin EOF it closes the server, waits for
 * its QPs and MRs to go and prints {"step": "leaks", qp, mr}, then exits 0.
 *
 *   bun test/rdma/stream-server.ts rdma://127.0.0.1:0?mode=socket '{"rdma":{"window":128}}'
 *
 * Thread: the main thread of its own process.
 */
import type { ListenOptions } from "../../src/contract/transport.ts";
import { stdinLines } from "../helpers/stdin-lines.ts";
import { startStreamService } from "../rpc/stream-peer.ts";
import { live, out, waitFor } from "./peer-common.ts";

/** How long the closed server's QPs and MRs may take to go (a watchdog, not a timing claim). */
const TEARDOWN_WATCHDOG_MS = 10_000;

const opts = (process.argv[3] ? JSON.parse(process.argv[3]) : {}) as ListenOptions;
const serving = await startStreamService(process.argv[2]!, opts);
out({ step: "listening", url: serving.url, pid: process.pid });

for await (const _ of stdinLines()) {
  // input is ignored; only EOF matters
}
serving.close();
await waitFor(() => live("qp") === 0 && live("mr") === 0, TEARDOWN_WATCHDOG_MS);
out({ step: "leaks", qp: live("qp"), mr: live("mr") });
process.exit(0);
