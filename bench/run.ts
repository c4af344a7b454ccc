/**
 * `bun run bench` / `hotpath bench`: runs the benchmarks and prints each figure beside the raw
 * reference measured in the same run.
 *   --quick   short samples (CI smoke; under a minute)
 */

import { os } from "./os.ts";
import { formatTcpTable, runTcpBench } from "./rpc.bench.ts";
import { formatShmTables, runShmBench } from "./shm.bench.ts";
import { formatUcxTable, runUcxBench } from "./ucx.bench.ts";
import { transports } from "../src/index.ts";

const quick = process.argv.includes("--quick");
console.log(`hotpath bench${quick ? " --quick" : ""}: ${os()}`);
console.log("clients run in this process; servers in their own processes (inproc: a Worker); core placement left to the OS\n");
const log = (s: string) => console.log(`  … ${s}`);
const tcp = await runTcpBench(quick, log);
const shm = await runShmBench(quick, log);
const ucxReason = transports().find((t) => t.scheme === "ucx")?.unavailableReason ?? null;
const ucx = ucxReason === null ? await runUcxBench(quick, log) : null;
console.log(`\ntcp echo (ratios are against references measured in this run)`);
console.log(formatTcpTable(tcp));
console.log(`\nshared memory: shm (separate processes) and inproc (a Worker)`);
console.log(formatShmTables(shm));
console.log(`\nucx (spin mode; server in its own process), beside ucx_perftest over the same UCX transport`);
console.log(ucx ? formatUcxTable(ucx) : `skipped: ${ucxReason}`);
process.exit(0);
