/**
 * Small helpers of worker-pool.ts: option checks, the handlers module's URL, a Worker's error
 * line, its inproc socket file, and the capped timer behind queued calls' deadlines.
 *
 *   const t = deadlineTimer(performance.now() + 2 ** 40, () => reject(...)); // fires once, then
 *   clearTimeout(t.id);                                                      // or cancel it
 *
 * Contract: everything here runs on the pool's thread; nothing keeps state between calls except
 * the DeadlineTimer each deadlineTimer() returns.
 */

import { UsageError } from "../errors.ts";
import { describeValue } from "../rpc/validate.ts";
import { socketDirOf } from "../segment/socket-dir.ts";
import { unlinkSync } from "node:fs";
import { pathToFileURL } from "node:url";

/** setTimeout's largest delay (a signed 32-bit ms count: beyond it a timer fires after ~1 ms); longer deadlines re-arm. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A timer for a deadline that may lie past MAX_TIMER_MS: `id` is the armed timer now (clearTimeout it to cancel). */
export interface DeadlineTimer {
  id: ReturnType<typeof setTimeout>;
}

/**
 * Runs `fire` once, when performance.now() reaches `deadline` (ms): one setTimeout of at most
 * MAX_TIMER_MS at a time, re-armed until the deadline (a timer that fires early re-arms too).
 * The caller's thread.
 */
export function deadlineTimer(deadline: number, fire: () => void): DeadlineTimer {
  const t: DeadlineTimer = { id: undefined as unknown as ReturnType<typeof setTimeout> };
  const arm = () => {
    const left = deadline - performance.now();
    if (left <= 0) return fire();
    t.id = setTimeout(arm, Math.min(Math.max(1, Math.ceil(left)), MAX_TIMER_MS));
  };
  t.id = setTimeout(arm, Math.min(Math.max(1, Math.ceil(deadline - performance.now())), MAX_TIMER_MS));
  return t;
}

/** The first line of a Worker's error event that says the error (its message carries a code frame first). */
export function errorLine(message: string): string {
  const lines = message.split("\n").map((l) => l.trim());
  return lines.find((l) => /^[A-Za-z]*(error|Error)\b.*:/.test(l)) ?? lines.filter((l) => l !== "").pop() ?? message;
}

/** A Worker's inproc socket file, in case its listener could not remove it (terminated). */
export function removeSocket(name: string): void {
  const path = `${socketDirOf(process.geteuid?.() ?? 0)}/inproc-${process.pid}-${name}.sock`;
  try {
    unlinkSync(path);
  } catch {
    // gone already (the Worker's listener removed it)
  }
}

/** The handlers module as a URL string: a URL, a URL string, or an absolute path; UsageError otherwise. */
export function resolveModule(moduleUrl: unknown): string {
  if (moduleUrl instanceof URL) return moduleUrl.href;
  if (typeof moduleUrl !== "string" || moduleUrl === "") throw new UsageError(`workerPool: moduleUrl must be a file URL (or an absolute path), got ${describeValue(moduleUrl)}`);
  if (moduleUrl.startsWith("/")) return pathToFileURL(moduleUrl).href;
  try {
    return new URL(moduleUrl).href;
  } catch {
    throw new UsageError(`workerPool: moduleUrl "${moduleUrl}" is neither a URL nor an absolute path (use new URL("./handlers.ts", import.meta.url))`);
  }
}

/** UsageError unless `v` is an integer in min..max. */
export function checkInt(v: unknown, min: number, max: number, what: string): void {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw new UsageError(`workerPool: ${what} must be an integer in ${min}..${max}, got ${describeValue(v)}`);
}
