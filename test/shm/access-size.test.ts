/**
 * Oversized segments cannot leak fds or address space in the server. A client can make a sealed
 * sparse memfd of any size (1 TiB costs it nothing: only the header page is ever written) and
 * name that size in its hello. A segment is at most what one u32 header word (and computeLayout)
 * allows, and exactly the size its header describes: anything else is refused before (or right
 * after) it is mapped, and a mapping that cannot become an ArrayBuffer is unmapped and its fd
 * closed. The server here is this process, so its fds, its /proc/self/maps memfd lines and its
 * VmSize are measured directly.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { rpcConnect, serve, type HotpathError, type RefusalReason, type Serving } from "../../src/index.ts";
import { NativeError } from "../../src/errors.ts";
import { memfdCreate, ShmMapping } from "../../src/ffi/libc.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { procFigures } from "../helpers/proc-figures.ts";
import { spawnPeer } from "../helpers/peer.ts";

const PEER = new URL("./access-peer.ts", import.meta.url).pathname;
const uid = process.geteuid!();
const prefix = `size-${process.pid}-`;
const GiB = 2 ** 30;
/** A leaked mapping here is at least 2 GiB; the runtime's own growth over a test stays far below this. */
const VM_SLACK_BYTES = GiB;

let serving: Serving;
const refusals: Array<{ error: HotpathError; reason: RefusalReason }> = [];
const socketPath = () => `${socketDirOf(uid)}/shm-${prefix}0.sock`;

/**
 * The address space that holds memory: every mapping of /proc/self/maps but the inaccessible
 * ones (---p). Segments live in shared WebAssembly.Memory buffers, each of which reserves
 * about 4 GiB of PROT_NONE address space until the collector frees it (when is up to JSC's
 * conservative scan): that reservation is no leak, a segment mapped and left behind is.
 */
function vmSizeBytes(): number {
  let bytes = 0;
  for (const line of readFileSync("/proc/self/maps", "utf8").split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4})/.exec(line);
    if (m === null || m[3] === "---p") continue;
    bytes += parseInt(m[2]!, 16) - parseInt(m[1]!, 16);
  }
  return bytes;
}

/** What a leak would show: open fds, memfd mappings of hotpath segments, and the address space. */
function figures() {
  Bun.gc(true);
  const f = procFigures();
  return { fds: f.fds, maps: f.hotpathMaps, vm: vmSizeBytes() };
}

async function sessionsGone(): Promise<void> {
  for (let i = 0; i < 400 && serving.server.sessions.size > 0; i++) await Bun.sleep(5);
  expect(serving.server.sessions.size).toBe(0);
}

async function rawHello(spec: string): Promise<any> {
  const p = await spawnPeer(PEER, ["raw", socketPath(), JSON.stringify({ hello: "hotpath-shm" }), spec], {}, 20_000);
  await p.kill();
  return p.ready;
}

beforeAll(async () => {
  serving = await serve(`shm://${prefix}0`, { 1: (h) => h.data });
  serving.listener.onRefused((error, reason) => void refusals.push({ error, reason }));
});

afterAll(() => {
  serving.close();
  expect(readdirSync(socketDirOf(uid)).filter((f) => f.includes(prefix))).toEqual([]);
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
});

test("a mapping too large to become an ArrayBuffer (8 GiB) is unmapped and its fd closed", () => {
  const before = figures();
  const fd = memfdCreate("hotpath-size-8g", 8 * GiB, true);
  let err: unknown = null;
  try {
    ShmMapping.fromFd("size-8g", fd, 8 * GiB);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(NativeError);
  expect((err as Error).message).toContain(`mmap("size-8g", ${8 * GiB})`);
  expect((err as Error).message).toContain("unmapped and closed");
  const after = figures();
  expect(after.fds).toBe(before.fds);
  expect(after.maps).toBe(before.maps);
  expect(after.vm - before.vm).toBeLessThan(VM_SLACK_BYTES);
});

test("hellos naming 1 TiB and 8 GiB segments are refused before mapping, the sizes named; fds, mappings and VmSize stay at baseline", async () => {
  await stillServes(); // the runtime's own one-off growth happens before the baseline
  await sessionsGone();
  const before = figures();
  const sizes = [...Array(5).fill(1024 * GiB), 8 * GiB, 8 * GiB];
  for (const bytes of sizes) {
    const got = await rawHello(`sparse:${bytes}`);
    expect(got.lines.length).toBe(1);
    expect(got.lines[0].refused).toBe("protocol");
    expect(got.lines[0].error).toContain(`the hello says ${bytes} bytes, more than a segment can have (at most 4294967295 bytes)`);
    expect(got.closed).toBe(true);
    expect(refusals.at(-1)!.error.message).toContain(`${bytes} bytes`);
  }
  await stillServes();
  await sessionsGone();
  const after = figures();
  console.log(`shm size: after ${sizes.length} oversized hellos: fds ${before.fds} -> ${after.fds}, memfd maps ${before.maps} -> ${after.maps}, accessible address space ${(before.vm / GiB).toFixed(1)} -> ${(after.vm / GiB).toFixed(1)} GiB`);
  expect(after.fds).toBe(before.fds);
  expect(after.maps).toBe(before.maps);
  expect(after.vm - before.vm).toBeLessThan(VM_SLACK_BYTES);
}, 120_000);

test("a segment larger than its header describes (a 2 GiB file, a default layout) is refused, both sizes named", async () => {
  await sessionsGone();
  const before = figures();
  const accepted = serving.listener.stats.accepted;
  const got = await rawHello(`sparse:${2 * GiB}`);
  expect(got.lines[0]?.refused).toBe("protocol");
  expect(got.lines[0].error).toMatch(new RegExp(`has ${2 * GiB} bytes, but its header describes a layout of \\d+ bytes`));
  expect(serving.listener.stats.accepted).toBe(accepted);
  await stillServes();
  await sessionsGone();
  const after = figures();
  expect(after.fds).toBe(before.fds);
  expect(after.maps).toBe(before.maps);
  expect(after.vm - before.vm).toBeLessThan(VM_SLACK_BYTES);
}, 60_000);

async function stillServes(): Promise<void> {
  const c = await rpcConnect(serving.url);
  try {
    expect(await c.request(1, new Uint8Array([5]))).toEqual(new Uint8Array([5]));
  } finally {
    c.close();
  }
}
