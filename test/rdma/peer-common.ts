/**
 * What the rdma:// test peers (test/rdma/peer-*.ts) share: the softrc TEST FIXTURE's probes in
 * this process (live verbs objects, responder event counts, fault injection: HOTPATH_IBVERBS
 * names the fixture, which the transport loads from the same path, so these are its own
 * counters), this process's open fd count, and the command loop: one JSON object per stdin line
 * `{ "cmd": name, ...args }`, answered with one JSON line `{ "cmd": name, ...result }` (or
 * `{ "cmd": name, "error": "Class: message" }`); at stdin EOF the peer cleans up and exits.
 *
 *   serveCommands({ ping: () => ({ pong: true }) }, () => conn?.close());
 *
 * Thread: the main thread of a peer process.
 */
import { readdirSync } from "node:fs";
import { stdinLines } from "../helpers/stdin-lines.ts";
import { softRcProbes } from "./softrc/probes.ts";

const fixturePath = process.env.HOTPATH_IBVERBS;
if (!fixturePath) throw new Error("rdma test peer: HOTPATH_IBVERBS must name the softrc fixture");
/** The fixture's probes in this process: live(kind = "all"), counts(), fault(spec) (softrc/probes.ts). */
export const { live, counts, fault } = softRcProbes(fixturePath);

/** Open file descriptors of this process (the readdir's own fd included, the same every time). */
export function fdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

/** What a probe reports about this process, for leak checks against a baseline. */
export function probe(): { live: number; qp: number; mr: number; fds: number; counts: ReturnType<typeof counts> } {
  return { live: live("all"), qp: live("qp"), mr: live("mr"), fds: fdCount(), counts: counts() };
}

/** The class name of a thrown value (what a test compares), or null for none. */
export function errName(e: unknown): string | null {
  if (e === null || e === undefined) return null;
  return e instanceof Error ? e.constructor.name : typeof e;
}

/** "Class: message", for reports. */
export function errText(e: unknown): string {
  return e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e);
}

export function out(o: Record<string, unknown>): void {
  console.log(JSON.stringify(o));
}

export type Command = (args: Record<string, any>) => unknown;

/** Runs the command loop on stdin (commands run one at a time, in order); `cleanup` at EOF, then exit. */
export async function serveCommands(commands: Record<string, Command>, cleanup: () => void): Promise<never> {
  for await (const line of stdinLines()) {
    if (line.trim() === "") continue;
    const args = JSON.parse(line) as Record<string, any>;
    const cmd = String(args.cmd);
    const fn = commands[cmd];
    try {
      if (!fn) throw new Error(`unknown command ${cmd}`);
      const r = (await fn(args)) ?? {};
      out({ cmd, ...(r as Record<string, unknown>) });
    } catch (e) {
      out({ cmd, error: errText(e) });
    }
  }
  cleanup();
  process.exit(0);
}

/** Resolves once `cond()` holds (true) or after `timeoutMs` (false); a watchdog, never a timing claim. */
export async function waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await Bun.sleep(2);
  }
  return true;
}
