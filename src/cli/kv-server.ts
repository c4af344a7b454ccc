/**
 * `hotpath kv-server --listen URL [--listen URL ...] --memory MB [--hugepages] [--evict lru]
 * [--snapshot PATH] [--max-key-bytes N] [--no-one-sided]`: one kv store (src/kv/server.ts)
 * served on every listener.
 *
 * Contract:
 *   - stdout: `listening URL` per listener, in --listen order with port 0 resolved; then, when
 *     --hugepages could not be honoured, the store's one-line reason (the arena is then plain
 *     memory). Nothing else goes to stdout, so a script can read the URLs.
 *   - stderr: what else happens (a snapshot loaded / saved, the signal, errors).
 *   - SIGINT / SIGTERM: graceful close (drains the connections, saves the snapshot when
 *     --snapshot is set, frees the arena), then exit 0; exit 1 when the save fails.
 *   - --snapshot PATH is loaded at start when the file exists; a corrupt or truncated one is
 *     refused (`KvSnapshotError` on stderr, exit 1) and the file is left as it is.
 *   - exit 2 for bad flags, with a usage line on stderr; exit 1 when the server cannot start.
 *
 *   $ hotpath kv-server --listen tcp://127.0.0.1:0 --listen shm://kv1 --memory 64 --snapshot kv.snap
 *   listening tcp://127.0.0.1:41234
 *   listening shm://kv1
 *
 * Thread: the main JS thread of the `hotpath` command.
 */

import { existsSync } from "node:fs";
import { errorNameOf, UsageError } from "../errors.ts";
import type { KvServer, KvServerOptions } from "../kv/index.ts";
import { eachFlag, parseOrExit, writeOut } from "./cli-io.ts";

export const KV_SERVER_USAGE = `usage: hotpath kv-server --listen URL [--listen URL ...] --memory MB [--hugepages] [--evict lru] [--snapshot PATH] [--max-key-bytes N] [--no-one-sided]
  --listen URL        serve on this URL (repeatable: tcp://host:port, shm://name, ucx://host:port, ...)
  --memory MB         the store's arena, allocated once at start (MiB, 1..2048)
  --hugepages         map the arena with huge pages (falls back to plain memory, saying why)
  --evict lru         when memory is full, evict least-recently-used values (default: KvFullError)
  --snapshot PATH     load PATH at start if it exists; save it on SIGINT/SIGTERM and on a save request
  --max-key-bytes N   longest key accepted (default 1024)
  --no-one-sided      do not offer one-sided (RMA) reads and writes on ucx listeners`;

/** The store's own limit (KvStore refuses an arena over MAX_ARENA_BYTES, 2 GiB), so the flag fails as a usage error, not at start. */
export const MAX_MEMORY_MB = 2048;
/** The store's index keeps a key's length in 32 bits; far beyond any message size. */
const MAX_KEY_BYTES_LIMIT = 1 << 30;

export interface KvServerArgs {
  listen: string[];
  memoryMB: number;
  hugepages: boolean;
  evict: "none" | "lru";
  snapshot: string | undefined;
  maxKeyBytes: number | undefined;
  oneSided: boolean;
}

function whole(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag} "${text}" is not a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${flag} ${text} is out of range (${min}..${max})`);
  return n;
}

/** The flags of `hotpath kv-server`; UsageError for an unknown or repeated flag, a bad value, or a missing --listen / --memory. Pure. */
export function parseKvServerArgs(args: string[]): KvServerArgs {
  const out: KvServerArgs = { listen: [], memoryMB: 0, hugepages: false, evict: "none", snapshot: undefined, maxKeyBytes: undefined, oneSided: true };
  const seen = new Set<string>();
  eachFlag(args, false, (flag, value, a, inline) => {
    if (flag !== "--listen") {
      if (seen.has(flag)) throw new UsageError(`${flag} given twice`);
      seen.add(flag);
    }
    switch (flag) {
      case "--listen":
        out.listen.push(value());
        break;
      case "--memory":
        out.memoryMB = whole("--memory", value(), 1, MAX_MEMORY_MB);
        break;
      case "--hugepages":
      case "--no-one-sided":
        if (inline) throw new UsageError(`${flag} takes no value`);
        if (flag === "--hugepages") out.hugepages = true;
        else out.oneSided = false;
        break;
      case "--evict": {
        const v = value();
        if (v !== "lru" && v !== "none") throw new UsageError(`--evict "${v}": the policies are lru and none`);
        out.evict = v;
        break;
      }
      case "--snapshot":
        out.snapshot = value();
        break;
      case "--max-key-bytes":
        out.maxKeyBytes = whole("--max-key-bytes", value(), 1, MAX_KEY_BYTES_LIMIT);
        break;
      default:
        throw new UsageError(`unknown argument "${a}"`);
    }
  });
  if (out.listen.length === 0) throw new UsageError("--listen URL is required");
  if (out.memoryMB === 0) throw new UsageError("--memory MB is required");
  return out;
}

/** The kvServe options for parsed flags. */
export function kvServerOptions(a: KvServerArgs): KvServerOptions {
  const opts: KvServerOptions = { listen: a.listen, memoryBytes: a.memoryMB * 2 ** 20, hugepages: a.hugepages, evict: a.evict, oneSided: a.oneSided };
  if (a.snapshot !== undefined) opts.snapshot = a.snapshot;
  if (a.maxKeyBytes !== undefined) opts.maxKeyBytes = a.maxKeyBytes;
  return opts;
}

const describe = (e: unknown) => `${errorNameOf(e)}: ${e instanceof Error ? e.message : String(e)}`;

/** `hotpath kv-server ARGS`: serves until SIGINT/SIGTERM; resolves to the exit status (see the module comment). */
export async function runKvServer(args: string[]): Promise<number> {
  const p = await parseOrExit("kv-server", args, KV_SERVER_USAGE, parseKvServerArgs);
  if ("exit" in p) return p.exit;
  const parsed = p.parsed;
  // Signals are caught from the start: one arriving while the store loads still closes it.
  let signalled: ((name: string) => void) | null = null;
  let pendingSignal: string | null = null;
  let closing = false;
  const onSignal = (name: string) => {
    if (closing) {
      process.stderr.write(`hotpath kv-server: ${name} again while closing: exiting now\n`);
      process.exit(1);
    }
    if (signalled !== null) signalled(name);
    else pendingSignal ??= name;
  };
  const onInt = () => onSignal("SIGINT");
  const onTerm = () => onSignal("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  try {
    const hadSnapshot = parsed.snapshot !== undefined && existsSync(parsed.snapshot);
    let server: KvServer;
    try {
      // Loaded here, after the flags: a usage error costs no kv module load.
      const { kvServe } = await import("../kv/index.ts");
      server = await kvServe(kvServerOptions(parsed));
    } catch (e) {
      process.stderr.write(`hotpath kv-server: ${describe(e)}\n`);
      return 1;
    }
    if (hadSnapshot) process.stderr.write(`hotpath kv-server: loaded snapshot ${parsed.snapshot} (${server.store.stats().keys} keys)\n`);
    const note = server.store.hugepagesNote;
    await writeOut(server.urls.map((u) => `listening ${u}\n`).join("") + (note !== null ? `${note}\n` : ""));
    const name = pendingSignal ?? (await new Promise<string>((resolve) => (signalled = resolve)));
    closing = true;
    const keys = server.store.stats().keys;
    process.stderr.write(`hotpath kv-server: ${name}: closing\n`);
    try {
      await server.close({ save: parsed.snapshot !== undefined });
    } catch (e) {
      process.stderr.write(`hotpath kv-server: close failed: ${describe(e)}\n`);
      return 1;
    }
    if (parsed.snapshot !== undefined) process.stderr.write(`hotpath kv-server: saved snapshot ${parsed.snapshot} (${keys} keys)\n`);
    return 0;
  } finally {
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
  }
}
