/**
 * An shm server in a child process for the access tests: access-peer.ts `listen`, optionally
 * under a lower fd limit (`prlimit --nofile`, the way an operator's ulimit would set it) and as
 * another user (`setpriv`). Its refusals arrive as lines {refused: {reason, name, message}}.
 * The test owns the child: stop() closes its stdin (it closes its listener and exits) and kills it
 * by pid if it does not; a test's watchdog is the `timeoutMs` of every wait here.
 *
 *   const server = await childServer(`shm://${name}`, { nofile: 400 });
 *   … server.refusals("busy") …
 *   await server.stop();
 */

import { procFigures } from "../helpers/proc-figures.ts";
import { removeStaleSocketFiles } from "../helpers/peer.ts";

const PEER = new URL("./access-peer.ts", import.meta.url).pathname;

export interface ChildServer {
  url: string;
  pid: number;
  /** Every refusal line so far. */
  readonly refused: Array<{ reason: string; name: string; message: string }>;
  /** Refusals of `reason` so far. */
  refusals(reason: string): number;
  /** Open fds of the server process now. */
  fds(): number;
  /** Waits until `cond()` holds or `timeoutMs` passes; returns whether it held. */
  until(cond: () => boolean, timeoutMs?: number): Promise<boolean>;
  stop(): Promise<void>;
}

/** Starts `listen url` in a child (see the module comment); resolves once it listens. */
export async function childServer(url: string, o: { nofile?: number; allowUid?: number; script?: string } = {}, timeoutMs = 20_000): Promise<ChildServer> {
  const cmd = ["bun", o.script ?? PEER, "listen", url, ...(o.allowUid === undefined ? [] : [String(o.allowUid)])];
  const proc = Bun.spawn(o.nofile === undefined ? cmd : ["prlimit", `--nofile=${o.nofile}:${o.nofile}`, ...cmd], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const lines: any[] = [];
  const refused: ChildServer["refused"] = [];
  (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const v = JSON.parse(line);
          if (v.refused) refused.push(v.refused);
          else lines.push(v);
        } catch {
          process.stderr.write(`[access server] ${line}\n`);
        }
      }
    }
  })();
  const until = async (cond: () => boolean, ms = timeoutMs) => {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > deadline) return false;
      await Bun.sleep(10);
    }
    return true;
  };
  if (!(await until(() => lines.length > 0 || proc.exitCode !== null))) {
    proc.kill(9);
    throw new Error(`access server ${url}: not listening within ${timeoutMs} ms`);
  }
  const ready = lines[0];
  if (!ready?.url) {
    proc.kill(9);
    throw new Error(`access server ${url}: ${JSON.stringify(ready ?? proc.exitCode)}`);
  }
  return {
    url: ready.url,
    pid: ready.pid,
    refused,
    refusals: (reason) => refused.filter((r) => r.reason === reason).length,
    fds: () => procFigures(ready.pid).fds,
    until,
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill(9), timeoutMs);
      await proc.exited;
      clearTimeout(t);
      await removeStaleSocketFiles();
    },
  };
}
