/**
 * Starts a benchmark peer process and reads its ready line; the peer exits when our stdin pipe
 * closes. Also starts a hotpath segment server in a Worker of this process (workerServer).
 */

import type { Subprocess } from "bun";

export interface BenchPeer {
  url: string;
  proc: Subprocess;
  stop(): Promise<void>;
}

export async function startPeer(args: string[], env: Record<string, string> = {}): Promise<BenchPeer> {
  const proc = Bun.spawn(["bun", ...args], { stdin: "pipe", stdout: "pipe", stderr: "inherit", env: { ...process.env, ...env } });
  const reader = proc.stdout.getReader();
  let text = "";
  const deadline = Date.now() + 20_000;
  while (!text.includes("\n")) {
    if (Date.now() > deadline) {
      proc.kill(9);
      throw new Error(`peer ${args.join(" ")} did not start within 20 s`);
    }
    const { value, done } = await reader.read();
    if (done) throw new Error(`peer ${args.join(" ")} exited before it was ready (code ${proc.exitCode})`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const ready = JSON.parse(text.slice(0, text.indexOf("\n")));
  return {
    url: ready.url,
    proc,
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill(9), 2000);
      await proc.exited;
      clearTimeout(t);
    },
  };
}

const SEGMENT_SERVER = new URL("./peers/segment-server.ts", import.meta.url).pathname;

/** A hotpath segment server (peers/segment-server.ts) in a Worker of this process; resolves when it listens. The caller terminates the Worker. */
export function workerServer(url: string, mode: "spin" | "async"): Promise<{ url: string; worker: Worker }> {
  const worker = new Worker(SEGMENT_SERVER);
  return new Promise((resolve) => {
    worker.onmessage = (e) => resolve({ url: e.data.url, worker });
    worker.postMessage({ url, mode });
  });
}
