/**
 * The ucx rows' reference: `ucx_perftest -t ucp_am_lat` (UCX's own C ping-pong over active
 * messages) with exactly the row's UCX_TLS, 32-byte messages, server and client as two
 * processes on 127.0.0.1, both busy-polling.
 *
 * What the figure is: perftest's "N%ile" latency column (-R N) of its final line is a
 * percentile of per-iteration latencies, each half of one ping-pong iteration (one-way);
 * doubled it is the N-th percentile of per-iteration round trips. UCX keeps only the last
 * TIMING_QUEUE_SIZE = 2048 iteration times (libperf_int.h; ucx_perf_update fills a ring of that
 * size), so each percentile is over the last 2048 iterations of its run, whatever the run's
 * length: p50 from one run with -R 50 over `iters` iterations, p99 from a second, longer run
 * with -R 99 (so about the 21st largest of its last 2048 round trips; hotpath's rows take p99
 * over all their samples). The second run is longer (as many more iterations as take about
 * `extraS` seconds at the first run's average, at least iters / 2 and at most 50 × iters) for
 * the CPU figure: CPU per round trip on each side is the difference of each process's CPU time
 * (Bun's resourceUsage()) between the two runs, divided by the extra iterations, so start-up,
 * wire-up and warm-up (about the same in both runs) cancel out; NaN (shown as -) when the
 * longer run used no more CPU than the shorter one.
 *
 * Port: perftest takes a port number and prints none back, so the server gets a random port
 * below the kernel's ephemeral range; when it exits before it is waiting for a connection (the
 * port is taken: EADDRINUSE) the run is retried on another random port, PORT_TRIES times.
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

/** Random ports tried per run: one taken port (EADDRINUSE) is rare in 10000..32767, five in a row would mean something else is wrong. */
const PORT_TRIES = 5;

/** A random port in 10000..32767: below Linux's default ephemeral range (32768..60999), so no outgoing connection holds it. */
const randomPort = () => 10_000 + Math.floor(Math.random() * 22_768);

const cpuUs = (p: { resourceUsage(): { cpuTime: { user: number | bigint; system: number | bigint } } | undefined }) => {
  const u = p.resourceUsage();
  return u ? Number(u.cpuTime.user) + Number(u.cpuTime.system) : NaN;
};

/** One perftest run: the doubled -R `rank` percentile (µs) and each side's CPU (µs), or null. */
async function once(tls: string, iters: number, rank: number): Promise<{ rttUs: number; avgRttUs: number; clientUs: number; serverUs: number } | null> {
  for (let i = 0; i < PORT_TRIES; i++) {
    const r = await onceOnPort(tls, iters, rank, String(randomPort()));
    if (r !== "port taken") return r;
  }
  return null;
}

/** once() on one port; "port taken" when the server exited before it was waiting for a connection. */
async function onceOnPort(tls: string, iters: number, rank: number, port: string): Promise<{ rttUs: number; avgRttUs: number; clientUs: number; serverUs: number } | null | "port taken"> {
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
    if (server.exitCode !== null) return "port taken";
    while (lineBuffered.length > 0 && !text.includes("Waiting for connection")) {
      const { value, done } = await reader.read();
      if (done) return "port taken";
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
