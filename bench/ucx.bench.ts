/**
 * UCX benchmarks beside `ucx_perftest -t ucp_am_lat` over the same UCX transport, measured in
 * the same run: for UCX_TLS=tcp and UCX_TLS=shm, hotpath's ucx transport in spin mode (client
 * here, hot-path server in its own process) — 32 B round trip p50/p99, calls/s at 64 in
 * flight, 1 MiB echo, and a one-sided 32-byte RMA get. perftest prints one-way latency (half
 * its ping-pong); the table shows it doubled, as a round trip.
 * Run: bun bench/ucx.bench.ts [--quick]   (needs ucx-utils for the reference row)
 */

import { measure } from "mitata";
import { Client, SEND_OK, connect } from "../src/index.ts";
import type { UcxConnection } from "../src/ucx/connection.ts";
import { ECHO_METHOD } from "./peers/methods.ts";
import { REGION_METHOD } from "./peers/segment-server.ts";
import { startPeer } from "./spawn.ts";

const SEGMENT_SERVER = new URL("./peers/segment-server.ts", import.meta.url).pathname;

export interface UcxFigures {
  tls: string;
  perftestRttUs: number | null;
  p50Us: number;
  p99Us: number;
  cps64: number;
  mibMs: number;
  rmaGetUs: number;
}

/** A TCP port nothing listens on right now. */
function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

/**
 * ucx_perftest am_lat round trip (2 × its one-way p50), or null when it is not installed or
 * does not finish within 30 s (both processes are killed then).
 */
export async function perftestRtt(tls: string, quick: boolean): Promise<number | null> {
  if (Bun.which("ucx_perftest") === null) return null;
  const port = String(freePort());
  const env = { ...process.env, UCX_TLS: tls };
  // stdbuf -oL: perftest's stdout is a pipe here, and its "Waiting for connection" line must
  // arrive before the client starts rather than at exit.
  const lineBuffered = Bun.which("stdbuf") ? ["stdbuf", "-oL"] : [];
  const server = Bun.spawn([...lineBuffered, "ucx_perftest", "-t", "ucp_am_lat", "-p", port], { env, stdout: "pipe", stderr: "ignore" });
  let client: ReturnType<typeof Bun.spawn> | null = null;
  const watchdog = setTimeout(() => {
    server.kill(9);
    client?.kill(9);
  }, 30_000);
  try {
    // Wait for "Waiting for connection..." so the client does not race the server's bind.
    const reader = server.stdout.getReader();
    let text = "";
    if (lineBuffered.length === 0) await Bun.sleep(500);
    while (lineBuffered.length > 0 && !text.includes("Waiting for connection")) {
      const { value, done } = await reader.read();
      if (done) return null;
      text += new TextDecoder().decode(value);
    }
    // Keep draining the server's output so it never blocks on a full pipe.
    void (async () => {
      while (!(await reader.read()).done) {
        // discard
      }
    })().catch(() => {});
    client = Bun.spawn(["ucx_perftest", "127.0.0.1", "-t", "ucp_am_lat", "-p", port, "-s", "32", "-n", quick ? "20000" : "200000"], { env, stdout: "pipe", stderr: "ignore" });
    const out = await new Response(client.stdout as ReadableStream).text();
    await client.exited;
    const final = out.split("\n").find((l) => l.startsWith("Final:"));
    return final ? 2 * Number(final.trim().split(/\s+/)[2]) : null;
  } finally {
    clearTimeout(watchdog);
    server.kill(9);
    await server.exited;
  }
}

export async function runUcxBench(quick: boolean, log: (s: string) => void = () => {}): Promise<UcxFigures[]> {
  const out: UcxFigures[] = [];
  for (const [label, tls] of [["tcp", "tcp,self"], ["shm", "shm,self"]] as const) {
    log(`ucx over ${label}: ucx_perftest reference`);
    const perftestRttUs = await perftestRtt(tls, quick);
    log(`ucx over ${label}: hotpath`);
    process.env.UCX_TLS = tls === "shm,self" ? "shm,self,tcp" : tls; // tcp for the connection manager
    const server = await startPeer([SEGMENT_SERVER, "ucx://127.0.0.1:0", "spin"], { UCX_TLS: process.env.UCX_TLS });
    try {
      const conn = (await connect(server.url, { wait: { mode: "spin", spinNs: 0 }, ucx: { rma: true } })) as unknown as UcxConnection;
      const c = new Client<number>(conn, { window: 256 });
      let done = 0;
      c.onResponse = () => void done++;
      const rt = (data: Uint8Array) => {
        const target = done + 1;
        while (c.call(ECHO_METHOD, data, 0) !== SEND_OK) c.poll();
        while (done < target) c.poll();
      };
      const burst = (n: number, data: Uint8Array) => {
        const start = done;
        let sent = 0;
        while (done - start < n) {
          while (sent < n && sent - (done - start) < 64 && c.call(ECHO_METHOD, data, 0) === SEND_OK) sent++;
          c.poll();
        }
      };
      const small = new Uint8Array(32).fill(1);
      const big = new Uint8Array(1 << 20).fill(2);
      const n64 = quick ? 20_000 : 200_000;
      burst(n64, small);
      for (let i = 0; i < 10; i++) rt(big);
      const opts = { min_cpu_time: (quick ? 100 : 1000) * 1e6 };
      const lat = await measure(() => rt(small), opts);
      const b64 = await measure(() => burst(n64, small), { ...opts, max_samples: quick ? 5 : 30 });
      const mib = await measure(() => rt(big), { ...opts, max_samples: quick ? 30 : 300 });
      // One-sided read of 32 bytes from a region the server registered.
      const got: Uint8Array[] = [];
      c.onResponse = (_u, data) => {
        got.push(data.slice());
        done++;
      };
      c.call(REGION_METHOD, new Uint8Array(0), 0);
      while (got.length === 0) c.poll();
      const remote = conn.attachRegion(got[0]!);
      const get = async () => {
        let got = false;
        remote.get(0, 32).then(() => (got = true));
        while (!got) {
          conn.poll();
          await null;
        }
      };
      for (let i = 0; i < 1000; i++) await get();
      const rma = await measure(get, opts);
      out.push({ tls: label, perftestRttUs, p50Us: lat.p50 / 1e3, p99Us: lat.p99 / 1e3, cps64: n64 / (b64.avg / 1e9), mibMs: mib.p50 / 1e6, rmaGetUs: rma.p50 / 1e3 });
      c.close();
    } finally {
      await server.stop();
    }
  }
  return out;
}

export function formatUcxTable(rows: UcxFigures[]): string {
  const fc = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${(v / 1e3).toFixed(0)}k`);
  const lines = [["UCX transport", "perftest am_lat RTT (ref, µs)", "hotpath p50 (µs)", "p50/ref", "p99 (µs)", "calls/s, 64 in flight", "1 MiB echo (ms)", "RMA get 32 B p50 (µs)"]];
  for (const r of rows) {
    lines.push([
      r.tls,
      r.perftestRttUs === null ? "not installed" : r.perftestRttUs.toFixed(2),
      r.p50Us.toFixed(2),
      r.perftestRttUs === null ? "-" : `${(r.p50Us / r.perftestRttUs).toFixed(2)}x`,
      r.p99Us.toFixed(2),
      fc(r.cps64),
      r.mibMs.toFixed(3),
      r.rmaGetUs.toFixed(2),
    ]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  return lines.map((l) => l.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join("\n");
}

if (import.meta.main) {
  const quick = process.argv.includes("--quick");
  const rows = await runUcxBench(quick, (s) => console.error(`… ${s}`));
  console.log(formatUcxTable(rows));
  process.exit(0);
}
