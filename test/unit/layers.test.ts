/**
 * Layers are folders and imports only point down (DESIGN.md "Layers"); bun:ffi lives in src/ffi
 * only; files stay under 600 lines; no import circles between files.
 *
 * Every import counts: `import`, `import type`, `import { type X }`, `export … from`,
 * `export * as x from`, side-effect `import "x"`, dynamic `import("x")` and `typeof import("x")`.
 * A type-only import is still a dependency a reader has to follow, so it obeys the same ranks.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const SRC = new URL("../../src", import.meta.url).pathname;
// Rank of each top-level folder: a file may import only from its own or a lower rank.
const RANK: Record<string, number> = {
  "errors.ts": 0, "bytes.ts": 0, ffi: 1, contract: 2, segment: 3,
  inproc: 4, shm: 4, tcp: 4, ucx: 4, rdma: 4,
  connect: 5, rpc: 6, pool: 7, kv: 8, serve: 8, cli: 9, "index.ts": 9,
};
/** Transport folders: one may not import another (what they share lives lower: segment, contract). */
const TRANSPORT_RANK = 4;
const MAX_LINES = 600;
/**
 * Import circles still open, each as the files of its component: a circle found whose files are
 * not all inside one entry fails the test; an entry no circle touches any more is reported, so
 * the list only shrinks. The goal is an empty list.
 */
const KNOWN_CIRCLES: ReadonlyArray<readonly string[]> = [
  // rpc: the server imports its error reports, which name the ServerSession type.
  ["rpc/report.ts", "rpc/server.ts"],
];

interface Edge {
  from: string;
  to: string;
  kind: string;
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

const top = (rel: string) => rel.split("/")[0]!;

/** The code without comments (block comments and whole-line `//` comments), so examples in them do not count. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

/** Every module specifier the code names, with how it is imported. */
function specifiers(text: string): Array<{ spec: string; kind: string }> {
  const c = code(text);
  const out: Array<{ spec: string; kind: string }> = [];
  for (const m of c.matchAll(/(?:^|[\s;}])(import|export)\s+(type\s+)?([\w*${},\s]*?)\s*from\s*["']([^"']+)["']/g)) {
    const typeOnly = m[2] !== undefined || /^\{\s*(type\s+[\w$]+(\s+as\s+[\w$]+)?\s*,?\s*)+\}$/.test(m[3]!.trim());
    out.push({ spec: m[4]!, kind: `${m[1]}${typeOnly ? " type" : ""}` });
  }
  for (const m of c.matchAll(/(?:^|[\s;])import\s*["']([^"']+)["']/g)) out.push({ spec: m[1]!, kind: "import (side effect)" });
  for (const m of c.matchAll(/(typeof\s+)?\bimport\s*\(\s*["']([^"']+)["']\s*\)/g)) out.push({ spec: m[2]!, kind: m[1] ? "typeof import()" : "import()" });
  return out;
}

/** Circles in the graph (Tarjan's strongly connected components): the files of each, and one shortest cycle through its smallest file. */
function circles(nodes: string[], edges: Map<string, Set<string>>): Array<{ files: string[]; text: string }> {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || edges.get(v)?.has(v)) found.push(scc.sort());
    }
  };
  for (const n of nodes) if (!idx.has(n)) visit(n);
  // One readable cycle per component: the shortest path from its smallest file back to itself.
  return found.map((scc) => {
    const inScc = new Set(scc);
    const start = scc[0]!;
    const prev = new Map<string, string>();
    const queue = [start];
    let end: string | null = null;
    while (queue.length > 0 && end === null) {
      const v = queue.shift()!;
      for (const w of [...(edges.get(v) ?? [])].sort()) {
        if (!inScc.has(w)) continue;
        if (w === start) {
          end = v;
          break;
        }
        if (!prev.has(w)) {
          prev.set(w, v);
          queue.push(w);
        }
      }
    }
    const path = [start];
    for (let v = end!; v !== start; v = prev.get(v)!) path.splice(1, 0, v);
    const more = scc.length > path.length ? ` (component of ${scc.length} files: ${scc.join(", ")})` : "";
    return { files: scc, text: `${[...path, start].join(" -> ")}${more}` };
  });
}

describe("layers", () => {
  const all = files(SRC).map((p) => ({ rel: relative(SRC, p), text: readFileSync(p, "utf8") }));
  const edges: Edge[] = [];
  for (const f of all) {
    for (const { spec, kind } of specifiers(f.text)) {
      if (!spec.startsWith(".")) continue;
      edges.push({ from: f.rel, to: relative(SRC, join(SRC, f.rel, "..", spec)), kind });
    }
  }

  test("the import scanner sees every form of import", () => {
    const sample = [
      `import { a } from "./a.ts";`,
      `import type { B } from "./b.ts";`,
      `import {\n  type C,\n  type D as E,\n} from "./c.ts";`,
      `export * from "./d.ts";`,
      `export * as wire from "./e.ts";`,
      `export { f, type G } from "./f.ts";`,
      `export type { H } from "./h.ts";`,
      `import "./side.ts";`,
      `const m = await import("./lazy.ts");`,
      `let t: typeof import("./t.ts");`,
      `/** import { x } from "./in-comment.ts" */`,
      `// import("./line-comment.ts")`,
    ].join("\n");
    expect(specifiers(sample)).toEqual([
      { spec: "./a.ts", kind: "import" },
      { spec: "./b.ts", kind: "import type" },
      { spec: "./c.ts", kind: "import type" },
      { spec: "./d.ts", kind: "export" },
      { spec: "./e.ts", kind: "export" },
      { spec: "./f.ts", kind: "export" },
      { spec: "./h.ts", kind: "export type" },
      { spec: "./side.ts", kind: "import (side effect)" },
      { spec: "./lazy.ts", kind: "import()" },
      { spec: "./t.ts", kind: "typeof import()" },
    ]);
  });

  test("only src/ffi imports bun:ffi", () => {
    const offenders = all.filter((f) => specifiers(f.text).some((s) => s.spec === "bun:ffi") && top(f.rel) !== "ffi").map((f) => f.rel);
    expect(offenders).toEqual([]);
  });

  test("every import resolves to a file of src/", () => {
    const known = new Set(all.map((f) => f.rel));
    expect(edges.filter((e) => !known.has(e.to)).map((e) => `${e.from}: ${e.kind} ${e.to}`)).toEqual([]);
  });

  test("imports only point down, type imports, export-from and dynamic imports included", () => {
    const bad: string[] = [];
    for (const e of edges) {
      const from = RANK[top(e.from)];
      const to = RANK[top(e.to)];
      if (from === undefined || to === undefined) bad.push(`${e.from}: ${e.kind} ${e.to}: unknown layer`);
      else if (to > from) bad.push(`${e.from}: ${e.kind} ${e.to} (rank ${from} -> ${to})`);
      else if (from === TRANSPORT_RANK && to === TRANSPORT_RANK && top(e.from) !== top(e.to)) bad.push(`${e.from}: ${e.kind} ${e.to} (one transport imports another)`);
    }
    expect(bad).toEqual([]);
  });

  test(`source files stay under ${MAX_LINES} lines`, () => {
    const long = all.map((f) => ({ rel: f.rel, lines: f.text.split("\n").length - (f.text.endsWith("\n") ? 1 : 0) })).filter((f) => f.lines > MAX_LINES);
    expect(long.map((f) => `${f.rel}: ${f.lines} lines`)).toEqual([]);
  });

  test("no import circles between files (runtime and type imports)", () => {
    const graph = new Map<string, Set<string>>();
    for (const e of edges) {
      if (!graph.has(e.from)) graph.set(e.from, new Set());
      graph.get(e.from)!.add(e.to);
    }
    const found = circles(all.map((f) => f.rel).sort(), graph);
    const known = (c: { files: string[] }) => KNOWN_CIRCLES.some((k) => c.files.every((f) => k.includes(f)));
    const gone = KNOWN_CIRCLES.filter((k) => !found.some((c) => c.files.some((f) => k.includes(f))));
    if (found.length > 0) console.log(`import circles in src/:\n  ${found.map((c) => c.text).join("\n  ")}`);
    if (gone.length > 0) console.log(`known circles now gone (drop them from KNOWN_CIRCLES):\n  ${gone.map((k) => k.join(", ")).join("\n  ")}`);
    expect(found.filter((c) => !known(c)).map((c) => c.text)).toEqual([]);
  });
});
