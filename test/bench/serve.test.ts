/**
 * bench/serve.bench.ts's load generators check every response: against a real front
 * (peers/serve-front.ts) that flips one byte of one response (SERVE_FRONT_CORRUPT), the Bun load
 * generator ends with an error naming the byte and wrk's script counts the mismatch; against a
 * correct front both complete with none, in echo and in KV mode (the KV front's stored keys
 * equal the bodies the generators send). And the issue-14 targets are judged on the rows:
 * met / NOT met with the measured value and its reference. No timing thresholds.
 */

import { expect, test } from "bun:test";
import { serveTargets, type HttpRow } from "../../bench/serve-table.ts";
import { redisUnavailable, startRedis } from "../../bench/redis.ts";

const PEERS = new URL("../../bench/peers/", import.meta.url).pathname;

async function front(args: string[], env: Record<string, string> = {}): Promise<{ port: number; stop(): Promise<void> }> {
  const proc = Bun.spawn(["bun", PEERS + "serve-front.ts", ...args], { stdin: "pipe", stdout: "pipe", stderr: "inherit", env: { ...process.env, ...env } });
  const reader = proc.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`serve-front ${args.join(" ")} exited before it was ready`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return {
    port: JSON.parse(text.slice(0, text.indexOf("\n"))).port,
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill(9), 5000);
      await proc.exited;
      clearTimeout(t);
    },
  };
}

async function bunLoad(port: number, kv = false): Promise<{ code: number | null; result: Record<string, any> }> {
  const p = Bun.spawn(["bun", PEERS + "serve-load.ts", String(port), "8", "50", "300", "32", "", ...(kv ? ["kv"] : [])], { stdout: "pipe", stderr: "inherit" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  return { code: p.exitCode, result: JSON.parse(out.trim().split("\n").pop()!) };
}

async function wrk(port: number, kv = false): Promise<Record<string, any>> {
  const p = Bun.spawn(["wrk", "-t2", "-c8", "-d1s", "-s", PEERS + "serve-wrk.lua", `http://127.0.0.1:${port}/`, "--", "32", ...(kv ? ["kv"] : [])], { stdout: "pipe", stderr: "inherit" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  return JSON.parse(out.trim().split("\n").pop()!);
}

const hasWrk = Bun.which("wrk") !== null;

test(
  "Bun load generator: a front that flips byte 5 of its 40th response ends the run with that error; a correct front, echo and KV keys, none",
  async () => {
    const bad = await front(["local"], { SERVE_FRONT_CORRUPT: "40" });
    try {
      const r = await bunLoad(bad.port);
      expect(r.code).toBe(1);
      expect(r.result.error).toMatch(/^response bytes differ from the request's at 5 \(connection \d+, request \d+\)$/);
    } finally {
      await bad.stop();
    }
    const good = await front(["local"]);
    try {
      for (const kv of [false, true]) {
        const r = await bunLoad(good.port, kv);
        expect({ kv, code: r.code, error: r.result.error, some: r.result.requests > 0 }).toEqual({ kv, code: 0, error: undefined, some: true });
      }
    } finally {
      await good.stop();
    }
  },
  60_000,
);

test.skipIf(!hasWrk)(
  "wrk with serve-wrk.lua: a flipped byte in one response is counted as a mismatch; a correct front gives none, echo and KV keys",
  async () => {
    const bad = await front(["local"], { SERVE_FRONT_CORRUPT: "40" });
    try {
      const r = await wrk(bad.port);
      expect(r.mismatches).toBe(1);
      expect(r.firstMismatch).toMatch(/^status 200, body "[0-9a-f]{4}:/);
    } finally {
      await bad.stop();
    }
    const good = await front(["local"]);
    try {
      for (const kv of [false, true]) {
        const r = await wrk(good.port, kv);
        expect({ kv, mismatches: r.mismatches, errors: r.socketErrors, some: r.requests > 0 }).toEqual({ kv, mismatches: 0, errors: 0, some: true });
      }
    } finally {
      await good.stop();
    }
  },
  60_000,
);

test.skipIf(redisUnavailable() !== null)(
  "KV fronts: hotpath kv over shm and Bun's RedisClient answer each key-set body with the stored value (the body itself)",
  async () => {
    const kv = Bun.spawn(["bun", PEERS + "kv-server.ts", `shm://serve-test-kv-${process.pid}`, "async"], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
    const redis = await startRedis();
    try {
      const kvUrl = JSON.parse(new TextDecoder().decode((await kv.stdout.getReader().read()).value!).split("\n")[0]!).url as string;
      for (const [mode, url] of [["kv", kvUrl], ["redis", redis.unixUrl]] as const) {
        const f = await front([mode, url]);
        try {
          const r = await bunLoad(f.port, true);
          expect({ mode, code: r.code, error: r.result.error, some: r.result.requests > 0 }).toEqual({ mode, code: 0, error: undefined, some: true });
        } finally {
          await f.stop();
        }
      }
    } finally {
      kv.stdin.end();
      await kv.exited;
      await redis.stop();
    }
  },
  60_000,
);

test("issue-14 targets: shm req/s against local (0.8x), tcp (1.2x) and fetch (2x), each met or NOT met with both values; a missing row is NOT met and says so", () => {
  const row = (id: string, reqPerS: number): HttpRow => ({ id, group: "http", label: id, loadgen: "bun", requests: 1, reqPerS, p50Us: 1, p99Us: 1, frontCpuUsPerReq: 1, backendCpuUsPerReq: 1 });
  const t = serveTargets([row("local", 30_000), row("shm", 25_000), row("tcp", 22_000), row("fetch", 12_000)]);
  expect(t.map((x) => [x.met, x.measured])).toEqual([
    [true, "25000 req/s vs 30000 (0.83x)"],
    [false, "25000 req/s vs 22000 (1.14x)"],
    [true, "25000 req/s vs 12000 (2.08x)"],
  ]);
  expect(serveTargets([row("local", 1)]).map((x) => [x.met, x.measured])).toEqual([
    [false, "not measured (shm row missing)"],
    [false, "not measured (shm row missing)"],
    [false, "not measured (shm row missing)"],
  ]);
});
