/**
 * The test side of the rdma:// peers (peer-rpc.ts, peer-transport.ts): spawns one on the softrc
 * TEST FIXTURE with a given registry directory (spawnPeer: its ready line is `{ pid, ...probe }`),
 * tracked so the fixture helper kills it by pid after the test, and sends it commands one at a
 * time, each answered by one JSON line (a watchdog fails a peer that does not answer).
 *
 *   const p = await startRdmaPeer(fx, PEER_RPC, dir);
 *   const { url } = await p.ask("serve", { url: "rdma://127.0.0.1:0" });
 *
 * Thread: the test's main thread.
 */
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import type { SoftRcFixture } from "./softrc/use-fixture.ts";

export const PEER_RPC = new URL("./peer-rpc.ts", import.meta.url).pathname;
export const PEER_TRANSPORT = new URL("./peer-transport.ts", import.meta.url).pathname;

/** How long a command may take before the test fails (the slowest: 10,000 echoes on two busy cores). */
const ANSWER_WATCHDOG_MS = 90_000;

export interface RdmaPeer {
  readonly peer: Peer;
  readonly pid: number;
  /** What the peer reported when ready (its fixture probe before any rdma call). */
  readonly ready: Record<string, any>;
  /** Sends a command; resolves with its answer; rejects when the answer is an error (unless `allowError`). */
  ask(cmd: string, args?: Record<string, unknown>, allowError?: boolean): Promise<Record<string, any>>;
  kill(signal?: number): Promise<void>;
}

export async function startRdmaPeer(fx: SoftRcFixture, script: string, dir: string, extraEnv: Record<string, string> = {}): Promise<RdmaPeer> {
  const env = { ...fx.env(dir), ...extraEnv } as Record<string, string>;
  const peer = await spawnPeer(script, [], env, 30_000);
  fx.track(peer.proc);
  let chain: Promise<unknown> = Promise.resolve();
  const ask = (cmd: string, args: Record<string, unknown> = {}, allowError = false) => {
    const run = chain.then(async () => {
      peer.proc.stdin.write(`${JSON.stringify({ cmd, ...args })}\n`);
      peer.proc.stdin.flush();
      const line = await peer.nextLine(ANSWER_WATCHDOG_MS);
      const r = JSON.parse(line) as Record<string, any>;
      if (r.cmd !== cmd) throw new Error(`peer ${peer.ready.pid}: asked ${cmd}, answered ${line}`);
      if (r.error !== undefined && !allowError) throw new Error(`peer ${peer.ready.pid} ${cmd}: ${r.error}`);
      return r;
    });
    chain = run.catch(() => {});
    return run;
  };
  return { peer, pid: peer.ready.pid, ready: peer.ready, ask, kill: (signal?: number) => peer.kill(signal) };
}

/** Asks `p` for `cmd` until `ok(answer)` holds or `timeoutMs` passes; returns the last answer (the test asserts on it). */
export async function askUntil(p: RdmaPeer, cmd: string, ok: (r: Record<string, any>) => boolean, timeoutMs = 20_000): Promise<Record<string, any>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await p.ask(cmd);
    if (ok(r) || Date.now() > end) return r;
    await Bun.sleep(20);
  }
}
