#!/usr/bin/env bun
/**
 * The `hotpath` command.
 *   hotpath bench [--quick]   run the benchmarks (same as `bun run bench`)
 *   hotpath transports        list the transports and whether each can run here
 *   hotpath doctor [--json]   per transport: can it run here, why not, how to install what is missing
 *   hotpath doctor --selftest rdma   rdma:// on this machine's device, checked and measured (src/cli/rdma-selftest.ts)
 *   hotpath kv-server ...     a key-value store server (src/cli/kv-server.ts)
 *   hotpath kv-client ...     its client: commands, scripts, an interactive prompt (src/cli/kv-client.ts)
 *   hotpath metrics URL       a server's metrics in the Prometheus text format (src/cli/metrics-command.ts)
 */

import { transports } from "../connect/registry.ts";

const USAGE = `usage: hotpath <command>
  bench [--quick]   run the benchmarks, each figure beside a raw reference from the same run
  transports        list the transports and whether each can run on this machine
  doctor [--json]   per transport: whether it can run here, why not, and the install line for what is
                    missing (Bun, libucp and UCX's transports, RDMA devices, /dev/shm, memlock, huge
                    pages, the socket directory, memfd sealing); exit 1 only when something installed
                    is broken
  doctor --selftest rdma [--quick]
                    with an RDMA device: lists devices and ports, runs a conformance subset and a
                    latency / throughput probe between two processes over the first active port,
                    beside perftest's ib_send_lat / ib_write_lat
  kv-server --listen URL [--listen URL ...] --memory MB [--hugepages] [--evict lru] [--snapshot PATH]
                    [--max-key-bytes N] [--no-one-sided]
                    a key-value store on the RPC layer, served on every listener
  kv-client --connect URL[,URL...] [-c "command; command"]
                    its client: an interactive prompt on a terminal, else commands from -c or stdin
  metrics URL [--timeout-ms N]
                    prints the metrics of a server started with metrics on (serve(url, handlers,
                    { metrics: true })) in the Prometheus text format`;

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
    for (const t of await transports()) console.log(`${t.scheme.padEnd(8)} ${t.unavailableReason === null ? "available" : `unavailable: ${t.unavailableReason}`}`);
    break;
  case "doctor": {
    if (rest[0] === "--selftest" || rest[0] === "--selftest-peer") {
      const st = await import("./rdma-selftest.ts");
      process.exit(rest[0] === "--selftest" ? await st.runRdmaSelftest(rest.slice(1)) : await st.runSelftestPeer(rest.slice(1)));
    }
    const json = rest.includes("--json");
    const unknown = rest.filter((a) => a !== "--json");
    if (unknown.length > 0) {
      console.error(`hotpath doctor: unknown argument "${unknown[0]}"\n${USAGE}`);
      process.exit(2);
    }
    const { gatherFacts } = await import("./doctor-probes.ts");
    const { diagnose, formatText } = await import("./doctor.ts");
    const report = diagnose(await gatherFacts());
    // Written out in full before exiting (a pipe may take it in pieces).
    await Bun.write(Bun.stdout, (json ? JSON.stringify(report, null, 2) : formatText(report)) + "\n");
    process.exit(report.exitCode);
  }
  case "kv-server": {
    const { runKvServer } = await import("./kv-server.ts");
    process.exit(await runKvServer(rest));
  }
  case "kv-client": {
    const { runKvClient } = await import("./kv-client.ts");
    process.exit(await runKvClient(rest));
  }
  case "metrics": {
    const { runMetrics } = await import("./metrics-command.ts");
    process.exit(await runMetrics(rest));
  }
  case undefined:
  case "-h":
  case "--help":
    console.log(USAGE);
    break;
  default:
    console.error(`hotpath: unknown command "${cmd}"\n${USAGE}`);
    process.exit(2);
}
