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
 * round trip at 32 bytes and 22 at 1 KiB; now 0. Likewise with 64 and 256 calls in flight
 * (bursts: sends staged and tracked while earlier ones are in flight).
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

  // With calls in flight, every send after the first waits for UCX (it must not overtake), so
  // sends are staged and tracked: this counts the stage pool (one client window of stages) and
  // the request table (slots, no Map entry or closure per send). Before, 32-byte bodies counted
  // 1.03 objects per round trip at 64 in flight and 7.8 at 256 (16 pooled stages; a closure,
  // and Map entries, per send in flight).
  test.each([
    [64, 32],
    [256, 32],
    [256, 1024],
  ])("%i in flight, %i-byte bodies: no heap object per round trip", async (inFlight, size) => {
    const listener = await listen("ucx://127.0.0.1:0", { wait: { mode: "spin", spinNs: 0 } });
    const server = new Server();
    server.attach(listener);
    open.push(server);
    const client = new Client<number>(await connect(listener.url, { wait: { mode: "spin", spinNs: 0 } }), { window: 256 });
    open.push(client);
    for (let i = 0; i < 500 && server.sessions.size === 0; i++) {
      server.poll();
      await Bun.sleep(10);
    }
    expect(server.sessions.size).toBe(1);
    // Each call's body carries its own index (bytes 0-1), so every reply is checked against its own request.
    const bodies: Uint8Array[] = [];
    for (let k = 0; k < inFlight; k++) {
      const b = new Uint8Array(size);
      for (let i = 0; i < size; i++) b[i] = (i * 13 + k * 7 + 5) & 0xff;
      b[0] = k & 0xff;
      b[1] = k >> 8;
      bodies.push(b);
    }
    let wrong = 0;
    let done = 0;
    client.onResponse = (ud, body, err) => {
      done++;
      const want = bodies[ud]!;
      if (err !== null || body.length !== size) return void wrong++;
      for (let i = 0; i < size; i++) if (body[i] !== want[i]) return void wrong++;
    };
    let refused = 0;
    const burst = (n: number) => {
      const start = done;
      let sent = 0;
      for (let spins = 0; done - start < n; spins++) {
        if (spins > 50_000_000) throw new Error("burst stalled");
        while (sent < n && sent - (done - start) < inFlight && client.call(1, bodies[sent % inFlight]!, sent % inFlight) === SEND_OK) sent++;
        server.poll();
        for (let h = server.recv(); h !== null; h = server.recv()) if (h.reply(h.data) !== SEND_OK) refused++;
        client.poll();
      }
    };
    burst(ROUND_TRIPS); // warm-up: JIT, pools
    const perRoundTrip = objectsPer(ROUND_TRIPS, burst, 10_000);
    console.log(`ucx ${size} B, ${inFlight} in flight: ${perRoundTrip.toFixed(4)} heap objects per round trip over ${ROUND_TRIPS} round trips`);
    expect(refused).toBe(0);
    expect(wrong).toBe(0);
    expect(perRoundTrip).toBeLessThan(ALLOWED_PER_ROUND_TRIP);
  }, 180_000);
});
