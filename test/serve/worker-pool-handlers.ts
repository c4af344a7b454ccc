/**
 * Handlers module of the worker-pool tests (a fixture): the typed Calc service and raw methods
 * that echo, report the Worker's threadId, see whether the request is a view of the segment,
 * fail, sleep, or kill their Worker mid-call (process.exit, a throw at the top level of a timer).
 */
import { threadId } from "node:worker_threads";
import { implement, type Handlers } from "../../src/index.ts";
import { Calc, M } from "./worker-pool-service.ts";

const u32 = (n: number) => {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, true);
  return out;
};

const handlers: Handlers = {
  ...implement(Calc, { add: ({ a, b }) => ({ sum: a + b, thread: threadId }) }),
  [M.echo]: (h) => h.data,
  [M.thread]: () => u32(threadId),
  // [a SharedArrayBuffer?, the very buffer of this Worker's inproc segment?]: the request bytes are a view of the segment (no copy, no clone).
  [M.inSegment]: (h) => {
    const segment = (h.session.conn as unknown as { segmentForTests(): { bytes: Uint8Array } }).segmentForTests().bytes.buffer;
    return new Uint8Array([h.data.buffer instanceof SharedArrayBuffer ? 1 : 0, h.data.buffer === segment ? 1 : 0]);
  },
  // A reply as long as the request, each byte XOR 0x5a.
  [M.xor]: (h) => h.data.map((b) => b ^ 0x5a),
  [M.fail]: () => {
    throw new TypeError("bad input for fail");
  },
  // Sleeps data[0] * 10 ms, then echoes.
  [M.slow]: async (h) => {
    await Bun.sleep((h.data[0] ?? 0) * 10);
    return h.data;
  },
  [M.exit]: (h) => process.exit(h.data[0] ?? 3),
  [M.throwLater]: () => {
    setTimeout(() => {
      throw new RangeError("thrown at the top level of a timer");
    }, 1);
    return new Promise<Uint8Array>(() => {}); // never answers: the Worker dies first
  },
};
export default handlers;
