/**
 * Helpers of the kv tests: a kv server as a real process (kv-server.ts) or in a Worker
 * (kv-worker.ts, for inproc), killed by pid / terminated in cleanup, and unique names.
 */
import { spawnPeer, spawnWorkerPeer, type Peer } from "../../helpers/peer.ts";

export const SERVER_SCRIPT = new URL("./kv-server.ts", import.meta.url).pathname;
export const WORKER_SCRIPT = new URL("./kv-worker.ts", import.meta.url).pathname;

let counter = 0;
/** A name no other test (or run) uses: shm / inproc listener names. */
export function uniqueName(what: string): string {
  return `kvt-${what}-${process.pid}-${++counter}`;
}

/** The listen URL for a transport: a unique name, or port 0. */
export function listenUrl(transport: string): string {
  if (transport === "shm" || transport === "inproc") return `${transport}://${uniqueName(transport)}`;
  return `${transport}://127.0.0.1:0`;
}

/** Starts a kv server (a process; a Worker for inproc) and returns it with its real URLs. */
export async function startServer(opts: Record<string, unknown>, env: Record<string, string> = {}): Promise<Peer & { urls: string[] }> {
  const listen = opts.listen as string[];
  const peer = listen.some((u) => u.startsWith("inproc:")) ? await spawnWorkerPeer(WORKER_SCRIPT, opts) : await spawnPeer(SERVER_SCRIPT, [JSON.stringify(opts)], env);
  if (peer.ready.error) {
    await peer.kill();
    throw new Error(`kv server failed: ${peer.ready.error.name}: ${peer.ready.error.message}`);
  }
  return Object.assign(peer, { urls: peer.ready.urls as string[] });
}
