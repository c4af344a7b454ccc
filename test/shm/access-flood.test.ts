/**
 * A flood of control-socket connections cannot exhaust a listener's fds. Sockets still in their
 * handshake, or refused and lingering so their peer reads why, are capped per listener
 * (MAX_PENDING_HANDSHAKES) and per uid (MAX_PENDING_PER_UID); beyond that a socket is closed at
 * once and counted as refused "busy". Measured before the cap: a server under `ulimit -n 400`
 * held every flood socket until EMFILE. Here the shm server is a child process under that limit
 * (prlimit) and the flood comes from another child; a client that connected before keeps
 * calling, and every figure returns to baseline once the flood is gone. The inproc listener
 * shares the mechanism (handshake.ts) and is flooded the same way from another process, which it
 * refuses at open. The per-uid share between two users is tested in access-users.test.ts.
 */

import { afterAll, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { listen, rpcConnect } from "../../src/index.ts";
import { MAX_PENDING_PER_UID } from "../../src/segment/handshake.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { procFigures } from "../helpers/proc-figures.ts";
import { spawnPeer } from "../helpers/peer.ts";
import { childServer } from "./access-child.ts";

const PEER = new URL("./access-peer.ts", import.meta.url).pathname;
const uid = process.geteuid!();
const prefix = `flood-${process.pid}-`;
/** More sockets than the server's fd limit below leaves room for. */
const FLOOD = 500;
const SERVER_NOFILE = 400;
/** fds a server may open besides the flood's sockets while it is flooded (a session's socket, memfd and pidfd, Bun's own). */
const FD_SLACK = 16;

afterAll(() => {
  expect(readdirSync(socketDirOf(uid)).filter((f) => f.includes(prefix))).toEqual([]);
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
});

test(`shm: ${FLOOD} silent connections to a server limited to ${SERVER_NOFILE} fds: at most ${MAX_PENDING_PER_UID} are held, the rest closed as busy; a connected client keeps calling; fds back to baseline`, async () => {
  const name = `${prefix}0`;
  const server = await childServer(`shm://${name}`, { nofile: SERVER_NOFILE });
  const client = await rpcConnect(server.url);
  let flood: Awaited<ReturnType<typeof spawnPeer>> | null = null;
  try {
    expect(await client.request(1, new Uint8Array([1]), { timeoutMs: 5000 })).toEqual(new Uint8Array([1]));
    const baseline = server.fds();
    flood = await spawnPeer(PEER, ["flood", `${socketDirOf(uid)}/shm-${name}.sock`, String(FLOOD)], {}, 30_000);
    const during = server.fds();
    for (let i = 0; i < 20; i++) {
      expect(await client.request(1, new Uint8Array([i]), { timeoutMs: 3000 })).toEqual(new Uint8Array([i]));
      await Bun.sleep(25);
    }
    console.log(`shm flood: ${FLOOD} connections: server fds ${baseline} -> ${during}; the flood saw ${flood.ready.closed} closed at once, ${flood.ready.errors} failed; busy refusals ${server.refusals("busy")}`);
    expect(during - baseline).toBeLessThanOrEqual(MAX_PENDING_PER_UID + FD_SLACK);
    expect(await server.until(() => server.refusals("busy") >= FLOOD - MAX_PENDING_PER_UID, 10_000)).toBe(true);
    expect(server.refused.find((r) => r.reason === "busy")!.message).toMatch(/too many connections in their handshake/);
    await flood.kill();
    flood = null;
    expect(await server.until(() => server.fds() <= baseline, 10_000)).toBe(true);
    const fresh = await rpcConnect(server.url, { connectTimeoutMs: 3000 });
    expect(await fresh.request(1, new Uint8Array([9]), { timeoutMs: 3000 })).toEqual(new Uint8Array([9]));
    fresh.close();
  } finally {
    client.close();
    await flood?.kill();
    await server.stop();
  }
}, 90_000);

test(`inproc: ${FLOOD / 2} connections from another process are refused, at most ${MAX_PENDING_PER_UID} held while they linger; fds back to baseline`, async () => {
  const l = await listen(`inproc://${prefix}1`);
  let busy = 0;
  l.onRefused((_e, reason) => void (reason === "busy" && busy++));
  const path = `${socketDirOf(uid)}/inproc-${process.pid}-${prefix}1.sock`;
  let flood: Awaited<ReturnType<typeof spawnPeer>> | null = null;
  try {
    const baseline = procFigures().fds;
    flood = await spawnPeer(PEER, ["flood", path, String(FLOOD / 2)], {}, 30_000);
    const during = procFigures().fds;
    console.log(`inproc flood: ${FLOOD / 2} connections: fds ${baseline} -> ${during}; busy refusals ${busy}, auth ${l.stats.refusedAuth}`);
    expect(during - baseline).toBeLessThanOrEqual(MAX_PENDING_PER_UID + FD_SLACK);
    expect(l.stats.refusedBusy).toBeGreaterThanOrEqual(FLOOD / 2 - MAX_PENDING_PER_UID);
    expect(busy).toBe(l.stats.refusedBusy);
    await flood.kill();
    flood = null;
    for (let i = 0; i < 500 && procFigures().fds > baseline; i++) await Bun.sleep(10);
    expect(procFigures().fds).toBeLessThanOrEqual(baseline);
  } finally {
    await flood?.kill();
    l.close(true);
  }
}, 60_000);
