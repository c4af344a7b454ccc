/**
 * bench/run.ts's parts that are not TARGETS rows (loopback, serve-backend) and bench/report.ts's
 * target judging: a part that throws is listed under FAILED (the run exits 1), one that cannot
 * run here is skipped with its reason; the light-load target (serve() CPU per request over shm
 * <= the tcp server's) is judged from serve-backend's light rows. Example: runPart(report, ...).
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
  await runPart(report, "serve-backend", "Bun.serve backend", (s) => lines.push(s), async () => {
    throw new SkipPart("no load generator here");
  });
  await runPart(report, "other", "a part that works", (s) => lines.push(s), async () => {});
  expect(report.failed).toEqual([{ id: "loopback", label: "loopback (one thread)", reason: "loopback: wrong reply bytes" }]);
  expect(report.skipped).toEqual([{ id: "serve-backend", label: "Bun.serve backend", reason: "no load generator here" }]);
  expect(table(report)).toContain("FAILED loopback (one thread): loopback: wrong reply bytes");
});

test("the light-load target is judged: met when serve() over shm spends no more CPU per request than over tcp, NOT met otherwise, n/a without the rows", () => {
  const judge = (shm: number, tcp: number) => {
    const report = emptyReport();
    report.serveBackend = { rows: [], light: [{ id: "light-shm", backendCpuUsPerReq: shm }, { id: "light-tcp", backendCpuUsPerReq: tcp }] };
    return checkTargets(report).find((t) => t.target.startsWith("serve() under light load"));
  };
  expect(judge(40, 56)?.met).toBe(true);
  expect(judge(81, 56)?.met).toBe(false);
  expect(judge(81, 56)?.measured).toBe("81.00 µs (1.45x)");
  expect(checkTargets(emptyReport()).find((t) => t.target.startsWith("serve() under light load"))?.met).toBeNull();
});
