/**
 * Atomics across processes: a producer process and this consumer exchange millions of
 * messages through one ring; no descriptor is ever seen torn, reordered, duplicated or lost,
 * which is the ordering the rings rely on (plain stores published by Atomics.store(tail)).
 */

import { afterAll, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { ShmMapping } from "../../src/ffi/libc.ts";
import { SegmentConnection } from "../../src/segment/connection.ts";
import { computeLayout, writeHeader } from "../../src/segment/layout.ts";

const PRODUCER = new URL("./stress-producer.ts", import.meta.url).pathname;
const COUNT = 2_000_000;
const children: Array<{ kill(sig?: number): void }> = [];
afterAll(() => {
  for (const c of children) c.kill(9);
});

test(`two processes, ${COUNT} messages: every descriptor whole and in order`, async () => {
  const layout = computeLayout({ ringSlots: 256, sizeClasses: [{ slotBytes: 4096, slotCount: 32 }] });
  // A sealed memfd, as sessions use: the producer maps it through /proc/<our pid>/fd/<fd>.
  const mapping = ShmMapping.createSealed("hotpath-stress", layout.totalBytes);
  writeHeader(new Uint32Array(mapping.buffer, 0, 32), layout, 7);
  const quiet = { wakeBlocking() {}, wakeEventLoop() {}, waitBlocking() {}, armEventLoop() {} };
  const conn = new SegmentConnection({ transport: "shm", buffer: mapping.buffer, layout, side: "B", signals: quiet, peer: "producer", policy: { mode: "spin", spinNs: 0 } });
  let expected = 0;
  let bad = 0;
  let firstBad = "";
  conn.setReceiver({
    onMessage(m) {
      const hb = m.headBuf;
      const ho = m.headOffset;
      const seq = (hb[ho]! | (hb[ho + 1]! << 8) | (hb[ho + 2]! << 16) | (hb[ho + 3]! << 24)) >>> 0;
      const inv = (hb[ho + 4]! | (hb[ho + 5]! << 8) | (hb[ho + 6]! << 16) | (hb[ho + 7]! << 24)) >>> 0;
      const body = m.body;
      let ok = seq === expected && inv === (~seq >>> 0) && m.headLength === 8;
      if (ok && seq % 64 === 0) {
        ok = body.length === 3000 && body[0] === (seq & 0xff) && body[1499] === (seq & 0xff) && body[2999] === (seq & 0xff);
      } else if (ok) {
        const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
        ok = body.length === 16 && dv.getUint32(0, true) === seq && dv.getUint32(12, true) === seq;
      }
      if (!ok) {
        if (bad === 0) firstBad = `at message ${expected}: seq ${seq}, ~seq ${inv}, ${body.length} bytes`;
        bad++;
      }
      expected++;
      m.release();
    },
    onClose() {},
  });
  const child = Bun.spawn(["bun", PRODUCER, `/proc/${process.pid}/fd/${mapping.fd}`, String(layout.totalBytes), String(COUNT)], { stdout: "pipe", stderr: "inherit" });
  children.push(child);
  try {
    const reader = child.stdout.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain('"mapped":true');
    let idle = 0;
    while (expected < COUNT) {
      if (conn.poll() === 0) {
        if (++idle % 4096 === 0) {
          await Bun.sleep(0); // let the runner breathe; the watchdog fails a hang
          if (child.exitCode !== null && conn.poll() === 0 && expected < COUNT) break;
        }
      } else idle = 0;
    }
    expect(firstBad).toBe("");
    expect(bad).toBe(0);
    expect(expected).toBe(COUNT);
    expect(await child.exited).toBe(0);
  } finally {
    child.kill(9);
    mapping.close();
  }
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
}, 120_000);
