/**
 * `hotpath doctor` (issue 10, item 6), run for real: the human report and `--json` have one
 * section per transport, and their facts are this machine's as other tools tell them (uname,
 * df, the shell's ulimit, ucx_info, /proc/meminfo, libucp's ucp_get_version). Failure paths
 * run for real where the machine can be made to show them (libucp hidden through
 * HOTPATH_LIBUCP, ucx_info off PATH, a UCX_TLS that names no transport, a socket directory that
 * cannot be trusted); the rest are judged from this machine's real facts with one changed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gatherFacts, parseIbvDevinfo, parseUcxInfo, probeSocketDir, type DoctorFacts } from "../../src/cli/doctor-probes.ts";
import { diagnose, formatText, satisfiesMinimum, type DoctorReport } from "../../src/cli/doctor.ts";
import { ucpVersion } from "../../src/ffi/ucp.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";

const CLI = new URL("../../src/cli/hotpath.ts", import.meta.url).pathname;
const PKG = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
/** A doctor run's watchdog: a hang fails the test instead of holding it. */
const RUN_TIMEOUT_MS = 30_000;
/**
 * /dev/shm's free space moves while other tests create and remove segments between doctor's
 * statfs and df's: equal within this much.
 */
const SHM_FREE_SLACK_BYTES = 256 << 20;
const SECTIONS = ["bun", "tcp", "shm", "inproc", "ucx", "rdma"];

function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("UCX_") && !k.startsWith("HOTPATH_LIB")) env[k] = v;
  return { ...env, ...extra };
}

function doctor(args: string[], env = cleanEnv()) {
  const r = Bun.spawnSync(["bun", CLI, "doctor", ...args], { env, timeout: RUN_TIMEOUT_MS });
  return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function json(args: string[] = [], env = cleanEnv()): { exitCode: number | null; report: DoctorReport; stderr: string } {
  const r = doctor(["--json", ...args], env);
  return { exitCode: r.exitCode, report: JSON.parse(r.stdout), stderr: r.stderr };
}

const sh = (cmd: string) => Bun.spawnSync(["sh", "-c", cmd]).stdout.toString().trim();
const sectionOf = (r: DoctorReport, name: string) => r.sections.find((s) => s.name === name)!;
const checkOf = (r: DoctorReport, sectionName: string, check: string) => sectionOf(r, sectionName).checks.find((c) => c.name === check);

describe("hotpath doctor --json on this machine", () => {
  let exitCode: number | null;
  let report: DoctorReport;
  let stderr: string;
  let f: DoctorFacts;
  beforeAll(() => {
    ({ exitCode, report, stderr } = json());
    f = report.facts;
  });

  test("exits 0 with a section per transport, each with a status and checks", () => {
    expect(stderr).toBe("");
    expect(exitCode).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.sections.map((s) => s.name)).toEqual(SECTIONS);
    for (const s of report.sections) {
      expect(["ok", "unavailable", "broken"]).toContain(s.status);
      expect(s.checks.length).toBeGreaterThan(0);
      for (const c of s.checks) expect(["ok", "info", "warn", "missing", "broken"]).toContain(c.status);
    }
    expect(sectionOf(report, "tcp").schemes).toEqual(["tcp", "tcps", "tls"]);
  });

  test("Bun, the engines minimum and the kernel are this machine's", () => {
    expect(f.bun.version).toBe(Bun.version);
    expect(f.bun.minimum).toBe(PKG.engines.bun);
    expect(f.kernel).toBe(sh("uname -r"));
  });

  test("libucp's version is what ucp_get_version returns (and what ucx_info -v says)", () => {
    const v = ucpVersion();
    expect(v).not.toBeNull();
    expect(f.ucx.loadError).toBeNull();
    expect(f.ucx.version).toEqual(v!);
    expect(f.ucx.contextError).toBeNull();
    expect(checkOf(report, "ucx", "libucp")!.detail).toContain(`UCX ${v!.text}`);
    if (Bun.which("ucx_info") !== null) {
      expect(sh("ucx_info -v")).toContain(`Version ${v!.text}`);
      const listed = [...sh("ucx_info -d").matchAll(/^#\s+Transport:\s+(\S+)/gm)].map((m) => m[1]);
      expect(Object.keys(f.ucx.info!.transports).sort()).toEqual([...new Set(listed)].sort() as string[]);
    }
  });

  test("/dev/shm size and free space match df", () => {
    const [size, avail] = sh("df -B1 --output=size,avail /dev/shm | tail -1").split(/\s+/).map(Number);
    expect(f.devShm!.totalBytes).toBe(size!);
    expect(Math.abs(f.devShm!.freeBytes - avail!)).toBeLessThanOrEqual(SHM_FREE_SLACK_BYTES);
    expect(checkOf(report, "shm", "/dev/shm")!.detail).toContain(String(f.devShm!.totalBytes));
  });

  test("memlock is the shell's ulimit -l, huge pages are /proc/meminfo's", () => {
    const soft = sh("ulimit -l");
    expect(f.memlock!.softBytes).toBe(soft === "unlimited" ? null : Number(soft) * 1024);
    const meminfo = readFileSync("/proc/meminfo", "utf8");
    const field = (n: string) => Number(new RegExp(`^${n}:\\s+(\\d+)`, "m").exec(meminfo)![1]);
    expect(f.hugePages!.total).toBe(field("HugePages_Total"));
    expect(f.hugePages!.sizeBytes).toBe(field("Hugepagesize") * 1024);
  });

  test("the socket directory is this user's and usable; a sealed memfd and a pidfd work", () => {
    expect(f.socketDir).toEqual({ path: socketDirOf(process.geteuid!()), error: null });
    expect(readdirSync(f.socketDir.path!).filter((n) => n.startsWith("doctor-"))).toEqual([]);
    expect(f.memfd).toEqual({ sealed: true, error: null });
    expect(f.pidfd.ok).toBe(true);
    expect(sectionOf(report, "shm").status).toBe("ok");
    expect(sectionOf(report, "inproc").status).toBe("ok");
  });

  test("RDMA devices are /sys/class/infiniband's; none here means rdma unavailable with the install line", () => {
    let devices: string[] = [];
    try {
      devices = readdirSync("/sys/class/infiniband").sort();
    } catch {}
    expect(f.rdma.devices).toEqual(devices);
    const rdma = sectionOf(report, "rdma");
    if (devices.length === 0) {
      expect(rdma.status).toBe("unavailable");
      expect(checkOf(report, "rdma", "RDMA devices")!.fix).toContain("apt-get install rdma-core libibverbs1 ibverbs-providers");
      expect(checkOf(report, "rdma", "rdma://")).toEqual({ name: "rdma://", status: "missing", detail: "ibv_get_device_list: no devices (ENOSYS)", fix: checkOf(report, "rdma", "RDMA devices")!.fix! });
    }
    expect(report.sections.filter((s) => s.name === "rdma").length).toBe(1);
  });
});

test("hotpath doctor (text): the sections, this machine's libucp version, and a summary", () => {
  const r = doctor([]);
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
  const lines = r.stdout.trimEnd().split("\n");
  expect(lines[0]).toBe(`hotpath doctor: Bun ${Bun.version}, ${process.platform} ${process.arch}, kernel ${sh("uname -r")}`);
  for (const heading of ["bun: ok", "tcp (tcp://, tcps://, tls://): ok", "shm: ok", "inproc: ok", "ucx: ok"]) expect(lines).toContain(heading);
  expect(lines.some((l) => l.startsWith("rdma: "))).toBe(true);
  expect(r.stdout).toContain(`libucp: UCX ${ucpVersion()!.text}`);
  expect(r.stdout).toContain("TLS: built into Bun");
  expect(lines.at(-2)).toMatch(/^summary: ok: tcp, shm, inproc, ucx(;|$)/);
  expect(lines.at(-1)).toBe("every transport that is installed works (exit 0)");
});

test("libucp hidden (HOTPATH_LIBUCP): ucx unavailable with the install line, exit 0", () => {
  const { exitCode, report } = json([], cleanEnv({ HOTPATH_LIBUCP: "/nonexistent/libucp.so.0" }));
  expect(exitCode).toBe(0);
  expect(sectionOf(report, "ucx").status).toBe("unavailable");
  const c = checkOf(report, "ucx", "libucp")!;
  expect(c.status).toBe("missing");
  expect(c.detail).toContain("/nonexistent/libucp.so.0");
  expect(c.fix).toContain("apt-get install libucx0");
  const text = doctor([], cleanEnv({ HOTPATH_LIBUCP: "/nonexistent/libucp.so.0" })).stdout;
  expect(text).toContain("to fix: apt-get install libucx0");
  expect(text).toContain("unavailable: ucx");
});

describe("without ucx_info and ibv_devinfo on PATH", () => {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-doctor-path-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  test("the report says how to get ucx_info", () => {
    symlinkSync(process.execPath, join(dir, "bun"));
    const { exitCode, report } = json([], cleanEnv({ PATH: dir }));
    expect(exitCode).toBe(0);
    expect(report.facts.ucx.info).toBeNull();
    expect(report.facts.rdma.ibvDevinfo).toBeNull();
    expect(checkOf(report, "ucx", "ucx_info")!.fix).toContain("apt-get install ucx-utils");
  });
});

test("a UCX_TLS that names no transport: ucx broken, exit 1", () => {
  const { exitCode, report } = json([], cleanEnv({ UCX_TLS: "no_such_transport" }));
  expect(exitCode).toBe(1);
  expect(report.ok).toBe(false);
  expect(sectionOf(report, "ucx").status).toBe("broken");
  const c = checkOf(report, "ucx", "context")!;
  expect(c.status).toBe("broken");
  expect(c.detail).toContain("ucp_init_version");
  expect(c.detail).toContain("UCX_TLS=no_such_transport");
  const text = doctor([], cleanEnv({ UCX_TLS: "no_such_transport" }));
  expect(text.exitCode).toBe(1);
  expect(text.stdout).toContain("broken: ucx");
});

test("an unknown argument is a usage error (exit 2)", () => {
  const r = doctor(["--jsn"]);
  expect(r.exitCode).toBe(2);
  expect(r.stderr).toContain('unknown argument "--jsn"');
});

describe("judging real facts with one changed", () => {
  let facts: DoctorFacts;
  // A uid nobody has: socketDir() creates its directory as us, then distrusts it (owned by us, not by that uid).
  const fakeUid = 3_900_000_000 + (process.pid % 1000);
  afterAll(() => rmSync(socketDirOf(fakeUid), { recursive: true, force: true }));

  test("a socket directory that cannot be trusted breaks shm and inproc (exit 1)", async () => {
    facts = await gatherFacts();
    const dir = await probeSocketDir(fakeUid);
    expect(dir.path).toBeNull();
    expect(dir.error).toContain(`it is owned by uid ${process.geteuid!()}, not ${fakeUid}`);
    const r = diagnose({ ...facts, socketDir: dir });
    expect(r.exitCode).toBe(1);
    expect(sectionOf(r, "shm").status).toBe("broken");
    expect(sectionOf(r, "inproc").status).toBe("broken");
    expect(sectionOf(r, "tcp").status).toBe("ok");
    const text = formatText(r);
    expect(text).toContain(`broken   socket directory: ${dir.error}`);
    expect(text).toContain("broken: shm, inproc");
    expect(text).toContain("something installed is broken (exit 1)");
  });

  test("a Bun older than the engines minimum is broken, with the upgrade line", () => {
    const r = diagnose({ ...facts, bun: { version: facts.bun.version, minimum: ">=99.0.0" } });
    expect(r.exitCode).toBe(1);
    const c = checkOf(r, "bun", "bun")!;
    expect(c.status).toBe("broken");
    expect(c.fix).toBe("bun upgrade");
    expect(formatText(r)).toContain("broken: bun");
  });

  test("sealed memfds refused, pidfd_open missing: shm broken, with the reason", () => {
    const r = diagnose({ ...facts, memfd: { sealed: false, error: "fcntl(memfd, F_ADD_SEALS) failed: EINVAL" }, pidfd: { ok: false } });
    expect(sectionOf(r, "shm").status).toBe("broken");
    expect(checkOf(r, "shm", "memfd")!.detail).toContain("F_ADD_SEALS");
    expect(checkOf(r, "shm", "pidfd")!.status).toBe("warn");
    expect(sectionOf(r, "inproc").status).toBe("ok");
  });

  test("an RDMA device with a low memlock and a port down gets warnings, not a failure", () => {
    const r = diagnose({
      ...facts,
      memlock: { softBytes: 65536, hardBytes: 65536 },
      rdma: { devices: ["mlx5_0"], ibvDevinfo: { path: "/usr/bin/ibv_devinfo", hcas: [{ name: "mlx5_0", ports: [{ port: 1, state: "PORT_DOWN" }] }], error: null } },
      // With the device, libibverbs lists it and rdma:// can run.
      registry: facts.registry.map((t) => (t.scheme === "rdma" ? { ...t, unavailableReason: null } : t)),
    });
    expect(r.exitCode).toBe(0);
    expect(sectionOf(r, "rdma").status).toBe("ok");
    expect(checkOf(r, "rdma", "memlock")!.status).toBe("warn");
    expect(checkOf(r, "rdma", "mlx5_0")!).toEqual({ name: "mlx5_0", status: "warn", detail: "port 1 PORT_DOWN" });
    expect(checkOf(r, "rdma", "rdma://")!.status).toBe("ok");
    expect(checkOf(r, "rdma", "selftest")!.detail).toContain("hotpath doctor --selftest rdma");
    // One rdma section, covering rdma:// (the registry's scheme gets no second one).
    expect(r.sections.filter((s) => s.name === "rdma").map((s) => s.schemes)).toEqual([["rdma"]]);
  });
});

test("satisfiesMinimum, parseUcxInfo, parseIbvDevinfo", () => {
  expect(satisfiesMinimum("1.4.5", ">=1.1.30")).toBe(true);
  expect(satisfiesMinimum("1.1.29", ">=1.1.30")).toBe(false);
  expect(satisfiesMinimum("1.10.0", ">=1.9.9")).toBe(true);
  expect(parseUcxInfo("# Memory domain: tcp\n#      Transport: tcp\n#         Device: eth0\n#      Transport: tcp\n#         Device: lo\n#      Transport: self\n#         Device: memory0\n")).toEqual({ tcp: ["eth0", "lo"], self: ["memory0"] });
  const ibv = "hca_id:\tmlx5_0\n\ttransport:\t\t\tInfiniBand (0)\n\t\tport:\t1\n\t\t\tstate:\t\t\tPORT_ACTIVE (4)\n\t\tport:\t2\n\t\t\tstate:\t\t\tPORT_DOWN (1)\n\nhca_id:\tmlx5_1\n\t\tport:\t1\n\t\t\tstate:\t\t\tPORT_ACTIVE (4)\n";
  expect(parseIbvDevinfo(ibv)).toEqual([
    { name: "mlx5_0", ports: [{ port: 1, state: "PORT_ACTIVE" }, { port: 2, state: "PORT_DOWN" }] },
    { name: "mlx5_1", ports: [{ port: 1, state: "PORT_ACTIVE" }] },
  ]);
});
