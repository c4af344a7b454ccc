/**
 * One echo-client shape for every benchmark row, so each row runs the same body:
 * `roundTrip(data)` sends one message and waits for its echo; `burst(n, inFlight, data)`
 * completes n echoes keeping `inFlight` outstanding.
 */

import type { Socket } from "bun";
import { Client, SEND_OK, connect } from "../src/index.ts";
import { ECHO_METHOD } from "./peers/methods.ts";
import { WriteQueue } from "./write-queue.ts";

export interface EchoClient {
  roundTrip(data: Uint8Array): Promise<void>;
  burst(n: number, inFlight: number, data: Uint8Array): Promise<void>;
  close(): void;
}

/** hotpath's hot path: call(method, data, userData) + poll(), waiting on the transport between polls. */
export async function hotpathClient(url: string, window = 256): Promise<EchoClient> {
  const conn = await connect(url);
  const client = new Client<number>(conn, { window });
  let done = 0;
  let bad = 0;
  let expectLen = 0;
  client.onResponse = (_ud, data, err) => {
    if (err !== null || data.length !== expectLen) bad++;
    done++;
  };
  const check = () => {
    if (bad > 0) throw new Error(`hotpath echo: ${bad} responses failed or had the wrong length`);
  };
  return {
    async roundTrip(data) {
      expectLen = data.length;
      const target = done + 1;
      while (client.call(ECHO_METHOD, data, 0) !== SEND_OK) await client.wait(10);
      while (done < target) if (client.poll() === 0) await client.wait(1000);
      check();
    },
    async burst(n, inFlight, data) {
      expectLen = data.length;
      const start = done;
      let sent = 0;
      while (done - start < n) {
        while (sent < n && sent - (done - start) < inFlight && client.call(ECHO_METHOD, data, 0) === SEND_OK) sent++;
        if (client.poll() === 0) await client.wait(1000);
      }
      check();
    },
    close: () => client.close(),
  };
}

/**
 * The references: a raw Bun TCP socket to a server that writes back every byte (`framed`
 * false), or one that splits u32-length-prefixed messages and answers each with its own
 * write (`framed` true). The client coalesces the writes of a burst; it counts echoed bytes.
 */
export async function rawTcpClient(url: string, framed = false): Promise<EchoClient> {
  const u = new URL(url);
  let received = 0;
  let wake: (() => void) | null = null;
  let sock!: Socket<unknown>;
  let queue!: WriteQueue;
  const handlers = {
      data(_s: Socket<unknown>, d: Uint8Array) {
        received += d.length;
        const w = wake;
        wake = null;
        w?.();
      },
      drain: () => queue.flush(),
  };
  if (u.protocol === "unix:") {
    sock = await Bun.connect({ unix: `\0hotpath-bench-${u.host}`, socket: handlers });
  } else {
    sock = await Bun.connect({ hostname: u.hostname, port: Number(u.port), socket: handlers });
    sock.setNoDelay(true);
  }
  queue = new WriteQueue(sock);
  const send = (buf: Uint8Array) => queue.write(buf);
  const waitData = () => new Promise<void>((r) => (wake = r));
  const frame = (data: Uint8Array) => {
    if (!framed) return data;
    const m = new Uint8Array(4 + data.length);
    new DataView(m.buffer).setUint32(0, data.length, true);
    m.set(data, 4);
    return m;
  };
  return {
    async roundTrip(data) {
      const msg = frame(data);
      const target = received + msg.length;
      send(msg);
      while (received < target) await waitData();
    },
    async burst(n, inFlight, payload) {
      const data = frame(payload);
      const size = data.length;
      const start = received;
      const batch = new Uint8Array(size * inFlight);
      for (let i = 0; i < inFlight; i++) batch.set(data, i * size);
      let sent = Math.min(n, inFlight);
      send(batch.subarray(0, sent * size));
      while (received - start < n * size) {
        await waitData();
        const done = Math.floor((received - start) / size);
        const room = Math.min(n - sent, inFlight - (sent - done));
        if (room > 0) {
          send(batch.subarray(0, room * size).slice());
          sent += room;
        }
      }
    },
    close: () => sock.end(),
  };
}
