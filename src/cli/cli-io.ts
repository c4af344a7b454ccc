/**
 * What the kv commands (kv-server.ts, kv-client.ts) share at their start and on stdout:
 * `writeOut` resolves once the text is handed to the OS, so an exit right after loses none of
 * it; `parseOrExit` turns -h / --help into the usage on stdout (exit 0) and a flag error into
 * its message and the usage on stderr (exit 2).
 *
 * `eachFlag` walks the arguments as `--flag VALUE` or `--flag=VALUE` for both parsers.
 *
 *   const p = await parseOrExit("kv-server", args, KV_SERVER_USAGE, parseKvServerArgs);
 *   if ("exit" in p) return p.exit;
 */

import { UsageError } from "../errors.ts";

/**
 * Calls `on` once per argument with its flag (the text before "=" of a `--flag=VALUE`), a
 * `value()` that takes the flag's value (after "=", else the next argument; UsageError "FLAG
 * needs a value" when there is none, or when it is empty and `allowEmpty` is false), the
 * argument itself and whether it carried "=VALUE". Pure; synchronous.
 */
export function eachFlag(args: string[], allowEmpty: boolean, on: (flag: string, value: () => string, arg: string, inline: boolean) => void): void {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const eq = a.startsWith("--") ? a.indexOf("=") : -1;
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const value = (): string => {
      const v = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined || (!allowEmpty && v === "")) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    on(flag, value, a, eq > 0);
  }
}

/** Writes to stdout and resolves once the text is handed to the OS (so exit loses none of it). Main thread. */
export function writeOut(text: string): Promise<void> {
  if (text === "") return Promise.resolve();
  return new Promise((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())));
}

/** Parses `args` with `parse` for `hotpath <command>`: the parsed flags, or the exit status after --help (0) or a flag error (2). */
export async function parseOrExit<T>(command: string, args: string[], usage: string, parse: (args: string[]) => T): Promise<{ parsed: T } | { exit: number }> {
  if (args.includes("-h") || args.includes("--help")) {
    await writeOut(usage + "\n");
    return { exit: 0 };
  }
  try {
    return { parsed: parse(args) };
  } catch (e) {
    process.stderr.write(`hotpath ${command}: ${e instanceof Error ? e.message : String(e)}\n${usage}\n`);
    return { exit: 2 };
  }
}
