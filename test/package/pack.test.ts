/**
 * The package a service installs: `npm pack` (which runs prepack, the build, as `npm publish`
 * does), the tarball installed into a temporary consumer project with a stock strict tsconfig
 * (`tsc --init --strict` plus exactOptionalPropertyTypes, noUncheckedIndexedAccess,
 * verbatimModuleSyntax, types bun), a consumer (test/package/consumer/: a server and a client
 * that use the public API) type-checked and run from node_modules over tcp, shm and ucx, then
 * the same two programs bundled with `bun build --target=bun` and run against each other from a
 * folder without node_modules, and the `hotpath` command run with bunx from the installed package.
 * Every process is killed by pid if it outlives its watchdog; the temporary folder is removed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { transports } from "../../src/connect/registry.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const FIXTURES = new URL("./consumer/", import.meta.url).pathname;
/** A hang guard per process (never a runtime assertion): far above what each step takes. */
const WATCHDOG_MS = 90_000;
const SCHEMES = ["tcp", "shm", "ucx"] as const;
const ucx = (await transports()).find((t) => t.scheme === "ucx");
/** Why ucx cannot run here (its tests are skipped, saying so), or null. */
const ucxWhy = ucx === undefined ? "not registered" : ucx.unavailableReason;
if (ucxWhy !== null) console.log(`ucx tests skipped: ${ucxWhy}`);

const live = new Set<Subprocess>();
let work = "";
let consumer = "";
let tgz = "";
let entries: string[] = [];

interface Ran {
  code: number | null;
  out: string;
  err: string;
}

/** Runs `cmd` in `cwd` to its end, or kills it (by pid) at the watchdog and says so in `err`. */
async function run(cmd: string[], cwd: string, ms = WATCHDOG_MS): Promise<Ran> {
  const proc = Bun.spawn(cmd, { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  live.add(proc);
  let timedOut = false;
  const dog = setTimeout(() => {
    timedOut = true;
    proc.kill(9);
  }, ms);
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  clearTimeout(dog);
  live.delete(proc);
  return { code: proc.exitCode, out, err: timedOut ? `${err}\n(killed: still running after ${ms} ms)` : err };
}

function expectOk(r: Ran, what: string): void {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}\n--- stdout\n${r.out}\n--- stderr\n${r.err}`);
}

/** Starts the consumer's server, waits for its ready line, runs the client against it, stops the server. */
async function serveAndCall(dir: string, server: string, client: string, scheme: string): Promise<void> {
  const srv = Bun.spawn(["bun", server, scheme], { cwd: dir, stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  live.add(srv);
  const dog = setTimeout(() => srv.kill(9), WATCHDOG_MS);
  try {
    const reader = srv.stdout.getReader();
    let buf = "";
    while (!buf.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${server} ${scheme} ended before it was ready: ${await new Response(srv.stderr).text()}`);
      buf += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    const ready = JSON.parse(buf.slice(0, buf.indexOf("\n"))) as { main: string; hot: string };
    expect(ready.main.startsWith(`${scheme}://`)).toBe(true);
    const r = await run(["bun", client, ready.main, ready.hot], dir);
    expectOk(r, `${client} over ${scheme}`);
    expect(r.out.trim()).toBe(`ok ${scheme}`);
    srv.stdin.end(); // the server's signal to close everything and exit
    expect(await srv.exited).toBe(0);
  } finally {
    clearTimeout(dog);
    if (srv.exitCode === null) srv.kill(9);
    await srv.exited;
    live.delete(srv);
  }
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "hotpath-pack-"));
  expectOk(await run(["npm", "pack", "--pack-destination", work], ROOT), "npm pack");
  const tarballs = readdirSync(work).filter((f) => f.endsWith(".tgz"));
  expect(tarballs).toHaveLength(1);
  tgz = join(work, tarballs[0]!);
  const list = await run(["tar", "tzf", tgz], work);
  expectOk(list, "tar tzf");
  entries = list.out.split("\n").filter(Boolean).map((p) => p.replace(/^package\//, ""));
  console.log(`tarball ${tarballs[0]}: ${(statSync(tgz).size / 1000).toFixed(1)} kB, ${entries.length} files`);

  consumer = join(work, "consumer");
  mkdirSync(consumer);
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "consumer-service", private: true, type: "module" }, null, 2));
  for (const f of ["service.ts", "server.ts", "client.ts", "pool.ts", "pool-handlers.ts"]) cpSync(join(FIXTURES, f), join(consumer, f));
  // The repository's own typescript and @types/bun versions, from the local cache where it has them.
  const version = (pkg: string) => (JSON.parse(readFileSync(join(ROOT, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;
  const add = await run(["bun", "add", tgz, `typescript@${version("typescript")}`, `@types/bun@${version("@types/bun")}`, "--prefer-offline"], consumer);
  expectOk(add, "bun add <tarball>");
  expectOk(await run([join(consumer, "node_modules", ".bin", "tsc"), "--init", "--strict"], consumer), "tsc --init --strict");
  const flags = { types: ["bun"], noEmit: true, exactOptionalPropertyTypes: true, noUncheckedIndexedAccess: true, verbatimModuleSyntax: true };
  const files = ["service.ts", "server.ts", "client.ts", "pool.ts", "pool-handlers.ts"];
  writeFileSync(join(consumer, "tsconfig.consumer.json"), JSON.stringify({ extends: "./tsconfig.json", compilerOptions: flags, files }));
  // The same, checking the package's declarations too (the stock file skips .d.ts files).
  writeFileSync(join(consumer, "tsconfig.libcheck.json"), JSON.stringify({ extends: "./tsconfig.json", compilerOptions: { ...flags, skipLibCheck: false }, files }));
}, 240_000);

afterAll(async () => {
  for (const p of live) p.kill(9);
  await Promise.all([...live].map((p) => p.exited));
  if (work !== "") rmSync(work, { recursive: true, force: true });
});

describe("the packed tarball", () => {
  test("holds the build, its declarations, README and LICENSE, and nothing else", () => {
    for (const must of ["package.json", "README.md", "LICENSE", "dist/index.js", "dist/cli/hotpath.js", "dist/types/index.d.ts"]) expect(entries).toContain(must);
    // Each transport's setup is a chunk of its own, loaded by the registry on first use.
    for (const t of ["tcp", "shm", "inproc", "ucx", "rdma"]) expect(entries.filter((p) => new RegExp(`^dist/${t}/setup-[a-z0-9]+\\.js$`).test(p))).toHaveLength(1);
    const unexpected = entries.filter((p) => !["package.json", "README.md", "LICENSE"].includes(p) && !p.startsWith("dist/"));
    expect(unexpected).toEqual([]); // no src/, bench/ (results or sources), test/
    expect(entries.filter((p) => p.endsWith(".ts") && !p.endsWith(".d.ts"))).toEqual([]);
    const declarations = entries.filter((p) => p.endsWith(".d.ts")).map((p) => readFileSync(join(consumer, "node_modules", "hotpath", p), "utf8"));
    expect(declarations.filter((d) => /from\s*["']\.{1,2}\/[^"']*\.ts["']/.test(d))).toEqual([]);
    expect(readFileSync(join(consumer, "node_modules", "hotpath", "LICENSE"), "utf8")).toContain("MIT License");
  });

  test("its dependencies resolve in the consumer project", () => {
    const pkg = JSON.parse(readFileSync(join(consumer, "node_modules", "hotpath", "package.json"), "utf8")) as { dependencies: Record<string, string> };
    for (const dep of Object.keys(pkg.dependencies)) expect(statSync(join(consumer, "node_modules", dep, "package.json")).isFile()).toBe(true);
  });
});

describe("a consumer project", () => {
  test("type-checks under a stock strict tsconfig (and with the package's declarations checked too)", async () => {
    for (const config of ["tsconfig.consumer.json", "tsconfig.libcheck.json"]) {
      const r = await run([join(consumer, "node_modules", ".bin", "tsc"), "-p", config], consumer);
      expect(`${r.out}${r.err}`).toBe("");
      expect(r.code).toBe(0);
    }
  }, 120_000);

  for (const scheme of SCHEMES) {
    test.skipIf(scheme === "ucx" && ucxWhy !== null)(`runs from node_modules over ${scheme}`, async () => {
      await serveAndCall(consumer, "server.ts", "client.ts", scheme);
    }, 120_000);
  }

  test("runs a worker pool from node_modules (its Worker script from dist/serve/): typed calls, a crashed Worker replaced", async () => {
    expect(entries).toContain("dist/serve/worker-entry.js");
    const r = await run(["bun", "pool.ts"], consumer);
    expectOk(r, "bun pool.ts");
    const sum = Array.from({ length: 4096 }, (_, i) => i & 0xff).reduce((a, b) => a + b, 0);
    expect(JSON.parse(r.out.trim())).toEqual({ sums: [sum], threads: 2, crashed: expect.stringMatching(/^workerPool: Worker [01] crashed: it exited with code 5$/), restarts: 1 });
  }, 120_000);

  test("a worker pool bundled by the application without the package build says its Worker script is missing", async () => {
    const out = join(consumer, "out-pool");
    expectOk(await run(["bun", "build", "--target=bun", "pool.ts", "--outdir", out], consumer), "bun build pool.ts");
    const r = await run(["bun", join(out, "pool.js")], out);
    expect(r.code).toBe(3);
    const said = JSON.parse(r.out.trim()) as { error: string; message: string };
    expect(said.error).toBe("WorkerStartError");
    expect(said.message).toContain("Worker script");
    expect(said.message).toContain("is missing");
  }, 120_000);

  describe("bundled with bun build (server and client), run from a folder without node_modules", () => {
    let bundled = "";
    beforeAll(async () => {
      const out = join(consumer, "out");
      expectOk(await run(["bun", "build", "--target=bun", "server.ts", "client.ts", "--outdir", out], consumer), "bun build");
      bundled = join(work, "bundled");
      mkdirSync(bundled);
      for (const f of ["server.js", "client.js"]) cpSync(join(out, f), join(bundled, f));
    }, 120_000);

    for (const scheme of SCHEMES) {
      test.skipIf(scheme === "ucx" && ucxWhy !== null)(`over ${scheme}`, async () => {
        await serveAndCall(bundled, "server.js", "client.js", scheme);
      }, 120_000);
    }
  });
});

describe("the hotpath command from the installed package", () => {
  test("bunx hotpath --help prints the usage", async () => {
    const r = await run(["bunx", "hotpath", "--help"], consumer);
    expectOk(r, "bunx hotpath --help");
    expect(r.out).toMatch(/^usage: hotpath <command>/);
    expect(r.out).toContain("transports");
  }, 60_000);

  test("bunx hotpath transports lists the transports and whether each runs here", async () => {
    const r = await run(["bunx", "hotpath", "transports"], consumer);
    expectOk(r, "bunx hotpath transports");
    // The built-in transports (other test files of this run may register their own in this process).
    const builtIn = new Set(["tcp", "tcps", "tls", "shm", "inproc", "ucx", "rdma"]);
    const mine = (await transports()).filter((t) => builtIn.has(t.scheme));
    expect(mine.map((t) => t.scheme).sort()).toEqual([...builtIn].sort());
    for (const t of mine) {
      const line = t.unavailableReason === null ? new RegExp(`^${t.scheme}\\s+available$`, "m") : new RegExp(`^${t.scheme}\\s+unavailable: `, "m");
      expect(r.out).toMatch(line);
    }
  }, 60_000);

  test("bunx hotpath bench says the benchmarks need a clone of the repository, and how to run them", async () => {
    const r = await run(["bunx", "hotpath", "bench", "--quick"], consumer);
    expect(r.code).toBe(1);
    expect(r.err).toContain("not part of the installed package");
    expect(r.err).toContain("bun install && bun run bench");
  }, 60_000);
});
