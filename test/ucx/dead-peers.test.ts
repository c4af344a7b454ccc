/**
 * Dead peers leave nothing running or held (issue 8, defect 10), over UCX's tcp and
 * shared-memory transports: clients in their own processes issue 64 echo requests of 1 MiB
 * (rendezvous both ways) and are killed (kill -9) while requests and replies are on their way. Afterwards the
 * server process is idle (CPU over one second, from /proc/<pid>/stat, near 0), its worker has
 * no request in flight, its runtime no endpoint or connection of theirs, and a fresh client is
 * served. The figures are printed.
 *
 * Also: `ucx: { peerErrors: true }` (UCP_ERR_HANDLING_MODE_PEER) connects, calls and reports
 * the server's death as TransportClosedError.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { useEnv } from "../helpers/env.ts";
import { readFileSync } from "node:fs";
import { rpcConnect, TransportClosedError } from "../../src/index.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { DEFAULT_UCX_MAX_IN_FLIGHT_BYTES } from "../../src/ucx/connection.ts";

const SERVER = new URL("./stats-server.ts", import.meta.url).pathname;
const INDEX = new URL("../../src/index.ts", import.meta.url).pathname;
/** Killed clients per transport configuration. */
const KILLS = 8;
/** Requests in flight per client and their size (above UCX's rendezvous threshold). */
const IN_FLIGHT = 64;
const REQUEST_BYTES = 1 << 20;
/** How long after issuing its requests a client is killed: while they and their replies move. */
const KILL_AFTER_MS = 30;
/** Idle CPU allowed over one second, percent of one core. */
const IDLE_CPU_PERCENT = 5;
/** Time for the server to notice the deaths and let go (beyond the 2 s after which stuck requests are given up). */
const SETTLE_MS = 3000;

// Echo requests of REQUEST_BYTES each way (rendezvous both ways), all issued at once; the
// client is killed KILL_AFTER_MS after it issued them, with requests and replies mid-transfer.
const CLIENT = `
import { rpcConnect } from "${INDEX}";
const c = await rpcConnect(process.argv[1]);
const req = new Uint8Array(${REQUEST_BYTES}).fill(3);
for (let i = 0; i < ${IN_FLIGHT}; i++) c.request(1, req).catch(() => {});
console.log("sent");
`;

function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime + stime, 100 ticks per second
}

async function figures(url: string) {
  const c = await rpcConnect(url);
  try {
    return JSON.parse(new TextDecoder().decode(await c.request(99)));
  } finally {
    c.close();
  }
}

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe(`ucx dead peers (UCX_TLS=${tls})`, () => {
    let peer: Peer;
    useEnv({ UCX_TLS: tls });
    beforeAll(async () => {
      peer = await spawnPeer(SERVER, ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
    });
    afterAll(async () => {
      await peer.kill();
    });

    test(`${KILLS} clients killed with replies in flight: the server goes idle, nothing stays in flight`, async () => {
      const before = await figures(peer.ready.url);
      for (let k = 0; k < KILLS; k++) {
        const proc = Bun.spawn(["bun", "-e", CLIENT, peer.ready.url], { stdout: "pipe", env: { ...process.env, UCX_TLS: tls } });
        const first = await Promise.race([proc.stdout.getReader().read(), Bun.sleep(20000).then(() => null)]);
        await Bun.sleep(KILL_AFTER_MS);
        proc.kill(9);
        await proc.exited;
        expect(first === null ? "watchdog: the client did not start within 20 s" : new TextDecoder().decode(first.value)).toContain("sent");
      }
      await Bun.sleep(SETTLE_MS);
      const cpu0 = cpuMs(peer.ready.pid);
      const t0 = performance.now();
      await Bun.sleep(1000);
      const idleCpuPercent = ((cpuMs(peer.ready.pid) - cpu0) / (performance.now() - t0)) * 100;
      const after = await figures(peer.ready.url);
      console.log(`ucx dead peers (UCX_TLS=${tls}): ${KILLS} kills; server idle CPU ${idleCpuPercent.toFixed(1)}%; RSS ${before.rssMiB} -> ${after.rssMiB} MiB; after: ${JSON.stringify(after)}`);
      expect(idleCpuPercent).toBeLessThan(IDLE_CPU_PERCENT);
      // The figures request itself is the only one of its kind in flight.
      expect(after.inFlight).toBe(before.inFlight);
      expect(after.stats.requests).toBe(before.stats.requests);
      expect(after.stats.retained).toBe(before.stats.retained);
      // Requests given up on that UCX never completed (sends queued on a shared-memory lane to
      // a dead peer) keep their memory for UCX: at most what each connection had in flight.
      expect(after.stats.detachedBytes).toBeLessThanOrEqual(KILLS * DEFAULT_UCX_MAX_IN_FLIGHT_BYTES);
      expect(after.stats.sinks).toBe(before.stats.sinks);
      expect(after.stats.users).toBe(before.stats.users);
      expect(after.sessions).toBe(before.sessions);
      // A fresh client is served.
      const c = await rpcConnect(peer.ready.url);
      try {
        expect(await c.request(1, new Uint8Array([1, 2, 3]))).toEqual(new Uint8Array([1, 2, 3]));
      } finally {
        c.close();
      }
      expect(peer.proc.exitCode).toBeNull();
    }, 120_000);

    test("peerErrors: true connects, calls, and the server's death rejects pending calls with TransportClosedError", async () => {
      const own = await spawnPeer(SERVER, ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
      try {
        const c = await rpcConnect(own.ready.url, { ucx: { peerErrors: true } });
        expect(await c.request(1, new Uint8Array([4, 5]))).toEqual(new Uint8Array([4, 5]));
        const req = new Uint8Array(4);
        new DataView(req.buffer).setUint32(0, 1 << 20, true);
        // A slow reply cannot be: the server answers at once. Kill it with calls in flight.
        const pending = Array.from({ length: 16 }, () => c.request(2, req).then(() => null, (e) => e));
        own.proc.kill(9);
        await own.proc.exited;
        const late = await c.request(1, new Uint8Array(1)).then(() => null, (e) => e);
        const results = await Promise.all(pending);
        for (const r of [...results.filter((r) => r !== null), late]) expect(r).toBeInstanceOf(TransportClosedError);
        expect(c.conn.closed).toBe(true);
      } finally {
        await own.kill();
      }
    }, 60_000);
  });
}
