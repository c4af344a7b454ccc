/**
 * The postMessage Worker of bench/worker-pool.bench.ts's reference rows: each message is
 * { id, data } (data a Uint8Array, structured clone, or an ArrayBuffer the sender transferred);
 * it answers { id, data } with the reply computed as the hotpath handler does (each byte XOR
 * 0x5a), cloned or transferred back the way the request came.
 */
export {}; // a module: its `self` declaration stays its own
declare const self: Worker;

self.onmessage = (e: MessageEvent) => {
  const { id, data } = e.data as { id: number; data: Uint8Array | ArrayBuffer };
  const transfer = data instanceof ArrayBuffer;
  const req = transfer ? new Uint8Array(data) : data;
  const out = new Uint8Array(req.length);
  for (let i = 0; i < req.length; i++) out[i] = req[i]! ^ 0x5a;
  if (transfer) self.postMessage({ id, data: out.buffer }, [out.buffer]);
  else self.postMessage({ id, data: out });
};
self.postMessage("ready");
