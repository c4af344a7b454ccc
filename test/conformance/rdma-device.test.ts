/**
 * The conformance suite over rdma:// on this machine's REAL RDMA device, in both connection
 * modes: rdma_cm on the port's IPv4 address, and `?mode=socket&device=&port=&gid=`. The device,
 * port, GID index and addresses are the ones `hotpath doctor --selftest rdma` picks
 * (activePortUrls in src/cli/rdma-selftest.ts: the first ACTIVE port); the suite's options are
 * the softrc run's (rdma-options.ts), so the same suite runs unchanged on hardware.
 *
 * The choice is made in a child process (rdma-device-probe.ts) with HOTPATH_IBVERBS /
 * HOTPATH_RDMACM / SOFTRC_DIR removed, so it asks the system's libibverbs, never the fixture.
 * Without a device (or without an ACTIVE port) every test of the file is skipped and one line
 * gives the reason, e.g. `rdma-device: skipped: ibv_get_device_list: no devices (ENOSYS)`.
 * With one, the suite runs in this process when it has not loaded the softrc fixture's libraries
 * (rdma.test.ts earlier in the same runner does); otherwise this file runs itself again in a
 * fresh `bun test` process without the override variables (rdma.test.ts's mechanism, reversed).
 *
 * Verified on the development machine: only the skip path (its kernel has no RDMA devices, no
 * rxe/siw). Not run there: the suite over a real device in either mode, and the fresh-process
 * re-run; a user with hardware runs `bun test test/conformance/rdma-device.test.ts`.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { runConformance } from "./suite.ts";
import { rdmaSuiteOptions } from "./rdma-options.ts";

const SELF = new URL(import.meta.url).pathname;
const PROBE = new URL("./rdma-device-probe.ts", import.meta.url).pathname;
/** Set in the fresh process this file starts when this one has loaded the fixture. */
const FRESH_ENV = "HOTPATH_RDMA_DEVICE_FRESH";
const OVERRIDES = ["HOTPATH_IBVERBS", "HOTPATH_RDMACM", "SOFTRC_DIR"];

/** This process's environment without the fixture's override variables. */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !OVERRIDES.includes(k)) env[k] = v;
  return { ...env, ...extra };
}

type Probe = { reason: string } | { device: string; port: number; fixture: boolean; urls: Array<[string, string]> };

function probe(): Probe {
  const r = Bun.spawnSync([process.execPath, PROBE], { env: cleanEnv(), stdout: "pipe", stderr: "pipe" });
  const line = r.stdout.toString().trim().split("\n").pop() ?? "";
  if (r.exitCode !== 0 || !line.startsWith("{")) return { reason: `device probe failed (exit ${r.exitCode}): ${r.stderr.toString().trim().split("\n").pop() ?? ""}` };
  return JSON.parse(line) as Probe;
}

/** Whether this process has the fixture's libraries mapped or named: the real device cannot be used here then. */
function fixtureLoaded(): boolean {
  if (OVERRIDES.slice(0, 2).some((k) => process.env[k] !== undefined)) return true;
  const maps = readFileSync("/proc/self/maps", "utf8").split("\n");
  return maps.some((l) => /lib(ibverbs|rdmacm)\.so/.test(l) && l.includes("softrc-fixture-"));
}

const found = probe();
if ("reason" in found || found.fixture) {
  const reason = "reason" in found ? found.reason : `${found.device} is the softrc test fixture, not a device`;
  console.log(`rdma-device: skipped: ${reason}`);
  // runConformance inside a skipped describe: its tests are listed as skipped, its hooks never run.
  describe.skip(`rdma-device (${reason})`, () => {
    for (const mode of ["cm", "socket"]) {
      runConformance({ name: "rdma", label: `rdma (${mode} mode, real device)`, listenUrl: () => "", refusedUrl: async () => "", blackhole: async () => ({ url: "", close() {} }) });
    }
  });
} else if (fixtureLoaded() && !process.env[FRESH_ENV]) {
  test(`conformance: rdma-device on ${found.device} port ${found.port} (in a fresh process: this one loaded the softrc fixture)`, async () => {
    const p = Bun.spawn(["bun", "test", SELF], { stdout: "inherit", stderr: "inherit", stdin: "ignore", env: cleanEnv({ [FRESH_ENV]: "1" }) });
    expect(await p.exited).toBe(0);
  }, 900_000);
} else {
  for (const [mode, listenUrl] of found.urls) {
    const u = new URL(listenUrl);
    const host = u.hostname;
    runConformance({
      name: "rdma",
      label: `rdma (${mode} mode, ${found.device} port ${found.port})`,
      listenUrl: () => listenUrl,
      ...rdmaSuiteOptions,
      async refusedUrl() {
        const s = Bun.listen({ hostname: host, port: 0, socket: { data() {} } });
        const port = s.port;
        s.stop(true);
        return `rdma://${host}:${port}${u.search}`;
      },
      async blackhole() {
        // A plain TCP listener: it accepts, and never answers (neither rdma_cm's side channel nor the socket-mode hello).
        const l = Bun.listen({ hostname: host, port: 0, socket: { data() {} } });
        return { url: `rdma://${host}:${l.port}${u.search}`, close: () => l.stop(true) };
      },
    });
  }
}
