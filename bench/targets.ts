/**
 * Every row `bun run bench` can measure: hotpath's transports, the peers a Bun user would pick
 * instead, and the raw references. Each target starts its server (its own process, or a Worker
 * of this process) and returns a Driver for bench/measure.ts's one body (spin or event loop,
 * `mode`) and a CPU probe for both sides. Each row says its process layout, wait mode and core
 * placement; nothing is pinned (no taskset): the OS places every thread.
 *
 *   const t = TARGETS.find((x) => x.id === "tcp")!; const r = await t.start({ host: "127.0.0.1" });
 */

import { transports } from "../src/index.ts";
import { clientOnlyProbe, processProbe, workerProbe, workerThreads, type CpuProbe } from "./cpu.ts";
import { hotpathDriver, ipcDriver, promiseDriver, rawShmDriver, rawStreamDriver, workerDriver, wsDriver } from "./drivers.ts";
import type { Driver } from "./measure.ts";
import { GRPC_ECHO_PATH } from "./peers/other-servers.ts";
import { startPeer, workerServer, type BenchPeer } from "./spawn.ts";

export interface Running {
  driver: Driver;
  cpu: CpuProbe;
  /** What the layout line gains once the server runs (ucx: the wire-up its URL names). */
  note?: string;
  stop(): Promise<void>;
}

export interface Target {
  id: string;
  label: string;
  kind: "hotpath" | "peer" | "reference";
  /** Rows this one is compared with, the first in the table's ref column (itself for references). */
  references: string[];
  /** Which body runs it: spin (synchronous polling) or async (event loop). */
  mode: "spin" | "async";
  /** Process layout and wait mode of both sides, for the report. */
  layout: string;
  /** UCX_TLS of both sides (ucx rows), also used for the ucx_perftest reference. */
  ucxTls?: string;
  /** Largest payload the target measures. */
  maxBytes?: number;
  /** Null when it can run here, else why not. */
  unavailable(): string | null;
  start(where: Where): Promise<Running>;
}

/** Where servers run: this host, or (across nodes) URLs of servers already running elsewhere. */
export interface Where {
  host: string;
  /** --connect mode: target id → URL of its server on the other node. */
  remote?: Record<string, string>;
}

/** Core placement of every row: no pinning. */
export const PLACEMENT = "OS-placed (no taskset)";

const ECHO = new URL("./peers/echo-server.ts", import.meta.url).pathname;
const SEGMENT = new URL("./peers/segment-server.ts", import.meta.url).pathname;
const OTHER = new URL("./peers/other-servers.ts", import.meta.url).pathname;
const RAW_SHM = new URL("./peers/raw-shm.ts", import.meta.url).pathname;
const IPC_CHILD = new URL("./peers/ipc-child.ts", import.meta.url).pathname;
const ECHO_WORKER = new URL("./peers/echo-worker.ts", import.meta.url).href;

async function withPeer(args: string[], make: (p: BenchPeer) => Promise<Driver> | Driver, env: Record<string, string> = {}): Promise<Running> {
  const peer = await startPeer(args, env);
  try {
    const driver = await make(peer);
    return {
      driver,
      cpu: processProbe(peer.proc.pid),
      async stop() {
        await driver.close();
        await peer.stop();
      },
    };
  } catch (e) {
    await peer.stop();
    throw e;
  }
}

/** A row whose server is already running on another node (--connect). */
async function remote(make: () => Promise<Driver>): Promise<Running> {
  const driver = await make();
  return { driver, cpu: clientOnlyProbe("server on another node: not measured"), stop: async () => void (await driver.close()) };
}

async function grpcDriver(url: string): Promise<Driver> {
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
  const call = (data: Uint8Array) =>
    new Promise<Uint8Array>((resolve, reject) => client.echo(Buffer.from(data.buffer, data.byteOffset, data.length), (e, r) => (e ? reject(e) : resolve(r))));
  await call(new Uint8Array(1));
  return promiseDriver(call, () => client.close());
}

// The registry loads transports on first use; their availability is read once, here.
const registered = await transports();
function reasonFor(scheme: string): string | null {
  const t = registered.find((x) => x.scheme === scheme);
  return t === undefined ? `no ${scheme} transport registered` : t.unavailableReason;
}

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
  const why = reasonFor("ucx");
  if (why !== null) return why;
  families ??= ucxFamilies();
  return families.has(tl) ? null : `UCX offers no ${tl} transport on this machine (ucx_info -d)`;
};

/** A Worker server of this process, with the CPU probe of its thread. */
async function inWorker(start: () => Promise<{ url: string; worker: Worker }>, make: (srv: { url: string; worker: Worker }) => Promise<Driver>): Promise<Running> {
  const before = workerThreads();
  const srv = await start();
  const cpu = workerProbe(before);
  const driver = await make(srv);
  return { driver, cpu, stop: async () => (await driver.close(), srv.worker.terminate()) };
}

const SPIN = { wait: { mode: "spin" as const, spinNs: 0 } };
const CLIENT_HERE = "client: this process (main thread)";
const remoteOr = (w: Where, id: string) => w.remote?.[id];

export const TARGETS: Target[] = [
  {
    id: "raw-tcp",
    label: "raw Bun TCP socket (framed, replies coalesced per read)",
    kind: "reference",
    references: ["raw-tcp"],
    mode: "async",
    layout: `${CLIENT_HERE}; server: own process (peers/echo-server.ts raw-framed); both event loop`,
    unavailable: () => null,
    start: (w) => {
      const url = remoteOr(w, "raw-tcp");
      if (url) return remote(() => rawStreamDriver(url));
      return withPeer([ECHO, "raw-framed", w.host], (p) => rawStreamDriver(p.url));
    },
  },
  {
    id: "raw-tcp-bytes",
    label: "raw Bun TCP socket (reads echoed as they came: ceiling)",
    kind: "reference",
    references: ["raw-tcp-bytes"],
    mode: "async",
    layout: `${CLIENT_HERE}; server: own process (peers/echo-server.ts raw-bytes, no framing); both event loop`,
    unavailable: () => null,
    start: (w) => withPeer([ECHO, "raw-bytes", w.host], (p) => rawStreamDriver(p.url)),
  },
  {
    id: "raw-unix",
    label: "raw Bun Unix socket (framed, replies coalesced per read)",
    kind: "reference",
    references: ["raw-unix"],
    mode: "async",
    layout: `${CLIENT_HERE}; server: own process (peers/echo-server.ts raw-framed unix:); both event loop`,
    unavailable: () => null,
    start: () => withPeer([ECHO, "raw-framed", `unix:${process.pid}`], (p) => rawStreamDriver(p.url)),
  },
  {
    id: "raw-shm",
    label: "raw Bun shared memory (no RPC)",
    kind: "reference",
    references: ["raw-shm"],
    mode: "spin",
    layout: `${CLIENT_HERE}; server: own process (peers/raw-shm.ts); both spin (Atomics polling)`,
    unavailable: () => (process.platform === "linux" ? null : "needs Linux"),
    start: () => withPeer([RAW_SHM, `/hotpath-bench-raw-${process.pid}`], (p) => rawShmDriver(p.url)),
  },
  {
    id: "inproc",
    label: "hotpath inproc (spin, Worker)",
    kind: "hotpath",
    references: ["raw-shm"],
    mode: "spin",
    layout: `${CLIENT_HERE}; server: a Worker of this process (peers/segment-server.ts); both spin`,
    unavailable: () => reasonFor("inproc"),
    start: async () => {
      return inWorker(() => workerServer(`inproc://bench-${process.pid}`, "spin"), (srv) => hotpathDriver(srv.url, SPIN));
    },
  },
  {
    id: "shm-spin",
    label: "hotpath shm (spin)",
    kind: "hotpath",
    references: ["raw-shm"],
    mode: "spin",
    layout: `${CLIENT_HERE}; server: own process (peers/segment-server.ts spin: poll/recv/reply); both spin`,
    unavailable: () => reasonFor("shm"),
    start: () => withPeer([SEGMENT, `shm://bench-spin-${process.pid}`, "spin"], (p) => hotpathDriver(p.url, SPIN)),
  },
  {
    id: "shm-async",
    label: "hotpath shm (async)",
    kind: "hotpath",
    references: ["worker", "raw-unix", "raw-tcp", "raw-shm"],
    mode: "async",
    layout: `${CLIENT_HERE}, default wait policy, event loop; server: own process (serve(), default wait policy)`,
    unavailable: () => reasonFor("shm"),
    start: () => withPeer([SEGMENT, `shm://bench-async-${process.pid}`, "async"], (p) => hotpathDriver(p.url)),
  },
  {
    id: "tcp",
    label: "hotpath tcp",
    kind: "hotpath",
    references: ["raw-tcp", "raw-tcp-bytes"],
    mode: "async",
    layout: `${CLIENT_HERE}, event loop; server: own process (serve())`,
    unavailable: () => null,
    start: (w) => {
      const url = remoteOr(w, "tcp");
      if (url) return remote(() => hotpathDriver(url));
      return withPeer([ECHO, "hotpath", `tcp://${w.host}:0`], (p) => hotpathDriver(p.url));
    },
  },
  // One row per UCX transport family the machine offers, UCX_TLS=<family>,self on both sides:
  // tcp wires up through UCX's connection manager (sockaddr), a family it does not run over
  // (shm) through the listener's worker address (src/ucx/setup.ts). rc / ud / dc appear only
  // where an RDMA device is.
  ...(["tcp", "shm", "rc", "ud", "dc"] as const).map((tl): Target => {
    const tls = `${tl},self`;
    return {
      id: `ucx-${tl}`,
      label: `hotpath ucx (UCX_TLS=${tls}, spin)`,
      kind: "hotpath",
      references: [`ucx-perftest-${tl}`],
      mode: "spin",
      ucxTls: tls,
      layout: `${CLIENT_HERE}; server: own process (peers/segment-server.ts spin); both spin; UCX_TLS=${tls} on both sides`,
      unavailable: () => ucxFamilyReason(tl),
      start: async (w) => {
        // The UCP context is chosen by the UCX_* environment at connect; put it back afterwards.
        const saved = process.env.UCX_TLS;
        process.env.UCX_TLS = tls;
        let serverUrl = "";
        try {
          const url = remoteOr(w, `ucx-${tl}`);
          const r = url ? await remote(() => hotpathDriver(url, SPIN)) : await withPeer([SEGMENT, `ucx://${w.host}:0`, "spin"], (p) => ((serverUrl = p.url), hotpathDriver(p.url, SPIN)), { UCX_TLS: tls });
          const u = url ?? serverUrl;
          r.note = `wire-up: ${u.includes("wireup=address") ? "worker address over a TCP socket (?wireup=address)" : "sockaddr (UCX connection manager)"}, ${u}`;
          return r;
        } finally {
          if (saved === undefined) delete process.env.UCX_TLS;
          else process.env.UCX_TLS = saved;
        }
      },
    };
  }),
  {
    id: "ipc",
    label: "Bun.spawn IPC",
    kind: "peer",
    references: ["raw-unix"],
    mode: "async",
    layout: `${CLIENT_HERE}; server: child process (peers/ipc-child.ts, serialization "advanced"); both event loop`,
    unavailable: () => null,
    start: async () => {
      const { d, pid } = ipcDriver(IPC_CHILD);
      return { driver: d, cpu: processProbe(pid), stop: async () => void (await d.close()) };
    },
  },
  {
    id: "worker",
    label: "Worker postMessage",
    kind: "reference",
    references: ["worker"],
    mode: "async",
    layout: `${CLIENT_HERE}; server: a Worker of this process (peers/echo-worker.ts); both event loop`,
    unavailable: () => null,
    start: () =>
      inWorker(
        async () => {
          const worker = new Worker(ECHO_WORKER);
          // One echo first, so the Worker's thread exists when its CPU probe looks for it.
          await new Promise<void>((r) => {
            worker.onmessage = () => r();
            worker.postMessage(new Uint8Array(1));
          });
          return { url: "", worker };
        },
        async (srv) => workerDriver(srv.worker),
      ),
  },
  {
    id: "http",
    label: "HTTP (Bun.serve + fetch)",
    kind: "peer",
    references: ["raw-tcp"],
    mode: "async",
    layout: `${CLIENT_HERE}; server: own process (peers/other-servers.ts http); both event loop`,
    unavailable: () => null,
    start: (w) =>
      withPeer([OTHER, "http", w.host], (p) =>
        promiseDriver(
          (data) => fetch(p.url, { method: "POST", body: data }).then(async (r) => new Uint8Array(await r.arrayBuffer())),
          () => {},
        ),
      ),
  },
  {
    id: "ws",
    label: "WebSocket (Bun.serve)",
    kind: "peer",
    references: ["raw-tcp"],
    mode: "async",
    layout: `${CLIENT_HERE}; server: own process (peers/other-servers.ts ws); both event loop`,
    unavailable: () => null,
    start: (w) => withPeer([OTHER, "ws", w.host], (p) => wsDriver(p.url)),
  },
  {
    id: "grpc",
    label: "gRPC (@grpc/grpc-js)",
    kind: "peer",
    references: ["raw-tcp"],
    mode: "async",
    layout: `${CLIENT_HERE}; server: own process (peers/other-servers.ts grpc); both event loop`,
    unavailable: () => null,
    start: (w) => withPeer([OTHER, "grpc", w.host], (p) => grpcDriver(p.url)),
  },
];
