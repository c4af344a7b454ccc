/**
 * ucx's worker-address wire-up (address-exchange.ts): with UCX_TLS=shm,self there is no tcp
 * lane for UCX's connection manager, so a sockaddr connect fails (UCS_ERR_UNREACHABLE); the
 * listener then hands out its worker address over a small socket instead, and two processes
 * connect over shared memory alone, with the hello and the HMAC handshake as in sockaddr mode.
 * UCX reads UCX_TLS from the process environment when it starts, so both peers are child
 * processes spawned with it in their environment.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { rpcConnect, TransportClosedError } from "../../src/index.ts";
import { wireupMode } from "../../src/ucx/address-exchange.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SERVER = new URL("./auth-server.ts", import.meta.url).pathname;
const CLIENT = new URL("./address-client.ts", import.meta.url).pathname;
const TOKEN = "a shared secret of 32 bytes, ok!";
const SIZES = [0, 1, 32, 4000, 10_000, 100_000, 1 << 20];

setDefaultTimeout(60_000);

/** Runs address-client.ts with `env` and returns its JSON line (killed by pid after 30 s: a hang fails). */
async function runClient(url: string, token: string, env: Record<string, string>): Promise<{ ok: boolean; sizes?: number[]; error?: string }> {
  const p = Bun.spawn(["bun", CLIENT, url, token, SIZES.join(",")], { env: { ...process.env, ...env }, stdout: "pipe", stderr: "inherit" });
  const watchdog = setTimeout(() => p.kill(9), 30_000);
  try {
    const out = await new Response(p.stdout).text();
    await p.exited;
    const line = out.split("\n").find((l) => l.startsWith("{"));
    if (line === undefined) throw new Error(`client printed no result (exit ${p.exitCode ?? p.signalCode}): ${out}`);
    return JSON.parse(line);
  } finally {
    clearTimeout(watchdog);
  }
}

describe("wireupMode", () => {
  const u = (s: string) => new URL(s);
  test("the URL's wireup parameter wins; else UCX_TLS without a connection-manager transport means address", () => {
    expect(wireupMode(u("ucx://127.0.0.1:1?wireup=address"), "tcp")).toBe("address");
    expect(wireupMode(u("ucx://127.0.0.1:1?wireup=sockaddr"), "shm,self")).toBe("sockaddr");
    expect(wireupMode(u("ucx://127.0.0.1:1"), "shm,self")).toBe("address");
    expect(wireupMode(u("ucx://127.0.0.1:1"), "posix,sysv,cma,self")).toBe("address");
    expect(wireupMode(u("ucx://127.0.0.1:1"), "shm,self,tcp")).toBe("sockaddr");
    expect(wireupMode(u("ucx://127.0.0.1:1"), "rc,shm")).toBe("sockaddr");
    expect(wireupMode(u("ucx://127.0.0.1:1"), undefined)).toBe("sockaddr");
    expect(wireupMode(u("ucx://127.0.0.1:1"), "^tcp")).toBe("sockaddr");
    expect(wireupMode(u("ucx://127.0.0.1:1?wireup=both"), undefined)).toContain('wireup must be "address" or "sockaddr"');
  });
});

describe("ucx between two processes with UCX_TLS=shm,self", () => {
  const peers: Peer[] = [];
  afterAll(async () => {
    for (const p of peers) await p.kill();
  });

  test("a sockaddr connect cannot: no tcp lane for the connection manager", async () => {
    const server = await spawnPeer(SERVER, ["ucx://127.0.0.1:0?wireup=sockaddr", "-", "5000"], { UCX_TLS: "shm,self" });
    peers.push(server);
    expect(server.ready.url).not.toContain("wireup=address");
    const r = await runClient(`${server.ready.url}?wireup=sockaddr`, "-", { UCX_TLS: "shm,self" });
    expect(r.ok).toBe(false);
    expect(r.error).toContain("ConnectError");
  });

  test("the listener picks the worker-address mode by itself and echoes every size byte for byte", async () => {
    const server = await spawnPeer(SERVER, ["ucx://127.0.0.1:0", "-", "5000"], { UCX_TLS: "shm,self" });
    peers.push(server);
    expect(server.ready.url).toContain("?wireup=address");
    const r = await runClient(server.ready.url, "-", { UCX_TLS: "shm,self" });
    expect(r).toEqual({ ok: true, sizes: SIZES });
  });

  test("the HMAC handshake works in address mode: the right token passes, a wrong one is an AuthError", async () => {
    const server = await spawnPeer(SERVER, ["ucx://127.0.0.1:0", TOKEN, "5000"], { UCX_TLS: "shm,self" });
    peers.push(server);
    expect(await runClient(server.ready.url, TOKEN, { UCX_TLS: "shm,self" })).toEqual({ ok: true, sizes: SIZES });
    const wrong = await runClient(server.ready.url, "another secret, also 32 bytes ok", { UCX_TLS: "shm,self" });
    expect(wrong.ok).toBe(false);
    expect(wrong.error).toStartWith("AuthError");
    const none = await runClient(server.ready.url, "-", { UCX_TLS: "shm,self" });
    expect(none.ok).toBe(false);
    expect(none.error).toStartWith("AuthError");
  });
});

describe("ucx address mode: liveness", () => {
  test("a server killed with SIGKILL fails the client's pending call with TransportClosedError (its socket closes)", async () => {
    const server = await spawnPeer(SERVER, ["ucx://127.0.0.1:0?wireup=address", "-", "5000"], { UCX_TLS: "shm,self" });
    try {
      const c = await rpcConnect(server.ready.url, { connectTimeoutMs: 10_000 });
      expect(await c.request(1, new Uint8Array([1, 2, 3]))).toEqual(new Uint8Array([1, 2, 3]));
      // A call made after the kill reaches a dead peer's shared memory: only the socket's close can end it.
      await server.kill(9);
      const err = await c.request(1, new Uint8Array([4])).then(
        () => null,
        (e) => e,
      );
      expect(err).toBeInstanceOf(TransportClosedError);
      c.close();
    } finally {
      await server.kill();
    }
  });
});
