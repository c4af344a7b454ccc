/**
 * Spawns a test peer as a real process (Bun.spawn) and reads the one JSON line it prints when
 * ready. The peer exits when its stdin closes, so a dead test runner never leaks it; tests
 * also kill it by pid in cleanup. A killed peer cannot remove its shm / inproc socket files, so
 * kill() removes the stale ones (files nobody listens on any more) from this uid's socket
 * directory once the peer has exited.
 */

import type { Subprocess } from "bun";
import { removeStaleSockets, socketDirOf } from "../../src/segment/socket-dir.ts";

/** Removes socket files in this uid's socket directory that no listener holds any more. */
export async function removeStaleSocketFiles(): Promise<string[]> {
  return removeStaleSockets(socketDirOf(process.geteuid!()), () => true);
}

export interface Peer {
  proc: Subprocess<"pipe", "pipe", "inherit">;
  ready: Record<string, any>;
  /** Later stdout lines (the peer's reports), in order. */
  lines: string[];
  nextLine(timeoutMs?: number): Promise<string>;
  kill(signal?: number): Promise<void>;
}

export async function spawnPeer(script: string, args: string[], env: Record<string, string> = {}, timeoutMs = 15000): Promise<Peer> {
  const proc = Bun.spawn(["bun", script, ...args], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
    env: { ...process.env, ...env },
  });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        for (const w of waiters.splice(0)) w();
      }
    }
    for (const w of waiters.splice(0)) w();
  })();
  const nextLine = async (ms = timeoutMs): Promise<string> => {
    const deadline = Date.now() + ms;
    while (lines.length === 0) {
      if ((proc.exitCode !== null || proc.signalCode !== null) && lines.length === 0) throw new Error(`peer ${script} exited with ${proc.exitCode ?? proc.signalCode}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`peer ${script}: no output within ${ms} ms`);
      await Promise.race([new Promise<void>((r) => waiters.push(r)), Bun.sleep(Math.min(left, 100))]);
    }
    return lines.shift()!;
  };
  let ready: Record<string, any>;
  try {
    // The first JSON line; native libraries may log to stdout first (UCX does): pass those on.
    for (;;) {
      const line = await nextLine();
      try {
        ready = JSON.parse(line);
        break;
      } catch {
        process.stderr.write(`[${script}] ${line}\n`);
      }
    }
  } catch (e) {
    proc.kill(9);
    throw e;
  }
  return {
    proc,
    ready,
    lines,
    nextLine,
    async kill(signal = 9) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await proc.exited;
      await removeStaleSocketFiles();
    },
  };
}

/** Exits this (peer) process when the parent closes our stdin. */
export function exitWhenParentGoes(cleanup: () => void = () => {}): void {
  (async () => {
    for await (const _ of Bun.stdin.stream()) {
      // input is ignored; only EOF matters
    }
    cleanup();
    process.exit(0);
  })();
}

/**
 * The same peer shape, hosted in a Worker of this process (for inproc). The Worker is sent
 * `{ url }` (or `init` itself when it is an object) and posts its ready object back.
 */
export async function spawnWorkerPeer(script: string, init: string | Record<string, unknown>, timeoutMs = 15000): Promise<Peer> {
  const worker = new Worker(script);
  const ready = await new Promise<Record<string, any>>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`worker ${script}: not ready within ${timeoutMs} ms`)), timeoutMs);
    worker.onmessage = (e) => {
      clearTimeout(t);
      resolve(e.data);
    };
    worker.onerror = (e) => {
      clearTimeout(t);
      reject(new Error(`worker ${script}: ${e.message}`));
    };
    worker.postMessage(typeof init === "string" ? { url: init } : init);
  });
  return {
    proc: null as never,
    ready,
    lines: [],
    nextLine: () => Promise.reject(new Error("worker peers report through messages")),
    async kill() {
      worker.terminate();
    },
  };
}

/** Polls `cond` every few ms until it holds; throws naming `what` after `timeoutMs` (a watchdog). */
export async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await Bun.sleep(2);
  }
}
