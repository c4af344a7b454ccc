/**
 * Crash tests with real processes: kill -9 the server with 64 calls in flight; kill -9 a
 * client and check the server frees its session (and its memory) and keeps serving. After
 * every test no hotpath entry remains in /dev/shm, nor a socket file of these tests in the
 * socket directory (a killed server leaves its socket file: the next listen of the name replaces
 * it, which the first test checks).
 */

import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { existsSync, lstatSync } from "node:fs";
import { listen, rpcConnect, serve, TransportClosedError, type HotpathError, type RequestHandle } from "../../src/index.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnPeer } from "../helpers/peer.ts";
import * as m from "../conformance/methods.ts";

const PEER_SERVER = new URL("../conformance/peer-server.ts", import.meta.url).pathname;
const CLIENT = new URL("./client-proc.ts", import.meta.url).pathname;
let n = 0;
const prefix = `crash-${process.pid}-`;
const unique = () => `${prefix}${n++}`;
const socketDir = socketDirOf(process.geteuid!());

const shmEntries = () => readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"));
const mappedSegments = () => readFileSync("/proc/self/maps", "utf8").split("\n").filter((l) => l.includes("/memfd:hotpath-")).length;

afterEach(() => {
  expect(shmEntries()).toEqual([]);
  expect(readdirSync(socketDir).filter((f) => f.includes(prefix))).toEqual([]);
});

describe("shm crashes", () => {
  test("kill -9 the server with 64 calls in flight: every call rejects with TransportClosedError; the next listen of the name replaces its stale socket", async () => {
    const url = `shm://${unique()}`;
    const server = await spawnPeer(PEER_SERVER, [url]);
    const c = await rpcConnect(server.ready.url, { timeoutMs: 0 });
    const pending = Array.from({ length: 64 }, () => c.request(m.M_DELAY_ECHO, m.u32(60_000)).catch((e) => e));
    await Bun.sleep(100);
    const t0 = performance.now();
    server.proc.kill(9);
    const errors = await Promise.all(pending);
    const ms = performance.now() - t0;
    expect(errors.every((e) => e instanceof TransportClosedError)).toBe(true);
    console.log(`shm: 64 pending calls rejected ${ms.toFixed(2)} ms after kill -9 of the server`);
    await server.proc.exited; // not server.kill(): that also removes the stale socket file this test looks at
    // The killed server's socket file is left; a new listener of the name takes it over.
    const path = `${socketDir}/${url.replace("shm://", "shm-")}.sock`;
    const staleIno = lstatSync(path).ino;
    const again = await listen(url);
    expect(lstatSync(path).ino).not.toBe(staleIno);
    const c2 = await rpcConnect(url);
    c2.close();
    again.close(true);
    expect(existsSync(path)).toBe(false);
  });

  test("kill -9 a client: the server frees its session and memory and keeps serving", async () => {
    const release: Array<() => void> = [];
    const closed: Array<HotpathError | null> = [];
    const serving = await serve(
      `shm://${unique()}`,
      {
        [m.M_ECHO]: (h) => h.data,
        // Holds every request until the test lets go.
        [m.M_WAIT_CANCEL]: (_h: RequestHandle) => new Promise<Uint8Array>((r) => release.push(() => r(new Uint8Array(0)))),
      },
      { onSessionClose: (_s, e) => closed.push(e) },
    );
    try {
      const before = mappedSegments();
      const victim = await spawnPeer(CLIENT, [serving.url, "32", String(m.M_WAIT_CANCEL)]);
      expect(victim.ready.sent).toBe(32);
      for (let i = 0; i < 200 && release.length < 32; i++) await Bun.sleep(5);
      expect(release.length).toBe(32);
      expect(serving.server.sessions.size).toBe(1);
      expect(mappedSegments()).toBe(before + 1);

      victim.proc.kill(9);
      for (let i = 0; i < 200 && closed.length === 0; i++) await Bun.sleep(5);
      expect(closed.length).toBe(1);
      expect(closed[0]).toBeInstanceOf(TransportClosedError);
      expect(serving.server.sessions.size).toBe(0);

      // Another client is served while the dead one's handlers are still pending.
      const other = await rpcConnect(serving.url);
      expect(await other.request(m.M_ECHO, new Uint8Array([1, 2, 3]))).toEqual(new Uint8Array([1, 2, 3]));
      other.close();

      // Once the handlers finish (their replies find the session closed), nothing holds the
      // dead session's memory: the mapping goes with the garbage.
      for (const r of release.splice(0)) r();
      await Bun.sleep(20);
      let mapped = mappedSegments();
      for (let i = 0; i < 50 && mapped > before; i++) {
        Bun.gc(true);
        await Bun.sleep(10);
        mapped = mappedSegments();
      }
      expect(mapped).toBe(before);
      await victim.kill();
    } finally {
      serving.close();
    }
  });
});
