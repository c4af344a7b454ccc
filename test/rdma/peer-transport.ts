/**
 * A transport-level rdma:// peer on the softrc TEST FIXTURE, for test/rdma/flow.test.ts: a
 * listener whose accepted connection echoes, holds or checks what arrives, and/or a dialled
 * connection that sends numbered messages, driven by commands on stdin (peer-common.ts). Prints
 * `{ pid, ...probe }` when ready.
 *
 * A message is head = u32 index, body = pattern(index, size) (a u32 sequence seeded by the index:
 * any byte out of place shows). The accepting side checks every message (order, length, bytes).
 *
 * Commands:
 *   listen {url, opts, behaviour}  "echo" (send each message back), "hold" (keep every view
 *                                  unreleased until `release`) or "check"; -> {url}
 *   connect {url, opts}            -> {caps}
 *   fill {size, stallMs}           sends until trySend has said Full for stallMs (the peer is
 *                                  polled meanwhile); -> {sent, closed, closeError}
 *   send {n, sizes, echo}          sends messages (continuing the numbering) waiting out Full;
 *                                  with echo, until every echo came back checked; -> {sent, full, echoed, wrong, closed, closeError}
 *   release                        the accepted side releases what it holds and from then on at once
 *   stats                          -> {received, wrong, held, accepted, closed, closeError, ...probe}
 *   close / fault {spec}
 */
import { SEND_FULL, SEND_OK, connect, listen, type Connection, type Listener, type RxMessage } from "../../src/index.ts";
import { errName, errText, fault, out, probe, serveCommands, waitFor } from "./peer-common.ts";

/** Body bytes of message `i`: a u32 sequence seeded by i, cut to `size`. */
export function pattern(i: number, size: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(size / 4));
  let x = (Math.imul(i + 1, 0x9e3779b1) >>> 0) | 1;
  for (let k = 0; k < words.length; k++) words[k] = x = (x + 0x6d2b79f5) >>> 0;
  return new Uint8Array(words.buffer, 0, size);
}
const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const index = (head: Uint8Array) => (head.length === 4 ? new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) : -1);
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

let listener: Listener | null = null;
let accepted: Connection | null = null;
let acceptedCount = 0;
let acceptedClose: string | null = null;
let acceptedCloseText: string | null = null;
let received = 0;
let wrong = 0;
let holding = false;
const held: RxMessage[] = [];
const echoQueue: Array<{ head: Uint8Array; body: Uint8Array }> = [];
let pumping = false;

let dialled: Connection | null = null;
let dialledClose: string | null = null;
let dialledCloseText: string | null = null;
let nextIndex = 0;
let echoed = 0;
let echoWrong = 0;
const sentSizes: number[] = [];

/** Sends queued echoes; waits out Full on the accepted connection. */
async function pump(conn: Connection): Promise<void> {
  if (pumping) return;
  pumping = true;
  try {
    while (echoQueue.length > 0 && !conn.closed) {
      const e = echoQueue[0]!;
      if (conn.trySend(e.head, e.body) === SEND_FULL) await conn.wait(50);
      else echoQueue.shift();
    }
  } finally {
    pumping = false;
  }
}

out({ pid: process.pid, ...probe() });
await serveCommands(
  {
    async listen(a) {
      const behaviour: string = a.behaviour ?? "check";
      holding = behaviour === "hold";
      listener = await listen(a.url, a.opts ?? {});
      listener.onConnection((conn) => {
        accepted = conn;
        acceptedCount++;
        conn.setReceiver({
          onMessage(msg) {
            const i = index(msg.head);
            if (i !== received || !same(msg.body, pattern(i, msg.body.length))) wrong++;
            received++;
            if (behaviour === "echo") {
              echoQueue.push({ head: msg.head.slice(), body: msg.body.slice() });
              msg.release();
              void pump(conn);
            } else if (holding) held.push(msg);
            else msg.release();
          },
          onClose(e) {
            acceptedClose = errName(e);
            acceptedCloseText = e ? errText(e) : null;
          },
        });
      });
      return { url: listener.url };
    },
    async connect(a) {
      const conn = await connect(a.url, a.opts ?? {});
      dialled = conn;
      conn.setReceiver({
        onMessage(msg) {
          const i = index(msg.head);
          if (i !== echoed || msg.body.length !== sentSizes[i] || !same(msg.body, pattern(i, msg.body.length))) echoWrong++;
          echoed++;
          msg.release();
        },
        onClose(e) {
          dialledClose = errName(e);
          dialledCloseText = e ? errText(e) : null;
        },
      });
      return { caps: conn.caps };
    },
    async fill(a) {
      const conn = dialled!;
      const size: number = a.size ?? 64;
      let fullSince = 0;
      let sent = 0;
      for (;;) {
        const s = conn.trySend(u32(nextIndex), pattern(nextIndex, size));
        if (s === SEND_OK) {
          sentSizes.push(size);
          nextIndex++;
          sent++;
          fullSince = 0;
          continue;
        }
        if (s !== SEND_FULL) break;
        if (fullSince === 0) fullSince = Date.now();
        else if (Date.now() - fullSince >= a.stallMs) break;
        conn.poll();
        await conn.wait(10);
      }
      return { sent, closed: conn.closed, closeError: dialledClose };
    },
    async send(a) {
      const conn = dialled!;
      const sizes: number[] = a.sizes;
      const first = nextIndex;
      let full = 0;
      while (nextIndex < first + a.n && !conn.closed) {
        const size = sizes[(nextIndex - first) % sizes.length]!;
        const body = pattern(nextIndex, size);
        const s = conn.trySend(u32(nextIndex), body);
        if (s === SEND_OK) {
          sentSizes.push(size);
          nextIndex++;
        } else if (s === SEND_FULL) {
          full++;
          await conn.wait(50);
        } else break;
      }
      if (a.echo) await waitFor(() => echoed === nextIndex || conn.closed, a.timeoutMs ?? 60_000);
      return { sent: nextIndex - first, full, echoed, wrong: echoWrong, closed: conn.closed, closeError: dialledClose, closeText: dialledCloseText };
    },
    release() {
      holding = false;
      for (const msg of held.splice(0)) msg.release();
      return {};
    },
    stats() {
      return {
        received,
        wrong,
        held: held.length,
        accepted: acceptedCount,
        acceptedClosed: accepted?.closed ?? null,
        acceptedCloseError: acceptedClose,
        acceptedCloseText,
        closed: dialled?.closed ?? null,
        closeError: dialledClose,
        closeText: dialledCloseText,
        ...probe(),
      };
    },
    close() {
      dialled?.close();
      return {};
    },
    fault(a) {
      fault(a.spec);
      return {};
    },
  },
  () => {
    dialled?.close();
    accepted?.close();
    listener?.close(true);
  },
);
