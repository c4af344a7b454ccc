/**
 * A churn client: connects to the churn server (churn-server.ts), keeps IN_FLIGHT calls going
 * (fast echoes of 32 B..256 KiB and slow echoes the server answers 50–400 ms later, so replies
 * are always in flight), checks every reply against its own request, and reports once
 * READY_CALLS calls completed. Then it goes on calling until told to close: it closes its
 * client cleanly, reports its counts and ends. Being killed (kill -9, Worker.terminate) in
 * between is the other way a churn client goes.
 *
 * As a script (`bun churn-client.ts URL`): the ready and final reports are JSON lines on
 * stdout; stdin EOF means close. As a Worker: it is sent {url}, posts the reports, and the
 * message "close" means close.
 */

import { rpcConnect } from "../../src/index.ts";
import { M_ECHO, M_SLOW_ECHO } from "./methods.ts";

/** Calls kept in flight: the 64, enough to hold slab slots and ring entries. */
const IN_FLIGHT = 64;
/** Completed calls before the client reports ready (and may be killed). */
const READY_CALLS = 16;

export interface ClientReport {
  ok: number;
  /** Replies whose bytes differ from the request's. */
  mismatches: number;
  /** Failures other than the TransportClosedError a clean close gives the calls it cuts off. */
  otherErrors: string[];
}

function randomSize(): number {
  // Mostly small (inline / small slots), some up to 256 KiB (large slots, UCX rendezvous).
  const max = Math.random() < 0.7 ? 4096 : 256 << 10;
  return 32 + Math.floor(Math.random() * (max - 32));
}

/** Runs one churn client; `onReady` once READY_CALLS completed; resolves after `closing` fired. */
export async function runChurnClient(url: string, onReady: (r: ClientReport) => void, closing: Promise<void>): Promise<ClientReport> {
  const client = await rpcConnect(url, { window: IN_FLIGHT * 2, timeoutMs: 20_000 });
  const report: ClientReport = { ok: 0, mismatches: 0, otherErrors: [] };
  let stop = false;
  let readySent = false;
  const lane = async (n: number) => {
    while (!stop) {
      const slow = n % 4 === 0; // a quarter of the lanes wait on slow replies
      const data = new Uint8Array(slow ? 64 : randomSize());
      for (let i = 0; i < data.length; i += 97) data[i] = (i * 31 + n) & 0xff;
      if (slow) new DataView(data.buffer).setUint32(0, 50 + Math.floor(Math.random() * 350), true);
      try {
        const got = await client.request(slow ? M_SLOW_ECHO : M_ECHO, data);
        if (!Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(data)) report.mismatches++;
        else report.ok++;
      } catch (e) {
        if (!stop && report.otherErrors.length < 5) report.otherErrors.push(`${(e as Error).name}: ${(e as Error).message}`);
        return;
      }
      if (!readySent && report.ok >= READY_CALLS) {
        readySent = true;
        onReady(report);
      }
    }
  };
  const lanes = Array.from({ length: IN_FLIGHT }, (_, n) => lane(n));
  await closing;
  stop = true;
  client.close();
  await Promise.all(lanes);
  return report;
}

declare const self: Worker;

if (import.meta.main && Bun.isMainThread) {
  let closed!: () => void;
  const closing = new Promise<void>((r) => (closed = r));
  (async () => {
    for await (const _ of Bun.stdin.stream()) {
      // only EOF matters
    }
    closed();
  })();
  const report = await runChurnClient(process.argv[2]!, (r) => console.log(JSON.stringify({ ready: true, ok: r.ok })), closing);
  console.log(JSON.stringify({ done: true, ...report }));
  process.exit(0);
} else if (!Bun.isMainThread) {
  let closed!: () => void;
  const closing = new Promise<void>((r) => (closed = r));
  self.onmessage = async (e: MessageEvent) => {
    if (e.data === "close") return closed();
    const report = await runChurnClient(e.data.url, (r) => self.postMessage({ ready: true, ok: r.ok }), closing).catch((err) => ({
      ok: 0,
      mismatches: 0,
      otherErrors: [`connect: ${(err as Error).message}`],
    }));
    self.postMessage({ done: true, ...report });
  };
}
