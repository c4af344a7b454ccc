/**
 * Test peer for in-place.test.ts: connects (raw Connection, no RPC) to argv[2], holds every
 * message it receives, and after argv[3] of them checks them and prints one JSON line of what
 * it saw: bytes right, how many were in place, UCX buffers held (UcxRuntime.stats), whether a
 * released in-place view reads as empty, and the held count after releasing all. Then it holds
 * argv[4] more and waits for the peer to close, and prints the held count after the close.
 * Each message's body is `n` bytes of (i * 7 + index) & 0xff with index its u32 head.
 * Run with UCX_TLS in its environment.
 */
import { connect, type RxMessage } from "../../src/index.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";

const [url, first, second] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4])];
const conn = (await connect(url, { connectTimeoutMs: 10_000 })) as unknown as UcxConnection;
const held: RxMessage[] = [];
const views: Uint8Array[] = [];
let report: Record<string, unknown> | null = null;
const stats = () => conn.rt.stats();
const bytesRight = (m: RxMessage) => {
  const idx = new DataView(m.head.buffer, m.head.byteOffset, 4).getUint32(0, true);
  const b = m.body;
  for (let i = 0; i < b.length; i++) if (b[i] !== ((i * 7 + idx) & 0xff)) return false;
  return true;
};
conn.setReceiver({
  onMessage(m) {
    held.push(m);
    views.push(m.body);
    if (held.length === first) {
      const inPlace = held.filter((x) => (x as unknown as { inPlace: boolean }).inPlace).length;
      const ok = held.every(bytesRight);
      const heldInPlace = stats().heldInPlace;
      const firstInPlace = held.findIndex((x) => (x as unknown as { inPlace: boolean }).inPlace);
      const view = views[firstInPlace] ?? new Uint8Array(1);
      const lengthBefore = view.length;
      held[firstInPlace]?.release();
      const afterRelease = { length: view.length, byte0: view[0] ?? null };
      for (const x of held.splice(0)) x.release();
      views.length = 0;
      report = { ok, inPlace, heldInPlace, lengthBefore, afterRelease, heldAfterReleaseAll: stats().heldInPlace, inPlaceTotal: stats().inPlaceTotal };
      console.log(JSON.stringify(report));
      conn.trySend(new Uint8Array(4)); // tells the peer to send the second batch
    }
  },
  onClose() {
    const inPlaceHeldBeforeClose = held.filter((x) => (x as unknown as { inPlace: boolean }).inPlace).length;
    // The connection released its in-place messages at close: their views read as empty.
    console.log(JSON.stringify({ closed: true, held: held.length, inPlaceHeldBeforeClose, heldAfterClose: stats().heldInPlace, viewsEmpty: views.filter((v) => v.length === 0).length }));
    process.exit(0);
  },
});
setTimeout(() => {
  console.log(JSON.stringify({ timeout: true, got: held.length, report }));
  process.exit(1);
}, 30_000);
void second;
