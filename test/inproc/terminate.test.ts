/**
 * worker.terminate() of a busy inproc server Worker, in a process that loaded libucs: exits 0
 * and prints no "Caught signal". JSC stops a Worker running optimized code by planting `hlt`
 * there (a SIGSEGV it handles); libucs's own error-signal handlers sat in front of JSC's and
 * printed a segfault backtrace for it (the bench's inproc row, after a ucx row). ucp-lib.ts puts
 * JSC's handlers back when libucs loads. Also covers terminate while idle, with calls in flight
 * (they fail with TransportClosedError) and after close, over Memory- and SharedArrayBuffer-backed segments.
 */
import { expect, test } from "bun:test";

test("terminating busy inproc server Workers with libucs loaded: exit 0, no signal backtrace", async () => {
  const env = { ...process.env };
  delete env.UCX_HANDLE_ERRORS;
  delete env.UCX_ERROR_SIGNALS;
  const proc = Bun.spawn(["bun", new URL("./terminate-child.ts", import.meta.url).pathname], { stdout: "pipe", stderr: "pipe", env });
  const watchdog = setTimeout(() => proc.kill(9), 50_000);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(watchdog);
  expect(err).not.toContain("Caught signal");
  expect(code).toBe(0);
  expect(JSON.parse(out.trim().split("\n").pop()!)).toMatchObject({ rounds: 24 });
}, 60_000);
