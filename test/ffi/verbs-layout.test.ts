/**
 * Every libibverbs / librdmacm struct field and constant the bindings use (src/ffi/verbs-layout.ts)
 * against the real headers: compiles test/ffi/verbs-probe.c with the system C compiler (test/ffi/layout-probe.ts) against
 * <infiniband/verbs.h> and <rdma/rdma_cma.h> (Debian libibverbs-dev, librdmacm-dev: installed by
 * scripts/setup.sh, so this test is never skipped) and compares offsets, sizes and values one by one.
 */
import { expect, test } from "bun:test";
import { constName, IBV, off, RDMA, VERBS_LAYOUT, wcStatusName } from "../../src/ffi/verbs-layout.ts";
import { checkProbedLayout } from "./layout-probe.ts";

test("verbs and rdma_cm struct layouts and constants match <infiniband/verbs.h> and <rdma/rdma_cma.h>", () => {
  expect(checkProbedLayout("verbs-probe.c", ["-Wall"], VERBS_LAYOUT, { ...IBV, ...RDMA })).toBeGreaterThan(350);
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
