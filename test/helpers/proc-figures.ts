/**
 * Resource figures of a process, read from /proc (Linux): open fds, mappings of hotpath shm
 * segments (memfds named hotpath-*), /dev/shm entries named hotpath-* (sessions make none; a
 * stray one is a leak), VmRSS, threads and CPU time. Used by the churn
 * test and the soak to show that what peers leave behind returns to baseline.
 *
 *   const before = procFigures();          // this process
 *   const server = procFigures(peer.pid);  // another process of this user
 *
 * Threading: any thread; every call reads /proc afresh and allocates its result.
 */

import { readdirSync, readFileSync, readlinkSync } from "node:fs";

export interface ProcFigures {
  /** Entries of /proc/<pid>/fd. */
  fds: number;
  /** What the fds are, by kind ("socket", "anon_inode:[eventfd]", "memfd:hotpath", "/dev/shm" …), counted. */
  fdKinds: Record<string, number>;
  /** Lines of /proc/<pid>/maps that map a hotpath session segment (/memfd:hotpath-*, or a /dev/shm/hotpath-* object). */
  hotpathMaps: number;
  /** Lines of /proc/<pid>/maps that map any other /dev/shm object (e.g. UCX's own segments). */
  otherShmMaps: number;
  /** /dev/shm entries whose name starts with hotpath- (host-wide, not per process). */
  devShmHotpath: number;
  /** Resident set, MiB (VmRSS). */
  rssMiB: number;
  threads: number;
  /** User + system CPU time so far, ms (clock-tick resolution, 10 ms on most kernels). */
  cpuMs: number;
}

/** USER_HZ: Linux reports /proc/<pid>/stat times in these ticks; 100 on every mainstream arch. */
const CLOCK_TICKS_PER_S = 100;

function fdKind(link: string): string {
  if (link.startsWith("socket:")) return "socket";
  if (link.startsWith("pipe:")) return "pipe";
  if (link.startsWith("/dev/shm/")) return "/dev/shm";
  if (link.startsWith("/memfd:")) return link.startsWith("/memfd:hotpath-") ? "memfd:hotpath" : "memfd";
  return link.replace(/\d+/g, "N");
}

/** Figures of `pid` (default: this process). Throws if the process is gone. */
export function procFigures(pid: number | "self" = "self"): ProcFigures {
  const base = `/proc/${pid}`;
  const fdNames = readdirSync(`${base}/fd`);
  const fdKinds: Record<string, number> = {};
  for (const fd of fdNames) {
    let link: string;
    try {
      link = readlinkSync(`${base}/fd/${fd}`);
    } catch {
      continue; // closed while we looked (our own readdir fd, for one)
    }
    const k = fdKind(link);
    fdKinds[k] = (fdKinds[k] ?? 0) + 1;
  }
  let hotpathMaps = 0;
  let otherShmMaps = 0;
  for (const line of readFileSync(`${base}/maps`, "utf8").split("\n")) {
    if (line.includes("/memfd:hotpath-")) {
      hotpathMaps++;
      continue;
    }
    const at = line.indexOf("/dev/shm/");
    if (at < 0) continue;
    if (line.startsWith("/dev/shm/hotpath-", at)) hotpathMaps++;
    else otherShmMaps++;
  }
  const status = readFileSync(`${base}/status`, "utf8");
  const rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
  const stat = readFileSync(`${base}/stat`, "utf8");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuTicks = Number(rest[11]) + Number(rest[12]);
  return {
    fds: fdNames.length,
    fdKinds,
    hotpathMaps,
    otherShmMaps,
    devShmHotpath: devShmEntries("hotpath-").length,
    rssMiB: rssKiB / 1024,
    threads,
    cpuMs: (cpuTicks * 1000) / CLOCK_TICKS_PER_S,
  };
}

/** Names in /dev/shm starting with `prefix`. */
export function devShmEntries(prefix: string): string[] {
  try {
    return readdirSync("/dev/shm").filter((f) => f.startsWith(prefix));
  } catch {
    return [];
  }
}

/** Least-squares slope of y over x (units of y per unit of x); 0 with fewer than 2 points. */
export function slope(xs: number[], ys: number[]): number {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (let i = 0; i < n; i++) {
    sx += xs[i]!;
    sy += ys[i]!;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}
