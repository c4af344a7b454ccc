/**
 * `bun run bench --quick` runs (the README's main command, short samples) and its JSON has a row
 * with non-zero figures for every transport and peer that can run here. No timing thresholds:
 * only that each row measured something, and that the charts were written.
 */
import { expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Report } from "../../bench/report.ts";
import { TARGETS } from "../../bench/targets.ts";

test(
  "bench --quick: a non-zero row for every available transport and peer, JSON and charts written",
  () => {
    const dir = mkdtempSync(join(tmpdir(), "hotpath-bench-"));
    try {
      const json = join(dir, "latest.json");
      const run = Bun.spawnSync(["bun", "bench/run.ts", "--quick", "--json", json], { cwd: join(import.meta.dir, "../.."), stderr: "pipe", stdout: "pipe" });
      const out = run.stdout.toString();
      expect(run.exitCode).toBe(0);
      expect(out).toContain("calls/s @64");
      const report = JSON.parse(readFileSync(json, "utf8")) as Report;
      expect(report.machine.cores).toBeGreaterThan(0);
      expect(report.machine.bun).toBe(Bun.version);
      for (const t of TARGETS) {
        if (t.unavailable() !== null) {
          expect(report.skipped.map((s) => s.id)).toContain(t.id);
          continue;
        }
        const row = report.rows.find((r) => r.id === t.id);
        expect({ id: t.id, measured: row !== undefined }).toEqual({ id: t.id, measured: true });
        expect(row!.p50Us).toBeGreaterThan(0);
        for (const n of report.options.inflight) expect(row!.inflight[n]).toBeGreaterThan(0);
        for (const s of report.options.sizes) expect(row!.sizes[s]).toBeGreaterThan(0);
      }
      for (const f of ["latency.svg", "throughput.svg"]) {
        const svg = readFileSync(join(dir, f), "utf8");
        expect(svg.startsWith("<svg")).toBe(true);
        expect(svg).toContain("hotpath tcp");
      }
      expect(existsSync(join(dir, "latency.png"))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  240_000,
);
