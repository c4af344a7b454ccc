/**
 * `bun run bench --quick` (the README's main command, short samples): its JSON has, for every
 * transport and peer that can run here, a row with per-call percentiles, CPU per call on both
 * sides, heap objects per round trip and calls/s from complete bursts; charts are written. And
 * the byte check is real: a reference server that flips one byte of one reply
 * (--corrupt-reply) fails its row, named in the report, and the run exits 1.
 * No timing thresholds: only that each row measured something, and what a failure looks like.
 */
import { expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Report } from "../../bench/report.ts";
import { TARGETS } from "../../bench/targets.ts";

const ROOT = join(import.meta.dir, "../..");

function runBench(args: string[]): { code: number | null; out: string; report: Report } {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-bench-"));
  try {
    const json = join(dir, "latest.json");
    const run = Bun.spawnSync(["bun", "bench/run.ts", ...args, "--json", json], { cwd: ROOT, stderr: "pipe", stdout: "pipe" });
    const out = run.stdout.toString() + run.stderr.toString();
    const report = JSON.parse(readFileSync(json, "utf8")) as Report;
    for (const f of ["latency.svg", "throughput.svg"]) expect(readFileSync(join(dir, f), "utf8").startsWith("<svg")).toBe(true);
    expect(existsSync(join(dir, "latency.png"))).toBe(true);
    return { code: run.exitCode, out, report };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test(
  "bench --quick: every available row has per-call p50/p99, CPU per call on both sides, objects per round trip, calls/s",
  () => {
    const { code, out, report } = runBench(["--quick"]);
    if (code !== 0) console.log(out);
    expect(code).toBe(0);
    expect(out).toContain("calls/s @64");
    expect(report.failed).toEqual([]);
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.machine.bun).toBe(Bun.version);
    for (const t of TARGETS) {
      if (t.unavailable() !== null) {
        expect(report.skipped.map((s) => s.id)).toContain(t.id);
        continue;
      }
      const row = report.rows.find((r) => r.id === t.id);
      expect({ id: t.id, measured: row !== undefined }).toEqual({ id: t.id, measured: true });
      const r = row!;
      // Percentiles of individually timed calls: p99 is one of the samples, never below p50.
      expect(r.samples).toBeGreaterThanOrEqual(100);
      expect(r.p50Us).toBeGreaterThan(0);
      expect(r.p99Us).toBeGreaterThanOrEqual(r.p50Us);
      expect(r.mode).toBe(t.mode);
      expect(r.layout.length).toBeGreaterThan(0);
      expect(r.placement).toContain("OS-placed");
      for (const n of report.options.inflight) expect({ id: t.id, n, cps: r.inflight[n]! > 0 }).toEqual({ id: t.id, n, cps: true });
      for (const s of report.options.sizes) expect({ id: t.id, s, p50: r.sizes[s]! > 0 }).toEqual({ id: t.id, s, p50: true });
      for (const c of [r.cpu.at1, r.cpu.at64!]) {
        expect({ id: t.id, client: c.clientUs >= 0, server: c.serverUs >= 0 }).toEqual({ id: t.id, client: true, server: true });
      }
      expect({ id: t.id, objects: typeof r.heap.objectsPerCall }).toEqual({ id: t.id, objects: "number" });
      expect(r.heap.objectsPerCall!).toBeGreaterThanOrEqual(0);
      for (const ref of r.references) if (ref !== r.id && report.rows.some((x) => x.id === ref)) expect(r.ratios[ref]!.p50).toBeGreaterThan(0);
    }
    // shm async is set against the event-loop references as well as raw shm.
    const async = report.rows.find((r) => r.id === "shm-async");
    if (async) expect(Object.keys(async.ratios).sort()).toEqual(["raw-shm", "raw-tcp", "raw-unix", "worker"]);
    // Each ucx row's perftest reference runs with exactly its UCX_TLS.
    for (const r of report.rows.filter((x) => x.id.startsWith("ucx-") && !x.id.startsWith("ucx-perftest"))) {
      const ref = report.rows.find((x) => x.id === r.references[0]);
      if (ref) expect(ref.ucxTls).toBe(r.ucxTls!);
    }
  },
  300_000,
);

test(
  "bench --corrupt-reply: one flipped byte in one reference reply fails that row by name and the run exits 1",
  () => {
    const { code, out, report } = runBench(["--quick", "--transports", "raw-tcp,raw-unix", "--sizes", "32", "--corrupt-reply", "500"]);
    expect(code).toBe(1);
    expect(report.rows.map((r) => r.id)).toEqual([]);
    expect(report.failed.map((f) => f.id)).toEqual(["raw-tcp", "raw-unix"]);
    for (const f of report.failed) expect(f.reason).toMatch(/^ByteCheckError: reply to call \d+: byte 5 of 32 is \d+, sent \d+$/);
    expect(out).toContain("FAILED raw Bun TCP socket");
  },
  120_000,
);
