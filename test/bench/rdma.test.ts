/**
 * The bench's rdma part (bench/rdma.bench.ts, a part of bench/run.ts):
 * - no device and no --rdma-fixture: "rdma: skipped: <reason>" and the run does not fail;
 * - --rdma-fixture without a device: the part runs on the software RC TEST FIXTURE through the
 *   main table's method (32 B and 1 MiB per-call round trips, calls/s at 1 and 64 in flight,
 *   every reply checked), its title and its row labelled as the software provider's, perftest
 *   "not run", nothing failed, the fixture's registry directory removed.
 * Skipped (reason printed) on a machine with an RDMA device, where the part measures the device.
 * No timing thresholds.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SOFTWARE_LABEL } from "../../bench/rdma.bench.ts";
import type { Report } from "../../bench/report.ts";

const ROOT = join(import.meta.dir, "../..");
/** Watchdog for one bench run (a hang fails the test). */
const RUN_WATCHDOG_MS = 240_000;

function hasRdmaDevice(): boolean {
  try {
    return readdirSync("/sys/class/infiniband").length > 0;
  } catch {
    return false;
  }
}

async function bench(args: string[]): Promise<{ code: number | null; out: string; report: Report }> {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-bench-rdma-"));
  try {
    const env = { ...process.env };
    delete env.HOTPATH_IBVERBS;
    delete env.HOTPATH_RDMACM;
    const p = Bun.spawn(["bun", "bench/run.ts", "--quick", "--transports", "rdma", ...args, "--json", join(dir, "latest.json")], { cwd: ROOT, stdout: "pipe", stderr: "pipe", env });
    const watchdog = setTimeout(() => p.kill(9), RUN_WATCHDOG_MS);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(watchdog);
    return { code, out: out + err, report: JSON.parse(readFileSync(join(dir, "latest.json"), "utf8")) as Report };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("no device, no --rdma-fixture: rdma: skipped: <reason>, and the run does not fail", async () => {
  if (hasRdmaDevice()) return console.log("skipped: this machine has an RDMA device (the part measures it)");
  const { code, out, report } = await bench([]);
  expect(out).toContain("rdma: skipped: ibv_get_device_list: no devices");
  expect(report.skipped.map((s) => s.id)).toEqual(["rdma"]);
  expect(report.failed).toEqual([]);
  expect(report.parts?.rdma).toBeUndefined();
  expect(code).toBe(0);
}, RUN_WATCHDOG_MS + 10_000);

test("--rdma-fixture without a device: a functional row on the software provider, labelled so", async () => {
  if (hasRdmaDevice()) return console.log("skipped: this machine has an RDMA device (the part measures it, not the fixture)");
  const before = readdirSync(tmpdir()).filter((n) => n.startsWith("hotpath-bench-softrc-"));
  const { code, out, report } = await bench(["--rdma-fixture"]);
  if (code !== 0) console.log(out);
  expect(report.failed).toEqual([]);
  const part = report.parts!.rdma!;
  expect(part.title).toBe(`hotpath rdma: ${SOFTWARE_LABEL}`);
  const row = part.rows[0] as Record<string, any>;
  expect(row.label).toBe(`hotpath rdma (${SOFTWARE_LABEL})`);
  expect(row.samples).toBeGreaterThanOrEqual(1000);
  expect(row.p99Us).toBeGreaterThanOrEqual(row.p50Us);
  expect(row.sizes[1 << 20]).toBeGreaterThan(0);
  expect(row.big.samples).toBeGreaterThan(0);
  expect(row.big.p99Us).toBeGreaterThanOrEqual(row.big.p50Us);
  expect(row.inflight[64]).toBeGreaterThan(0);
  // The figures line carries the label; perftest says why it did not run.
  expect(part.lines.filter((l) => l.includes("hotpath rdma (")).every((l) => l.endsWith(`[${SOFTWARE_LABEL}]`))).toBe(true);
  expect(out).toContain("ib_send_lat / ib_write_bw: not run:");
  expect(readdirSync(tmpdir()).filter((n) => n.startsWith("hotpath-bench-softrc-"))).toEqual(before);
  expect(code).toBe(0);
}, RUN_WATCHDOG_MS + 10_000);
