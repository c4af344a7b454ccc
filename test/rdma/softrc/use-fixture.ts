/**
 * What every test file on the software RC fixture needs (TEST FIXTURE support, never shipped):
 * the fixture built once per file, a fresh registry directory per use (SOFTRC_DIR: the
 * fixture's shared-memory files land there, so a test checks it is empty afterwards), and the
 * processes a test spawned killed by pid after each test, its directories removed.
 *
 *   const fx = useSoftRc();
 *   const dir = fx.registry();
 *   fx.track(Bun.spawn([...], { env: fx.env(dir) }));
 */
import { afterEach, beforeAll } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { buildSoftRc, type SoftRc } from "./build.ts";

export interface SoftRcFixture {
  /** The built fixture (valid from beforeAll on). */
  readonly rc: SoftRc;
  /** A new, empty registry directory, removed after the test. */
  registry(): string;
  /** The environment a child needs to load the fixture with registry `dir`. */
  env(dir: string): Record<string, string | undefined>;
  /** Kills `p` by pid after the test if it is still running; returns it. */
  track<P extends Subprocess<any, any, any>>(p: P): P;
}

export function useSoftRc(): SoftRcFixture {
  let rc: SoftRc | null = null;
  const procs: Subprocess<any, any, any>[] = [];
  const dirs: string[] = [];
  beforeAll(async () => {
    rc = await buildSoftRc();
  }, 120_000);
  afterEach(() => {
    for (const p of procs.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill(9);
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  return {
    get rc() {
      if (rc === null) throw new Error("useSoftRc: the fixture is built in beforeAll; use it inside a test");
      return rc;
    },
    registry() {
      const d = mkdtempSync(join(tmpdir(), "hotpath-softrc-"));
      dirs.push(d);
      return d;
    },
    env(dir) {
      const r = this.rc;
      return { ...process.env, HOTPATH_IBVERBS: r.ibverbs, HOTPATH_RDMACM: r.rdmacm, SOFTRC_DIR: dir };
    },
    track(p) {
      procs.push(p);
      return p;
    },
  };
}
