/**
 * The conformance suite over rdma:// on the softrc TEST FIXTURE (test/rdma/softrc/, never
 * shipped), twice: rdma_cm mode (`rdma://127.0.0.1:0`) and socket mode (`?mode=socket`). The
 * test service runs in another process (peer-server.ts), this process hosts the in-process pairs
 * and the clients. The fixture is named by HOTPATH_IBVERBS / HOTPATH_RDMACM (read by the
 * transport when it first needs the libraries) and SOFTRC_DIR (the fixture's registry, read by
 * its C code through getenv, so it is set in this process's C environment too) before the first
 * rdma call; the peer inherits them; all are restored afterwards.
 *
 * A process that uses the fixture must not have the system libibverbs loaded (the fixture's
 * librdmacm would bind to it by soname): when an earlier test file of this runner loaded it
 * (UCX's IB module does), this file runs itself again in a fresh `bun test` process instead.
 * Afterwards no QP or MR of the fixture is left in this process.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { dlopen, FFIType, ptr } from "bun:ffi";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSoftRc } from "../rdma/softrc/build.ts";
import { softRcProbes } from "../rdma/softrc/probes.ts";
import { rdmaSuiteOptions } from "./rdma-options.ts";
import { runConformance } from "./suite.ts";

const rc = await buildSoftRc();
const SELF = new URL(import.meta.url).pathname;
/** Set in the fresh process this file starts when this one cannot host the fixture. */
const FRESH_ENV = "HOTPATH_RDMA_CONFORMANCE_FRESH";

/** Verbs libraries mapped in this process that are not the fixture's. */
function foreignVerbs(): string[] {
  const maps = readFileSync("/proc/self/maps", "utf8").split("\n");
  const libs = maps.map((l) => l.split(/\s+/)[5] ?? "").filter((p) => /lib(ibverbs|rdmacm)\.so/.test(p) && !p.startsWith(rc.dir));
  return [...new Set(libs)];
}

const foreign = foreignVerbs();
if (foreign.length > 0 && !process.env[FRESH_ENV]) {
  test(`conformance: rdma (in a fresh process: this one has ${foreign.join(", ")} loaded)`, async () => {
    const p = Bun.spawn(["bun", "test", SELF], { stdout: "inherit", stderr: "inherit", stdin: "ignore", env: { ...process.env, [FRESH_ENV]: "1" } });
    expect(await p.exited).toBe(0);
  }, 900_000);
} else {
  const libc = dlopen("libc.so.6", {
    setenv: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    unsetenv: { args: [FFIType.ptr], returns: FFIType.i32 },
  });
  const cstr = (s: string) => ptr(Buffer.from(`${s}\0`));
  const { live } = softRcProbes(rc.ibverbs);
  const registry = mkdtempSync(join(tmpdir(), "hotpath-softrc-conf-"));
  const vars: Record<string, string> = { HOTPATH_IBVERBS: rc.ibverbs, HOTPATH_RDMACM: rc.rdmacm, SOFTRC_DIR: registry };
  const saved: Record<string, string | undefined> = {};

  beforeAll(() => {
    for (const [k, v] of Object.entries(vars)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
    // The fixture's C code reads SOFTRC_DIR with getenv(), which process.env does not reach.
    libc.symbols.setenv(cstr("SOFTRC_DIR"), cstr(registry), 1);
  });

  afterAll(async () => {
    // The suite's connections are closed; the transport tears its QPs and MRs down when they go.
    const end = Date.now() + 10_000;
    while ((live("qp") > 0 || live("mr") > 0) && Date.now() < end) await Bun.sleep(20);
    const left = { qp: live("qp"), mr: live("mr") };
    for (const k of Object.keys(vars)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    libc.symbols.unsetenv(cstr("SOFTRC_DIR"));
    rmSync(registry, { recursive: true, force: true });
    expect(left).toEqual({ qp: 0, mr: 0 });
  }, 30_000);

  async function freePort(): Promise<number> {
    const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = s.port;
    s.stop(true);
    return port;
  }

  for (const mode of ["cm", "socket"] as const) {
    const query = mode === "socket" ? "?mode=socket" : "";
    runConformance({
      name: "rdma",
      label: `rdma (${mode} mode, softrc fixture)`,
      listenUrl: () => `rdma://127.0.0.1:0${query}`,
      ...rdmaSuiteOptions,
      async refusedUrl() {
        return `rdma://127.0.0.1:${await freePort()}${query}`;
      },
      async blackhole() {
        // A plain TCP listener: it accepts, and never answers (neither rdma_cm's side channel nor the socket-mode hello).
        const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
        return { url: `rdma://127.0.0.1:${l.port}${query}`, close: () => l.stop(true) };
      },
    });
  }
}
