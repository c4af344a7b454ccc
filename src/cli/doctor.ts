/**
 * `hotpath doctor`: per transport, whether it can run on this machine and why not, with the
 * install line for what is missing. The facts come from doctor-probes.ts; this file judges them
 * (diagnose) and writes them out (formatText, or the JSON report for machines).
 *
 * Each check is one of:
 *   ok       works
 *   info     a fact worth knowing (sizes, limits, the devices found); never a problem
 *   warn     works, but worse than it could (a fallback path, a low limit)
 *   missing  not installed here: the transport is unavailable, with the line that installs it
 *   broken   installed, yet it fails
 * A section is "broken" if any check is, else "unavailable" if any is missing, else "ok".
 *
 * Exit status (DoctorReport.exitCode): 0 when every transport that is installed works, even if some
 * are not installed (ucx without libucp is a choice, not breakage); 1 when something installed
 * is broken (a Bun older than the package's engines range, a socket directory that cannot be
 * created or trusted, memfd sealing refused, libucp that loads but cannot make a context, a
 * transport that says it cannot run although what it needs is there).
 *
 * Example:
 *   const report = diagnose(await gatherFacts());
 *   console.log(formatText(report));   // or JSON.stringify(report)
 *
 * Thread: the main JS thread of the `hotpath` command.
 */

import type { DoctorFacts } from "./doctor-probes.ts";

export type CheckStatus = "ok" | "info" | "warn" | "missing" | "broken";

export interface DoctorCheck {
  /** Short name: "libucp", "socket directory". */
  name: string;
  status: CheckStatus;
  detail: string;
  /** What to do about it (an install line, a command), where there is something to do. */
  fix?: string;
}

export interface DoctorSection {
  /** "bun", a transport's scheme ("tcp", "shm", …); "rdma" covers rdma:// and the devices ucx can use. */
  name: string;
  /** The registered schemes this section speaks for. */
  schemes: string[];
  status: "ok" | "unavailable" | "broken";
  checks: DoctorCheck[];
}

export interface DoctorReport {
  /** True when nothing installed is broken (exit status 0). */
  ok: boolean;
  exitCode: 0 | 1;
  sections: DoctorSection[];
  facts: DoctorFacts;
}

/** Below this RLIMIT_MEMLOCK, RDMA memory registration (which pins pages) fails for any sizeable buffer; UCX's own guidance is "unlimited". */
const LOW_MEMLOCK_BYTES = 64 << 20;
/** SO_PEERPIDFD arrived in Linux 6.5, pidfd_getfd in 5.6, pidfd_open in 5.3. */
const KERNEL_SO_PEERPIDFD: [number, number] = [6, 5];
const KERNEL_PIDFD_GETFD: [number, number] = [5, 6];

const APT_UCX = "apt-get install libucx0 (Debian/Ubuntu; other systems: the UCX package, or HOTPATH_LIBUCP=/path/to/libucp.so.0)";
const APT_UCX_UTILS = "apt-get install ucx-utils (Debian/Ubuntu) for ucx_info";
const APT_RDMA = "apt-get install rdma-core libibverbs1 ibverbs-providers librdmacm1 (Debian/Ubuntu), plus the NIC's driver";
const APT_IBV_UTILS = "apt-get install ibverbs-utils (Debian/Ubuntu) for ibv_devinfo";

/** "12.3 GiB" for a byte count. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

/** Parses "1.2.3" (any suffix ignored) into numbers; missing parts are 0. */
function versionParts(v: string): number[] {
  return v
    .replace(/^[^\d]*/, "")
    .split(/[.-]/)
    .slice(0, 3)
    .map((x) => Number.parseInt(x, 10) || 0);
}

function compareVersions(a: string, b: string): number {
  const [x, y] = [versionParts(a), versionParts(b)];
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

/** Whether `version` satisfies an engines range of the form ">=x.y.z" (other forms: true, unjudged). */
export function satisfiesMinimum(version: string, range: string): boolean {
  const m = /^\s*>=\s*(\S+)\s*$/.exec(range);
  return m === null || compareVersions(version, m[1]!) >= 0;
}

function kernelAtLeast(kernel: string, [major, minor]: [number, number]): boolean {
  const [a = 0, b = 0] = versionParts(kernel);
  return a > major || (a === major && b >= minor);
}

function section(name: string, schemes: string[], checks: DoctorCheck[]): DoctorSection {
  const status = checks.some((c) => c.status === "broken") ? "broken" : checks.some((c) => c.status === "missing") ? "unavailable" : "ok";
  return { name, schemes, status, checks };
}

/** The registry's own answer for `schemes`: "missing" when one cannot run (with its reason), unless `installed` says what it needs is there (then "broken"). */
function registryChecks(f: DoctorFacts, schemes: string[], installed: boolean): DoctorCheck[] {
  return schemes.map((scheme) => {
    const entry = f.registry.find((r) => r.scheme === scheme);
    const reason = entry === undefined ? `no transport registered for ${scheme}://` : entry.unavailableReason;
    if (reason === null) return { name: `${scheme}://`, status: "ok", detail: "the transport says it can run here" };
    return { name: `${scheme}://`, status: installed ? "broken" : "missing", detail: reason };
  });
}

function socketDirCheck(f: DoctorFacts): DoctorCheck {
  const s = f.socketDir;
  if (s.error === null) return { name: "socket directory", status: "ok", detail: `${s.path}: trusted (ours, nobody else may write), a socket bound there and removed` };
  return { name: "socket directory", status: "broken", detail: s.error, fix: "see the message: remove or chmod 0711 the directory, or run as the user who owns it" };
}

function bunSection(f: DoctorFacts): DoctorSection {
  const { version, minimum } = f.bun;
  const checks: DoctorCheck[] = [];
  if (minimum === null) checks.push({ name: "bun", status: "info", detail: `Bun ${version} (the package's engines range was not found)` });
  else if (satisfiesMinimum(version, minimum)) checks.push({ name: "bun", status: "ok", detail: `Bun ${version} (the package needs ${minimum})` });
  else checks.push({ name: "bun", status: "broken", detail: `Bun ${version} is older than the package needs (${minimum})`, fix: "bun upgrade" });
  const linux = f.platform === "linux";
  checks.push({ name: "system", status: linux ? "info" : "warn", detail: `${f.platform} ${f.arch}, kernel ${f.kernel}${linux ? "" : " (shm, inproc and ucx need Linux)"}` });
  return section("bun", [], checks);
}

function tcpSection(f: DoctorFacts): DoctorSection {
  const schemes = f.registry.map((r) => r.scheme).filter((s) => s === "tcp" || s === "tcps" || s === "tls");
  const checks = registryChecks(f, schemes, true);
  checks.push({ name: "TLS", status: "info", detail: "built into Bun (tcps://, tls://); no OpenSSL needed at runtime" });
  return section("tcp", schemes, checks);
}

function shmSection(f: DoctorFacts): DoctorSection {
  const linux = f.platform === "linux";
  const checks = registryChecks(f, ["shm"], linux);
  if (!linux) return section("shm", ["shm"], checks);
  checks.push(socketDirCheck(f));
  checks.push(
    f.memfd.sealed
      ? { name: "memfd", status: "ok", detail: "a memfd created and sealed (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), as segments are" }
      : { name: "memfd", status: "broken", detail: `sealed memfds do not work here: ${f.memfd.error}`, fix: "shm needs memfd_create with sealing (Linux 3.17+, not blocked by a seccomp profile)" },
  );
  checks.push(
    f.pidfd.ok
      ? { name: "pidfd", status: "ok", detail: "pidfd_open works: dead peers are seen in spin and blocking loops too" }
      : { name: "pidfd", status: "warn", detail: `pidfd_open fails (kernel ${f.kernel}; Linux 5.3+ has it): a dead peer is seen only through its control socket` },
  );
  const getfd = kernelAtLeast(f.kernel, KERNEL_PIDFD_GETFD);
  const scope = f.ptraceScope;
  checks.push({
    name: "segment handover",
    status: getfd ? "info" : "warn",
    detail:
      (getfd ? `pidfd_getfd (kernel ${f.kernel})` : `kernel ${f.kernel} has no pidfd_getfd (5.6+): servers open /proc/<pid>/fd instead`) +
      (kernelAtLeast(f.kernel, KERNEL_SO_PEERPIDFD) ? ", peer pidfds from SO_PEERPIDFD" : ", peer pidfds from pidfd_open (SO_PEERPIDFD needs 6.5+)") +
      (scope !== null && scope >= 1 ? `; Yama ptrace_scope ${scope}: pidfd_getfd is refused for non-descendants, servers take the /proc path` : ""),
  });
  checks.push(
    f.devShm === null
      ? { name: "/dev/shm", status: "info", detail: "not mounted (shm segments are memfds and do not need it; the benchmarks' POSIX shm names do)" }
      : { name: "/dev/shm", status: "info", detail: `${formatBytes(f.devShm.totalBytes)}, ${formatBytes(f.devShm.freeBytes)} free (${f.devShm.totalBytes} / ${f.devShm.freeBytes} bytes; segments are memfds, counted as shared memory, not here)` },
  );
  const hp = f.hugePages;
  if (hp !== null) checks.push({ name: "huge pages", status: "info", detail: `${hp.free} of ${hp.total} free, ${formatBytes(hp.sizeBytes)} each (segments use normal pages)` });
  return section("shm", ["shm"], checks);
}

function inprocSection(f: DoctorFacts): DoctorSection {
  const linux = f.platform === "linux";
  const checks = registryChecks(f, ["inproc"], linux);
  if (linux) checks.push(socketDirCheck(f));
  return section("inproc", ["inproc"], checks);
}

function memlockText(f: DoctorFacts): string {
  const m = f.memlock;
  if (m === null) return "unknown (/proc/self/limits unreadable)";
  const v = (b: number | null) => (b === null ? "unlimited" : `${formatBytes(b)} (${b} bytes)`);
  return `soft ${v(m.softBytes)}, hard ${v(m.hardBytes)}`;
}

/** "; UCX_* set: UCX_TLS=…" for the variables the environment sets, or "". */
function ucxEnvText(): string {
  const set = Object.keys(process.env)
    .filter((k) => k.startsWith("UCX_"))
    .sort()
    .map((k) => `${k}=${process.env[k]}`);
  return set.length === 0 ? "" : `; UCX_* set: ${set.join(" ")}`;
}

function ucxSection(f: DoctorFacts): DoctorSection {
  const u = f.ucx;
  const checks: DoctorCheck[] = [];
  if (u.loadError !== null) {
    checks.push({ name: "libucp", status: "missing", detail: u.loadError, fix: APT_UCX });
    return section("ucx", ["ucx"], checks);
  }
  const v = u.version;
  checks.push({ name: "libucp", status: "ok", detail: `UCX ${v === null ? "(version unknown)" : v.text}${u.libraryPath === null ? "" : ` from ${u.libraryPath}`}` });
  checks.push(
    u.contextError === null
      ? { name: "context", status: "ok", detail: "a UCP context and worker made and closed" }
      : { name: "context", status: "broken", detail: `libucp loads but cannot start: ${u.contextError}${ucxEnvText()}`, fix: "check the UCX_* variables: UCX_TLS must name transports this UCX has (ucx_info -d lists them)" },
  );
  checks.push(...registryChecks(f, ["ucx"], true));
  if (u.info === null) {
    checks.push({ name: "ucx_info", status: "info", detail: "not installed: UCX's transports cannot be listed", fix: APT_UCX_UTILS });
  } else {
    const names = Object.keys(u.info.transports);
    const list = names.map((t) => `${t} (${u.info!.transports[t]!.join(", ")})`).join(", ");
    if (u.info.error !== null) checks.push({ name: "ucx_info", status: "warn", detail: u.info.error });
    else checks.push({ name: "UCX transports", status: "info", detail: names.length > 0 ? list : "none listed by ucx_info -d" });
  }
  const level = process.env.UCX_LOG_LEVEL;
  checks.push({ name: "UCX logs", status: "info", detail: level === undefined ? "quiet (fatal only); set UCX_LOG_LEVEL=warn (or info) to see UCX's own lines" : `UCX_LOG_LEVEL=${level}, as set` });
  checks.push({ name: "memlock", status: "info", detail: `${memlockText(f)} (RDMA registration pins memory; tcp and shared memory do not need it)` });
  return section("ucx", ["ucx"], checks);
}

const RDMA_TRANSPORTS = /^(rc|rc_verbs|rc_mlx5|ud|ud_verbs|ud_mlx5|dc|dc_mlx5)$/;

function rdmaSection(f: DoctorFacts): DoctorSection {
  const r = f.rdma;
  const checks: DoctorCheck[] = [];
  const transport = f.registry.find((x) => x.scheme === "rdma");
  const rdmaRuns = transport !== undefined && transport.unavailableReason === null;
  if (r.devices.length === 0 && rdmaRuns) {
    // A library named by HOTPATH_IBVERBS (hotpath's software test provider, for one) lists devices the kernel does not.
    checks.push({ name: "RDMA devices", status: "info", detail: `none in /sys/class/infiniband, but ${process.env.HOTPATH_IBVERBS ? `HOTPATH_IBVERBS=${process.env.HOTPATH_IBVERBS}` : "libibverbs"} lists devices of its own` });
  } else if (r.devices.length === 0) {
    checks.push({ name: "RDMA devices", status: "missing", detail: "none (/sys/class/infiniband is empty or absent): ucx runs over tcp and shared memory here", fix: APT_RDMA });
  } else {
    checks.push({ name: "RDMA devices", status: "ok", detail: r.devices.join(", ") });
    const m = f.memlock;
    if (m !== null && m.softBytes !== null && m.softBytes < LOW_MEMLOCK_BYTES) {
      checks.push({ name: "memlock", status: "warn", detail: `${memlockText(f)}: too low to register sizeable buffers for RDMA`, fix: "ulimit -l unlimited (or memlock in /etc/security/limits.conf, LimitMEMLOCK= for a systemd service)" });
    }
    const info = f.ucx.info;
    if (info !== null && info.error === null && !Object.keys(info.transports).some((t) => RDMA_TRANSPORTS.test(t))) {
      checks.push({ name: "UCX over RDMA", status: "warn", detail: "ucx_info -d lists no rc/ud/dc transport: UCX does not use the RDMA devices", fix: "apt-get install ibverbs-providers (the NIC's verbs provider) and UCX's ib modules" });
    }
  }
  const ibv = r.ibvDevinfo;
  if (ibv === null) {
    if (r.devices.length > 0) checks.push({ name: "ibv_devinfo", status: "info", detail: "not installed: port states cannot be shown", fix: APT_IBV_UTILS });
  } else if (ibv.error !== null) {
    checks.push({ name: "ibv_devinfo", status: r.devices.length > 0 ? "warn" : "info", detail: ibv.error });
  } else {
    for (const h of ibv.hcas) {
      const down = h.ports.filter((p) => !p.state.startsWith("PORT_ACTIVE"));
      checks.push({ name: h.name, status: down.length === 0 ? "ok" : "warn", detail: h.ports.map((p) => `port ${p.port} ${p.state}`).join(", ") || "no ports" });
    }
  }
  if (transport !== undefined) {
    // rdma:// itself: what libibverbs says (a device the kernel lists but no verbs provider claims is a missing package).
    checks.push(rdmaRuns ? { name: "rdma://", status: "ok", detail: "the transport says it can run here" } : { name: "rdma://", status: "missing", detail: transport.unavailableReason!, fix: APT_RDMA });
    if (rdmaRuns) checks.push({ name: "selftest", status: "info", detail: "hotpath doctor --selftest rdma: a conformance subset and a latency / throughput probe between two processes on the first active port, beside perftest" });
  }
  return section("rdma", transport === undefined ? [] : ["rdma"], checks);
}

/** Judges the facts: one section per transport (and for Bun and RDMA devices), with the exit status. */
export function diagnose(facts: DoctorFacts): DoctorReport {
  const sections = [bunSection(facts), tcpSection(facts), shmSection(facts), inprocSection(facts), ucxSection(facts), rdmaSection(facts)];
  // A transport registered beyond the built-in ones gets its own answer.
  const covered = new Set(sections.flatMap((s) => s.schemes));
  for (const r of facts.registry) if (!covered.has(r.scheme)) sections.push(section(r.scheme, [r.scheme], registryChecks(facts, [r.scheme], false)));
  const ok = !sections.some((s) => s.status === "broken");
  return { ok, exitCode: ok ? 0 : 1, sections, facts };
}

/** Human-readable lines: a heading per section, a line per check (its fix indented below), then the summary. */
export function formatText(report: DoctorReport): string {
  const f = report.facts;
  const lines = [`hotpath doctor: Bun ${f.bun.version}, ${f.platform} ${f.arch}, kernel ${f.kernel}`, ""];
  for (const s of report.sections) {
    const title = s.schemes.length > 1 ? `${s.name} (${s.schemes.map((x) => `${x}://`).join(", ")})` : s.name;
    lines.push(`${title}: ${s.status}`);
    for (const c of s.checks) {
      lines.push(`  ${c.status.padEnd(8)} ${c.name}: ${c.detail}`);
      if (c.fix !== undefined && c.status !== "ok") lines.push(`           to fix: ${c.fix}`);
    }
    lines.push("");
  }
  // Bun's section counts only when broken: it is no transport.
  const by = (st: DoctorSection["status"]) => report.sections.filter((s) => s.status === st && (s.name !== "bun" || st === "broken")).map((s) => s.name);
  const parts = [`ok: ${by("ok").join(", ") || "none"}`];
  if (by("unavailable").length > 0) parts.push(`unavailable: ${by("unavailable").join(", ")}`);
  if (by("broken").length > 0) parts.push(`broken: ${by("broken").join(", ")}`);
  lines.push(`summary: ${parts.join("; ")}`);
  lines.push(report.ok ? "every transport that is installed works (exit 0)" : "something installed is broken (exit 1): see the lines marked broken");
  return lines.join("\n");
}
