/**
 * What the hand-built rdma pair children share (test/rdma/conn-child.ts, guard-child.ts): their
 * JSON-line output, their watchdog, and one end (a runtime reference on the softrc TEST FIXTURE's
 * device and an endpoint reserved on it) that a scenario connects and opens by hand.
 *
 *   startWatchdog("conn-child");
 *   const { rt, ep } = makeEnd({ window: 2000 });
 */
import { RdmaRuntime } from "../../src/rdma/runtime.ts";
import { RdmaEndpoint } from "../../src/rdma/endpoint.ts";

/** Prints one result as a JSON line (what the parent test reads). */
export const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** A hang fails the parent's test instead of blocking it: every scenario ends well within this. */
export const WATCHDOG_MS = 60_000;

/** Exits the process (code 3, `name` on stderr) after WATCHDOG_MS; unref'd, so it never keeps the process alive. */
export function startWatchdog(name: string): void {
  setTimeout(() => {
    console.error(`${name}: watchdog`);
    process.exit(3);
  }, WATCHDOG_MS).unref();
}

/** An end's endpoint limits; unset ones take makeEnd's defaults. */
export interface Tuning {
  window?: number;
  sqDepth?: number;
  zoneBytes?: number;
  maxMessageBytes?: number;
}

/**
 * One end on the fixture's softrc0 port 1: a runtime reference (the caller releases it, e.g. in
 * the connection's onClosed) and an endpoint with `t` (defaults: 64 MiB messages, window 16,
 * SQ depth 64, a 1 MiB zone). Throws when the runtime refuses the reservation.
 */
export function makeEnd(t: Tuning = {}): { rt: RdmaRuntime; ep: RdmaEndpoint } {
  const rt = RdmaRuntime.acquireDevice({ device: "softrc0", port: 1, gidIndex: 0 });
  const ep = RdmaEndpoint.create(rt, { maxMessageBytes: t.maxMessageBytes ?? 64 << 20, window: t.window ?? 16, sqDepth: t.sqDepth ?? 64, zoneBytes: t.zoneBytes ?? 1 << 20 });
  if (ep === null) throw new Error("runtime refused the reservation");
  return { rt, ep };
}
