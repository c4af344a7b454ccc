/**
 * bench/run.ts's parts that are not TARGETS rows (loopback, serve, worker-pool, idle-wake, kv)
 * and bench/report.ts's target judging: a part that throws is listed under FAILED (the run exits
 * 1), one that cannot run here is skipped with its reason; the light-load target (serve() CPU per
 * request over shm <= the tcp server's) is judged from the serve part's light rows; an issue-14
 * part's own targets are listed with the issue-11 ones and its table printed under the main one.
 * Example: runPart(report, ...).
 */

import { expect, test } from "bun:test";
import { checkTargets, table, type Report } from "../../bench/report.ts";
import { runPart, SkipPart } from "../../bench/run.ts";

const emptyReport = (): Report => ({
  date: "",
  machine: { cpu: "test", cores: 1, kernel: "", bun: Bun.version, ucx: null },
  options: { quick: true, sizes: [32], inflight: [1, 64], durationS: 0.03, mode: "one host" },
  rows: [],
  skipped: [],
  failed: [],
});

test("a part that throws (a wrong reply byte) is listed under FAILED; one that cannot run here is skipped with its reason", async () => {
  const report = emptyReport();
  const lines: string[] = [];
  await runPart(report, "loopback", "loopback (one thread)", (s) => lines.push(s), async () => {
    throw new Error("loopback: wrong reply bytes");
  });
  await runPart(report, "serve", "Bun.serve backend", (s) => lines.push(s), async () => {
    throw new SkipPart("no load generator here");
  });
  await runPart(report, "other", "a part that works", (s) => lines.push(s), async () => {});
  expect(report.failed).toEqual([{ id: "loopback", label: "loopback (one thread)", reason: "loopback: wrong reply bytes" }]);
  expect(report.skipped).toEqual([{ id: "serve", label: "Bun.serve backend", reason: "no load generator here" }]);
  expect(table(report)).toContain("FAILED loopback (one thread): loopback: wrong reply bytes");
});

test("the light-load target is judged: met when serve() over shm spends no more CPU per request than over tcp, NOT met otherwise, n/a without the rows", () => {
  const judge = (shm: number, tcp: number) => {
    const report = emptyReport();
    report.parts = { serve: { title: "serve", lines: [], targets: [], rows: [{ id: "light-shm", group: "light", backendCpuUsPerReq: shm }, { id: "light-tcp", group: "light", backendCpuUsPerReq: tcp }] } };
    return checkTargets(report).find((t) => t.target.startsWith("serve() under light load"));
  };
  expect(judge(40, 56)?.met).toBe(true);
  expect(judge(81, 56)?.met).toBe(false);
  expect(judge(81, 56)?.measured).toBe("81.00 µs (1.45x)");
  expect(checkTargets(emptyReport()).find((t) => t.target.startsWith("serve() under light load"))?.met).toBeNull();
});

test("an issue-14 part's targets are listed among the run's targets with their measured values, and its title, lines and targets print under the main table", () => {
  const report = emptyReport();
  report.parts = {
    "worker-pool": {
      title: "worker pool vs postMessage",
      lines: ["row        rtt µs", "pool       10.0"],
      targets: [
        { label: "1 KiB round trip <= 0.25x postMessage", measured: "10.0 µs vs 50.0 µs (0.20x)", met: true },
        { label: "calls/s at 64 in flight >= 4x postMessage", measured: "90k vs 30k (3.00x)", met: false },
      ],
      rows: [{ id: "pool" }],
    },
  };
  const checks = checkTargets(report).filter((t) => t.target.startsWith("issue 14"));
  expect(checks.map((t) => [t.target, t.measured, t.met])).toEqual([
    ["issue 14, worker-pool: 1 KiB round trip <= 0.25x postMessage", "10.0 µs vs 50.0 µs (0.20x)", true],
    ["issue 14, worker-pool: calls/s at 64 in flight >= 4x postMessage", "90k vs 30k (3.00x)", false],
  ]);
  report.targets = checkTargets(report);
  const text = table(report);
  expect(text).toContain("worker pool vs postMessage [worker-pool]\nrow        rtt µs\npool       10.0\n  [met] 1 KiB round trip <= 0.25x postMessage: 10.0 µs vs 50.0 µs (0.20x)");
  expect(text).toContain("[NOT met] issue 14, worker-pool: calls/s at 64 in flight >= 4x postMessage: 90k vs 30k (3.00x)");
});
