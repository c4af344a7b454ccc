/**
 * bench/rpc.bench.ts's raw framed TCP link checks each reply against its own request: a server
 * that answers two requests in swapped order (each reply a valid request's bytes, not its own)
 * is counted bad; one that answers in order is counted done. Real sockets on 127.0.0.1.
 */

import { afterEach, expect, test } from "bun:test";
import { rawLink } from "../../bench/rpc.bench.ts";

const FRAME = 4 + 32;
let stop: (() => void) | null = null;
afterEach(() => {
  stop?.();
  stop = null;
});

/** An echo server that gathers two frames and answers them in order or swapped. */
function server(swap: boolean): string {
  let got = new Uint8Array(0);
  const l = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(s, chunk) {
        const all = new Uint8Array(got.length + chunk.length);
        all.set(got, 0);
        all.set(chunk, got.length);
        got = all;
        if (got.length < 2 * FRAME) return;
        const a = got.subarray(0, FRAME);
        const b = got.subarray(FRAME, 2 * FRAME);
        const out = new Uint8Array(2 * FRAME);
        out.set(swap ? b : a, 0);
        out.set(swap ? a : b, FRAME);
        s.write(out);
        got = got.slice(2 * FRAME);
      },
    },
  });
  stop = () => l.stop(true);
  return `tcp://127.0.0.1:${l.port}`;
}

async function exchange(swap: boolean): Promise<{ done: number; bad: number }> {
  const link = await rawLink(server(swap));
  try {
    expect(link.send(7, 32)).toBe(true);
    expect(link.send(8, 32)).toBe(true);
    link.flush();
    while (link.done + link.bad < 2) await link.wait();
    return { done: link.done, bad: link.bad };
  } finally {
    link.close();
  }
}

test("replies in order are each their own request's bytes", async () => {
  expect(await exchange(false)).toEqual({ done: 2, bad: 0 });
}, 10_000);

test("replies swapped (each some other request's valid bytes) are counted bad", async () => {
  expect(await exchange(true)).toEqual({ done: 0, bad: 2 });
}, 10_000);
