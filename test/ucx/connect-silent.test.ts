/**
 * A ucx connect to a peer that never answers (auth-silent-server.ts in a child process: it
 * accepts the endpoint and stays silent, or never accepts the connection request) fails with
 * ConnectError at its connectTimeoutMs, and waits without burning a core: the process's CPU
 * time over the wait stays a small share of the wall time (a behaviour check, not a runtime
 * bound: the connect is free to take its whole timeout).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { AuthError, connect, ConnectError } from "../../src/index.ts";
import { useEnv } from "../helpers/env.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SILENT = new URL("./auth-silent-server.ts", import.meta.url).pathname;
/** Long enough that a busy wait would show plainly in the CPU time. */
const CONNECT_TIMEOUT_MS = 1500;
/** A wait that sleeps costs a few percent of a core at most; a busy one costs all of it. */
const MAX_CPU_SHARE = 0.25;

setDefaultTimeout(30_000);

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe(`ucx connect to a peer that never answers (UCX_TLS=${tls})`, () => {
    useEnv({ UCX_TLS: tls });
    const peers: Peer[] = [];
    beforeAll(async () => {
      for (const mode of ["silent", "deaf"]) peers.push(await spawnPeer(SILENT, [mode], { UCX_TLS: tls }));
    });
    afterAll(async () => {
      await Promise.all(peers.map((p) => p.kill()));
    });

    for (const [i, what] of [[0, "accepts the endpoint and stays silent"], [1, "never accepts the connection request"]] as const) {
      test(`a peer that ${what}: ConnectError at the timeout, and the wait sleeps`, async () => {
        const url = peers[i]!.ready.url as string;
        for (const auth of [undefined, { token: "a shared secret of 32 bytes, ok!" }]) {
          const cpu0 = process.cpuUsage();
          const t0 = performance.now();
          const err = await connect(url, { connectTimeoutMs: CONNECT_TIMEOUT_MS, auth }).catch((e) => e);
          const wallMs = performance.now() - t0;
          const cpu = process.cpuUsage(cpu0);
          const cpuMs = (cpu.user + cpu.system) / 1000;
          console.log(`ucx connect (${tls}) to a peer that ${what}${auth ? ", with a token" : ""}: ${wallMs.toFixed(0)} ms wall, ${cpuMs.toFixed(1)} ms CPU (${((100 * cpuMs) / wallMs).toFixed(1)}%)`);
          expect(err).toBeInstanceOf(ConnectError);
          expect(err).not.toBeInstanceOf(AuthError);
          expect(err.message).toMatch(new RegExp(`no answer within ${CONNECT_TIMEOUT_MS} ms`));
          expect(wallMs).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 1);
          expect(cpuMs).toBeLessThan(wallMs * MAX_CPU_SHARE);
        }
      });
    }
  });
}
