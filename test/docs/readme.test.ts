/**
 * Docs that run: every TypeScript block of the docs pages (```ts fences of README.md and
 * examples/README.md) and every program in examples/ is type-checked with the repo's tsc (its
 * strict tsconfig) and run with bun; each must exit 0 by itself, so a block is a whole program
 * that closes its servers and clients. A watchdog kills a program that has not exited after
 * RUN_TIMEOUT_MS and fails its test (a hang, e.g. a poll loop that never sees its response, or
 * a server left open); nothing here asserts a runtime. A block's `console.log(x); // text`
 * comments must match its output, in order (blocks.ts).
 *
 * How "hotpath" resolves: the blocks and copies of the examples are written to a temporary
 * directory whose tsconfig.json extends the repo's and maps "hotpath" to src/index.ts (a `paths`
 * entry, which tsc and bun both follow), so the docs are checked against the sources as they
 * are, whatever the package's `exports` point at (built files may be stale or missing). An
 * example that starts itself again (`import.meta.path`) starts its copy. Blocks that use ucx
 * run when libucp is there; without it they are skipped with the reason printed, except in CI
 * (`CI` set), where libucp is always installed and a missing one fails them. Each block's file
 * starts with blank lines, so tsc's line numbers are the page's own. An example whose header has
 * no `Run: bun examples/...` line is a module another example loads (a Worker's handlers): it is
 * type-checked, not run. An example listed in EXAMPLE_ARGS runs once per argument list (e.g. its
 * backend over shm, tcp and ucx); a run whose arguments name ucx needs libucp.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { transports } from "../../src/index.ts";
import { codeBlocks, expectedOutput, fenceProblems, outputProblems } from "./blocks.ts";

const ROOT = resolve(import.meta.dir, "../..");
/** The docs pages whose ts blocks run. */
const PAGES = ["README.md", "examples/README.md"];
const EXAMPLES = readdirSync(join(ROOT, "examples"))
  .filter((f) => f.endsWith(".ts"))
  .sort()
  .map((f) => `examples/${f}`);
/** Examples run once per argument list here (absent: once, without arguments). */
const EXAMPLE_ARGS: Record<string, string[][]> = {
  "examples/http-front.ts": [["shm"], ["tcp"], ["ucx"]],
};
/** A program still running after this long hangs: it is killed and its test fails. Generous: other tests share the cores. */
const RUN_TIMEOUT_MS = 30_000;
/** tsc over the blocks, the examples and the sources they import. */
const TSC_TIMEOUT_MS = 120_000;
/** After a program exits (or is killed), how long its output pipes may stay open (a child it left holding them). */
const DRAIN_MS = 2000;

const ucxEntry = (await transports()).find((t) => t.scheme === "ucx");
const ucxReason = ucxEntry === undefined ? "no ucx transport registered" : ucxEntry.unavailableReason;
const skipUcx = ucxReason !== null && !process.env.CI;

interface Program {
  /** What a failure names: "README.md:120" or "examples/tcp-echo.ts". */
  label: string;
  /** Its file's path inside the work directory (bun runs it, tsc checks it). */
  name: string;
  /** What is written there. */
  source: string;
  /** Its command-line arguments. */
  args: string[];
  /** False for a module another example loads: type-checked only. */
  runs: boolean;
  needsUcx: boolean;
  /** Lines its `console.log(...); // text` comments promise (blocks; examples check themselves). */
  prints: string[];
}

const pageBlocks = PAGES.map((page) => ({ page, blocks: codeBlocks(readFileSync(join(ROOT, page), "utf8")) }));
const programs: Program[] = [];
for (const { page, blocks } of pageBlocks) {
  for (const b of blocks) {
    if (!b.runs) continue;
    programs.push({
      label: `${page}:${b.fenceLine + 1}`,
      name: `${page.replaceAll("/", "_")}.L${b.fenceLine}.ts`,
      // Padding puts the code on the page's own lines; `export {}` makes every block a module (top-level await, own names).
      source: "\n".repeat(b.fenceLine) + b.code + "export {};\n",
      args: [],
      runs: true,
      needsUcx: /\bucx:\/\//.test(b.code),
      prints: expectedOutput(b.code),
    });
  }
}
for (const ex of EXAMPLES) {
  const code = readFileSync(join(ROOT, ex), "utf8");
  const runs = /^\s*\*\s*Run: bun examples\//m.test(code);
  const argLists = EXAMPLE_ARGS[ex];
  if (argLists === undefined) programs.push({ label: ex, name: ex, source: code, args: [], runs, needsUcx: /\bucx:\/\//.test(code), prints: [] });
  else for (const args of argLists) programs.push({ label: `${ex} ${args.join(" ")}`, name: ex, source: code, args, runs, needsUcx: args.some((a) => a.startsWith("ucx")), prints: [] });
}
/** One entry per file (an example with several argument lists is written and checked once). */
const files = [...new Map(programs.map((p) => [p.name, p])).values()];

/** The work directory: made before the first test and removed after the last (never when no test runs). */
let work = "";
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "hotpath-docs-"));
  mkdirSync(join(work, "examples"));
  for (const p of files) writeFileSync(join(work, p.name), p.source);
  // Read by tsc (-p) and by bun (the nearest tsconfig.json of every file here).
  writeFileSync(
    join(work, "tsconfig.json"),
    JSON.stringify({
      extends: join(ROOT, "tsconfig.json"),
      compilerOptions: {
        noEmit: true,
        paths: { hotpath: [join(ROOT, "src/index.ts")] },
        typeRoots: [join(ROOT, "node_modules/@types")],
      },
      include: [],
      files: files.map((p) => p.name),
    }),
  );
});
afterAll(() => {
  if (work !== "") rmSync(work, { recursive: true, force: true });
});

interface Outcome {
  exitCode: number | null;
  timedOut: boolean;
  stdout: string;
  /** stdout and stderr, for failure messages. */
  output: string;
}

/** Runs argv in cwd; kills it (by pid) after timeoutMs. Never throws for the program's own failure. */
async function run(argv: string[], cwd: string, timeoutMs: number): Promise<Outcome> {
  const proc = Bun.spawn(argv, { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    proc.kill(9);
  }, timeoutMs);
  const texts = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const exitCode = await proc.exited;
  clearTimeout(watchdog);
  const [out, err] = (await Promise.race([texts, Bun.sleep(DRAIN_MS).then(() => ["(output still open)", ""])])) as string[];
  return { exitCode, timedOut, stdout: out!, output: `${out}${err}`.trim() };
}

describe("docs pages", () => {
  test("every fence names its language; TypeScript is fenced ts", () => {
    const problems = pageBlocks.flatMap(({ page, blocks }) => fenceProblems(blocks).map((p) => `${page} ${p}`));
    expect(problems).toEqual([]);
  });

  test("README.md has TypeScript blocks to run (the extraction found them)", () => {
    expect(programs.filter((p) => p.label.startsWith("README.md:")).length).toBeGreaterThan(0);
  });

  test("examples run in place against the sources (examples/tsconfig.json maps hotpath to src/)", () => {
    expect(Bun.resolveSync("hotpath", join(ROOT, "examples"))).toBe(join(ROOT, "src/index.ts"));
  });

  test("an example without a Run: line is a module another example loads; EXAMPLE_ARGS names examples", () => {
    const sources = new Map(files.filter((p) => p.name.startsWith("examples/")).map((p) => [p.name, p.source]));
    const modules = [...sources.keys()].filter((ex) => !programs.some((p) => p.name === ex && p.runs));
    const unloaded = modules.filter((m) => ![...sources].some(([ex, code]) => ex !== m && code.includes(`"./${m.slice("examples/".length)}"`)));
    expect(unloaded).toEqual([]);
    expect(Object.keys(EXAMPLE_ARGS).filter((ex) => !sources.has(ex))).toEqual([]);
  });

  test("examples/README.md lists every example", () => {
    const listing = readFileSync(join(ROOT, "examples/README.md"), "utf8");
    expect(EXAMPLES.filter((ex) => !listing.includes(ex.slice("examples/".length)))).toEqual([]);
  });

  test(
    "every block and example type-checks (tsc, the repo's strict tsconfig)",
    async () => {
      const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
      const r = await run([process.execPath, tsc, "-p", work, "--pretty", "false"], work, TSC_TIMEOUT_MS);
      // Paths print relative to `work`: examples/x.ts as they are, blocks as their page.
      let report = r.output;
      for (const p of files) if (!p.name.startsWith("examples/")) report = report.replaceAll(p.name, p.label.slice(0, p.label.lastIndexOf(":")));
      expect(r.timedOut).toBe(false);
      expect(report).toBe("");
      expect(r.exitCode).toBe(0);
    },
    TSC_TIMEOUT_MS + 10_000,
  );
});

describe("docs programs run and exit 0", () => {
  for (const p of programs.filter((q) => q.runs)) {
    const skip = p.needsUcx && skipUcx;
    if (skip) console.log(`skipped ${p.label}: it uses ucx, which cannot run here (${ucxReason})`);
    test.skipIf(skip)(
      p.label,
      async () => {
        const r = await run([process.execPath, join(work, p.name), ...p.args], work, RUN_TIMEOUT_MS);
        if (r.timedOut || r.exitCode !== 0) {
          const why = r.timedOut ? `did not exit within ${RUN_TIMEOUT_MS} ms (killed; a block must close its servers and clients)` : `exited with ${r.exitCode}`;
          throw new Error(`${p.label} ${why}; its output:\n${r.output}`);
        }
        const missing = outputProblems(p.prints, r.stdout);
        if (missing.length > 0) throw new Error(`${p.label} did not print ${JSON.stringify(missing)}; its output:\n${r.output}`);
      },
      RUN_TIMEOUT_MS + DRAIN_MS + 5000,
    );
  }
});
