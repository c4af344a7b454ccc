/**
 * CPU time of a benchmark row's two sides, read around timed windows (never inside them).
 *
 * Client: process.cpuUsage() of this process (user + system, all its threads). Server in its
 * own process: the sum over its threads of /proc/<pid>/task/<tid>/schedstat's first field (ns
 * on a CPU), or /proc/<pid>/stat utime + stime (clock ticks) where schedstat is missing.
 * Server in a Worker of this process: that Worker's thread (found by name, "Worker", among the
 * threads that appeared when it started), and the client is this process minus that thread.
 *
 *   const probe = processProbe(peer.proc.pid); const a = probe.read(); ...; const b = probe.read();
 */

import { readFileSync, readdirSync } from "node:fs";

export interface CpuReading {
  clientUs: number;
  serverUs: number;
}

/** Reads both sides' cumulative CPU (µs). Main thread only; allocates (call it outside timed calls). */
export interface CpuProbe {
  read(): CpuReading;
  /** How the server side is measured, for the report. */
  readonly server: string;
}

/** Linux's USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s. */
const CLOCK_TICKS_PER_S = 100;

const clientUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

function threadNs(pid: number, tid: string): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
  } catch {
    return 0; // the thread ended
  }
}

/** µs of CPU used by all threads of `pid` so far. */
export function processCpuUs(pid: number): number {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) ns += threadNs(pid, tid);
    if (ns > 0) return ns / 1e3;
  } catch {
    // no schedstat here: fall back to stat
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1e6) / CLOCK_TICKS_PER_S; // fields 14, 15: utime, stime
  } catch {
    return 0;
  }
}

/** Server in its own process `pid`. */
export function processProbe(pid: number): CpuProbe {
  return { server: `process ${pid} (/proc, all threads)`, read: () => ({ clientUs: clientUs(), serverUs: processCpuUs(pid) }) };
}

/** No server process we can see (the client does all the work it can measure). */
export function clientOnlyProbe(why: string): CpuProbe {
  return { server: why, read: () => ({ clientUs: clientUs(), serverUs: NaN }) };
}

/** Thread ids of this process named "Worker" (Bun's Worker threads). */
export function workerThreads(): Set<string> {
  const out = new Set<string>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim() === "Worker") out.add(tid);
    } catch {
      // ended meanwhile
    }
  }
  return out;
}

/** Server in a Worker started after `before` was taken (workerThreads()). */
export function workerProbe(before: Set<string>): CpuProbe {
  const mine = [...workerThreads()].filter((t) => !before.has(t));
  const pid = process.pid;
  const serverUs = () => mine.reduce((s, tid) => s + threadNs(pid, tid), 0) / 1e3;
  return {
    server: mine.length > 0 ? `Worker thread ${mine.join(",")} of this process (schedstat); client = this process minus it` : "Worker thread not found: server CPU unknown, client = whole process",
    read() {
      const s = mine.length > 0 ? serverUs() : NaN;
      return { clientUs: clientUs() - (Number.isNaN(s) ? 0 : s), serverUs: s };
    },
  };
}
