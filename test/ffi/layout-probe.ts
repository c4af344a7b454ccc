/**
 * What the FFI layout tests share (test/ffi/verbs-layout.test.ts, ucp-layout.test.ts): compile a
 * C probe in this folder with the system C compiler, run it, and compare every struct field
 * ([offset, size]) and constant it prints with the bindings' tables, one by one.
 *
 *   const checked = checkProbedLayout("ucp-probe.c", [], UCP_LAYOUT, UCP);
 */
import { expect } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Compiles `probe` (a file in test/ffi/, `cc ...ccFlags -o exe probe` with no diagnostics) in a
 * temporary folder it removes afterwards, runs it, and expects each `layout` entry at its
 * [offset, size], each `consts` value, and every name the probe prints ("end" aside) declared in
 * one of them. Returns how many fields and constants it checked.
 */
export function checkProbedLayout(probe: string, ccFlags: string[], layout: Record<string, readonly [number, number]>, consts: Record<string, number>): number {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-probe-"));
  try {
    const exe = join(dir, "probe");
    const src = new URL(`./${probe}`, import.meta.url).pathname;
    const cc = Bun.spawnSync(["cc", ...ccFlags, "-o", exe, src]);
    expect(cc.stderr.toString()).toBe("");
    expect(cc.exitCode).toBe(0);
    const run = Bun.spawnSync([exe]);
    expect(run.exitCode).toBe(0);
    const probed = JSON.parse(run.stdout.toString()) as Record<string, [number, number]>;
    let checked = 0;
    for (const [name, [offset, size]] of Object.entries(layout)) {
      expect({ name, at: probed[name] }).toEqual({ name, at: [offset, size] });
      checked++;
    }
    for (const [name, value] of Object.entries(consts)) {
      expect({ name, value: probed[name]?.[0] }).toEqual({ name, value });
      checked++;
    }
    // Everything the probe reports is declared (nothing probed and forgotten).
    for (const name of Object.keys(probed)) {
      if (name === "end") continue;
      expect({ name, declared: name in layout || name in consts }).toEqual({ name, declared: true });
    }
    return checked;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
