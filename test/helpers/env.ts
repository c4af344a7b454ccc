/**
 * Environment a test file changes, restored afterwards (STYLE: files must not leak settings
 * into each other). Call inside a describe block, before the hooks that need the value.
 */

import { afterAll, beforeAll } from "bun:test";

/** Sets the variables in beforeAll and puts back what was there (or nothing) in afterAll. */
export function useEnv(vars: Record<string, string>): void {
  const saved: Record<string, string | undefined> = {};
  beforeAll(() => {
    for (const [k, v] of Object.entries(vars)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
  });
  afterAll(() => {
    for (const k of Object.keys(vars)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });
}
