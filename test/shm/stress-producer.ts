/**
 * Stress producer: maps the segment at path argv[2] (the consumer's memfd, as
 * /proc/<pid>/fd/<fd>; argv[3] bytes) as side A and sends argv[4]
 * messages as fast as the ring allows: head = u32 seq, u32 ~seq; body = 16 bytes of seq
 * (inline), and every 64th message a 3000-byte body in a slab slot, filled with a pattern of seq.
 */
import { SEND_OK } from "../../src/index.ts";
import { openFile, ShmMapping } from "../../src/ffi/libc.ts";
import { SegmentConnection } from "../../src/segment/connection.ts";
import { readHeader } from "../../src/segment/layout.ts";

const [name, bytes, countArg] = process.argv.slice(2);
const mapping = ShmMapping.fromFd(name!, openFile(name!, "rdwr"), Number(bytes));
const layout = readHeader(new Uint32Array(mapping.buffer, 0, 32), name!, mapping.lenBytes);
const quiet = { wakeBlocking() {}, wakeEventLoop() {}, waitBlocking() {}, armEventLoop() {} };
const conn = new SegmentConnection({ transport: "shm", buffer: mapping.buffer, layout, side: "A", signals: quiet, peer: "consumer", policy: { mode: "spin", spinNs: 0 } });
conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
console.log(JSON.stringify({ mapped: true }));

const count = Number(countArg);
/** The producer stops by itself after this long, whatever the consumer does. */
const deadline = Bun.nanoseconds() + 60e9;
const head = new Uint8Array(8);
const hv = new DataView(head.buffer);
const small = new Uint8Array(16);
const sv = new DataView(small.buffer);
const big = new Uint8Array(3000);
for (let seq = 0; seq < count; seq++) {
  hv.setUint32(0, seq, true);
  hv.setUint32(4, ~seq >>> 0, true);
  let body = small;
  if (seq % 64 === 0) {
    big.fill(seq & 0xff);
    body = big;
  } else {
    for (let i = 0; i < 4; i++) sv.setUint32(i * 4, seq, true);
  }
  let spins = 0;
  while (conn.trySend(head, body) !== SEND_OK) {
    // Ring or slab full: the consumer is behind. Give up (and exit) if it stays gone.
    if (++spins % 1_000_000 === 0 && Bun.nanoseconds() > deadline) {
      console.error(`stress producer: consumer stalled at message ${seq}`);
      process.exit(1);
    }
  }
}
console.error(`stress producer: sent ${count}`);
