/**
 * Raw-socket helpers for scripted tcp peers: hellos and frames built byte by byte, a session
 * that writes a script and records what came back, and a process's resident memory.
 */

import type { Socket } from "bun";
import { readFileSync } from "node:fs";
import { wire } from "../../src/index.ts";
import { HELLO_BYTES, HELLO_MAGIC, HELLO_OK, TCP_PROTOCOL_VERSION } from "../../src/tcp/hello.ts";
import * as m from "../conformance/methods.ts";

/** test/tcp/server.ts: runs Bun.gc(true) and replies with nothing. */
export const M_GC = 90;

export function hello(o: { magic?: number; version?: number; status?: number; maxMessageBytes?: number; maxHeadBytes?: number; flags?: number; nonce?: Uint8Array } = {}): Uint8Array {
  const b = new Uint8Array(HELLO_BYTES);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, o.magic ?? HELLO_MAGIC, true);
  dv.setUint16(4, o.version ?? TCP_PROTOCOL_VERSION, true);
  dv.setUint16(6, o.status ?? HELLO_OK, true);
  dv.setUint32(8, o.maxMessageBytes ?? 64 << 20, true);
  dv.setUint32(12, o.maxHeadBytes ?? 4096, true);
  dv.setUint32(16, o.flags ?? 0, true);
  if (o.nonce) b.set(o.nonce, 20);
  return b;
}

export function frame(head: Uint8Array, body: Uint8Array = new Uint8Array(0), claimHead = head.length, claimBody = body.length): Uint8Array {
  const out = new Uint8Array(8 + head.length + body.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, claimHead, true);
  dv.setUint32(4, claimBody, true);
  out.set(head, 8);
  out.set(body, 8 + head.length);
  return out;
}

export function requestHead(dataLen: number, slot = 0, gen = 1, method = m.M_ECHO): Uint8Array {
  const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
  wire.writeWireHeader(h, wire.KIND_REQUEST, method, slot, gen, 0, dataLen);
  return h;
}

export function request(data: Uint8Array, slot = 0, gen = 1, method = m.M_ECHO): Uint8Array {
  return frame(requestHead(data.length, slot, gen, method), data);
}

export interface RawSession {
  /** "closed" when the server closed the connection within the wait, else "open". */
  outcome: "closed" | "open";
  /** The server's hello (its first 16 bytes), if that many came. */
  serverHello: Uint8Array;
  /** Everything after the server's hello. */
  after: Uint8Array;
}

/**
 * Connects a raw socket, sends a valid hello unless `sendHello` is false, writes each chunk of
 * the script (5 ms apart), then waits up to `waitMs` for the server to close the connection.
 */
export async function rawSession(port: number, script: Uint8Array[], opts: { sendHello?: boolean; endAfter?: boolean; waitMs?: number } = {}): Promise<RawSession> {
  const received: Uint8Array[] = [];
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const sock: Socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, d) {
        received.push(d.slice());
      },
      close() {
        resolveClosed();
      },
      error() {
        resolveClosed();
      },
    },
  });
  if (opts.sendHello !== false) sock.write(hello());
  for (const chunk of script) {
    sock.write(chunk);
    await Bun.sleep(5);
  }
  if (opts.endAfter) sock.end();
  const outcome = await Promise.race([closed.then(() => "closed" as const), Bun.sleep(opts.waitMs ?? 3000).then(() => "open" as const)]);
  sock.terminate();
  const all = Buffer.concat(received);
  return { outcome, serverHello: new Uint8Array(all.subarray(0, HELLO_BYTES)), after: new Uint8Array(all.subarray(HELLO_BYTES)) };
}

/** Resident memory of a process in bytes, from /proc/<pid>/status (VmRSS). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!kb) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(kb[1]) * 1024;
}

/** Waits until `cond()` holds, polling every few ms; throws naming `what` after `timeoutMs`. */
export async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}
