/**
 * The peer process itself is the liveness handle, not only its control socket: a client that
 * handed a copy of its control socket to a child (which outlives it) and is then killed leaves
 * the socket open, but its pidfd (SO_PEERPIDFD, or pidfd_open of the SO_PEERCRED pid) reports
 * the exit, and a server waiting in blocking mode closes the session with TransportClosedError.
 */

import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { listen, TransportClosedError, type Connection } from "../../src/index.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnPeer } from "../helpers/peer.ts";

const PEER = new URL("./access-peer.ts", import.meta.url).pathname;
const prefix = `pidfd-${process.pid}-`;

test("a killed client whose control socket lives on in a child: the blocking server sees it gone (pidfd)", async () => {
  const l = await listen(`shm://${prefix}0`, { wait: { mode: "blocking", spinNs: 0 } });
  let conn: Connection | null = null;
  l.onConnection((c) => {
    conn = c;
    c.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
  });
  const client = await spawnPeer(PEER, ["hold-socket", l.url]);
  const holder = client.ready.holder as number;
  try {
    for (let i = 0; i < 400 && conn === null; i++) await Bun.sleep(5);
    expect(conn).not.toBeNull();
    const c = conn! as Connection;
    expect(client.ready.error).toBeUndefined();
    expect(c.peerCredentials?.pid).toBe(client.ready.pid);
    client.proc.kill(9);
    await client.proc.exited;
    // The socket is still open (the child holds it); only the process is gone.
    let waited = 0;
    while (!c.closed && waited < 100) {
      await c.wait(50);
      waited++;
    }
    expect(c.closed).toBe(true);
    expect(c.closeError).toBeInstanceOf(TransportClosedError);
    console.log(`shm: blocking server saw the killed client gone after ${waited} wait(50) calls, its socket still held by pid ${holder}`);
  } finally {
    try {
      process.kill(holder, 9);
    } catch {
      // already gone
    }
    await client.kill();
    l.close(true);
  }
  expect(readdirSync(socketDirOf(process.geteuid!())).filter((f) => f.includes(prefix))).toEqual([]);
}, 30_000);
