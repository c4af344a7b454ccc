/**
 * A process whose inproc listener lived in a Worker it terminated leaves no socket file when it
 * exits: the main thread, which only connected, removes the names of its own pid (a terminated
 * Worker's exit hook never runs). Before, the bench's inproc row left one file per run.
 */

import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { socketDirOf } from "../../src/segment/socket-dir.ts";

test("a terminated Worker's inproc socket file is gone once the process exits", async () => {
  const proc = Bun.spawn(["bun", new URL("./exit-child.ts", import.meta.url).pathname], { stdout: "pipe", stderr: "inherit" });
  const out = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const { pid } = JSON.parse(out.trim().split("\n").pop()!) as { pid: number };
  const left = readdirSync(socketDirOf(process.geteuid!())).filter((n) => n.startsWith(`inproc-${pid}-`));
  expect(left).toEqual([]);
}, 30_000);
