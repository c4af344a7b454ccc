/**
 * `import "hotpath"` evaluates no transport module: the registry loads each transport the first
 * time a URL or transports() needs it (src/connect/registry.ts). Observed in a child process
 * from the outside: a preloaded Bun plugin records every module file the process loads, and
 * /proc/self/maps says whether libucp was mapped. Checked for the sources (src/index.ts) and for
 * the package build (dist/index.js and its chunks, built into a temporary folder).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = new URL("../..", import.meta.url).pathname;
/** A hang guard per child process (never a runtime assertion). */
const WATCHDOG_MS = 60_000;
/** Folders whose modules are transports or what only transports use. */
const TRANSPORT_DIRS = ["tcp", "shm", "inproc", "ucx", "rdma", "segment", "ffi"];

// Records each module file under LAZY_ROOT that this process loads, in order.
const PRELOAD = `
import { readFileSync } from "node:fs";
const root = process.env.LAZY_ROOT;
const seen = [];
globalThis.__lazyLoaded = seen;
const filter = new RegExp(process.env.LAZY_FILTER);
Bun.plugin({ name: "record-loads", setup(b) {
  b.onLoad({ filter }, (a) => {
    seen.push(a.path.slice(root.length));
    return { contents: readFileSync(a.path, "utf8"), loader: a.path.endsWith(".ts") ? "ts" : "js" };
  });
} });
`;

// Imports the library, then uses tcp, then inproc, then asks for every transport; prints what was loaded at each step.
const CHILD = `
import { readFileSync } from "node:fs";
const h = await import(process.env.LAZY_INDEX);
const loaded = () => [...globalThis.__lazyLoaded];
const texts = (files) => files.map((f) => readFileSync(process.env.LAZY_ROOT + f, "utf8"));
const ucpMapped = () => readFileSync("/proc/self/maps", "utf8").includes("libucp");
const out = { atImport: loaded(), ucpAtImport: ucpMapped() };
// Errors are named after their class: the build must not have renamed one (code splitting does, unpinned).
out.misnamed = Object.entries(h).filter(([n, v]) => typeof v === "function" && v.prototype instanceof Error && v.name !== n).map(([n, v]) => n + " is named " + v.name);
out.ffiAtImport = texts(out.atImport).some((t) => /["']bun:ffi["']/.test(t));
const l = await h.listen("tcp://127.0.0.1:0");
const c = await h.connect(l.url);
out.afterTcp = loaded();
out.chosen = c.via.chosen === l.url;
c.close(); l.close(true);
const li = await h.listen("inproc://lazy-load-" + process.pid);
out.afterInproc = loaded();
li.close(true);
out.schemes = (await h.transports()).map((t) => t.scheme);
out.afterTransports = loaded();
console.log(JSON.stringify(out));
`;

let work = "";
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "hotpath-lazy-"));
  writeFileSync(join(work, "preload.mjs"), PRELOAD);
  writeFileSync(join(work, "child.mjs"), CHILD);
});
afterAll(() => {
  if (work !== "") rmSync(work, { recursive: true, force: true });
});

interface Seen {
  atImport: string[];
  misnamed: string[];
  ucpAtImport: boolean;
  ffiAtImport: boolean;
  afterTcp: string[];
  chosen: boolean;
  afterInproc: string[];
  schemes: string[];
  afterTransports: string[];
}

function runChild(root: string, index: string): Seen {
  const r = Bun.spawnSync(["bun", "--preload", join(work, "preload.mjs"), join(work, "child.mjs")], {
    env: { ...process.env, LAZY_ROOT: root, LAZY_INDEX: join(root, index), LAZY_FILTER: `^${root.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}.*\\.(ts|js)$` },
    timeout: WATCHDOG_MS,
  });
  const err = r.stderr.toString();
  if (r.exitCode !== 0) throw new Error(`child exited ${r.exitCode} (signal ${r.signalCode})\n${err}`);
  return JSON.parse(r.stdout.toString()) as Seen;
}

/** The transport folders among `files` (paths relative to the root, with or without chunk hashes). */
const transportDirs = (files: string[]) => [...new Set(files.map((f) => f.split("/")[0]!).filter((d) => TRANSPORT_DIRS.includes(d)))].sort();

function expectLazy(s: Seen, setupModule: (transport: string) => RegExp): void {
  expect(s.misnamed).toEqual([]);
  // At import: no transport module, no module that imports bun:ffi, no libucp.
  expect(transportDirs(s.atImport)).toEqual([]);
  expect(s.ffiAtImport).toBe(false);
  expect(s.ucpAtImport).toBe(false);
  // tcp used: tcp's module loaded, and no other transport's.
  expect(s.chosen).toBe(true);
  expect(s.afterTcp.some((f) => setupModule("tcp").test(f))).toBe(true);
  expect(transportDirs(s.afterTcp)).toEqual(["tcp"]);
  // inproc used: inproc's module (and what it shares with shm) loaded; shm and ucx still not.
  expect(s.afterInproc.some((f) => setupModule("inproc").test(f))).toBe(true);
  expect(transportDirs(s.afterInproc).filter((d) => d === "shm" || d === "ucx" || d === "rdma")).toEqual([]);
  // transports() loads every registered transport.
  expect(s.schemes).toEqual(["tcp", "tcps", "tls", "shm", "inproc", "ucx", "rdma"]);
  for (const t of ["shm", "ucx", "rdma"]) expect(s.afterTransports.some((f) => setupModule(t).test(f))).toBe(true);
}

describe("import hotpath loads no transport until one is used", () => {
  test("from the sources (src/index.ts)", () => {
    const s = runChild(join(ROOT, "src") + "/", "index.ts");
    expect(s.atImport[0]).toBe("index.ts");
    expectLazy(s, (t) => new RegExp(`^${t}/setup\\.ts$`));
  }, WATCHDOG_MS);

  test("from the package build (dist/index.js and its chunks)", () => {
    const out = join(work, "dist") + "/";
    const b = Bun.spawnSync(["bun", join(ROOT, "scripts", "build.ts"), "--outdir", out, "--js-only"], { timeout: WATCHDOG_MS });
    if (b.exitCode !== 0) throw new Error(`build exited ${b.exitCode}\n${b.stdout.toString()}${b.stderr.toString()}`);
    const s = runChild(out, "index.js");
    expect(s.atImport[0]).toBe("index.js");
    expectLazy(s, (t) => new RegExp(`^${t}/setup-[a-z0-9]+\\.js$`));
  }, WATCHDOG_MS * 2);
});
