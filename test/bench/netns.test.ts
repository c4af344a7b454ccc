/**
 * Across nodes for real: scripts/netns-bench.sh makes two network namespaces joined by a veth
 * pair, runs `bench --serve` in one and `bench --connect --quick` in the other, and removes them.
 * Results must come back for tcp, ucx over tcp and the raw TCP reference (per-call percentiles,
 * the client's CPU and heap figures; the server's CPU is not seen from here). Needs root (CI runs
 * as root); elsewhere it is skipped with the reason printed.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Report } from "../../bench/report.ts";

const isRoot = process.getuid?.() === 0;
if (!isRoot) console.log("netns bench test skipped: creating network namespaces needs root");

test.skipIf(!isRoot)(
  "bench --serve / --connect across two network namespaces returns tcp, ucx(tcp) and raw tcp rows",
  () => {
    const dir = mkdtempSync(join(tmpdir(), "hotpath-netns-"));
    try {
      const json = join(dir, "across.json");
      const root = join(import.meta.dir, "../..");
      const run = Bun.spawnSync(["bash", "scripts/netns-bench.sh", "--quick", "--json", json], { cwd: root, stdout: "pipe", stderr: "pipe" });
      expect(run.exitCode).toBe(0);
      const report = JSON.parse(readFileSync(json, "utf8")) as Report;
      expect(report.options.mode).toMatch(/^connect 10\.231\.0\.1:\d+$/);
      for (const id of ["tcp", "ucx-tcp", "raw-tcp"]) {
        const row = report.rows.find((r) => r.id === id);
        expect({ id, measured: row !== undefined }).toEqual({ id, measured: true });
        expect(row!.p50Us).toBeGreaterThan(0);
        expect(row!.p99Us).toBeGreaterThanOrEqual(row!.p50Us);
        expect(row!.inflight[64]).toBeGreaterThan(0);
        // The client's CPU and heap are measured here; the server's CPU is on the other node.
        expect(row!.cpu.at1.clientUs).toBeGreaterThanOrEqual(0);
        expect(row!.serverCpu).toContain("another node");
        expect(typeof row!.heap.objectsPerCall).toBe("number");
      }
      expect(report.failed).toEqual([]);
      // The namespaces are gone again.
      expect(Bun.spawnSync(["ip", "netns", "list"]).stdout.toString()).not.toContain("hp-srv-");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  240_000,
);
