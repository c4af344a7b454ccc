/**
 * Handlers module of bench/worker-pool.bench.ts's hotpath rows: method 1 answers a reply as long
 * as the request, each byte XOR 0x5a (the bench checks every byte), computed straight from the
 * request's view of the segment.
 */
import type { Handlers } from "../../src/index.ts";

export const XOR_METHOD = 1;

const handlers: Handlers = {
  [XOR_METHOD]: (h) => {
    const req = h.data;
    const out = new Uint8Array(req.length);
    for (let i = 0; i < req.length; i++) out[i] = req[i]! ^ 0x5a;
    return out;
  },
};
export default handlers;
