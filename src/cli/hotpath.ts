#!/usr/bin/env bun
/**
 * The `hotpath` command.
 *   hotpath bench [--quick]   run the benchmarks (same as `bun run bench`)
 *   hotpath transports        list the transports and whether each can run here
 */

import { transports } from "../transport/registry.ts";

const USAGE = `usage: hotpath <command>
  bench [--quick]   run the benchmarks, each figure beside a raw reference from the same run
  transports        list the transports and whether each can run on this machine`;

const [cmd, ...rest] = process.argv.slice(2);

switch (cmd) {
  case "bench": {
    // bench/ sits beside src/ and dist/ in a clone; the installed package does not ship it.
    const runner = new URL("../../bench/run.ts", import.meta.url).pathname;
    if (!(await Bun.file(runner).exists())) {
      console.error(
        "hotpath bench: the benchmarks are not part of the installed package (they start peer servers, compare\n" +
          "with gRPC and other clients, and write their results beside themselves). Run them from a clone of\n" +
          "the hotpath repository:\n  bun install && bun run bench\n" +
          "(`hotpath transports` lists which transports can run on this machine.)",
      );
      process.exit(1);
    }
    const proc = Bun.spawn(["bun", runner, ...rest], { stdio: ["inherit", "inherit", "inherit"] });
    process.exit(await proc.exited);
  }
  case "transports":
    for (const t of transports()) console.log(`${t.scheme.padEnd(8)} ${t.unavailableReason === null ? "available" : `unavailable: ${t.unavailableReason}`}`);
    break;
  case undefined:
  case "-h":
  case "--help":
    console.log(USAGE);
    break;
  default:
    console.error(`hotpath: unknown command "${cmd}"\n${USAGE}`);
    process.exit(2);
}
