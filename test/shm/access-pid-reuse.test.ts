/**
 * The server takes a client's segment from the very process that connected (its SO_PEERPIDFD
 * pidfd, pidfd_getfd), never by pid: a pid from SO_PEERCRED can belong to someone else by the
 * time the hello is read. Set up as root, deterministically: the server (a child) is stopped
 * (SIGSTOP); a client connects, sends its hello and exits; another process is started on the
 * client's pid (ns_last_pid) holding a valid sealed segment at the same fd number; the server
 * resumes and must refuse the hello ("has exited") instead of mapping the newcomer's memory.
 * Skipped unless root (writing /proc/sys/kernel/ns_last_pid needs CAP_SYS_ADMIN).
 */

import { afterAll, expect, test } from "bun:test";
import { readdirSync, writeFileSync } from "node:fs";
import { ShmMapping } from "../../src/ffi/libc.ts";
import { computeLayout, DEFAULT_SEGMENT_CONFIG, writeHeader } from "../../src/segment/layout.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { spawnPeer } from "../helpers/peer.ts";
import { childServer } from "./access-child.ts";

const PEER = new URL("./access-peer.ts", import.meta.url).pathname;
const isRoot = process.geteuid?.() === 0;
const uid = process.geteuid!();
const prefix = `reuse-${process.pid}-`;
/** Other processes of the machine may take the pid first; try again this often. */
const PID_ATTEMPTS = 50;

afterAll(() => {
  expect(readdirSync(socketDirOf(uid)).filter((f) => f.includes(prefix))).toEqual([]);
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
});

/** `sleep 60` started as pid `pid`, holding `fd` of this process as its fd number `at`; null if the pid went elsewhere. */
function spawnAtPid(pid: number, fd: number, at: number) {
  const stdio: Array<"ignore" | "inherit" | number> = Array.from({ length: at + 1 }, (_, i) => (i === at ? fd : "ignore"));
  for (let i = 0; i < PID_ATTEMPTS; i++) {
    writeFileSync("/proc/sys/kernel/ns_last_pid", String(pid - 1));
    const p = Bun.spawn(["sleep", "60"], { stdio: stdio as never });
    if (p.pid === pid) return p;
    p.kill(9);
  }
  return null;
}

test.skipIf(!isRoot)(isRoot ? "a client's pid reused by another process before its hello is read: the hello is refused, nothing taken from the newcomer" : "pid reuse: SKIPPED, not root (ns_last_pid needs CAP_SYS_ADMIN)", async () => {
  const name = `${prefix}0`;
  const server = await childServer(`shm://${name}`);
  const layout = computeLayout(DEFAULT_SEGMENT_CONFIG);
  const victim = ShmMapping.createSealed("hotpath-reuse-victim", layout.totalBytes);
  writeHeader(new Uint32Array(victim.buffer, 0, 32), layout, 7);
  let newcomer: ReturnType<typeof spawnAtPid> = null;
  try {
    process.kill(server.pid, "SIGSTOP");
    const client = await spawnPeer(PEER, ["hello-exit", `${socketDirOf(uid)}/shm-${name}.sock`], {}, 20_000);
    await client.proc.exited;
    newcomer = spawnAtPid(client.ready.pid, victim.fd, client.ready.fd);
    expect(newcomer).not.toBeNull();
    process.kill(server.pid, "SIGCONT");
    expect(await server.until(() => server.refused.length > 0, 10_000)).toBe(true);
    expect(server.refused[0]!.reason).toBe("protocol");
    expect(server.refused[0]!.message).toContain(`client pid ${client.ready.pid} has exited`);
  } finally {
    try {
      process.kill(server.pid, "SIGCONT");
    } catch {
      // gone
    }
    newcomer?.kill(9);
    victim.close();
    await server.stop();
  }
}, 60_000);
