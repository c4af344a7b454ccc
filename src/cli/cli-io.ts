/**
 * What the kv commands (kv-server.ts, kv-client.ts) share at their start and on stdout:
 * `writeOut` resolves once the text is handed to the OS, so an exit right after loses none of
 * it; `parseOrExit` turns -h / --help into the usage on stdout (exit 0) and a flag error into
 * its message and the usage on stderr (exit 2).
 *
 *   const p = await parseOrExit("kv-server", args, KV_SERVER_USAGE, parseKvServerArgs);
 *   if ("exit" in p) return p.exit;
 */

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
