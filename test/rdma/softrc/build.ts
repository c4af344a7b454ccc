/**
 * Builds the softrc TEST FIXTURE (never shipped: test/ is outside package.json "files"): the
 * C sources of this folder compiled with the system `cc` against the real <infiniband/verbs.h>
 * and <rdma/rdma_cma.h> into `libibverbs.so.1`, `librdmacm.so.1` (rpath $ORIGIN, so it links
 * the fixture's libibverbs) and the C `selftest`, in a cache directory keyed by a hash of the
 * sources (one build per source change; concurrent builders each build into a fresh temp
 * directory and rename it into place, so a reader never sees a half-built directory).
 *
 * Example:
 *   const rc = await buildSoftRc();
 *   Bun.spawn([...], { env: { ...process.env, HOTPATH_IBVERBS: rc.ibverbs, HOTPATH_RDMACM: rc.rdmacm } });
 * C programs linked against it run with LD_LIBRARY_PATH=rc.dir.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const HERE = new URL(".", import.meta.url).pathname;
const VERBS_SOURCES = ["verbs.c", "qp.c", "engine.c"];
const CM_SOURCES = ["cm.c"];
const HEADERS = ["softrc.h"];
const FLAGS = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-fPIC"]; // no -Werror: another compiler's new warnings must not break the tests

export interface SoftRc {
  /** The directory holding the three artifacts (LD_LIBRARY_PATH for C programs). */
  dir: string;
  /** Path of the fixture's libibverbs.so.1 (for HOTPATH_IBVERBS). */
  ibverbs: string;
  /** Path of the fixture's librdmacm.so.1 (for HOTPATH_RDMACM). */
  rdmacm: string;
  /** The C selftest program (test/rdma/softrc/selftest.c). */
  selftest: string;
}

function cc(args: string[]): void {
  const r = Bun.spawnSync(["cc", ...args], { stderr: "pipe", stdout: "pipe" });
  if (r.exitCode !== 0) throw new Error(`softrc build: cc ${args.join(" ")}\n${r.stderr.toString()}`);
}

/** Builds (or finds cached) the fixture; safe to call from several processes at once. */
export async function buildSoftRc(): Promise<SoftRc> {
  const hasher = new Bun.CryptoHasher("sha256");
  for (const f of [...HEADERS, ...VERBS_SOURCES, ...CM_SOURCES, "selftest.c", "build.ts"]) {
    hasher.update(f);
    hasher.update(readFileSync(join(HERE, f)));
  }
  hasher.update(FLAGS.join(" "));
  const root = join(tmpdir(), `softrc-fixture-${process.getuid!()}`);
  const dir = join(root, hasher.digest("hex").slice(0, 16));
  const out: SoftRc = {
    dir,
    ibverbs: join(dir, "libibverbs.so.1"),
    rdmacm: join(dir, "librdmacm.so.1"),
    selftest: join(dir, "selftest"),
  };
  if (existsSync(join(dir, "complete"))) return out;
  mkdirSync(root, { recursive: true });
  const tmp = mkdtempSync(join(root, "build-"));
  try {
    const src = (fs: string[]) => fs.map((f) => join(HERE, f));
    cc([...FLAGS, "-shared", "-Wl,-soname,libibverbs.so.1", "-o", join(tmp, "libibverbs.so.1"), ...src(VERBS_SOURCES), "-lpthread"]);
    cc([...FLAGS, "-shared", "-Wl,-soname,librdmacm.so.1", "-o", join(tmp, "librdmacm.so.1"), ...src(CM_SOURCES),
      `-L${tmp}`, "-Wl,--no-as-needed", "-l:libibverbs.so.1", "-Wl,-rpath,$ORIGIN", "-lpthread"]);
    cc([...FLAGS, "-o", join(tmp, "selftest"), join(HERE, "selftest.c"), `-L${tmp}`, "-l:librdmacm.so.1", "-l:libibverbs.so.1",
      "-Wl,-rpath,$ORIGIN"]);
    writeFileSync(join(tmp, "complete"), "");
    try {
      renameSync(tmp, dir);
    } catch (e) {
      // Another builder won the race: its directory is complete and identical.
      if (!existsSync(join(dir, "complete"))) throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return out;
}
