/**
 * A child process on the software RC TEST FIXTURE that reports in JSON lines `{"step", ...}`
 * (test/rdma/conn-child.ts, test/ffi/verbs-softrc-child.ts): spawned with the fixture's
 * environment for registry `dir`, tracked (killed by pid after the test), killed by a watchdog
 * after `watchdogMs` (a hang fails the test instead of blocking it).
 *
 *   const c = startJsonChild(fx, ["bun", CHILD, "pair"], dir, { label: "pair", watchdogMs: 90_000 });
 *   await c.line("open");              // the first "open" line, as soon as it is printed
 *   const { by, all } = await c.lines(); // once it exited 0
 *
 * Thread: the test's main thread.
 */
import { expect } from "bun:test";
import { collectLines } from "../../helpers/stream-lines.ts";
import type { SoftRcFixture } from "./use-fixture.ts";

export interface JsonChildOptions {
  /** Names the child in errors. */
  label: string;
  watchdogMs: number;
  stdin?: "pipe" | "ignore";
}

export function startJsonChild(fx: SoftRcFixture, argv: string[], dir: string, o: JsonChildOptions) {
  const p = fx.track(Bun.spawn(argv, { stdin: o.stdin ?? "ignore", stdout: "pipe", stderr: "inherit", env: fx.env(dir) }));
  const out = collectLines<Record<string, any>>(p.stdout, JSON.parse);
  const watchdog = setTimeout(() => p.kill(9), o.watchdogMs);
  return {
    proc: p,
    /** The first line of `step`, as soon as it is printed; throws when the child exited first. */
    async line(step: string): Promise<Record<string, any>> {
      for (;;) {
        const hit = out.seen.find((l) => l.step === step);
        if (hit) return hit;
        if (p.exitCode !== null || p.signalCode !== null) throw new Error(`${o.label} exited (${p.exitCode ?? p.signalCode}) before "${step}"`);
        await Promise.race([out.next(), Bun.sleep(50)]);
      }
    },
    /** Every line by step (a step printed twice keeps its lines in `all`), once it exited 0. */
    async lines(): Promise<{ by: Record<string, Record<string, any>>; all: Array<Record<string, any>> }> {
      const code = await p.exited;
      clearTimeout(watchdog);
      await out.done;
      expect({ child: o.label, code }).toEqual({ child: o.label, code: 0 });
      return { by: Object.fromEntries(out.seen.map((l) => [l.step, l])), all: out.seen };
    },
  };
}
