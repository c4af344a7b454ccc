/**
 * rdma:// without a device: the real Debian libibverbs / librdmacm on this machine (whose kernel
 * has no RDMA support), loaded in a process of its own (test/rdma/setup-unavailable.ts) without
 * the softrc fixture (a fixture another file loaded into the test runner would answer to the
 * same soname). connect / listen reject with RdmaUnavailableError naming what libibverbs
 * reported, transports() lists rdma with that reason, and `fallback: ["tcp"]` moves on to tcp
 * with the rdma reason recorded in via.skipped. Skipped (with the reason printed) where the
 * kernel lists an RDMA device: that is not the no-device case.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";

const CHILD = new URL("./setup-unavailable.ts", import.meta.url).pathname;
const REASON = "ibv_get_device_list: no devices (ENOSYS)";
const hasDevice = existsSync("/sys/class/infiniband") && readdirSync("/sys/class/infiniband").length > 0;
if (hasDevice) console.log("unavailable.test: an RDMA device exists here (/sys/class/infiniband): the no-device tests are skipped");

describe.skipIf(hasDevice)("rdma:// on a machine without an RDMA device (a process of its own)", () => {
  let got: Record<string, any> | null = null;
  const run = () => {
    if (got !== null) return got;
    const env: Record<string, string | undefined> = { ...process.env };
    for (const k of ["HOTPATH_IBVERBS", "HOTPATH_RDMACM", "SOFTRC_DIR", "SOFTRC_FAULTS"]) delete env[k];
    const r = Bun.spawnSync(["bun", CHILD], { env, stderr: "pipe", timeout: 30_000 });
    expect({ code: r.exitCode, stderr: r.stderr.toString() }).toEqual({ code: 0, stderr: "" });
    got = JSON.parse(r.stdout.toString()) as Record<string, any>;
    return got;
  };

  test("connect and listen reject with RdmaUnavailableError carrying libibverbs' reason, in both modes", () => {
    const r = run();
    for (const e of [r.connectErr, r.socketErr, r.listenErr]) {
      expect(e).toEqual({ ok: false, name: "RdmaUnavailableError", message: `rdma transport unavailable: ${REASON}` });
    }
  }, 40_000);

  test("transports() lists rdma with that reason", () => {
    expect(run().rdma).toEqual({ scheme: "rdma", unavailableReason: REASON });
  }, 40_000);

  test("connect with fallback tcp reaches the tcp listener; the rdma candidate is in via.skipped with its reason", () => {
    const r = run();
    expect(r.fell).toEqual({
      transport: "tcp",
      chosen: `tcp://127.0.0.1:${r.port}`,
      skipped: [{ url: `rdma://127.0.0.1:${r.port}`, reason: REASON, error: "RdmaUnavailableError" }],
    });
  }, 40_000);
});
