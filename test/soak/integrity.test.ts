/**
 * A short run of the soak (bench/soak.ts) in CI: over shm, inproc, tcp and ucx, 64 echo calls
 * in flight for a few seconds with 256 KiB..1 MiB bodies (few slab slots of that size, so
 * sends meet Full and slots are reused all the time), every response checked against its own
 * request. No response may be lost, duplicated, misrouted or corrupt, no call may fail, and
 * every server must survive. Throughput, RSS and timer figures are printed, never asserted
 * (the full 60 s soak is run on demand: see bench/README.md).
 */

import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SOAK = new URL("../../bench/soak.ts", import.meta.url).pathname;
/** Seconds per transport: long enough for thousands of calls and many slot reuses. */
const SECONDS = 2;

test(
  "soak, briefly: no response lost, duplicated, misrouted or corrupt on any transport",
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "hotpath-soak-"));
    try {
      const json = join(dir, "soak.json");
      const proc = Bun.spawn(
        ["bun", SOAK, "--seconds", String(SECONDS), "--min-bytes", String(256 << 10), "--max-bytes", String(1 << 20), "--transports", "shm,inproc,tcp,ucx", "--json", json],
        { stdout: "pipe", stderr: "inherit" },
      );
      const out = await new Response(proc.stdout).text();
      await proc.exited;
      for (const line of out.split("\n")) if (line.startsWith("soak ")) console.log(line);
      const summary = JSON.parse(readFileSync(json, "utf8"));
      const bad = (summary.results as any[]).map((r) => ({
        transport: r.transport,
        lost: r.lost,
        duplicated: r.duplicated,
        misrouted: r.misrouted,
        corrupt: r.corrupt,
        errors: r.errors,
        serverAlive: r.serverAlive,
        answered: r.calls > 0,
      }));
      expect(bad.map((r) => r.transport)).toEqual(["shm", "inproc", "tcp", "ucx (UCX_TLS=tcp,self)"]);
      expect(bad).toEqual(bad.map((r) => ({ ...r, lost: 0, duplicated: 0, misrouted: 0, corrupt: 0, errors: 0, serverAlive: true, answered: true })));
      expect(proc.exitCode).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  120_000,
);
