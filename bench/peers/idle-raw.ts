/**
 * Raw references of the idle-wake benchmark (bench/idle-wake.bench.ts), no RPC at all:
 *   bun bench/peers/idle-raw.ts unix NAME    a Bun Unix-socket server (abstract name): every read
 *       is answered by writing it back with bytes 8..15 replaced by the time its data callback
 *       ran (f64 LE, CLOCK_MONOTONIC ns): how long a Bun event loop parked in epoll takes to wake
 *       for a socket byte, the mechanism of hotpath's shm doorbell. Prints {"url","pid"}; exits on
 *       stdin EOF.
 *   bun bench/peers/idle-raw.ts futex NAME   a thread parked in FUTEX_WAIT on word PING of the
 *       POSIX shm object NAME (made by the benchmark, FUTEX_LAYOUT); when woken it stamps the time
 *       (f64 at WOKEN_AT), copies PING to PONG and FUTEX_WAKEs the benchmark parked on PONG. The
 *       floor a cross-process wake-up has here (the vCPU's wake included). Blocks its thread: it
 *       stops when STOP is set (and rung), or after MAX_LIFE_MS whatever happens.
 */

import { futexWait, futexWake, ShmMapping } from "../../src/ffi/libc.ts";
import { clockOffsetNs } from "./idle-clock.ts";

/** Byte offsets in the futex reference's segment; each word on its own cache line. */
export const FUTEX_LAYOUT = { PING: 0, PONG: 64, STOP: 128, WOKEN_AT: 192, BYTES: 4096 } as const;
/** The futex peer gives up after this long even if nobody stops it (a benchmark that died). */
const MAX_LIFE_MS = 120_000;

const [mode, name] = import.meta.main ? process.argv.slice(2) : [];
const off = clockOffsetNs();
const clock = () => Bun.nanoseconds() + off;

if (mode === "unix") {
  const l = Bun.listen({
    unix: `\0hotpath-idle-${name}`,
    socket: {
      data(s, chunk) {
        const t = clock();
        const out = new Uint8Array(chunk);
        if (out.length >= 16) new DataView(out.buffer).setFloat64(8, t, true);
        s.write(out);
      },
    },
  });
  console.log(JSON.stringify({ url: `\0hotpath-idle-${name}`, pid: process.pid }));
  for await (const _ of Bun.stdin.stream());
  l.stop(true);
  process.exit(0);
} else if (mode === "futex") {
  const m = ShmMapping.open(name!, FUTEX_LAYOUT.BYTES);
  const w = new Int32Array(m.sab, m.byteOffset, FUTEX_LAYOUT.BYTES >> 2);
  const f = new Float64Array(m.sab, m.byteOffset, FUTEX_LAYOUT.BYTES >> 3);
  const end = Date.now() + MAX_LIFE_MS;
  // Read before the ready line: the benchmark's first ping may follow it at once.
  let seen = Atomics.load(w, FUTEX_LAYOUT.PING >> 2);
  console.log(JSON.stringify({ url: name, pid: process.pid }));
  while (Date.now() < end && Atomics.load(w, FUTEX_LAYOUT.STOP >> 2) === 0) {
    futexWait(m, FUTEX_LAYOUT.PING, seen, 20e6);
    // SYNC: pairs with the benchmark's Atomics.store(PING) before its FUTEX_WAKE.
    const ping = Atomics.load(w, FUTEX_LAYOUT.PING >> 2);
    if (ping === seen) continue;
    f[FUTEX_LAYOUT.WOKEN_AT >> 3] = clock();
    seen = ping;
    // SYNC: pairs with the benchmark's FUTEX_WAIT on PONG (expected: the previous value).
    Atomics.store(w, FUTEX_LAYOUT.PONG >> 2, ping);
    futexWake(m, FUTEX_LAYOUT.PONG, 1);
  }
  m.close();
  process.exit(0);
}
