/**
 * Every row `bun run bench` can measure: hotpath's transports, the peers a Bun user would pick
 * instead, and the raw references. Each target starts its server (its own process, or a Worker
 * for inproc / postMessage) and returns an echo client with one shape, so every row runs the
 * same body: `roundTrip(data)` and `burst(n, inFlight, data)`, synchronous for spin-mode rows
 * (no promise on the path) and async otherwise.
 */

import { transports } from "../src/index.ts";
import { hotpathClient, rawTcpClient } from "./clients.ts";
import { startPeer, type BenchPeer } from "./spawn.ts";
import { GRPC_ECHO_PATH } from "./peers/other-servers.ts";

export interface EchoClient {
  roundTrip(data: Uint8Array): void | Promise<void>;
  burst(n: number, inFlight: number, data: Uint8Array): void | Promise<void>;
  close(): void;
}

export interface Running {
  client: EchoClient;
  stop(): Promise<void>;
}

export interface Target {
  id: string;
  label: string;
  kind: "hotpath" | "peer" | "reference";
  /** The id of the row this one is compared with (itself for references). */
  reference: string;
  /** Largest message the target measures (raw shm's ring entries are 32 bytes, its bulk area 1 MiB). */
  maxBurstBytes?: number;
  /** Null when it can run here, else why not. */
  unavailable(): string | null;
  start(where: Where): Promise<Running>;
}

/** Where servers run: this host, or (across nodes) URLs of servers already running elsewhere. */
export interface Where {
  host: string;
  /** --connect mode: target id → URL of its server on the other node. */
  remote?: Record<string, string>;
  /** UCX_TLS for ucx rows. */
  ucxTls?: string;
}

const ECHO = new URL("./peers/echo-server.ts", import.meta.url).pathname;
const SEGMENT = new URL("./peers/segment-server.ts", import.meta.url).pathname;
const OTHER = new URL("./peers/other-servers.ts", import.meta.url).pathname;
const RAW_SHM = new URL("./peers/raw-shm.ts", import.meta.url).pathname;
const IPC_CHILD = new URL("./peers/ipc-child.ts", import.meta.url).pathname;
const ECHO_WORKER = new URL("./peers/echo-worker.ts", import.meta.url).href;

async function withPeer(args: string[], make: (p: BenchPeer) => Promise<EchoClient> | EchoClient, env: Record<string, string> = {}): Promise<Running> {
  const peer = await startPeer(args, env);
  try {
    const client = await make(peer);
    return {
      client,
      async stop() {
        client.close();
        await peer.stop();
      },
    };
  } catch (e) {
    await peer.stop();
    throw e;
  }
}

/** A client for request/response peers with at most `inFlight` outstanding promises. */
function promiseClient(call: (data: Uint8Array) => Promise<unknown>, close: () => void): EchoClient {
  return {
    roundTrip: async (data) => void (await call(data)),
    async burst(n, inFlight, data) {
      let started = 0;
      const lane = async () => {
        while (started < n) {
          started++;
          await call(data);
        }
      };
      await Promise.all(Array.from({ length: Math.min(inFlight, n) }, lane));
    },
    close,
  };
}

function workerClient(): EchoClient {
  const w = new Worker(ECHO_WORKER);
  let waiting: Array<() => void> = [];
  w.onmessage = () => waiting.shift()?.();
  const call = (data: Uint8Array) =>
    new Promise<void>((resolve) => {
      waiting.push(resolve);
      w.postMessage(data);
    });
  return promiseClient(call, () => {
    w.terminate();
    waiting = [];
  });
}

function ipcClient(): Running {
  let waiting: Array<() => void> = [];
  const child = Bun.spawn(["bun", IPC_CHILD], {
    ipc: () => waiting.shift()?.(),
    serialization: "advanced",
    stdio: ["ignore", "inherit", "inherit"],
  });
  const call = (data: Uint8Array) =>
    new Promise<void>((resolve) => {
      waiting.push(resolve);
      child.send(data);
    });
  return {
    client: promiseClient(call, () => {}),
    async stop() {
      child.kill(9);
      await child.exited;
      waiting = [];
    },
  };
}

function wsClient(url: string): Promise<EchoClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let waiting: Array<() => void> = [];
    ws.onmessage = () => waiting.shift()?.();
    ws.onerror = (e) => reject(new Error(`websocket ${url}: ${String(e)}`));
    ws.onopen = () =>
      resolve(
        promiseClient(
          (data) =>
            new Promise<void>((r) => {
              waiting.push(r);
              ws.send(data);
            }),
          () => ws.close(),
        ),
      );
  });
}

async function grpcClient(url: string): Promise<EchoClient> {
  const grpc = await import("@grpc/grpc-js");
  const passthrough = (b: Buffer) => b;
  const Ctor = grpc.makeGenericClientConstructor(
    { echo: { path: GRPC_ECHO_PATH, requestStream: false, responseStream: false, requestSerialize: passthrough, requestDeserialize: passthrough, responseSerialize: passthrough, responseDeserialize: passthrough } },
    "Echo",
  );
  const client = new Ctor(new URL(url).host, grpc.credentials.createInsecure()) as unknown as {
    echo(b: Buffer, cb: (e: Error | null, r: Buffer) => void): void;
    close(): void;
  };
  const call = (data: Uint8Array) => new Promise<Buffer>((resolve, reject) => client.echo(Buffer.from(data.buffer, data.byteOffset, data.length), (e, r) => (e ? reject(e) : resolve(r))));
  await call(new Uint8Array(1));
  return promiseClient(call, () => client.close());
}

function reasonFor(scheme: string): string | null {
  const t = transports().find((x) => x.scheme === scheme);
  return t === undefined ? `no ${scheme} transport registered` : t.unavailableReason;
}
const ucxReason = () => reasonFor("ucx");

/** UCX transport families this machine offers, from `ucx_info -d` (tcp and shm when it is missing). */
function ucxFamilies(): Set<string> {
  const found = new Set<string>();
  if (Bun.which("ucx_info") === null) return new Set(["tcp", "shm"]);
  const out = Bun.spawnSync(["ucx_info", "-d"]).stdout.toString();
  for (const m of out.matchAll(/Transport:\s*(\S+)/g)) {
    const tl = m[1]!;
    if (tl === "tcp") found.add("tcp");
    else if (tl === "posix" || tl === "sysv" || tl === "xpmem") found.add("shm");
    else if (tl.startsWith("rc")) found.add("rc");
    else if (tl.startsWith("ud")) found.add("ud");
    else if (tl.startsWith("dc")) found.add("dc");
  }
  return found;
}
let families: Set<string> | null = null;
const ucxFamilyReason = (tl: string) => {
  const why = ucxReason();
  if (why !== null) return why;
  families ??= ucxFamilies();
  return families.has(tl) ? null : `UCX offers no ${tl} transport on this machine (ucx_info -d)`;
};
const remoteOr = (w: Where, id: string) => w.remote?.[id];

/** The raw shm reference and hotpath's spin clients live with the shared-memory bench. */
async function spinClients() {
  return import("./shm.bench.ts");
}

export const TARGETS: Target[] = [
  {
    id: "raw-tcp",
    label: "raw Bun TCP socket (framed)",
    kind: "reference",
    reference: "raw-tcp",
    unavailable: () => null,
    start: (w) => {
      const url = remoteOr(w, "raw-tcp");
      if (url) return rawTcpClient(url, true).then((client) => ({ client, stop: async () => client.close() }));
      return withPeer([ECHO, "raw-framed", w.host], (p) => rawTcpClient(p.url, true));
    },
  },
  {
    id: "raw-shm",
    label: "raw Bun shared-memory ping-pong",
    kind: "reference",
    reference: "raw-shm",
    maxBurstBytes: 32,
    unavailable: () => (process.platform === "linux" ? null : "needs Linux"),
    start: async () => {
      const { rawShmClient } = await spinClients();
      return withPeer([RAW_SHM, `/hotpath-bench-raw-${process.pid}`], (p) => rawShmClient(p.url));
    },
  },
  {
    id: "inproc",
    label: "hotpath inproc (spin, Worker)",
    kind: "hotpath",
    reference: "raw-shm",
    unavailable: () => reasonFor("inproc"),
    start: async () => {
      const { hotpathSpinClient, workerServer } = await spinClients();
      const srv = await workerServer(`inproc://bench-${process.pid}`, "spin");
      const client = await hotpathSpinClient(srv.url);
      return { client, stop: async () => (client.close(), srv.worker.terminate()) };
    },
  },
  {
    id: "shm-spin",
    label: "hotpath shm (spin)",
    kind: "hotpath",
    reference: "raw-shm",
    unavailable: () => reasonFor("shm"),
    start: async () => {
      const { hotpathSpinClient } = await spinClients();
      return withPeer([SEGMENT, `shm://bench-spin-${process.pid}`, "spin"], (p) => hotpathSpinClient(p.url));
    },
  },
  {
    id: "shm-async",
    label: "hotpath shm (async)",
    kind: "hotpath",
    reference: "raw-shm",
    unavailable: () => reasonFor("shm"),
    start: () => withPeer([SEGMENT, `shm://bench-async-${process.pid}`, "async"], (p) => hotpathClient(p.url)),
  },
  {
    id: "tcp",
    label: "hotpath tcp",
    kind: "hotpath",
    reference: "raw-tcp",
    unavailable: () => null,
    start: (w) => {
      const url = remoteOr(w, "tcp");
      if (url) return hotpathClient(url).then((client) => ({ client, stop: async () => client.close() }));
      return withPeer([ECHO, "hotpath", `tcp://${w.host}:0`], (p) => hotpathClient(p.url));
    },
  },
  // One row per UCX transport family the machine offers; the sockaddr wire-up needs tcp beside
  // the others. rc / ud / dc appear only where an RDMA device is.
  ...(["tcp", "shm", "rc", "ud", "dc"] as const).map(
    (tl): Target => ({
      id: `ucx-${tl}`,
      label: `hotpath ucx (${tl}, spin)`,
      kind: "hotpath",
      reference: `ucx-perftest-${tl}`,
      unavailable: () => ucxFamilyReason(tl),
      start: async (w) => {
        const tls = tl === "tcp" ? "tcp,self" : `${tl},self,tcp`;
        process.env.UCX_TLS = tls;
        const { hotpathSpinClient } = await spinClients();
        const url = remoteOr(w, `ucx-${tl}`);
        if (url) return hotpathSpinClient(url).then((client) => ({ client, stop: async () => client.close() }));
        return withPeer([SEGMENT, `ucx://${w.host}:0`, "spin"], (p) => hotpathSpinClient(p.url), { UCX_TLS: tls });
      },
    }),
  ),
  {
    id: "rdma",
    label: "hotpath rdma",
    kind: "hotpath",
    reference: "raw-tcp",
    unavailable: () => "no rdma transport in this build yet (and this machine has no RDMA device)",
    start: () => Promise.reject(new Error("unavailable")),
  },
  {
    id: "raw-unix",
    label: "raw Bun Unix socket (framed)",
    kind: "peer",
    reference: "raw-tcp",
    unavailable: () => null,
    start: () => withPeer([ECHO, "raw-framed", `unix:${process.pid}`], (p) => rawTcpClient(p.url, true)),
  },
  {
    id: "ipc",
    label: "Bun.spawn IPC",
    kind: "peer",
    reference: "raw-tcp",
    unavailable: () => null,
    start: async () => ipcClient(),
  },
  {
    id: "worker",
    label: "Worker postMessage",
    kind: "peer",
    reference: "raw-tcp",
    unavailable: () => null,
    start: async () => {
      const client = workerClient();
      return { client, stop: async () => client.close() };
    },
  },
  {
    id: "http",
    label: "HTTP (Bun.serve + fetch)",
    kind: "peer",
    reference: "raw-tcp",
    unavailable: () => null,
    start: (w) =>
      withPeer([OTHER, "http", w.host], (p) =>
        promiseClient(
          (data) => fetch(p.url, { method: "POST", body: data }).then((r) => r.arrayBuffer()),
          () => {},
        ),
      ),
  },
  {
    id: "ws",
    label: "WebSocket (Bun.serve)",
    kind: "peer",
    reference: "raw-tcp",
    unavailable: () => null,
    start: (w) => withPeer([OTHER, "ws", w.host], (p) => wsClient(p.url)),
  },
  {
    id: "grpc",
    label: "gRPC (@grpc/grpc-js)",
    kind: "peer",
    reference: "raw-tcp",
    unavailable: () => null,
    start: (w) => withPeer([OTHER, "grpc", w.host], (p) => grpcClient(p.url)),
  },
];
