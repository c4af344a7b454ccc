/**
 * Debian's `perftest` (ib_send_lat, ib_write_lat, ib_write_bw) as the reference beside hotpath's
 * rdma figures: a server and a client process of the tool on one device port (loopback through
 * the HCA), the client connecting to the server over 127.0.0.1 for perftest's own exchange of QP
 * numbers. perftest opens devices through the system libibverbs: it needs a real device (on the
 * software test fixture it finds none and the figure is "not run" with perftest's own words).
 *
 * Figures: the latency tools print one-way latencies (half a ping-pong); `rttP50Us` /
 * `rttP99Us` are their t_typical (median) and 99% percentile doubled. ib_write_bw gives
 * `bwMBps` (its BW average, MB/s) and `msgRateMpps`.
 *
 *   const r = await ibPerftest("ib_send_lat", { device: "mlx5_0", port: 1, gidIndex: 0, ethernet: true, bytes: 32, iters: 1000 });
 *   if ("notRun" in r) console.log(`not run: ${r.notRun}`);
 *
 * Thread: the main JS thread; both processes are killed by pid when the run ends or times out.
 */

/** A perftest run gets this long (both processes) before it counts as not finished: a 1000-iteration latency run takes well under a second on hardware. */
const RUN_TIMEOUT_MS = 30_000;
/** A random port in 10000..32767: below Linux's default ephemeral range, so no outgoing connection holds it. */
const randomPort = () => 10_000 + Math.floor(Math.random() * 22_768);

export type PerftestTool = "ib_send_lat" | "ib_write_lat" | "ib_write_bw";

export interface PerftestOptions {
  device: string;
  port: number;
  gidIndex: number;
  /** RoCE (Ethernet link layer): perftest needs the GID index (-x). */
  ethernet: boolean;
  bytes: number;
  iters: number;
}

export type PerftestResult = { rttP50Us: number; rttP99Us: number } | { bwMBps: number; msgRateMpps: number } | { notRun: string };

/** The figures line of a latency tool's report: "#bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%". */
export function parseLatency(text: string): { rttP50Us: number; rttP99Us: number } | null {
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)/.exec(line);
    if (m !== null) return { rttP50Us: 2 * Number(m[5]), rttP99Us: 2 * Number(m[8]) };
  }
  return null;
}

/** The figures line of ib_write_bw: "#bytes #iterations BW peak[MB/sec] BW average[MB/sec] MsgRate[Mpps]". */
export function parseBandwidth(text: string): { bwMBps: number; msgRateMpps: number } | null {
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$/.exec(line);
    if (m !== null) return { bwMBps: Number(m[4]), msgRateMpps: Number(m[5]) };
  }
  return null;
}

/** perftest's own reason for giving up: its last non-empty lines (it prints "Did not detect devices" and the like). */
function reasonOf(tool: string, text: string, code: number | null): string {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l.length > 0 && !/^-+$/.test(l));
  const tail = lines.slice(-3).join("; ");
  return `${tool} exited ${code ?? "on a signal"}${tail ? `: ${tail}` : ""}`;
}

/** Runs `tool` as server and client on one port; the figures, or why there are none. */
export async function ibPerftest(tool: PerftestTool, o: PerftestOptions): Promise<PerftestResult> {
  const path = Bun.which(tool);
  if (path === null) return { notRun: `${tool} is not installed (apt-get install perftest)` };
  const args = ["-d", o.device, "-i", String(o.port), "-s", String(o.bytes), "-n", String(o.iters), "-F"];
  if (o.ethernet) args.push("-x", String(o.gidIndex));
  const port = String(randomPort());
  const server = Bun.spawn([path, ...args, "-p", port], { stdout: "pipe", stderr: "pipe" });
  const procs = [server];
  const timer = setTimeout(() => procs.forEach((p) => p.exitCode === null && p.kill(9)), RUN_TIMEOUT_MS);
  try {
    // The server prints its banner once it listens; give it a moment, then connect (perftest's
    // client retries the TCP connect for a while on its own).
    await Promise.race([server.exited, Bun.sleep(300)]);
    if (server.exitCode !== null) {
      const text = (await new Response(server.stdout).text()) + (await new Response(server.stderr).text());
      return { notRun: reasonOf(tool, text, server.exitCode) };
    }
    const client = Bun.spawn([path, ...args, "-p", port, "127.0.0.1"], { stdout: "pipe", stderr: "pipe" });
    procs.push(client);
    const [out, err, code] = await Promise.all([new Response(client.stdout).text(), new Response(client.stderr).text(), client.exited]);
    const serverText = (await Promise.race([server.exited.then(async () => (await new Response(server.stdout).text()) + (await new Response(server.stderr).text())), Bun.sleep(2000).then(() => "")])) as string;
    if (code !== 0) return { notRun: reasonOf(tool, `${out}\n${err}\n${serverText}`, code) };
    const fig = tool === "ib_write_bw" ? parseBandwidth(out) : parseLatency(out);
    return fig ?? { notRun: `${tool}: no figures line in its output` };
  } finally {
    clearTimeout(timer);
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill(9);
  }
}
