/**
 * The package build (`bun run build`, and `prepack`, so `npm pack` / `npm publish` run it):
 * JavaScript with `bun build --target=bun` and declarations with `tsc --emitDeclarationOnly`,
 * into dist/:
 *
 *   dist/index.js          the library ("hotpath"): one bundle; its dependencies stay imports
 *   dist/cli/hotpath.js    the `hotpath` command (bin)
 *   dist/types/**.d.ts     declarations (tsconfig.build.json), relative imports ending in .js
 *
 * The ucx helper Worker (src/ucx/efd-waiter.ts) is bundled into a module of its own and its
 * text defined as HOTPATH_EFD_WAITER_JS in both bundles: the runtime starts the Worker from a
 * Blob URL of it, which works from dist/ in node_modules and from an application's own
 * `bun build` of it, where no file of ours lies beside the code.
 *
 * Run from anywhere: `bun scripts/build.ts`. Exits non-zero on the first failure.
 */

import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Glob, type BunPlugin } from "bun";

const ROOT = join(import.meta.dir, "..");
const SRC = join(ROOT, "src");
const DIST = join(ROOT, "dist");

function fail(what: string, logs: readonly unknown[]): never {
  for (const l of logs) console.error(l);
  console.error(`build: ${what} failed`);
  process.exit(1);
}

/** The helper Worker's entry: efd-waiter.ts with what it imports, then its body runs. */
const efdEntry: BunPlugin = {
  name: "hotpath-efd-waiter-entry",
  setup(b) {
    b.onResolve({ filter: /^hotpath-efd-waiter-entry$/ }, () => ({ path: "entry.ts", namespace: "hotpath-efd" }));
    b.onLoad({ filter: /.*/, namespace: "hotpath-efd" }, () => ({
      contents: `import { runEfdWaiter } from ${JSON.stringify(join(SRC, "ucx", "efd-waiter.ts"))};\nrunEfdWaiter();\n`,
      loader: "ts",
    }));
  },
};

rmSync(DIST, { recursive: true, force: true });

const waiter = await Bun.build({ entrypoints: ["hotpath-efd-waiter-entry"], plugins: [efdEntry], target: "bun", minify: { whitespace: true, syntax: true } }); // names kept: errors say their class
if (!waiter.success || waiter.outputs.length !== 1) fail("the ucx helper Worker bundle", waiter.logs);
const waiterJs = await waiter.outputs[0]!.text();

// The library and the command are built apart, so the library stays one flat module: built
// together (the command imports parts of it lazily) Bun wraps every shared module in a lazy
// initializer, and an application's bundle of that renames the classes inside (AuthError2),
// while an error's name is its class's name. The command carries its own copy of the library.
const common = {
  target: "bun",
  root: SRC,
  outdir: DIST,
  // Dependencies (msgpackr) stay imports, resolved from the application's node_modules.
  packages: "external",
  define: { HOTPATH_EFD_WAITER_JS: JSON.stringify(waiterJs) },
} as const;
const outputs = [];
// The command is minified but keeps its identifiers (an error is named after its class; Bun's
// keepNames does not keep class names): it is run, not read, and carries its own library copy.
for (const [entry, minify] of [[join(SRC, "index.ts"), false], [join(SRC, "cli", "hotpath.ts"), { whitespace: true, syntax: true }]] as const) {
  const js = await Bun.build({ ...common, entrypoints: [entry], minify });
  if (!js.success) fail(`bun build ${entry.slice(ROOT.length + 1)}`, js.logs);
  outputs.push(...js.outputs);
}

const tsc = Bun.spawnSync([join(ROOT, "node_modules", ".bin", "tsc"), "-p", join(ROOT, "tsconfig.build.json")], { stdio: ["ignore", "inherit", "inherit"] });
if (tsc.exitCode !== 0) fail("tsc (declarations)", []);

// tsc keeps the sources' ".ts" import specifiers in declarations (rewriteRelativeImportExtensions
// rewrites JavaScript only). TypeScript 5 resolves them, older versions refuse them: end them in
// ".js", which every TypeScript that reads `exports` resolves to the .d.ts beside it.
const TS_SPECIFIER = /(\bfrom\s*|\bimport\s*\(\s*)(["'])(\.{1,2}\/[^"']*)\.ts\2/g;
let rewritten = 0;
for (const rel of new Glob("**/*.d.ts").scanSync(join(DIST, "types"))) {
  const path = join(DIST, "types", rel);
  const text = readFileSync(path, "utf8");
  const out = text.replace(TS_SPECIFIER, (_m, lead: string, q: string, spec: string) => `${lead}${q}${spec}.js${q}`);
  if (out !== text) {
    writeFileSync(path, out);
    rewritten++;
  }
  const left = /(\bfrom\s*|\bimport\s*\(\s*)["']\.{1,2}\/[^"']*\.ts["']/.exec(out);
  if (left !== null) fail(`declarations: ${rel} still imports ${left[0]}`, []);
}

for (const o of outputs) console.log(`build: ${o.path.slice(ROOT.length + 1)} ${(o.size / 1024).toFixed(1)} KiB`);
console.log(`build: ucx helper Worker ${(waiterJs.length / 1024).toFixed(1)} KiB inside the bundle; declarations in dist/types (${rewritten} with imports ending in .js)`);
