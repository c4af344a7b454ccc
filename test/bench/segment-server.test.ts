/**
 * The benchmark's spin echo server (bench/peers/segment-server.ts) as a real process: a reply
 * that finds the reply ring full is retried, not dropped. A client whose window (1024) exceeds
 * the ring (256) sends a ring's worth, lets the server answer them all without reading (the
 * reply ring is then full), sends another ring's worth, then reads: every call must complete
 * with its own bytes. A watchdog fails a hang.
 */

import { afterEach, expect, test } from "bun:test";
import { Client, connect, SEND_OK } from "../../src/index.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SERVER = new URL("../../bench/peers/segment-server.ts", import.meta.url).pathname;
let peer: Peer | null = null;

afterEach(async () => {
  await peer?.kill();
  peer = null;
});

test("spin echo server: replies that meet a full ring all arrive, in their own bytes", async () => {
  peer = await spawnPeer(SERVER, [`shm://segsrv-full-${process.pid}`, "spin"]);
  const conn = await connect(peer.ready.url, { wait: { mode: "spin", spinNs: 0 } });
  const client = new Client<number>(conn, { window: 1024 });
  const got = new Map<number, Uint8Array>();
  client.onResponse = (seq, data, err) => {
    if (err !== null) throw err;
    got.set(seq, data.slice());
  };
  const req = (seq: number) => new Uint8Array([seq & 0xff, seq >> 8, 7, 9]);
  let seq = 0;
  // Two rings' worth, without reading replies in between: the second finds the reply ring full.
  for (let phase = 0; phase < 2; phase++) {
    const until = Date.now() + 5000;
    let sent = 0;
    while (sent < 256 && Date.now() < until) {
      if (client.call(1, req(seq), seq) === SEND_OK) {
        seq++;
        sent++;
      } else await Bun.sleep(1); // the request ring is full: the server frees it as it answers
    }
    expect(sent).toBe(256);
    await Bun.sleep(200); // the server answers what it can meanwhile
  }
  const until = Date.now() + 10_000; // watchdog: a dropped reply never comes
  while (got.size < seq && Date.now() < until) {
    client.poll();
    await Bun.sleep(0);
  }
  expect(got.size).toBe(seq);
  for (let i = 0; i < seq; i++) expect([...got.get(i)!]).toEqual([...req(i)]);
  client.close();
}, 30_000);
