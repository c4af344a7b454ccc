/**
 * ConnectionPool over real server processes (tcp on 127.0.0.1), killed with kill -9 and
 * SIGSTOP by pid, and restarted on the same port (the kill -9 / restart with calls in flight,
 * per transport, is restart.test.ts).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { defineService, serve } from "../../src/index.ts";
import { TransportClosedError, UsageError } from "../../src/errors.ts";
import { ConnectionPool } from "../../src/pool/pool.ts";
import type { ConnectivityState } from "../../src/pool/channel.ts";
import { spawnPeer, type Peer, until } from "../helpers/peer.ts";
import { readdirSync } from "node:fs";

const PEER = `${import.meta.dir}/pool-peer.ts`;
const te = new TextEncoder();
const td = new TextDecoder();
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function peer(url: string): Promise<Peer> {
  const p = await spawnPeer(PEER, [url]);
  cleanups.push(() => p.kill());
  return p;
}

const waitFor = (cond: () => boolean, what: string, ms = 5000) => until(cond, what, ms);

describe("ConnectionPool", () => {
  test("one shared client per URL; typed service methods; stats; close", async () => {
    const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data.slice() });
    cleanups.push(() => s.close());
    const Echo = defineService({ echo: { id: 1 } });
    const states: ConnectivityState[] = [];
    const pool = new ConnectionPool({ onStateChange: (_u, st) => states.push(st) });
    const a = pool.client(s.url, { service: Echo });
    expect(pool.client(s.url)).toBe(a as any);
    expect(td.decode(await a.svc.echo(te.encode("hi")))).toBe("hi");
    expect(states).toEqual(["CONNECTING", "READY"]);
    const [st] = pool.stats();
    expect(st).toMatchObject({ url: s.url, state: "READY", connections: 1, inFlight: 0, reconnects: 0, lastError: null });
    await pool[Symbol.asyncDispose]();
    expect(pool.stats()[0]!.state).toBe("SHUTDOWN");
    expect(pool.stats()[0]!.connections).toBe(0);
    expect(() => pool.client("tcp://127.0.0.1:1")).toThrow(UsageError);
  });

  test("no fd left after reconnects and close()", async () => {
    const fds = () => readdirSync("/proc/self/fd").length;
    const s1 = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data.slice() });
    cleanups.push(() => s1.close());
    const warm = new ConnectionPool();
    await warm.client(s1.url).request(1, te.encode("warm"));
    await warm.close();
    await waitFor(() => warm.stats()[0]!.connections === 0, "warm-up closed");
    await Bun.sleep(20);
    const before = fds();
    const pool = new ConnectionPool({ backoff: { initialMs: 5, maxMs: 20, minConnectTimeoutMs: 500 }, maxConnections: 2 });
    const c = pool.client(s1.url);
    for (let round = 0; round < 3; round++) {
      expect(td.decode(await c.request(1, te.encode(String(round)), { timeoutMs: 5000 }))).toBe(String(round));
      (s1.server as unknown as { close(): void }).close(); // cuts the sessions: the pool reconnects
      await waitFor(() => pool.stats()[0]!.state !== "READY", "loss seen");
      s1.server.attach((await import("../../src/index.ts").then((m) => m.listen(s1.url))));
    }
    expect(td.decode(await c.request(1, te.encode("last"), { timeoutMs: 5000 }))).toBe("last");
    expect(fds()).toBeGreaterThan(before); // the live connection
    await pool.close();
    await waitFor(() => fds() <= before, `fds back to ${before} (now ${fds()})`);
  });

  test("fallback: a target that does not connect falls back to the next candidate", async () => {
    const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data.slice() });
    cleanups.push(() => s.close());
    const dead = await serve("tcp://127.0.0.1:0", {});
    const deadUrl = dead.url;
    dead.close();
    const pool = new ConnectionPool();
    cleanups.push(() => pool.close());
    const c = pool.client(deadUrl, { fallback: [s.url] });
    expect(td.decode(await c.request(1, te.encode("via fallback")))).toBe("via fallback");
    expect(pool.stats()[0]).toMatchObject({ url: deadUrl, state: "READY", attempts: 1 });
  });

  test("maxConnections spreads calls least-in-flight", async () => {
    const gates: Array<() => void> = [];
    const s = await serve("tcp://127.0.0.1:0", { 2: (h) => { const d = h.data.slice(); return new Promise<Uint8Array>((r) => gates.push(() => r(d))); } });
    cleanups.push(() => s.close());
    const pool = new ConnectionPool({ maxConnections: 3 });
    cleanups.push(() => pool.close());
    const c = pool.client(s.url);
    const first = c.request(2, te.encode("0"));
    await waitFor(() => gates.length === 1, "first call held");
    const more = [1, 2, 3, 4, 5].map((i) => c.request(2, te.encode(String(i))));
    await waitFor(() => pool.stats()[0]!.connections === 3, "three connections");
    const rest = [6, 7, 8].map((i) => c.request(2, te.encode(String(i))));
    await waitFor(() => gates.length === 9, "all calls held");
    for (const g of gates.splice(0)) g();
    expect((await Promise.all([first, ...more, ...rest])).map((b) => td.decode(b))).toEqual(["0", "1", "2", "3", "4", "5", "6", "7", "8"]);
    expect(pool.stats()[0]!.connections).toBe(3);
  });

  test("half-open peer (SIGSTOP) is declared dead after the keepalive timeout", async () => {
    const p = await peer("tcp://127.0.0.1:0");
    const pool = new ConnectionPool({ keepaliveMs: 50, keepaliveTimeoutMs: 150 });
    cleanups.push(() => pool.close());
    const c = pool.client(p.ready.url);
    await c.request(1, te.encode("up"));
    const held = c.request(2, te.encode("stuck"));
    expect(await p.nextLine()).toBe("held");
    process.kill(p.proc.pid, "SIGSTOP");
    cleanups.push(() => void process.kill(p.proc.pid, "SIGCONT"));
    await expect(held).rejects.toBeInstanceOf(TransportClosedError);
    const st = pool.stats()[0]!;
    expect(st.lastError?.message).toContain("keepalive");
    expect(st.connections).toBe(0);
  });

  test("a process that never closes its pool exits on its own (every pool timer is unref'd)", async () => {
    const s = await serve("tcp://127.0.0.1:0", { 1: (h) => h.data.slice() });
    let open = true;
    cleanups.push(() => { if (open) s.close(); });
    const child = Bun.spawn(["bun", `${import.meta.dir}/pool-exit-child.ts`, s.url], { stdout: "pipe", stderr: "inherit" });
    cleanups.push(() => { if (child.exitCode === null) child.kill(9); });
    const out = child.stdout.getReader();
    const first = td.decode((await out.read()).value);
    expect(first).toBe("done\n");
    s.close();
    open = false;
    const watchdog = Bun.sleep(5000).then(() => "hang");
    expect(await Promise.race([child.exited, watchdog])).toBe(0);
    let rest = "";
    for (let r = await out.read(); !r.done; r = await out.read()) rest += td.decode(r.value);
    expect(rest).toBe("waiting\n");
  });
});
