/**
 * `hotpath kv-client --connect URL[,URL...] [-c "command; command"]`: a client of one or more
 * kv servers (keys spread by rendezvous hashing, see src/kv/hash.ts), in one of three modes:
 *   -c "cmd; cmd"   runs the commands, then exits
 *   stdin a pipe    runs one line at a time (a line may hold several commands, `;` between),
 *                   exits at end of input
 *   stdin a TTY     interactive: prompt `kv> `, line editing and history (node:readline),
 *                   until `quit`, Ctrl-D or Ctrl-C
 * Commands and how words are quoted: src/cli/kv-command.ts (`help` lists them). Each command's
 * answer goes to stdout:
 *   put k v        OK version 17
 *   get k          "value" (version 17)     or (nil)
 *   cas k 17 v     OK version 18            or MISMATCH version 17 (the current one; 0: absent)
 *   del k          1 or 0
 *   mget a b       1) "va" (version 3)      one line per key, in order; N) (nil) for a missing one
 *   stats          server URL, then one indented `name value` line per counter, per server
 *   save           OK
 *   bench N ...    ops/s N  p50 X us  p99 Y us   (progress on stderr)
 *   a failure      ERR <ErrorName>: message  (the session goes on)
 * Exit status: 0; 1 in -c / stdin mode when any command failed, or when the servers cannot be
 * reached at start (`kv-client: KvUnavailableError: ...` on stderr); 2 for bad flags (a usage
 * line on stderr). Interactive sessions exit 0.
 *
 *   echo 'put k v; get k' | hotpath kv-client --connect tcp://127.0.0.1:7000
 *   OK version 1
 *   "v" (version 1)
 *
 * Thread: the main JS thread of the `hotpath` command; one command runs at a time.
 */

import { createInterface } from "node:readline";
import { errorNameOf, RemoteError, UsageError } from "../errors.ts";
import type { KvClient } from "../kv/index.ts";
import { formatBench, runBench, type BenchSpec } from "./kv-bench.ts";
import { helpText, parseCommand, showBytes, splitCommands, type KvCommand } from "./kv-command.ts";
import { eachFlag, parseOrExit, writeOut } from "./cli-io.ts";

export const KV_CLIENT_USAGE = `usage: hotpath kv-client --connect URL[,URL...] [-c "command; command ..."]
  --connect URL[,URL...]  the kv servers (repeatable); keys are spread over them by rendezvous hashing
  -c "commands"           run these commands (';' between them) and exit; without -c, commands are
                          read from stdin one line at a time, or at a kv> prompt when stdin is a terminal
  type help at the prompt for the commands`;

/** Interactive history kept by readline (up/down arrows), in this session only. */
const HISTORY_LINES = 1000;

export interface KvClientArgs {
  urls: string[];
  /** The -c text, or null to read commands from stdin. */
  commands: string | null;
}

/** The flags of `hotpath kv-client`; UsageError for an unknown flag, a missing value or no --connect. Pure. */
export function parseKvClientArgs(args: string[]): KvClientArgs {
  const urls: string[] = [];
  let commands: string | null = null;
  eachFlag(args, true, (flag, value, a) => {
    if (flag === "--connect") {
      const list = value().split(",").map((u) => u.trim());
      if (list.some((u) => u === "")) throw new UsageError(`--connect: empty URL in "${list.join(",")}"`);
      urls.push(...list);
    } else if (flag === "-c" || flag === "--command") {
      if (commands !== null) throw new UsageError("-c given twice (put the commands in one -c, ';' between them)");
      commands = value();
    } else throw new UsageError(`unknown argument "${a}"`);
  });
  if (urls.length === 0) throw new UsageError("--connect URL is required");
  return { urls, commands };
}

/**
 * `ERR <ErrorName>: message`, the line every failed command prints. A server's error that
 * arrives as a plain RemoteError (a class the client does not rebuild, such as UsageError) is
 * shown under the server's name and message: `ERR UsageError: kv SAVE: ...`.
 */
export function errorLine(e: unknown): string {
  let name = errorNameOf(e);
  let message = e instanceof Error ? e.message : String(e);
  if (e instanceof RemoteError && name === "RemoteError") {
    name = e.remoteName;
    message = e.remoteMessage;
  }
  return `ERR ${name}: ${message.replace(/\n/g, " ")}`;
}

function showValue(v: { value: Uint8Array; version: number } | null): string {
  return v === null ? "(nil)" : `${showBytes(v.value)} (version ${v.version})`;
}

function showStat(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** Progress of a bench on stderr: one rewritten line on a terminal, a line per report otherwise. */
function progressReporter(spec: BenchSpec, servers: number): (done: number, total: number) => void {
  const tty = process.stderr.isTTY === true;
  process.stderr.write(`bench: ${spec.count} ${spec.benchOp} calls, ${spec.sizeBytes}-byte values, ${spec.inflight} in flight, ${servers} server${servers === 1 ? "" : "s"}\n`);
  return (done, total) => {
    const line = `bench: ${done}/${total} (${Math.floor((done / total) * 100)}%)`;
    process.stderr.write(tty ? `\r${line}${done === total ? "\n" : ""}` : `${line}\n`);
  };
}

/**
 * Runs one command and returns its answer lines; throws what the client threw (the caller
 * prints errorLine). `quit` returns no lines (the caller ends the session).
 */
export async function executeCommand(client: KvClient, cmd: KvCommand): Promise<string[]> {
  switch (cmd.op) {
    case "put":
      return [`OK version ${await client.put(cmd.key, cmd.value)}`];
    case "get":
      return [showValue(await client.get(cmd.key))];
    case "cas": {
      const r = await client.cas(cmd.key, cmd.expectedVersion, cmd.value);
      return [`${r.ok ? "OK" : "MISMATCH"} version ${r.version}`];
    }
    case "del":
      return [(await client.del(cmd.key)) ? "1" : "0"];
    case "mget":
      return (await client.mget(cmd.keys)).map((v, i) => `${i + 1}) ${showValue(v)}`);
    case "stats": {
      const lines: string[] = [];
      let failed: unknown = null;
      for (const s of await client.stats()) {
        lines.push(`server ${s.url}`);
        if ("error" in s) {
          lines.push(`  ${errorLine(s.error)}`);
          failed ??= s.error;
        } else if (s.stats !== null && typeof s.stats === "object") {
          for (const [k, v] of Object.entries(s.stats as Record<string, unknown>)) lines.push(`  ${k} ${showStat(v)}`);
        } else lines.push(`  ${showStat(s.stats)}`);
      }
      if (failed !== null) throw new StatsPartialError(lines, failed);
      return lines;
    }
    case "save":
      await client.save();
      return ["OK"];
    case "bench":
      return [formatBench(await runBench(client, cmd, progressReporter(cmd, client.urls.length)))];
    case "help":
      return helpText(cmd.topic).split("\n");
    case "quit":
      return [];
  }
}

/** `stats` where some server failed: the lines for all of them, then the failure. */
class StatsPartialError extends Error {
  constructor(
    readonly lines: string[],
    readonly failure: unknown,
  ) {
    super("stats: a server failed");
  }
}

export interface LineOutcome {
  /** Answer and ERR lines, in order. */
  lines: string[];
  failed: boolean;
  quit: boolean;
}

/** Runs every command of one input line in order; stops at `quit`. Never throws. */
export async function runLine(client: KvClient, line: string): Promise<LineOutcome> {
  const out: LineOutcome = { lines: [], failed: false, quit: false };
  let commands: Uint8Array[][];
  try {
    commands = splitCommands(line);
  } catch (e) {
    out.lines.push(errorLine(e));
    out.failed = true;
    return out;
  }
  for (const words of commands) {
    try {
      const cmd = parseCommand(words);
      if (cmd.op === "quit") {
        out.quit = true;
        break;
      }
      out.lines.push(...(await executeCommand(client, cmd)));
    } catch (e) {
      if (e instanceof StatsPartialError) {
        out.lines.push(...e.lines);
      } else out.lines.push(errorLine(e));
      out.failed = true;
    }
  }
  return out;
}


const joinLines = (lines: string[]) => (lines.length === 0 ? "" : lines.join("\n") + "\n");

/** -c and stdin mode: every line, answers on stdout; true when any command failed. */
async function runScript(client: KvClient, lines: AsyncIterable<string> | Iterable<string>): Promise<boolean> {
  let failed = false;
  for await (const line of lines) {
    const r = await runLine(client, line);
    await writeOut(joinLines(r.lines));
    failed ||= r.failed;
    if (r.quit) break;
  }
  return failed;
}

/** The interactive prompt: readline with history; ends at quit, Ctrl-D or Ctrl-C. */
async function runInteractive(client: KvClient): Promise<void> {
  // Line editing and history only when stdout is a terminal too: no escape sequences in a file.
  const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: "kv> ", terminal: process.stdout.isTTY === true, historySize: HISTORY_LINES, removeHistoryDuplicates: true });
  rl.on("SIGINT", () => rl.close());
  await writeOut(`connected to ${client.urls.join(", ")}; type help for the commands\n`);
  rl.prompt();
  try {
    for await (const line of rl) {
      const r = await runLine(client, line);
      await writeOut(joinLines(r.lines));
      if (r.quit) break;
      rl.prompt();
    }
  } finally {
    rl.close();
  }
}

/** `hotpath kv-client ARGS`: runs the session; resolves to the exit status (see the module comment). */
export async function runKvClient(args: string[]): Promise<number> {
  const p = await parseOrExit("kv-client", args, KV_CLIENT_USAGE, parseKvClientArgs);
  if ("exit" in p) return p.exit;
  const parsed = p.parsed;
  let client: KvClient;
  try {
    const { kvConnect } = await import("../kv/index.ts"); // after the flags: a usage error loads no kv module
    client = await kvConnect(parsed.urls);
  } catch (e) {
    process.stderr.write(`hotpath kv-client: ${errorLine(e).slice("ERR ".length)}\n`);
    return 1;
  }
  try {
    if (parsed.commands !== null) return (await runScript(client, [parsed.commands])) ? 1 : 0;
    if (process.stdin.isTTY === true) {
      await runInteractive(client);
      return 0;
    }
    const rl = createInterface({ input: process.stdin, terminal: false, crlfDelay: Infinity });
    try {
      return (await runScript(client, rl)) ? 1 : 0;
    } finally {
      rl.close();
    }
  } finally {
    await client.close();
  }
}
