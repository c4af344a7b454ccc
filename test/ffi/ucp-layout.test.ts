/**
 * Every UCP struct field and constant the bindings use (src/ffi/ucp-layout.ts) against the
 * real headers: compiles test/ffi/ucp-probe.c with the system C compiler (test/ffi/layout-probe.ts) against
 * <ucp/api/ucp.h> (Debian libucx-dev) and compares offsets, sizes and values one by one.
 */
import { expect, test } from "bun:test";
import { UCP, UCP_LAYOUT } from "../../src/ffi/ucp-layout.ts";
import { checkProbedLayout } from "./layout-probe.ts";

test("ucp struct layouts and constants match <ucp/api/ucp.h>", () => {
  expect(checkProbedLayout("ucp-probe.c", [], UCP_LAYOUT, UCP)).toBeGreaterThan(100);
});
