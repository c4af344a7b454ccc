/**
 * The ucx helper Worker (src/ucx/efd-waiter.ts, started by src/ucx/runtime.ts) as applications
 * meet it outside the package build:
 * - an application's own Worker that imports hotpath keeps its message handling (importing the
 *   helper's module runs nothing: its body is started from an entry of its own);
 * - hotpath's sources bundled without the package build have no helper code beside the bundle:
 *   ucx says so (transports(), UcxUnavailableError from listen and connect) instead of a server
 *   that never accepts, and a fallback moves on to tcp;
 * - a helper that fails once it runs (injected: from the sources the runtime reads the bundled
 *   helper's code from the global the build defines) is said once on stderr, the connection
 *   already open keeps answering (a reply that arrives while idle included), and a new listen
 *   is refused with UcxUnavailableError naming the failure.
 * (pack.test.ts runs ucx from the built package and from an application's bundle of it.)
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ucpUnavailableReason } from "../../src/ffi/ucp.ts";

const INDEX = new URL("../../src/index.ts", import.meta.url).pathname;
/** A hang guard (never a runtime assertion). */
const WATCHDOG_MS = 30_000;
let work = "";

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "hotpath-helper-"));
});

afterAll(() => {
  if (work !== "") rmSync(work, { recursive: true, force: true });
});

test("an application Worker that imports hotpath gets its own messages (addEventListener), no error", async () => {
  const file = join(work, "app-worker.ts");
  writeFileSync(
    file,
    `import { transports } from ${JSON.stringify(INDEX)};
declare const self: Worker;
self.addEventListener("message", async (e: MessageEvent) => postMessage({ echo: e.data, transports: (await transports()).length }));
`,
  );
  const w = new Worker(file);
  try {
    const errors: string[] = [];
    // The first error or the reply, whichever comes first (the watchdog fails a hang).
    const first = new Promise<unknown>((resolve) => {
      w.addEventListener("error", (e) => {
        errors.push(e.message);
        resolve("error");
      });
      w.addEventListener("message", (e) => resolve(e.data));
    });
    w.postMessage({ hello: 1 });
    const got = await Promise.race([first, Bun.sleep(WATCHDOG_MS).then(() => "no reply")]);
    expect(errors).toEqual([]);
    expect(got).toEqual({ echo: { hello: 1 }, transports: expect.any(Number) });
  } finally {
    w.terminate();
  }
}, 2 * WATCHDOG_MS);

test.skipIf(ucpUnavailableReason() !== null)("sources bundled without the package build: ucx unavailable with the reason, a fallback moves on to tcp", async () => {
  writeFileSync(
    join(work, "app.ts"),
    `import { connect, serve, transports, UcxUnavailableError } from ${JSON.stringify(INDEX)};
const out: Record<string, unknown> = {};
out.reason = (await transports()).find((t) => t.scheme === "ucx")?.unavailableReason ?? null;
try {
  await serve("ucx://127.0.0.1:0", { 1: (h) => h.data });
  out.listen = "listening";
} catch (e) {
  out.listen = e instanceof UcxUnavailableError ? e.message : "other: " + String(e);
}
const tcp = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data });
const port = new URL(tcp.url).port;
const conn = await connect("ucx://127.0.0.1:" + port, { fallback: ["tcp"], connectTimeoutMs: 2000 });
out.chosen = conn.via.chosen === tcp.url;
out.skipped = conn.via.skipped.map((s) => s.reason);
conn.close();
tcp.close();
console.log(JSON.stringify(out));
process.exit(0);
`,
  );
  const built = Bun.spawnSync(["bun", "build", "--target=bun", join(work, "app.ts"), "--outfile", join(work, "app.js")], { stderr: "pipe" });
  expect(built.exitCode).toBe(0);
  const proc = Bun.spawn(["bun", join(work, "app.js")], { cwd: work, stdout: "pipe", stderr: "pipe" });
  const dog = setTimeout(() => proc.kill(9), WATCHDOG_MS);
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  clearTimeout(dog);
  if (proc.exitCode !== 0) throw new Error(`bundled app exited ${proc.exitCode ?? proc.signalCode}: ${out}\n${err}`);
  const r = JSON.parse(out) as { reason: string | null; listen: string; chosen: boolean; skipped: string[] };
  expect(r.reason).toContain("helper Worker");
  expect(r.reason).toContain("efd-waiter.ts does not exist");
  expect(r.listen).toContain("ucx transport unavailable: its helper Worker's code is missing");
  expect(r.chosen).toBe(true);
  expect(r.skipped.join()).toContain("helper Worker");
}, 2 * WATCHDOG_MS);

test.skipIf(ucpUnavailableReason() !== null)("a helper Worker that fails: one stderr line, the open connection keeps working, a new listen is refused with the reason", async () => {
  writeFileSync(
    join(work, "fault.ts"),
    `(globalThis as Record<string, unknown>).HOTPATH_EFD_WAITER_JS = 'throw new Error("helper fault injected");';
const { listen, rpcConnect, serve, UcxUnavailableError } = await import(${JSON.stringify(INDEX)});
const out: Record<string, unknown> = {};
const s = await serve("ucx://127.0.0.1:0", { 1: async (h) => { await Bun.sleep(30); return h.data; } });
const c = await rpcConnect(s.url, { fallback: [] });
out.first = Array.from(await c.request(1, new Uint8Array([1, 2]), { timeoutMs: 10000 }));
await Bun.sleep(100); // idle: the client parks, the reply below arrives while it waits
out.later = Array.from(await c.request(1, new Uint8Array([3]), { timeoutMs: 10000 }));
try {
  await listen("ucx://127.0.0.1:0");
  out.listen = "listening";
} catch (e) {
  out.listen = (e instanceof UcxUnavailableError ? "UcxUnavailableError " : "other ") + (e as Error).message;
}
c.close();
s.close();
console.log(JSON.stringify(out));
`,
  );
  const proc = Bun.spawn(["bun", join(work, "fault.ts")], { cwd: work, stdout: "pipe", stderr: "pipe" });
  const dog = setTimeout(() => proc.kill(9), WATCHDOG_MS);
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited; // it exits by itself: nothing is left holding the process
  clearTimeout(dog);
  if (proc.exitCode !== 0) throw new Error(`fault app exited ${proc.exitCode ?? proc.signalCode}: ${out}\n${err}`);
  const r = JSON.parse(out) as { first: number[]; later: number[]; listen: string };
  expect(r.first).toEqual([1, 2]);
  expect(r.later).toEqual([3]);
  expect(r.listen).toBe("UcxUnavailableError ucx transport unavailable: its helper Worker (which wakes this thread for UCX events) failed: error: helper fault injected");
  expect(err.split("\n").filter((l) => l.startsWith("hotpath ucx: its helper Worker"))).toHaveLength(1);
}, 2 * WATCHDOG_MS);
