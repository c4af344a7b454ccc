/**
 * Every libibverbs / librdmacm struct field and constant the bindings use (src/ffi/verbs-layout.ts)
 * against the real headers: compiles test/ffi/verbs-probe.c with the system C compiler against
 * <infiniband/verbs.h> and <rdma/rdma_cma.h> (Debian libibverbs-dev, librdmacm-dev: installed by
 * scripts/setup.sh, so this test is never skipped) and compares offsets, sizes and values one by one.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { constName, IBV, off, RDMA, VERBS_LAYOUT, wcStatusName } from "../../src/ffi/verbs-layout.ts";

test("verbs and rdma_cm struct layouts and constants match <infiniband/verbs.h> and <rdma/rdma_cma.h>", () => {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-probe-"));
  try {
    const exe = join(dir, "probe");
    const src = new URL("./verbs-probe.c", import.meta.url).pathname;
    const cc = Bun.spawnSync(["cc", "-Wall", "-o", exe, src]);
    expect(cc.stderr.toString()).toBe("");
    expect(cc.exitCode).toBe(0);
    const run = Bun.spawnSync([exe]);
    expect(run.exitCode).toBe(0);
    const probed = JSON.parse(run.stdout.toString()) as Record<string, [number, number]>;
    let checked = 0;
    for (const [name, [offset, size]] of Object.entries(VERBS_LAYOUT)) {
      expect({ name, at: probed[name] }).toEqual({ name, at: [offset, size] });
      checked++;
    }
    for (const [name, value] of Object.entries({ ...IBV, ...RDMA })) {
      expect({ name, value: probed[name]?.[0] }).toEqual({ name, value });
      checked++;
    }
    // Everything the probe reports is declared (nothing probed and forgotten).
    for (const name of Object.keys(probed)) {
      if (name === "end") continue;
      expect({ name, declared: name in VERBS_LAYOUT || name in IBV || name in RDMA }).toEqual({ name, declared: true });
    }
    expect(checked).toBeGreaterThan(350);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the data-path ops sit at the x86-64 offsets the issue names", () => {
  expect([off("ibv_context.ops.poll_cq"), off("ibv_context.ops.req_notify_cq"), off("ibv_context.ops.post_srq_recv"), off("ibv_context.ops.post_send"), off("ibv_context.ops.post_recv")]).toEqual([96, 104, 168, 208, 216]);
});

test("constant names for messages", () => {
  expect(wcStatusName(IBV.IBV_WC_REM_ACCESS_ERR)).toBe("IBV_WC_REM_ACCESS_ERR");
  expect(wcStatusName(0)).toBe("IBV_WC_SUCCESS"); // not IBV_WC_SEND, which is 0 too
  expect(constName("RDMA_CM_EVENT_", RDMA.RDMA_CM_EVENT_ESTABLISHED)).toBe("RDMA_CM_EVENT_ESTABLISHED");
  expect(constName("IBV_QPS_", 99)).toBe("IBV_QPS_? (99)");
});
