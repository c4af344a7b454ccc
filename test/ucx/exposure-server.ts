/**
 * Test peer for what RMA exposes: two ucx listeners in one process, on runtimes of their own.
 *   url (ucx: { rma: true }):
 *     1: registers a 4096-byte region for the calling connection, filled with 0x11, and
 *        returns its descriptor
 *     2: the first 16 bytes of the latest region, as this process sees them
 *     3: the registrations UCX holds for this listener's runtime, as [u32]
 *   plainUrl (no RMA): 1: echo
 * Prints {"url", "plainUrl"} when listening; exits when stdin closes.
 */
import { serve } from "../../src/index.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import type { LocalRegion } from "../../src/ucx/rma.ts";
import type { UcxRuntime } from "../../src/ucx/runtime.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

let latest: LocalRegion | null = null;
const withRma = await serve(
  process.argv[2]!,
  {
    1: (h) => {
      latest = (h.session.conn as UcxConnection).registerMemory(4096);
      latest.view.fill(0x11);
      return latest.descriptor();
    },
    2: () => latest!.view.slice(0, 16),
    3: () => new Uint8Array(new Uint32Array([(withRma.listener as unknown as { rt: UcxRuntime }).rt.stats().registrations]).buffer),
  },
  { ucx: { rma: true } },
);
const plain = await serve(process.argv[2]!, { 1: (h) => h.data });
console.log(JSON.stringify({ url: withRma.url, plainUrl: plain.url }));
exitWhenParentGoes(() => (withRma.close(), plain.close()));
