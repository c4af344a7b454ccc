/**
 * The package build (`bun run build`, and `prepack`, so `npm pack` / `npm publish` run it):
 * JavaScript with `bun build --target=bun --splitting` and declarations with
 * `tsc --emitDeclarationOnly`, into dist/:
 *
 *   dist/index.js          the library ("hotpath"); its dependencies (msgpackr) stay imports
 *   dist/cli/hotpath.js    the `hotpath` command (bin)
 *   dist/serve/worker-entry.js  the script of each worker pool Worker (src/serve/worker-entry.ts)
 *   dist/<dir>/<name>-<hash>.js, dist/index-<hash>.js
 *                          chunks: each transport's setup module (tcp/setup-<hash>.js, ...) with
 *                          what only it uses, loaded by the registry on first use, and the code
 *                          the entries and chunks share
 *   dist/types/**.d.ts     declarations (tsconfig.build.json), relative imports ending in .js
 *
 * The ucx helper Worker (src/ucx/efd-waiter.ts) is bundled into a module of its own and its
 * text defined as HOTPATH_EFD_WAITER_JS: the runtime starts the Worker from a Blob URL of it,
 * which works from dist/ in node_modules and from an application's own `bun build` of it,
 * where no file of ours lies beside the code. The rdma fd waiter (src/rdma/fd-waiter.ts) is
 * bundled and defined the same way, as HOTPATH_RDMA_FD_WAITER_JS.
 *
 * Run from anywhere: `bun scripts/build.ts [--outdir DIR] [--js-only]` (DIR instead of dist/;
 * --js-only skips the declarations). Exits non-zero on the first failure.
 */

import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { Glob, type BunPlugin } from "bun";

const ROOT = join(import.meta.dir, "..");
const SRC = join(ROOT, "src");
const args = process.argv.slice(2);
const outdirAt = args.indexOf("--outdir");
const DIST = outdirAt >= 0 && args[outdirAt + 1] !== undefined ? resolve(args[outdirAt + 1]!) : join(ROOT, "dist");
const JS_ONLY = args.includes("--js-only");
const unknown = args.filter((a, i) => a !== "--js-only" && a !== "--outdir" && !(outdirAt >= 0 && i === outdirAt + 1));
if (unknown.length > 0 || (outdirAt >= 0 && args[outdirAt + 1] === undefined)) {
  console.error(`build: usage: bun scripts/build.ts [--outdir DIR] [--js-only] (got ${args.join(" ")})`);
  process.exit(2);
}

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

/** The rdma fd waiter's helper Worker entry (src/rdma/fd-waiter.ts), bundled the same way: HOTPATH_RDMA_FD_WAITER_JS. */
const fdEntry: BunPlugin = {
  name: "hotpath-rdma-fd-waiter-entry",
  setup(b) {
    b.onResolve({ filter: /^hotpath-rdma-fd-waiter-entry$/ }, () => ({ path: "entry.ts", namespace: "hotpath-rdma-fd" }));
    b.onLoad({ filter: /.*/, namespace: "hotpath-rdma-fd" }, () => ({
      contents: `import { runFdWaiter } from ${JSON.stringify(join(SRC, "rdma", "fd-waiter.ts"))};\nrunFdWaiter();\n`,
      loader: "ts",
    }));
  },
};

rmSync(DIST, { recursive: true, force: true });

const waiter = await Bun.build({ entrypoints: ["hotpath-efd-waiter-entry"], plugins: [efdEntry], target: "bun", minify: { whitespace: true, syntax: true } }); // names kept: errors say their class
if (!waiter.success || waiter.outputs.length !== 1) fail("the ucx helper Worker bundle", waiter.logs);
const waiterJs = await waiter.outputs[0]!.text();
const fdWaiter = await Bun.build({ entrypoints: ["hotpath-rdma-fd-waiter-entry"], plugins: [fdEntry], target: "bun", minify: { whitespace: true, syntax: true } });
if (!fdWaiter.success || fdWaiter.outputs.length !== 1) fail("the rdma fd waiter Worker bundle", fdWaiter.logs);
const fdWaiterJs = await fdWaiter.outputs[0]!.text();

// The library and the command are built together with code splitting: the registry's dynamic
// import() of each transport becomes a chunk of its own, and what the entries and chunks share
// becomes shared chunks, so `import "hotpath"` evaluates no transport module. (Without splitting
// Bun would keep one file and wrap every lazily imported module, and what it imports, in a lazy
// initializer.) Splitting renames a shared symbol that an entry exports under the same name
// (class AuthError becomes AuthError2 in the chunk, exported as AuthError): errors.ts pins each
// error class's name, since an error is named after its class.
const js = await Bun.build({
  // The worker pool's Worker script is an entry too (dist/serve/worker-entry.js, sharing the
  // chunks): the pool's own chunk (dist/serve/worker-pool-<hash>.js, loaded on first use) starts
  // Workers from HOTPATH_WORKER_ENTRY beside it.
  entrypoints: [join(SRC, "index.ts"), join(SRC, "cli", "hotpath.ts"), join(SRC, "serve", "worker-entry.ts")],
  target: "bun",
  root: SRC,
  outdir: DIST,
  splitting: true,
  naming: { entry: "[dir]/[name].[ext]", chunk: "[dir]/[name]-[hash].[ext]" },
  // Dependencies (msgpackr) stay imports, resolved from the application's node_modules.
  packages: "external",
  define: { HOTPATH_EFD_WAITER_JS: JSON.stringify(waiterJs), HOTPATH_RDMA_FD_WAITER_JS: JSON.stringify(fdWaiterJs), HOTPATH_WORKER_ENTRY: JSON.stringify("./worker-entry.js") },
});
if (!js.success) fail("bun build src/index.ts src/cli/hotpath.ts", js.logs);
const outputs = js.outputs;

if (JS_ONLY) {
  for (const o of outputs) console.log(`build: ${o.path.slice(DIST.length + 1)} ${(o.size / 1024).toFixed(1)} KiB`);
  process.exit(0);
}

const tsc = Bun.spawnSync([join(ROOT, "node_modules", ".bin", "tsc"), "-p", join(ROOT, "tsconfig.build.json"), "--outDir", join(DIST, "types")], { stdio: ["ignore", "inherit", "inherit"] });
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

for (const o of outputs) console.log(`build: ${o.path.slice(DIST.length + 1)} ${(o.size / 1024).toFixed(1)} KiB`);
console.log(`build: ucx helper Worker ${(waiterJs.length / 1024).toFixed(1)} KiB inside the bundle; declarations in ${relative(ROOT, join(DIST, "types"))} (${rewritten} with imports ending in .js)`);
