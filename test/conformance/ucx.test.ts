/**
 * The conformance suite over UCX, client and server in separate processes, three times: over
 * UCX's tcp transport and over its shared-memory transports with the sockaddr wire-up (a tcp
 * lane for UCX's connection manager), and over shared memory alone (UCX_TLS=shm,self), where
 * the listener hands out its worker address instead (address-exchange.ts). `env` reaches the
 * server process and, set by the suite before its tests, this process's view of UCX_TLS (which
 * chooses the wire-up).
 */
import { runConformance } from "./suite.ts";

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

for (const tls of ["tcp,self", "shm,self,tcp", "shm,self"]) {
  // UCX_TLS=shm,self has no transport for a connection manager: the URLs pick the address mode by themselves.
  const query = tls === "shm,self" ? "?wireup=address" : "";
  runConformance({
    name: "ucx",
    label: `ucx (UCX_TLS=${tls})`,
    env: { UCX_TLS: tls },
    listenUrl: () => "ucx://127.0.0.1:0",
    async refusedUrl() {
      return `ucx://127.0.0.1:${await freePort()}${query}`;
    },
    async blackhole() {
      // A plain TCP listener: it accepts, and never speaks UCX's connection protocol (nor sends a worker address).
      const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      return { url: `ucx://127.0.0.1:${l.port}${query}`, close: () => l.stop(true) };
    },
  });
}
