/**
 * Drivers for the main benchmark's rows (bench/measure.ts runs the one body over each): how
 * to send a tagged request, poll, wait and close over one transport or peer. A driver does no
 * checking of its own; the body compares every reply with its request.
 *
 *   hotpath (spin or event loop): Client.call(method 1, req, seq) / poll() / wait(1000ms)
 *   raw framed stream (TCP or Unix): [u32 LE length][payload], writes coalesced per poll()
 *   raw shm: ping-pong area when idle, 32-byte SPSC ring entries when calls overlap
 *   Worker postMessage, Bun.spawn IPC, WebSocket: FIFO replies; HTTP, gRPC: a promise per call
 *
 *   const d = await rawStreamDriver("tcp://127.0.0.1:4000"); const fig = await measureRow(d, opts);
 */

import type { Socket } from "bun";
import { Client, SEND_OK, connect, type ConnectOptions } from "../src/index.ts";
import type { Driver } from "./measure.ts";
import { ECHO_METHOD } from "./peers/methods.ts";
import { BULK_AT, BULK_BYTES, RAW, RING_AT, RING_SLOTS, mapRawShm, unlinkRawShm } from "./peers/raw-shm.ts";

const noReply = () => {
  throw new Error("driver: onReply not set");
};

/** The wake-up of event-driven drivers: wait() resolves at the next reply. */
class Waker {
  private resolve: (() => void) | null = null;
  wait(): Promise<void> {
    return new Promise<void>((r) => (this.resolve = r));
  }
  wake(): void {
    const r = this.resolve;
    this.resolve = null;
    r?.();
  }
}

/**
 * The delivery side of a driver with one promise per call: settled() counts a delivered result
 * and wakes wait(); fail records the first rejection, which poll() throws. poll() returns the
 * results delivered since the last poll. Used by promiseDriver here and by the kv and Redis
 * event-loop drivers (bench/kv.bench.ts, bench/redis.ts). Owned by one driver; main thread only.
 */
export class PromiseInbox {
  private delivered = 0;
  private failure: unknown = null;
  private readonly waker = new Waker();
  /** Call once a result has been handed to the body. */
  settled(): void {
    this.delivered++;
    this.waker.wake();
  }
  /** A call's promise rejected: poll() throws `e` from now on. */
  readonly fail = (e: unknown): void => {
    this.failure = e;
    this.waker.wake();
  };
  poll(): number {
    if (this.failure !== null) throw this.failure;
    const n = this.delivered;
    this.delivered = 0;
    return n;
  }
  wait(): Promise<unknown> {
    return this.delivered > 0 || this.failure !== null ? Promise.resolve() : this.waker.wait();
  }
}

/** Sequence numbers of calls in flight, in send order (replies that come back in order). */
class SeqFifo {
  private readonly q = new Int32Array(4096);
  private head = 0;
  private tail = 0;
  push(seq: number): void {
    if (this.tail - this.head >= this.q.length) throw new Error("driver: more than 4096 calls in flight");
    this.q[this.tail++ & 4095] = seq;
  }
  shift(): number {
    if (this.head === this.tail) throw new Error("driver: a reply with no call in flight");
    return this.q[this.head++ & 4095]!;
  }
}

/** hotpath's hot path: call / poll / onResponse; spin rows poll, event-loop rows await wait(). */
export async function hotpathDriver(url: string, opts: ConnectOptions = {}): Promise<Driver> {
  const conn = await connect(url, opts);
  const client = new Client<number>(conn, { window: 256 });
  const d: Driver = {
    onReply: noReply,
    send: (req, seq) => client.call(ECHO_METHOD, req, seq) === SEND_OK,
    poll: () => client.poll(),
    wait: () => client.wait(1000),
    close: () => client.close(),
  };
  client.onResponse = (seq, data, err) => {
    if (err !== null) throw err;
    d.onReply(seq, data);
  };
  return d;
}

/**
 * A raw Bun socket to a framed echo server (bench/peers/echo-server.ts raw-framed): requests
 * are appended to one output buffer and written once per poll(); replies are parsed in place
 * from each read (a frame split across reads is completed in a carry buffer).
 */
export async function rawStreamDriver(url: string): Promise<Driver> {
  const u = new URL(url);
  const fifo = new SeqFifo();
  const waker = new Waker();
  let out = new Uint8Array(64 << 10);
  let outView = new DataView(out.buffer);
  let outLen = 0;
  let outAt = 0;
  let carry = new Uint8Array(64 << 10);
  let carryLen = 0;
  let delivered = 0;
  let sock!: Socket<unknown>;
  const d: Driver = {
    onReply: noReply,
    send(req, seq) {
      const need = outLen + 4 + req.length;
      if (need > out.length) {
        const grown = new Uint8Array(Math.max(need, out.length * 2));
        grown.set(out.subarray(0, outLen));
        out = grown;
        outView = new DataView(out.buffer);
      }
      outView.setUint32(outLen, req.length, true);
      out.set(req, outLen + 4);
      outLen = need;
      fifo.push(seq);
      return true;
    },
    poll() {
      flush();
      const n = delivered;
      delivered = 0;
      return n;
    },
    wait: () => (delivered > 0 ? Promise.resolve() : waker.wait()),
    close: () => void sock.end(),
  };
  const flush = () => {
    while (outAt < outLen) {
      const n = sock.write(out, outAt, outLen - outAt);
      if (n <= 0) return; // the rest goes on drain
      outAt += n;
    }
    outAt = outLen = 0;
  };
  const reply = (buf: Uint8Array, at: number, len: number) => {
    delivered++;
    d.onReply(fifo.shift(), buf.subarray(at, at + len));
  };
  const onData = (chunk: Uint8Array) => {
    let p = 0;
    if (carryLen > 0) {
      // Complete the frame the last read split.
      const need = carryLen < 4 ? 4 : 4 + (carry[0]! | (carry[1]! << 8) | (carry[2]! << 16) | (carry[3]! << 24));
      const take = Math.min(need - carryLen, chunk.length);
      if (carryLen + take > carry.length) {
        const grown = new Uint8Array(Math.max(carryLen + take, carry.length * 2));
        grown.set(carry.subarray(0, carryLen));
        carry = grown;
      }
      carry.set(chunk.subarray(0, take), carryLen);
      carryLen += take;
      p = take;
      if (carryLen < 4) return;
      const len = carry[0]! | (carry[1]! << 8) | (carry[2]! << 16) | (carry[3]! << 24);
      if (carryLen < 4 + len) {
        if (p < chunk.length) return onData(chunk.subarray(p)); // the length just became known
        return;
      }
      carryLen = 0;
      reply(carry, 4, len);
    }
    while (chunk.length - p >= 4) {
      const len = chunk[p]! | (chunk[p + 1]! << 8) | (chunk[p + 2]! << 16) | (chunk[p + 3]! << 24);
      if (chunk.length - p < 4 + len) break;
      reply(chunk, p + 4, len);
      p += 4 + len;
    }
    if (p < chunk.length) {
      const rest = chunk.length - p;
      if (rest > carry.length) carry = new Uint8Array(rest * 2);
      carry.set(chunk.subarray(p), 0);
      carryLen = rest;
    }
  };
  const socket = {
    data(_s: Socket<unknown>, chunk: Uint8Array) {
      onData(chunk);
      if (delivered > 0) waker.wake();
    },
    drain: () => flush(),
  };
  if (u.protocol === "unix:") sock = await Bun.connect({ unix: `\0hotpath-bench-${u.host}`, socket });
  else {
    sock = await Bun.connect({ hostname: u.hostname, port: Number(u.port), socket });
    sock.setNoDelay(true);
  }
  return d;
}

/**
 * The raw shared-memory reference (bench/peers/raw-shm.ts): one call alone goes through the
 * ping-pong area (any size up to 1 MiB); calls that overlap go through the 32-byte rings.
 */
export function rawShmDriver(name: string): Driver {
  const { w, b } = mapRawShm(name, false);
  unlinkRawShm(name); // both sides have it mapped
  const respRing = RING_AT + RING_SLOTS * 32;
  const slotViews = Array.from({ length: RING_SLOTS }, (_, i) => b.subarray(respRing + i * 32, respRing + i * 32 + 32));
  const fifo = new SeqFifo();
  let ping = 0;
  let pingSeq = -1;
  let pongView = b.subarray(BULK_AT + BULK_BYTES, BULK_AT + BULK_BYTES + 32);
  let tail = 0;
  let respHead = 0;
  let ringInFlight = 0;
  const d: Driver = {
    onReply: noReply,
    send(req, seq) {
      if (pingSeq < 0 && ringInFlight === 0) {
        if (req.length > BULK_BYTES) throw new Error(`raw shm: ${req.length} bytes exceed the 1 MiB ping-pong area`);
        b.set(req, BULK_AT);
        w[RAW.LEN] = req.length;
        if (pongView.length !== req.length) pongView = b.subarray(BULK_AT + BULK_BYTES, BULK_AT + BULK_BYTES + req.length);
        pingSeq = seq;
        ping = (ping + 1) | 0;
        Atomics.store(w, RAW.PING, ping); // SYNC: pairs with raw-shm.ts's Atomics.load(PING)
        return true;
      }
      if (req.length !== 32) throw new Error("raw shm: overlapping calls must be 32 bytes (ring entries)");
      if (ringInFlight >= RING_SLOTS) return false;
      b.set(req, RING_AT + (tail & (RING_SLOTS - 1)) * 32);
      tail = (tail + 1) | 0;
      ringInFlight++;
      fifo.push(seq);
      Atomics.store(w, RAW.REQ_TAIL, tail); // SYNC: pairs with raw-shm.ts's Atomics.load(REQ_TAIL)
      return true;
    },
    poll() {
      let n = 0;
      if (pingSeq >= 0 && Atomics.load(w, RAW.PONG) === ping) { // SYNC: pairs with raw-shm.ts's Atomics.store(PONG)
        const seq = pingSeq;
        pingSeq = -1;
        n++;
        d.onReply(seq, pongView);
      }
      const respTail = Atomics.load(w, RAW.RESP_TAIL); // SYNC: pairs with raw-shm.ts's Atomics.store(RESP_TAIL)
      while (respHead !== respTail) {
        const slot = slotViews[respHead & (RING_SLOTS - 1)]!;
        respHead = (respHead + 1) | 0;
        ringInFlight--;
        n++;
        d.onReply(fifo.shift(), slot);
      }
      if (n > 0) Atomics.store(w, RAW.RESP_HEAD, respHead); // SYNC: pairs with raw-shm.ts's Atomics.load(RESP_HEAD)
      return n;
    },
    wait: () => Promise.resolve(),
    close: () => {}, // the mapping goes with its views
  };
  return d;
}

/** A peer whose replies come back in send order through an event handler. */
function fifoDriver(post: (req: Uint8Array) => void, close: () => void | Promise<void>): { d: Driver; reply(data: Uint8Array): void } {
  const fifo = new SeqFifo();
  const waker = new Waker();
  let delivered = 0;
  const d: Driver = {
    onReply: noReply,
    send(req, seq) {
      fifo.push(seq);
      post(req);
      return true;
    },
    poll() {
      const n = delivered;
      delivered = 0;
      return n;
    },
    wait: () => (delivered > 0 ? Promise.resolve() : waker.wait()),
    close,
  };
  return {
    d,
    reply(data) {
      delivered++;
      d.onReply(fifo.shift(), data);
      waker.wake();
    },
  };
}

/** A peer with one promise per call (replies in any order). */
export function promiseDriver(call: (req: Uint8Array) => Promise<Uint8Array>, close: () => void | Promise<void>): Driver {
  const inbox = new PromiseInbox();
  const d: Driver = {
    onReply: noReply,
    send(req, seq) {
      call(req).then((data) => {
        d.onReply(seq, data);
        inbox.settled();
      }, inbox.fail);
      return true;
    },
    poll: () => inbox.poll(),
    wait: () => inbox.wait(),
    close,
  };
  return d;
}

export function workerDriver(worker: Worker): Driver {
  const f = fifoDriver((req) => worker.postMessage(req), () => worker.terminate());
  worker.onmessage = (e: MessageEvent<Uint8Array>) => f.reply(e.data);
  return f.d;
}

/** Bun.spawn IPC (serialization "advanced") to a child that sends every message back. */
export function ipcDriver(childPath: string): { d: Driver; pid: number } {
  let reply: (data: Uint8Array) => void = () => {};
  const child = Bun.spawn(["bun", childPath], { ipc: (m) => reply(m as Uint8Array), serialization: "advanced", stdio: ["ignore", "inherit", "inherit"] });
  const f = fifoDriver(
    (req) => child.send(req),
    async () => {
      child.kill(9);
      await child.exited;
    },
  );
  reply = f.reply;
  return { d: f.d, pid: child.pid };
}

/** A WebSocket to an echoing Bun.serve (binary frames). */
export function wsDriver(url: string): Promise<Driver> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const f = fifoDriver((req) => ws.send(req), () => ws.close());
    ws.onmessage = (e) => f.reply(new Uint8Array(e.data as ArrayBuffer));
    ws.onerror = (e) => reject(new Error(`websocket ${url}: ${String(e)}`));
    ws.onopen = () => resolve(f.d);
  });
}
