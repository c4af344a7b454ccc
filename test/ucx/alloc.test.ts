/**
 * ucx's per-message work allocates nothing in steady state: client call / poll / onResponse and
 * server poll / recv / reply over a ucx connection of this process (listen + connect in this
 * thread, spin mode; the connecting end gets a worker of its own, as setup.ts does for every
 * connect to a listener of the same runtime), for 32-byte bodies (UCX's short eager messages:
 * sent straight from the caller's memory, received into pooled messages) and 1 KiB ones
 * (sent from pooled staging buffers, received into pooled messages). Counted with bench/loopback.ts's objectsPer() over
 * 50k round trips after a warm-up, each reply checked byte for byte. Before the pooled receive
 * path and immediate sends (a head copy, a body copy and an RxMessage per message; two copies,
 * a completion closure and request bookkeeping per send) this counted 18 heap objects per
 * round trip at 32 bytes and 22 at 1 KiB; now 0.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Client, SEND_OK, Server, connect, listen } from "../../src/index.ts";
import { objectsPer } from "../../bench/loopback.ts";

const ROUND_TRIPS = 50_000;
/** What the measuring itself may leave per round trip (a few objects over the whole run). */
const ALLOWED_PER_ROUND_TRIP = 0.05;

const open: Array<{ close(): void }> = [];
afterAll(() => {
  for (const o of open.splice(0)) o.close();
});

describe("ucx hot path allocations (spin mode)", () => {
  test.each([32, 1024])("%i-byte bodies: no heap object per round trip", async (size) => {
    const listener = await listen("ucx://127.0.0.1:0", { wait: { mode: "spin", spinNs: 0 } });
    const server = new Server();
    server.attach(listener);
    open.push(server);
    const conn = await connect(listener.url, { wait: { mode: "spin", spinNs: 0 } });
    const client = new Client<number>(conn);
    open.push(client);
    for (let i = 0; i < 500 && server.sessions.size === 0; i++) {
      server.poll();
      await Bun.sleep(10);
    }
    expect(server.sessions.size).toBe(1);
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (i * 13 + 5) & 0xff;
    let wrong = 0;
    let seen = 0;
    let got = 0;
    client.onResponse = (ud, body, err) => {
      got++;
      if (err !== null || ud !== seen || body.length !== size) wrong++;
      else for (let i = 0; i < size; i++) if (body[i] !== data[i]) wrong++;
      seen = (seen + 1) & 0xffff;
    };
    let next = 0;
    const rounds = (n: number) => {
      for (let i = 0; i < n; i++) {
        const target = got + 1;
        if (client.call(1, data, next) !== SEND_OK) throw new Error("call not sent");
        next = (next + 1) & 0xffff;
        let h = null;
        for (let k = 0; k < 1_000_000 && h === null; k++) {
          server.poll();
          h = server.recv();
        }
        if (h === null) throw new Error("no request arrived");
        if (h.reply(h.data) !== SEND_OK) throw new Error("reply not sent");
        for (let k = 0; k < 1_000_000 && got < target; k++) client.poll();
        if (got < target) throw new Error("no response arrived");
      }
    };
    rounds(ROUND_TRIPS); // warm-up: JIT, pools
    const perRoundTrip = objectsPer(ROUND_TRIPS, rounds);
    console.log(`ucx ${size} B: ${perRoundTrip.toFixed(4)} heap objects per round trip over ${ROUND_TRIPS} round trips`);
    expect(wrong).toBe(0);
    expect(perRoundTrip).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
  }, 120_000);
});
