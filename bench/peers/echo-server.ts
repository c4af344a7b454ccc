/**
 * Echo servers for the main benchmark, one process per server:
 *   bun bench/peers/echo-server.ts hotpath URL      hotpath serve(), method 1 echoes its data
 *   bun bench/peers/echo-server.ts raw-framed HOST  raw Bun socket, u32-LE-length-prefixed messages
 *       (the fair reference): every frame of a read is parsed in place (only a frame split across
 *       reads is assembled, in a carry buffer), each reply is copied into one output buffer and
 *       all replies of one read go out with one write(), as hotpath's server does
 *   bun bench/peers/echo-server.ts raw-bytes HOST   raw Bun socket that writes back each read as
 *       it came: no framing work at all (the ceiling for Bun sockets; not an RPC)
 *   bun bench/peers/echo-server.ts raw-framed-fixed HOST:PORT   raw-framed on a fixed port (across nodes)
 * For the raw modes HOST may be `unix:NAME`: an abstract Unix socket instead of TCP.
 * HOTPATH_BENCH_CORRUPT_REPLY=N (raw modes): the N-th reply (from 1) goes out with payload
 * byte 5 flipped, so the benchmark's byte check can be seen to catch it.
 * Prints {"url", "pid"} when ready; exits when stdin closes, after printing
 * {"reads", "writes", "replies"} (raw modes: socket reads, write() calls, replies) when
 * HOTPATH_BENCH_STATS=1.
 */

import type { Socket } from "bun";
import { serve } from "../../src/index.ts";
import { ECHO_METHOD } from "./methods.ts";

const [mode, where] = process.argv.slice(2);
let close: () => void;
let url: string;
const corruptAt = Number(process.env.HOTPATH_BENCH_CORRUPT_REPLY ?? 0);
let replies = 0;
let reads = 0;
let writes = 0;

/** Per connection: pending output (Bun's write() takes what the kernel accepts) and a split frame. */
class Conn {
  out = new Uint8Array(64 << 10);
  outLen = 0;
  outAt = 0;
  carry = new Uint8Array(64 << 10);
  carryLen = 0;

  constructor(readonly s: Socket<unknown>) {}

  /** Room for `n` more output bytes. */
  reserve(n: number): void {
    if (this.outLen + n <= this.out.length) return;
    const grown = new Uint8Array(Math.max(this.outLen + n, this.out.length * 2));
    grown.set(this.out.subarray(this.outAt, this.outLen));
    this.outLen -= this.outAt;
    this.outAt = 0;
    this.out = grown;
  }

  /** One reply: header and payload copied into the output buffer. */
  reply(src: Uint8Array, at: number, len: number): void {
    this.reserve(4 + len);
    const o = this.out;
    const p = this.outLen;
    o[p] = len;
    o[p + 1] = len >>> 8;
    o[p + 2] = len >>> 16;
    o[p + 3] = len >>> 24;
    o.set(src.subarray(at, at + len), p + 4);
    if (++replies === corruptAt && len > 5) o[p + 9] ^= 0xff;
    this.outLen = p + 4 + len;
  }

  flush(): void {
    while (this.outAt < this.outLen) {
      const n = this.s.write(this.out, this.outAt, this.outLen - this.outAt);
      writes++;
      if (n <= 0) return; // the rest goes on drain
      this.outAt += n;
    }
    this.outAt = this.outLen = 0;
  }

  /** Framed mode: every complete frame of `chunk` answered, then one write. */
  framed(chunk: Uint8Array): void {
    let p = 0;
    while (this.carryLen > 0 && p < chunk.length) {
      const c = this.carry;
      const need = this.carryLen < 4 ? 4 : 4 + (c[0]! | (c[1]! << 8) | (c[2]! << 16) | (c[3]! << 24));
      const take = Math.min(need - this.carryLen, chunk.length - p);
      if (this.carryLen + take > c.length) {
        const grown = new Uint8Array(Math.max(this.carryLen + take, c.length * 2));
        grown.set(c.subarray(0, this.carryLen));
        this.carry = grown;
      }
      this.carry.set(chunk.subarray(p, p + take), this.carryLen);
      this.carryLen += take;
      p += take;
      if (this.carryLen < 4) continue;
      const h = this.carry;
      const len = h[0]! | (h[1]! << 8) | (h[2]! << 16) | (h[3]! << 24);
      if (this.carryLen === 4 + len) {
        this.reply(this.carry, 4, len);
        this.carryLen = 0;
      }
    }
    while (chunk.length - p >= 4) {
      const len = chunk[p]! | (chunk[p + 1]! << 8) | (chunk[p + 2]! << 16) | (chunk[p + 3]! << 24);
      if (chunk.length - p < 4 + len) break;
      this.reply(chunk, p + 4, len);
      p += 4 + len;
    }
    if (p < chunk.length) {
      const rest = chunk.length - p;
      if (rest > this.carry.length) this.carry = new Uint8Array(rest * 2);
      this.carry.set(chunk.subarray(p), 0);
      this.carryLen = rest;
    }
    this.flush();
  }

  /** Bytes mode: the read written back as it came (queued behind pending output, if any). */
  bytes(chunk: Uint8Array): void {
    if (++replies === corruptAt && chunk.length > 9) chunk[9] ^= 0xff;
    if (this.outAt === this.outLen) {
      const n = this.s.write(chunk);
      writes++;
      if (n >= chunk.length) return;
      chunk = chunk.subarray(Math.max(n, 0));
    }
    this.reserve(chunk.length);
    this.out.set(chunk, this.outLen);
    this.outLen += chunk.length;
  }
}

if (mode === "hotpath") {
  const s = await serve(where!, { [ECHO_METHOD]: (h) => h.data });
  url = s.url;
  close = () => s.close();
} else if (mode === "raw-bytes" || mode === "raw-framed" || mode === "raw-framed-fixed") {
  const framed = mode !== "raw-bytes";
  const conns = new Map<Socket<unknown>, Conn>();
  const unixName = where!.startsWith("unix:") ? where!.slice(5) : null;
  const handlers = {
    open(s: Socket<unknown>) {
      if (unixName === null) s.setNoDelay(true);
      conns.set(s, new Conn(s));
    },
    data(s: Socket<unknown>, d: Uint8Array) {
      const c = conns.get(s)!;
      reads++;
      if (framed) c.framed(d);
      else c.bytes(d);
    },
    drain: (s: Socket<unknown>) => conns.get(s)?.flush(),
    close(s: Socket<unknown>) {
      conns.delete(s);
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
  throw new Error(`echo-server: unknown mode "${mode}" (hotpath | raw-framed | raw-bytes | raw-framed-fixed)`);
}

console.log(JSON.stringify({ url, pid: process.pid }));
(async () => {
  for await (const _ of Bun.stdin.stream()) {
    // ignored: EOF means the benchmark ended
  }
  close();
  if (process.env.HOTPATH_BENCH_STATS === "1") console.log(JSON.stringify({ reads, writes, replies }));
  process.exit(0);
})();
