/**
 * The kv benchmark's server (bench/kv.bench.ts): one kvServe() store on one listener, in its
 * own process. `spin`: listeners in spin mode (the shm and ucx rows); `async`: the default wait
 * policy (tcp). 64 MiB arena, no snapshot, no eviction.
 * As a process: bun bench/peers/kv-server.ts URL spin|async   (prints {"url"}; exits on stdin EOF)
 */

import type { WaitPolicy } from "../../src/index.ts";
import { servePeerUntilEof } from "./until-eof.ts";

/** The slice of src/kv's server API this peer uses (spec: kvServe). */
interface KvServerApi {
  kvServe(opts: { listen: string[]; memoryBytes: number; wait?: WaitPolicy }): Promise<{ urls: string[]; close(): Promise<void> }>;
}

/** Room for 1024 keys of 4 KiB values many times over (the slab's size classes round up). */
const MEMORY_BYTES = 64 << 20;

if (import.meta.main) {
  const [url, mode] = process.argv.slice(2) as [string, "spin" | "async"];
  const kv = (await import(new URL("../../src/kv/index.ts", import.meta.url).pathname)) as KvServerApi;
  const server = await kv.kvServe({ listen: [url], memoryBytes: MEMORY_BYTES, ...(mode === "spin" ? { wait: { mode: "spin", spinNs: 0 } } : {}) });
  servePeerUntilEof({ url: server.urls[0]!, close: () => server.close() });
}
