/**
 * src/ffi verbs owners after close, against the softrc TEST FIXTURE, each scenario in a process
 * of its own (test/ffi/verbs-close-child.ts: a segfault fails the test, not the runner): posts,
 * polls and notifies on a closed QP / SRQ / CQ or after the context closed answer EBADF; a
 * control-path call with a closed object throws UsageError; a close refused with EBUSY keeps the
 * object (a later close destroys it: nothing leaks); a successful post clears a stale bad_wr.
 */
import { afterEach, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EBADF, EINVAL } from "../../src/ffi/verbs-lib.ts";
import { buildSoftRc, type SoftRc } from "./softrc/build.ts";

const CHILD = new URL("../ffi/verbs-close-child.ts", import.meta.url).pathname;
/** Watchdog for one child (a hang fails the test instead of blocking it). */
const CHILD_WATCHDOG_MS = 30_000;

let rc: SoftRc;
const dirs: string[] = [];

beforeAll(async () => {
  rc = await buildSoftRc();
}, 120_000);

afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function run(which: string): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-softrc-"));
  dirs.push(dir);
  const p = Bun.spawn(["bun", CHILD, which], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, HOTPATH_IBVERBS: rc.ibverbs, HOTPATH_RDMACM: rc.rdmacm, SOFTRC_DIR: dir },
  });
  const watchdog = setTimeout(() => p.kill(9), CHILD_WATCHDOG_MS);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(watchdog);
  expect({ which, code, signal: p.signalCode, stderr: code === 0 ? "" : stderr }).toEqual({ which, code: 0, signal: null, stderr: "" });
  expect(readdirSync(dir)).toEqual([]);
  return JSON.parse(stdout.trim().split("\n").pop()!);
}

test("posts on a closed QP answer EBADF", async () => {
  expect(await run("after-close-qp")).toMatchObject({ send: EBADF, recv: EBADF, liveAll: 0 });
}, 60_000);

test("a post on a closed SRQ answers EBADF; arm throws UsageError", async () => {
  expect(await run("after-close-srq")).toMatchObject({ recv: EBADF, arm: "UsageError", liveAll: 0 });
}, 60_000);

test("notify and poll on a closed CQ answer EBADF; a QP or CQ on a closed CQ or channel is a UsageError", async () => {
  expect(await run("after-close-cq")).toMatchObject({ notify: EBADF, poll: -EBADF, createQp: "UsageError", createCq: "UsageError", liveAll: 0 });
}, 60_000);

test("after the context closed, posts, notify and poll answer EBADF (the ops are freed)", async () => {
  expect(await run("after-close-ctx")).toMatchObject({ send: EBADF, recv: EBADF, srqRecv: EBADF, notify: EBADF, poll: -EBADF, liveAll: 0 });
}, 60_000);

test("a close refused with EBUSY keeps the object; closing in order later destroys it", async () => {
  expect(await run("ebusy")).toMatchObject({
    cqClose: "NativeError", cqKept: true, srqClose: "NativeError", srqKept: true, chClose: "NativeError", chKept: true,
    liveCq: 0, liveSrq: 0, liveChannel: 0, liveAll: 0,
  });
}, 60_000);

test("a successful post after a failed one reports no bad entry", async () => {
  expect(await run("bad-wr")).toMatchObject({ failed: EINVAL, badAfterFail: 0, ok: 0, badAfterOk: -1, liveAll: 0 });
}, 60_000);
