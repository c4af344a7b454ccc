/**
 * Echo server for the benchmarks, one process per server:
 *   bun bench/peers/echo-server.ts hotpath URL      hotpath serve(), method 1 echoes its data
 *   bun bench/peers/echo-server.ts raw-tcp HOST     raw Bun socket: writes back every byte it reads
 *   bun bench/peers/echo-server.ts raw-framed HOST  raw Bun socket, u32-length-prefixed messages,
 *                                                    one write() per response (a hand-rolled server)
 *   bun bench/peers/echo-server.ts raw-framed-fixed HOST:PORT   the same on a fixed port (across nodes)
 * For the raw modes HOST may be `unix:NAME`: an abstract Unix socket instead of TCP.
 * Prints {"url": ...} when ready; exits when stdin closes.
 */

import type { Socket } from "bun";
import { serve } from "../../src/index.ts";

import { WriteQueue } from "../write-queue.ts";
import { ECHO_METHOD } from "./methods.ts";

const [mode, where] = process.argv.slice(2);
let close: () => void;
let url: string;

if (mode === "hotpath") {
  const s = await serve(where!, { [ECHO_METHOD]: (h) => h.data });
  url = s.url;
  close = () => s.close();
} else if (mode === "raw-tcp" || mode === "raw-framed" || mode === "raw-framed-fixed") {
  const framed = mode !== "raw-tcp";
  // Pending output per socket (Bun's write() takes what the kernel accepts).
  const queues = new Map<Socket<unknown>, WriteQueue>();
  const write = (s: Socket<unknown>, d: Uint8Array) => queues.get(s)!.write(d);
  // Framed mode: split the stream into [u32 len][payload] messages and answer each with its own write.
  const partial = new Map<Socket<unknown>, Uint8Array>();
  const frames = (s: Socket<unknown>, chunk: Uint8Array) => {
    const prev = partial.get(s);
    let buf = prev ? Buffer.concat([prev, chunk]) : chunk;
    let p = 0;
    while (buf.length - p >= 4) {
      const len = buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24);
      if (buf.length - p < 4 + len) break;
      write(s, buf.slice(p, p + 4 + len));
      p += 4 + len;
    }
    if (p < buf.length) partial.set(s, buf.slice(p));
    else partial.delete(s);
  };
  const unixName = where!.startsWith("unix:") ? where!.slice(5) : null;
  const handlers = {
      open(s: Socket<unknown>) {
        if (unixName === null) s.setNoDelay(true);
        queues.set(s, new WriteQueue(s));
      },
      data(s: Socket<unknown>, d: Uint8Array) {
        if (framed) return frames(s, d);
        write(s, d);
      },
      drain: (s: Socket<unknown>) => queues.get(s)?.flush(),
      close(s: Socket<unknown>) {
        queues.delete(s);
      },
  };
  if (unixName !== null) {
    const l = Bun.listen({ unix: `\0hotpath-bench-${unixName}`, socket: handlers });
    url = `unix://${unixName}`;
    close = () => l.stop(true);
  } else {
    // raw-framed-fixed takes HOST:PORT (across nodes); the others pick a free port.
    const [hostname, fixedPort] = mode === "raw-framed-fixed" ? where!.split(":") : [where!, "0"];
    const l = Bun.listen({ hostname: hostname!, port: Number(fixedPort), socket: handlers });
    url = `tcp://${hostname}:${l.port}`;
    close = () => l.stop(true);
  }
} else {
  throw new Error(`echo-server: unknown mode "${mode}" (hotpath | raw-tcp)`);
}

console.log(JSON.stringify({ url, pid: process.pid }));
(async () => {
  for await (const _ of Bun.stdin.stream()) {
    // ignored: EOF means the benchmark ended
  }
  close();
  process.exit(0);
})();
