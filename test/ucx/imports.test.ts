/**
 * No import circle runs through the ucx transport or its FFI (src/ucx/*, src/ffi/ucp*.ts):
 * every kind of import counts, `import type` and `export … from` and `import("…")` too, since a
 * circle of types is still a circle in the design (DESIGN.md "Layers").
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const SRC = new URL("../../src", import.meta.url).pathname;

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** Relative imports of every kind in `text`, resolved against `rel` (a path inside src/). */
export function importsOf(rel: string, text: string): string[] {
  const out: string[] = [];
  const patterns = [/^\s*import\s+(?:type\s+)?[^;]*?from\s+["'](\.[^"']+)["']/gm, /^\s*export\s+(?:type\s+)?[^;]*?from\s+["'](\.[^"']+)["']/gm, /import\(\s*["'](\.[^"']+)["']\s*\)/g, /^\s*import\s+["'](\.[^"']+)["']/gm];
  for (const re of patterns) for (const m of text.matchAll(re)) out.push(relative(SRC, join(SRC, rel, "..", m[1]!)));
  return out;
}

/** Each circle (as a list of files) found by a depth-first walk of `graph`. */
export function circles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (n: string) => {
    state.set(n, 1);
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (state.get(m) === 1) found.push([...stack.slice(stack.indexOf(m)), m]);
      else if (state.get(m) === undefined && graph.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, 2);
  };
  for (const n of graph.keys()) if (state.get(n) === undefined) visit(n);
  return found;
}

const mine = (f: string) => f.startsWith("ucx/") || /^ffi\/ucp[^/]*\.ts$/.test(f);

describe("ucx imports", () => {
  test("the circle finder sees a type-only circle", () => {
    const g = new Map([
      ["ucx/a.ts", importsOf("ucx/a.ts", 'import type { B } from "./b.ts";')],
      ["ucx/b.ts", importsOf("ucx/b.ts", 'export { A } from "./a.ts";')],
    ]);
    expect(circles(g)).toEqual([["ucx/a.ts", "ucx/b.ts", "ucx/a.ts"]]);
  });

  test("no import circle runs through src/ucx or src/ffi/ucp*.ts", () => {
    const graph = new Map<string, string[]>();
    for (const p of files(SRC)) {
      const rel = relative(SRC, p);
      graph.set(rel, importsOf(rel, readFileSync(p, "utf8")));
    }
    expect(circles(graph).filter((c) => c.some(mine))).toEqual([]);
  });
});
