/**
 * The ucx rows' reference: `ucx_perftest -t ucp_am_lat` (UCX's own C ping-pong over active
 * messages) with exactly the row's UCX_TLS, 32-byte messages, server and client as two
 * processes on 127.0.0.1, both busy-polling.
 *
 * What the figure is: perftest's "N%ile" latency column (-R N) of its final line is a
 * percentile of its per-iteration latencies, each half of one ping-pong iteration (one-way);
 * doubled it is the N-th percentile of per-iteration round trips, the statistic of hotpath's
 * rows. p50 is one run with -R 50 over `iters` iterations, p99 a second, longer run with -R 99
 * (as many more iterations as take about `extraS` seconds at the first run's average, at least
 * iters / 2 and at most 50 × iters). CPU per round trip on each side: the difference of each
 * process's CPU time (Bun's resourceUsage()) between the two runs, divided by the extra
 * iterations, so start-up, wire-up and warm-up (about the same in both runs) cancel out; NaN
 * (shown as -) when the longer run used no more CPU than the shorter one.
 *
 *   const r = await perftest("shm,self,tcp", 20_000, 0.3);   // null when ucx_perftest is missing
 */

export interface PerftestFigures {
  p50Us: number;
  p99Us: number;
  clientCpuUs: number;
  serverCpuUs: number;
  /** Iterations of the p50 run and of the longer p99 run. */
  iters: number;
  itersP99: number;
}

/** A TCP port nothing listens on right now (perftest takes a port number, not a socket). */
function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

const cpuUs = (p: { resourceUsage(): { cpuTime: { user: number | bigint; system: number | bigint } } | undefined }) => {
  const u = p.resourceUsage();
  return u ? Number(u.cpuTime.user) + Number(u.cpuTime.system) : NaN;
};

/** One perftest run: the doubled -R `rank` percentile (µs) and each side's CPU (µs), or null. */
async function once(tls: string, iters: number, rank: number): Promise<{ rttUs: number; avgRttUs: number; clientUs: number; serverUs: number } | null> {
  const port = String(freePort());
  const env = { ...process.env, UCX_TLS: tls };
  // stdbuf -oL: the server's "Waiting for connection" line must arrive before the client starts.
  const lineBuffered = Bun.which("stdbuf") ? ["stdbuf", "-oL"] : [];
  const server = Bun.spawn([...lineBuffered, "ucx_perftest", "-t", "ucp_am_lat", "-p", port, "-R", String(rank)], { env, stdout: "pipe", stderr: "ignore" });
  let client: ReturnType<typeof Bun.spawn> | null = null;
  const watchdog = setTimeout(() => {
    server.kill(9);
    client?.kill(9);
  }, 30_000);
  try {
    const reader = server.stdout.getReader();
    let text = "";
    if (lineBuffered.length === 0) await Bun.sleep(500);
    while (lineBuffered.length > 0 && !text.includes("Waiting for connection")) {
      const { value, done } = await reader.read();
      if (done) return null;
      text += new TextDecoder().decode(value);
    }
    void (async () => {
      while (!(await reader.read()).done) {
        // drained so the server never blocks on a full pipe
      }
    })().catch(() => {});
    client = Bun.spawn(["ucx_perftest", "127.0.0.1", "-t", "ucp_am_lat", "-p", port, "-s", "32", "-n", String(iters), "-R", String(rank), "-f"], { env, stdout: "pipe", stderr: "ignore" });
    const out = await new Response(client.stdout as ReadableStream).text();
    await client.exited;
    // The server ends after its one test; give it a moment, then the finally below kills it.
    await Promise.race([server.exited, Bun.sleep(2000)]);
    server.kill(9);
    await server.exited;
    const final = out
      .split("\n")
      .map((l) => l.replace(/^Final:/, "").trim().split(/\s+/))
      .filter((f) => f.length >= 3 && /^\d+$/.test(f[0]!) && Number(f[0]) === iters)
      .pop();
    if (final === undefined) return null;
    return { rttUs: 2 * Number(final[1]), avgRttUs: 2 * Number(final[2]), clientUs: cpuUs(client), serverUs: cpuUs(server) };
  } finally {
    clearTimeout(watchdog);
    server.kill(9);
    await server.exited;
  }
}

/** CPU per extra iteration; NaN when the longer run used no more (start-up varied more than the extra iterations cost). */
const perIter = (deltaUs: number, extra: number) => (deltaUs > 0 ? deltaUs / extra : NaN);

/** The reference figures for one UCX_TLS, or null when ucx_perftest is not installed or a run failed. */
export async function perftest(tls: string, iters: number, extraS: number): Promise<PerftestFigures | null> {
  if (Bun.which("ucx_perftest") === null) return null;
  const a = await once(tls, iters, 50);
  if (!a) return null;
  const extra = Math.max(Math.ceil(iters / 2), Math.min(50 * iters, Math.round((extraS * 1e6) / Math.max(a.avgRttUs, 0.05))));
  const b = await once(tls, iters + extra, 99);
  if (!b) return null;
  return { p50Us: a.rttUs, p99Us: b.rttUs, clientCpuUs: perIter(b.clientUs - a.clientUs, extra), serverCpuUs: perIter(b.serverUs - a.serverUs, extra), iters, itersP99: iters + extra };
}
