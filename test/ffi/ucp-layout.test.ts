/**
 * Every UCP struct field and constant the bindings use (src/ffi/ucp-layout.ts) against the
 * real headers: compiles test/ffi/ucp-probe.c with the system C compiler against
 * <ucp/api/ucp.h> (Debian libucx-dev) and compares offsets, sizes and values one by one.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UCP, UCP_LAYOUT } from "../../src/ffi/ucp-layout.ts";

test("ucp struct layouts and constants match <ucp/api/ucp.h>", () => {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-probe-"));
  try {
    const exe = join(dir, "probe");
    const src = new URL("./ucp-probe.c", import.meta.url).pathname;
    const cc = Bun.spawnSync(["cc", "-o", exe, src]);
    expect(cc.stderr.toString()).toBe("");
    expect(cc.exitCode).toBe(0);
    const run = Bun.spawnSync([exe]);
    expect(run.exitCode).toBe(0);
    const probed = JSON.parse(run.stdout.toString()) as Record<string, [number, number]>;
    let checked = 0;
    for (const [name, [offset, size]] of Object.entries(UCP_LAYOUT)) {
      expect({ name, at: probed[name] }).toEqual({ name, at: [offset, size] });
      checked++;
    }
    for (const [name, value] of Object.entries(UCP)) {
      expect({ name, value: probed[name]?.[0] }).toEqual({ name, value });
      checked++;
    }
    // Everything the probe reports is declared (nothing probed and forgotten).
    for (const name of Object.keys(probed)) {
      if (name === "end") continue;
      expect(name in UCP_LAYOUT || name in UCP).toBe(true);
    }
    expect(checked).toBeGreaterThan(100);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
