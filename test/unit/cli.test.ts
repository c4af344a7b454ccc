import { expect, test } from "bun:test";

const CLI = new URL("../../src/cli/hotpath.ts", import.meta.url).pathname;

test("hotpath transports lists tcp as available", () => {
  const r = Bun.spawnSync(["bun", CLI, "transports"]);
  expect(r.exitCode).toBe(0);
  expect(r.stdout.toString()).toMatch(/^tcp\s+available$/m);
});

test("an unknown command exits 2 with the usage", () => {
  const r = Bun.spawnSync(["bun", CLI, "frobnicate"]);
  expect(r.exitCode).toBe(2);
  expect(r.stderr.toString()).toContain('unknown command "frobnicate"');
  expect(r.stderr.toString()).toContain("usage: hotpath");
});
