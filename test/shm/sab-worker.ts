/**
 * A Worker of test/shm/sab.test.ts, handed an shm segment's SharedArrayBuffer (posted, not
 * copied). Messages it takes:
 *   {cmd:"ask", sab, byteOffset, bytes, requests: number[][]}  writes each request into the
 *     segment (the protocol of sab-peer.ts), waits for the peer process's reply, and posts back
 *     {replies}; then writes WORKER_MARK at MARK_AT and rings Atomics.notify on word WAKE_WORD.
 *   {cmd:"hold", sab, byteOffset, bytes}  keeps a view of the segment; posts {held:true}.
 *   {cmd:"sum"}  posts {sum, nonzero} of the bytes its held view reads now.
 */

import { REPLY_AT, REQUEST_AT } from "./sab-peer.ts";

export const MARK_AT = 16384;
export const WORKER_MARK = 0x5e;
/** Word index the Worker notifies on (byte offset 12 of the segment). */
export const WAKE_WORD = 3;

declare const self: Worker;
let held: Uint8Array | null = null;

async function ask(words: Int32Array, bytes: Uint8Array, requests: number[][]): Promise<number[][]> {
  const replies: number[][] = [];
  for (const req of requests) {
    bytes.set(req, REQUEST_AT);
    words[2] = req.length;
    const seq = Atomics.load(words, 0) + 1;
    // SYNC: pairs with the peer's Atomics.load of the request seq; the request bytes are written first.
    Atomics.store(words, 0, seq);
    // SYNC: pairs with the peer's Atomics.store of the reply seq, after its reply bytes.
    while (Atomics.load(words, 1) !== seq) await Bun.sleep(1);
    replies.push(Array.from(bytes.subarray(REPLY_AT, REPLY_AT + req.length)));
  }
  return replies;
}

self.onmessage = async (e: MessageEvent) => {
  const m = e.data as { cmd: string; sab: SharedArrayBuffer; byteOffset: number; bytes: number; requests?: number[][] };
  if (m.cmd === "sum") {
    let sum = 0;
    let nonzero = 0;
    for (let i = 0; i < held!.length; i++) {
      sum = (sum + held![i]!) >>> 0;
      if (held![i] !== 0) nonzero++;
    }
    return self.postMessage({ sum, nonzero });
  }
  const words = new Int32Array(m.sab, m.byteOffset, m.bytes >> 2);
  const bytes = new Uint8Array(m.sab, m.byteOffset, m.bytes);
  if (m.cmd === "hold") {
    held = bytes;
    return self.postMessage({ held: true });
  }
  const replies = await ask(words, bytes, m.requests!);
  bytes[MARK_AT] = WORKER_MARK;
  Atomics.store(words, WAKE_WORD, 1);
  Atomics.notify(words, WAKE_WORD);
  self.postMessage({ replies });
};
