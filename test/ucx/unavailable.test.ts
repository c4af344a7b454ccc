/**
 * Without libucp (the loader pointed at a path that does not exist) ucx reports
 * UcxUnavailableError naming the Debian package, and connect with a fallback moves on to tcp.
 * Runs in a child process: the library is looked up once per process.
 */
import { expect, test } from "bun:test";

const SCRIPT = `
import { connect, listen, UcxUnavailableError, transports } from "${new URL("../../src/index.ts", import.meta.url).pathname}";
const out = {};
const e = await connect("ucx://127.0.0.1:9").catch((x) => x);
out.error = e.constructor.name; out.isUnavailable = e instanceof UcxUnavailableError; out.message = e.message;
out.listed = (await transports()).find((t) => t.scheme === "ucx").unavailableReason;
const l = await listen("tcp://127.0.0.1:0");
const port = new URL(l.url).port;
const c = await connect("ucx://127.0.0.1:" + port, { fallback: ["tcp"] });
out.chosen = c.via.chosen; out.skipped = c.via.skipped.map((s) => s.reason);
c.close(); l.close(true);
console.log(JSON.stringify(out));
`;

test("a missing libucp gives UcxUnavailableError and the fallback connects over tcp", () => {
  const r = Bun.spawnSync(["bun", "-e", SCRIPT], { env: { ...process.env, HOTPATH_LIBUCP: "/nonexistent/libucp.so.0" } });
  expect(r.stderr.toString()).toBe("");
  const out = JSON.parse(r.stdout.toString());
  expect(out.isUnavailable).toBe(true);
  expect(out.error).toBe("UcxUnavailableError");
  expect(out.message).toContain("libucx0");
  expect(out.message).toContain("/nonexistent/libucp.so.0");
  expect(out.listed).toContain("libucx0");
  expect(out.chosen).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
  expect(out.skipped.length).toBe(1);
  expect(out.skipped[0]).toContain("libucx0");
});
