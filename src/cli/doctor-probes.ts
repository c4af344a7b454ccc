/**
 * What `hotpath doctor` looks at, as plain data: each probe asks the machine once (a file in
 * /proc or /sys, statfs, a tool's output, a real memfd, a real socket directory, libucp itself)
 * and returns what it found, never a verdict; doctor.ts judges and formats. Probes that need a
 * tool which is not installed return null for it, so the report can say how to get it.
 *
 * Example:
 *   const facts = await gatherFacts();
 *   facts.devShm   // { totalBytes, freeBytes } of /dev/shm (statfs), or null
 *
 * Thread: the main JS thread (spawns tools synchronously, with a timeout). Owns nothing after
 * it returns: every fd, socket and UCX context it opens is closed before it returns.
 */

import { readdirSync, readFileSync, statfsSync } from "node:fs";
import { release } from "node:os";
import { describeThrown } from "../errors.ts";
import { closeFd, fileSeals, LINUX, memfdCreate, pidfdOpen } from "../ffi/libc.ts";
import { ucpUnavailableReason, ucpVersion, UcpContext, type UcpVersion } from "../ffi/ucp.ts";
import { bindSocket, socketDir } from "../segment/socket-dir.ts";
import { transports } from "../connect/registry.ts";

/** A tool doctor runs (ucx_info, ibv_devinfo) gets this long before it counts as failed: they answer in milliseconds. */
const TOOL_TIMEOUT_MS = 10_000;

/** Everything doctor found on this machine. */
export interface DoctorFacts {
  bun: { version: string; minimum: string | null };
  platform: string;
  arch: string;
  /** uname -r, e.g. "6.8.0-45-generic". */
  kernel: string;
  /** Each registered transport's own answer (TransportFactory.unavailableReason). */
  registry: Array<{ scheme: string; unavailableReason: string | null }>;
  devShm: { totalBytes: number; freeBytes: number } | null;
  /** RLIMIT_MEMLOCK from /proc/self/limits; null for "unlimited". */
  memlock: { softBytes: number | null; hardBytes: number | null } | null;
  hugePages: { total: number; free: number; sizeBytes: number } | null;
  socketDir: { path: string | null; error: string | null };
  memfd: { sealed: boolean; error: string | null };
  pidfd: { ok: boolean };
  /** /proc/sys/kernel/yama/ptrace_scope, or null without Yama. */
  ptraceScope: number | null;
  ucx: {
    /** Null when libucp loads, else why not (ucpUnavailableReason). */
    loadError: string | null;
    version: UcpVersion | null;
    /** Where the dynamic loader found libucp (from /proc/self/maps). */
    libraryPath: string | null;
    /** Whether a UCP context and worker could be made and closed, or why not. */
    contextError: string | null;
    /** `ucx_info -d`: transport name → devices; null when ucx_info is not installed. */
    info: { path: string; transports: Record<string, string[]>; error: string | null } | null;
  };
  rdma: {
    /** Entries of /sys/class/infiniband. */
    devices: string[];
    /** `ibv_devinfo`: one entry per HCA with its ports' states; null when not installed. */
    ibvDevinfo: { path: string; hcas: Array<{ name: string; ports: Array<{ port: number; state: string }> }>; error: string | null } | null;
  };
}

/** The `engines.bun` range of the package this command belongs to, e.g. ">=1.1.30", or null. */
export function bunMinimum(): string | null {
  // The nearest package.json named "hotpath" above this module: src/cli/ in a clone, dist/cli/
  // or a shared chunk in dist/ once built.
  for (let up = "../"; up.length <= "../../../".length; up += "../") {
    try {
      const pkg = JSON.parse(readFileSync(new URL(`${up}package.json`, import.meta.url), "utf8")) as { name?: string; engines?: { bun?: string } };
      if (pkg.name === "hotpath") return pkg.engines?.bun ?? null;
    } catch {
      // not here: one level up
    }
  }
  return null;
}

/** statfs(2) of `path`: total and free bytes (free: available to an unprivileged user), or null. */
export function statfsBytes(path: string): { totalBytes: number; freeBytes: number } | null {
  try {
    const s = statfsSync(path);
    return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
  } catch {
    return null;
  }
}

/** RLIMIT_MEMLOCK of this process, from /proc/self/limits ("Max locked memory"). */
export function memlockLimit(): DoctorFacts["memlock"] {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max locked memory"));
    if (line === undefined) return null;
    const [soft, hard] = line.slice("Max locked memory".length).trim().split(/\s+/);
    const bytes = (v: string | undefined) => (v === undefined || v === "unlimited" ? null : Number(v));
    return { softBytes: bytes(soft), hardBytes: bytes(hard) };
  } catch {
    return null;
  }
}

/** HugePages_Total, HugePages_Free and Hugepagesize from /proc/meminfo. */
export function hugePages(): DoctorFacts["hugePages"] {
  try {
    const info = readFileSync("/proc/meminfo", "utf8");
    const field = (name: string) => {
      const m = new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(info);
      return m === null ? null : Number(m[1]);
    };
    const [total, free, sizeKb] = [field("HugePages_Total"), field("HugePages_Free"), field("Hugepagesize")];
    if (total === null || free === null || sizeKb === null) return null;
    return { total, free, sizeBytes: sizeKb * 1024 };
  } catch {
    return null;
  }
}

/**
 * The socket directory shm and inproc meet in, checked the way a listener checks it (created
 * if missing, then trusted only if it is ours and nobody else may write to it), and used: a
 * socket is bound there under a name of this process and removed again.
 */
export async function probeSocketDir(uid = process.geteuid!()): Promise<DoctorFacts["socketDir"]> {
  let dir: string;
  try {
    dir = socketDir("hotpath doctor", uid, "listen");
  } catch (e) {
    return { path: null, error: describeThrown(e) };
  }
  try {
    const name = `${dir}/doctor-${process.pid}.sock`;
    const bound = await bindSocket("hotpath doctor", name, (p) => Bun.listen({ unix: p, socket: { data() {} } }));
    bound.close(true);
    return { path: dir, error: null };
  } catch (e) {
    return { path: dir, error: describeThrown(e) };
  }
}

/** A sealed memfd as the shm transport makes its segments: created, its seals read back, closed. */
export function probeMemfd(): DoctorFacts["memfd"] {
  const want = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL;
  let fd = -1;
  try {
    fd = memfdCreate("hotpath-doctor", 4096, true);
    const seals = fileSeals(fd);
    return (seals & want) === want ? { sealed: true, error: null } : { sealed: false, error: `memfd seals are 0x${seals.toString(16)}, expected 0x${want.toString(16)}` };
  } catch (e) {
    return { sealed: false, error: describeThrown(e) };
  } finally {
    if (fd >= 0) closeFd(fd);
  }
}

/** Whether pidfd_open(2) works here (on this process). */
export function probePidfd(): DoctorFacts["pidfd"] {
  const fd = pidfdOpen(process.pid);
  if (fd >= 0) closeFd(fd);
  return { ok: fd >= 0 };
}

/** Yama's ptrace_scope (1 and above: pidfd_getfd only on descendants, so shm servers take the /proc path). */
function ptraceScope(): number | null {
  try {
    return Number(readFileSync("/proc/sys/kernel/yama/ptrace_scope", "utf8").trim());
  } catch {
    return null;
  }
}

/** Runs `tool args` if it is on PATH: its stdout, or why it failed; null when it is not installed. */
function runTool(tool: string, args: string[]): { path: string; stdout: string; error: string | null } | null {
  const path = Bun.which(tool);
  if (path === null) return null;
  try {
    const r = Bun.spawnSync([path, ...args], { stdout: "pipe", stderr: "pipe", timeout: TOOL_TIMEOUT_MS });
    const stdout = r.stdout.toString();
    if (r.exitCode === 0) return { path, stdout, error: null };
    const why = r.stderr.toString().trim().split("\n")[0] || `exit ${r.exitCode ?? r.signalCode}`;
    return { path, stdout, error: `${tool} ${args.join(" ")} failed: ${why}` };
  } catch (e) {
    return { path, stdout: "", error: describeThrown(e) };
  }
}

/** `ucx_info -d` read into transport → devices ("# Transport: tcp" then "# Device: lo" lines). */
export function parseUcxInfo(text: string): Record<string, string[]> {
  const out: Record<string, string[]> = Object.create(null);
  let transport: string | null = null;
  for (const line of text.split("\n")) {
    const t = /^#\s+Transport:\s+(\S+)/.exec(line);
    if (t !== null) {
      transport = t[1]!;
      out[transport] ??= [];
      continue;
    }
    const d = /^#\s+Device:\s+(\S+)/.exec(line);
    if (d !== null && transport !== null && !out[transport]!.includes(d[1]!)) out[transport]!.push(d[1]!);
  }
  return out;
}

/** `ibv_devinfo` read into HCAs ("hca_id:" lines) and their ports' states ("port:" then "state:"). */
export function parseIbvDevinfo(text: string): Array<{ name: string; ports: Array<{ port: number; state: string }> }> {
  const hcas: Array<{ name: string; ports: Array<{ port: number; state: string }> }> = [];
  let port = 0;
  for (const line of text.split("\n")) {
    const h = /^hca_id:\s+(\S+)/.exec(line);
    if (h !== null) hcas.push({ name: h[1]!, ports: [] });
    const p = /^\s+port:\s+(\d+)/.exec(line);
    if (p !== null) port = Number(p[1]);
    const s = /^\s+state:\s+(\S+)/.exec(line);
    if (s !== null && hcas.length > 0) hcas[hcas.length - 1]!.ports.push({ port, state: s[1]! });
  }
  return hcas;
}

/** The path libucp was mapped from in this process (it is loaded by then), from /proc/self/maps. */
function loadedLibraryPath(soname: string): string | null {
  try {
    const line = readFileSync("/proc/self/maps", "utf8")
      .split("\n")
      .find((l) => l.includes(`/${soname}`));
    return line === undefined ? null : line.slice(line.indexOf("/"));
  } catch {
    return null;
  }
}

/** libucp: loaded?, its version and path, and a context with a worker made and closed. */
export function probeUcx(): DoctorFacts["ucx"] {
  const loadError = ucpUnavailableReason();
  let contextError: string | null = null;
  if (loadError === null) {
    try {
      const ctx = UcpContext.create({ rma: false });
      try {
        ctx.createWorker();
      } finally {
        ctx.close();
      }
    } catch (e) {
      contextError = describeThrown(e);
    }
  }
  const tool = runTool("ucx_info", ["-d"]);
  return {
    loadError,
    version: ucpVersion(),
    libraryPath: loadError === null ? loadedLibraryPath("libucp.so") : null,
    contextError,
    info: tool === null ? null : { path: tool.path, transports: parseUcxInfo(tool.stdout), error: tool.error },
  };
}

/** RDMA devices the kernel knows (/sys/class/infiniband) and what ibv_devinfo says of them. */
export function probeRdma(): DoctorFacts["rdma"] {
  let devices: string[] = [];
  try {
    devices = readdirSync("/sys/class/infiniband").sort();
  } catch {
    // no such directory: no RDMA device (or no RDMA support in this kernel)
  }
  const tool = runTool("ibv_devinfo", []);
  return { devices, ibvDevinfo: tool === null ? null : { path: tool.path, hcas: parseIbvDevinfo(tool.stdout), error: tool.error } };
}

/** Runs every probe once. */
export async function gatherFacts(): Promise<DoctorFacts> {
  return {
    bun: { version: Bun.version, minimum: bunMinimum() },
    platform: process.platform,
    arch: process.arch,
    kernel: release(),
    registry: await transports(),
    devShm: statfsBytes("/dev/shm"),
    memlock: memlockLimit(),
    hugePages: hugePages(),
    socketDir: await probeSocketDir(),
    memfd: probeMemfd(),
    pidfd: probePidfd(),
    ptraceScope: ptraceScope(),
    ucx: probeUcx(),
    rdma: probeRdma(),
  };
}
