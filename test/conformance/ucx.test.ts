/**
 * The conformance suite over UCX, client and server in separate processes, twice: over UCX's
 * tcp transport and over its shared-memory transports. `env` reaches the server process and,
 * set by the suite before its tests, this process's UCX context for that configuration.
 */
import { runConformance } from "./suite.ts";

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  runConformance({
    name: "ucx",
    label: `ucx (UCX_TLS=${tls})`,
    env: { UCX_TLS: tls },
    listenUrl: () => "ucx://127.0.0.1:0",
    async refusedUrl() {
      return `ucx://127.0.0.1:${await freePort()}`;
    },
    async blackhole() {
      // A plain TCP listener: it accepts, and never speaks UCX's connection protocol.
      const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      return { url: `ucx://127.0.0.1:${l.port}`, close: () => l.stop(true) };
    },
  });
}
