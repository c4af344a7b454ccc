/**
 * `bun run bench` / `hotpath bench`: runs the benchmarks and prints each figure beside the raw
 * reference measured in the same run.
 *   --quick   short samples (CI smoke; under a minute)
 */

import { os } from "./os.ts";
import { formatTcpTable, runTcpBench } from "./rpc.bench.ts";

const quick = process.argv.includes("--quick");
console.log(`hotpath bench${quick ? " --quick" : ""}: ${os()}`);
console.log("tcp echo: client in this process, each server in its own process; core placement left to the OS\n");
const tcp = await runTcpBench(quick, (s) => console.log(`  … ${s}`));
console.log(`\ntcp echo (ratios are against references measured in this run)`);
console.log(formatTcpTable(tcp));
