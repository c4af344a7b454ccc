/**
 * The Redis references of the kv benchmark (bench/kv.bench.ts): a redis-server this process
 * starts itself (a Unix socket in a temp dir and a tcp port on 127.0.0.1, persistence off:
 * `--save "" --appendonly no`), driven by Bun's built-in RedisClient through the kv body, and
 * `redis-benchmark -P 64` (the C reference) on the same socket. The server is killed by pid
 * and its temp dir removed in stop().
 *
 * Bun's RedisClient pipelines: the commands issued in one event-loop turn go out together (64
 * GETs of one turn reach redis-server in a few reads, test/bench/kv.test.ts), which is how the
 * body's bursts reach 64 in flight without any batching API. A Unix socket is named
 * `redis+unix:///path`.
 *
 *   const r = await startRedis(); const d = await redisDriver(r.unixUrl); ...; await r.stop();
 */

import { RedisClient } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PromiseInbox } from "./drivers.ts";
import type { KvDriver } from "./kv-measure.ts";

export interface RedisServer {
  /** redis+unix:///… and redis://127.0.0.1:PORT, for RedisClient. */
  unixUrl: string;
  tcpUrl: string;
  socketPath: string;
  port: number;
  pid: number;
  /** `redis-server --version`'s first words, e.g. "Redis server v=7.0.15". */
  version: string;
  stop(): Promise<void>;
}

/** Null when redis-server and redis-benchmark can run here, else why not. */
export function redisUnavailable(): string | null {
  if (Bun.which("redis-server") === null) return "redis-server not installed (Debian redis-server; scripts/setup.sh installs it)";
  return null;
}

export function redisBenchmarkUnavailable(): string | null {
  return Bun.which("redis-benchmark") === null ? "redis-benchmark not installed (Debian redis-tools)" : null;
}

/** Random ports tried: one taken port is rare in 10000..32767, five in a row means something else is wrong. */
const PORT_TRIES = 5;
/** How long redis-server may take to say it is ready (it starts in milliseconds; a busy machine is slower). */
const READY_MS = 15_000;

/** Starts redis-server (no persistence) on a Unix socket in a fresh temp dir and a random tcp port. Main thread only. */
export async function startRedis(): Promise<RedisServer> {
  const why = redisUnavailable();
  if (why !== null) throw new Error(why);
  const version = Bun.spawnSync(["redis-server", "--version"]).stdout.toString().split(" sha=")[0]!.trim();
  let last = "";
  for (let attempt = 0; attempt < PORT_TRIES; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), "hotpath-redis-"));
    const socketPath = join(dir, "redis.sock");
    const log = join(dir, "redis.log");
    // Below Linux's ephemeral range (32768..), so no outgoing connection holds it.
    const port = 10000 + Math.floor(Math.random() * 22768);
    const proc = Bun.spawn(
      ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--unixsocket", socketPath, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", log, "--daemonize", "no", "--protected-mode", "no"],
      { stdio: ["ignore", "ignore", "ignore"] },
    );
    const stop = async () => {
      proc.kill(9);
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    };
    const deadline = Date.now() + READY_MS;
    let ready = false;
    while (Date.now() < deadline && proc.exitCode === null) {
      const text = existsSync(log) ? readFileSync(log, "utf8") : "";
      // Redis 7 logs one "ready to accept connections" line per listener (tcp, then unix).
      if ((text.match(/ready to accept connections/gi) ?? []).length >= 2 && existsSync(socketPath)) {
        ready = true;
        break;
      }
      await Bun.sleep(10);
    }
    if (ready) return { unixUrl: `redis+unix://${socketPath}`, tcpUrl: `redis://127.0.0.1:${port}`, socketPath, port, pid: proc.pid, version, stop };
    last = existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").slice(-2).join(" | ") : `exit ${proc.exitCode}`;
    await stop();
    if (!/address already in use/i.test(last)) break;
  }
  throw new Error(`redis-server did not start: ${last}`);
}

/** Copies `v` into a Buffer Bun's RedisClient sends as a binary bulk string. */
const asBuffer = (v: Uint8Array) => Buffer.from(v.buffer, v.byteOffset, v.length);

/**
 * Bun's RedisClient as a kv body driver (event-loop rows): GET by getBuffer (the bytes, no
 * string decode), PUT by set. Redis keeps no versions: results carry version 0. One promise
 * per call (the client's API); the commands of one turn go out together.
 */
export async function redisDriver(url: string): Promise<KvDriver> {
  const client = new RedisClient(url, { autoReconnect: false });
  await client.connect();
  const inbox = new PromiseInbox();
  const d: KvDriver = {
    versions: false,
    onResult: () => {
      throw new Error("redis driver: onResult not set");
    },
    get(key, seq) {
      client.getBuffer(asBuffer(key)).then((v) => {
        d.onResult(seq, null, v !== null, 0, v);
        inbox.settled();
      }, inbox.fail);
      return true;
    },
    put(key, value, seq) {
      client.set(asBuffer(key), asBuffer(value)).then((r) => {
        d.onResult(seq, r === "OK" ? null : new Error(`redis SET replied ${String(r)}`), true, 0, null);
        inbox.settled();
      }, inbox.fail);
      return true;
    },
    poll: () => inbox.poll(),
    wait: () => inbox.wait(),
    close: () => client.close(),
  };
  return d;
}

/** One redis-benchmark line: requests/s and its latency percentiles (per request of a pipeline batch, as it measures them). */
export interface RedisBenchmarkRow {
  op: "GET" | "SET";
  valueBytes: number;
  pipeline: number;
  clients: number;
  rps: number;
  p50Us: number | null;
  p99Us: number | null;
  requests: number;
}

/**
 * `redis-benchmark -s SOCKET -P pipeline -c clients -t get,set -d bytes -n requests --csv`,
 * parsed. Its keys are its default `key:__rand_int__` (16 bytes, one key). Throws when it
 * fails or prints no figures.
 */
export async function redisBenchmark(r: RedisServer, valueBytes: number, pipeline: number, clients: number, requests: number): Promise<RedisBenchmarkRow[]> {
  const why = redisBenchmarkUnavailable();
  if (why !== null) throw new Error(why);
  const proc = Bun.spawn(["redis-benchmark", "-s", r.socketPath, "-P", String(pipeline), "-c", String(clients), "-t", "set,get", "-d", String(valueBytes), "-n", String(requests), "--csv"], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  if (proc.exitCode !== 0) throw new Error(`redis-benchmark exited ${proc.exitCode}: ${err.trim()}`);
  const rows: RedisBenchmarkRow[] = [];
  const lines = out.trim().split("\n");
  const head = (lines[0] ?? "").split(",").map((s) => s.replace(/"/g, ""));
  const col = (name: string) => head.indexOf(name);
  for (const line of lines.slice(1)) {
    const f = line.split(",").map((s) => s.replace(/"/g, ""));
    const op = f[0];
    if (op !== "GET" && op !== "SET") continue;
    const ms = (name: string) => (col(name) >= 0 && f[col(name)] !== undefined ? Number(f[col(name)]) * 1e3 : null);
    rows.push({ op, valueBytes, pipeline, clients, rps: Number(f[col("rps")]), p50Us: ms("p50_latency_ms"), p99Us: ms("p99_latency_ms"), requests });
  }
  if (rows.length !== 2 || rows.some((x) => !(x.rps > 0))) throw new Error(`redis-benchmark printed no figures: ${out.trim() || err.trim()}`);
  return rows;
}
