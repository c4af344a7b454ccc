/** Layers are folders and imports only point down (DESIGN.md "Layers"); bun:ffi lives in src/ffi only. */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const SRC = new URL("../../src", import.meta.url).pathname;
// Rank of each top-level folder: a file may import (at runtime) only from its own or a lower rank.
const RANK: Record<string, number> = {
  "errors.ts": 0, "bytes.ts": 0, ffi: 1, contract: 2, segment: 3,
  inproc: 4, shm: 4, tcp: 4, ucx: 4, rdma: 4,
  connect: 5, rpc: 6, pool: 7, kv: 8, serve: 8, cli: 9, "index.ts": 9,
};
const CONTRACT = new Set<string>();

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

const top = (rel: string) => rel.split("/")[0]!;

describe("layers", () => {
  const all = files(SRC).map((p) => ({ rel: relative(SRC, p), text: readFileSync(p, "utf8") }));

  test("only src/ffi imports bun:ffi", () => {
    const offenders = all.filter((f) => /from\s+["']bun:ffi["']/.test(f.text) && top(f.rel) !== "ffi").map((f) => f.rel);
    expect(offenders).toEqual([]);
  });

  test("imports only point down", () => {
    const bad: string[] = [];
    for (const f of all) {
      for (const m of f.text.matchAll(/^import\s+(type\s+)?[^;]*?from\s+["'](\.[^"']+)["']/gm)) {
        const target = relative(SRC, join(SRC, f.rel, "..", m[2]!));
        if (CONTRACT.has(target) || m[1]) continue;
        const from = RANK[top(f.rel)];
        const to = RANK[top(target)];
        if (from === undefined || to === undefined) bad.push(`${f.rel}: unknown layer`);
        else if (to > from) bad.push(`${f.rel} imports ${target}`);
      }
    }
    expect(bad).toEqual([]);
  });

  test("source files stay readable in one sitting", () => {
    const long = all.filter((f) => f.text.split("\n").length > 700).map((f) => f.rel);
    expect(long).toEqual([]);
  });
});
