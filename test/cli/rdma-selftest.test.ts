/**
 * `hotpath doctor --selftest rdma` (src/cli/rdma-selftest.ts), run as the command itself:
 * - without a device (the system libibverbs, no override): the RdmaUnavailableError reason and
 *   exit 1 (skipped, with the reason printed, on a machine that has an RDMA device);
 * - on the software RC TEST FIXTURE (HOTPATH_IBVERBS / HOTPATH_RDMACM): the device and port
 *   listed, every check of the table passing in both connection modes, the figures labelled as
 *   the fixture's, perftest's references "not run" with a reason, exit 0;
 * - a bad argument: exit 2.
 * Also the perftest output parsers on perftest 4.5's report lines.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { FIXTURE_LABEL } from "../../src/cli/rdma-selftest.ts";
import { parseBandwidth, parseLatency } from "../../src/cli/ib-perftest.ts";
import { useSoftRc } from "../rdma/softrc/use-fixture.ts";

const CLI = new URL("../../src/cli/hotpath.ts", import.meta.url).pathname;
/** Watchdog for one run of the command (a hang fails the test instead of blocking it). */
const RUN_WATCHDOG_MS = 150_000;

const fx = useSoftRc();

async function run(args: string[], env: Record<string, string | undefined>) {
  const p = fx.track(Bun.spawn(["bun", CLI, ...args], { stdout: "pipe", stderr: "pipe", env }));
  const watchdog = setTimeout(() => p.kill(9), RUN_WATCHDOG_MS);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(watchdog);
  return { stdout, stderr, code };
}

function hasRdmaDevice(): boolean {
  try {
    return readdirSync("/sys/class/infiniband").length > 0;
  } catch {
    return false;
  }
}

test("without a device: the RdmaUnavailableError reason and exit 1", async () => {
  if (hasRdmaDevice()) {
    console.log("skipped: this machine has an RDMA device (/sys/class/infiniband), so the no-device answer cannot be seen here");
    return;
  }
  const env = { ...process.env };
  delete env.HOTPATH_IBVERBS;
  delete env.HOTPATH_RDMACM;
  const r = await run(["doctor", "--selftest", "rdma"], env);
  expect(r.code).toBe(1);
  expect(r.stdout).toContain("RdmaUnavailableError: rdma transport unavailable: ibv_get_device_list: no devices");
  expect(r.stdout).not.toContain("check ");
});

test("a bad argument: usage and exit 2", async () => {
  const r = await run(["doctor", "--selftest", "ucx"], { ...process.env });
  expect(r.code).toBe(2);
  expect(r.stdout).toContain("usage: hotpath doctor --selftest rdma");
});

test(
  "on the software provider: devices listed, every check passes in both modes, figures labelled as the fixture's, exit 0",
  async () => {
    const dir = fx.registry();
    const r = await run(["doctor", "--selftest", "rdma", "--quick"], fx.env(dir));
    if (r.code !== 0) console.log(r.stdout, r.stderr);
    expect(r.stdout).toContain(`softrc0 (firmware softrc-fixture`);
    expect(r.stdout).toContain("port 1: PORT_ACTIVE, Ethernet, active MTU 4096, LID 0, GID[0] ::ffff:127.0.0.1");
    const table = r.stdout.split("\n").filter((l) => /^(cm|socket): /.test(l));
    // Both modes ran the whole subset, and nothing failed.
    for (const mode of ["cm", "socket"]) expect(table.filter((l) => l.startsWith(`${mode}: `)).length).toBe(8);
    expect(table.filter((l) => !/^\S.*\s{2}pass\s{2}/.test(l))).toEqual([]);
    expect(r.stdout).toContain("all 16 checks passed (exit 0)");
    // Every figure carries the fixture label; perftest cannot use the fixture and says why.
    const figures = r.stdout.split("\n").filter((l) => l.startsWith("  hotpath rdma"));
    expect(figures.length).toBe(3);
    for (const f of figures) expect(f).toContain(`[${FIXTURE_LABEL}]`);
    expect(r.stdout).toMatch(/ib_send_lat \(perftest\) round trip, 32 B: not run: \S/);
    expect(r.stdout).toMatch(/ib_write_lat \(perftest\) round trip, 32 B: not run: \S/);
    expect(r.code).toBe(0);
    expect(readdirSync(dir)).toEqual([]);
  },
  RUN_WATCHDOG_MS + 10_000,
);

test("perftest's report lines are read as round trips (one-way doubled) and bandwidth", () => {
  const lat = [
    " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ",
    " 32      1000          1.02           4.51         1.08             1.10             0.07            1.35                   4.51   ",
  ].join("\n");
  expect(parseLatency(lat)).toEqual({ rttP50Us: 2.16, rttP99Us: 2.7 });
  const bw = [" #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]", " 1048576    5000             11634.25            11633.90		   0.011093"].join("\n");
  expect(parseBandwidth(bw)).toEqual({ bwMBps: 11633.9, msgRateMpps: 0.011093 });
  expect(parseLatency("Did not detect devices")).toBeNull();
});
