/**
 * The Linux constants and the struct the access control relies on (LINUX in src/ffi/libc.ts:
 * open flags, memfd flags and seals, lease commands, statx flags, SO_PEERCRED / SO_PEERPIDFD,
 * the pidfd_open and pidfd_getfd syscall numbers, sizeof(struct ucred) and struct statx and the
 * field offsets read from them) against the real C headers, compiled here with the system C
 * compiler.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LINUX, STATX } from "../../src/ffi/libc.ts";

const PROBE = `
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
int main(void) {
  printf("{\\"O_PATH\\":%d,\\"O_NONBLOCK\\":%d,\\"O_CLOEXEC\\":%d,\\"O_NOCTTY\\":%d,", O_PATH, O_NONBLOCK, O_CLOEXEC, O_NOCTTY);
  printf("\\"F_SETSIG\\":%d,\\"F_SETLEASE\\":%d,\\"F_GETLEASE\\":%d,\\"F_RDLCK\\":%d,\\"F_WRLCK\\":%d,\\"F_UNLCK\\":%d,", F_SETSIG, F_SETLEASE, F_GETLEASE, F_RDLCK, F_WRLCK, F_UNLCK);
  printf("\\"AT_EMPTY_PATH\\":%d,\\"AT_STATX_DONT_SYNC\\":%d,\\"STATX_TYPE\\":%d,\\"STATX_MODE\\":%d,\\"STATX_UID\\":%d,\\"STATX_SIZE\\":%d,",
         AT_EMPTY_PATH, AT_STATX_DONT_SYNC, STATX_TYPE, STATX_MODE, STATX_UID, STATX_SIZE);
  printf("\\"SYS_pidfd_getfd\\":%d,", (int)SYS_pidfd_getfd);
  printf("\\"statx\\":{\\"BYTES\\":%d,\\"UID\\":%d,\\"MODE\\":%d,\\"SIZE\\":%d,\\"DEV_MAJOR\\":%d,\\"DEV_MINOR\\":%d},", (int)sizeof(struct statx),
         (int)offsetof(struct statx, stx_uid), (int)offsetof(struct statx, stx_mode), (int)offsetof(struct statx, stx_size),
         (int)offsetof(struct statx, stx_dev_major), (int)offsetof(struct statx, stx_dev_minor));
  printf("\\"MFD_CLOEXEC\\":%d,\\"MFD_ALLOW_SEALING\\":%d,", MFD_CLOEXEC, MFD_ALLOW_SEALING);
  printf("\\"F_ADD_SEALS\\":%d,\\"F_GET_SEALS\\":%d,\\"F_SEAL_SEAL\\":%d,\\"F_SEAL_SHRINK\\":%d,\\"F_SEAL_GROW\\":%d,\\"F_SEAL_WRITE\\":%d,",
         F_ADD_SEALS, F_GET_SEALS, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE);
  printf("\\"SOL_SOCKET\\":%d,\\"SO_PEERCRED\\":%d,\\"SO_PEERPIDFD\\":%d,\\"SYS_pidfd_open\\":%d,", SOL_SOCKET, SO_PEERCRED, SO_PEERPIDFD, (int)SYS_pidfd_open);
  printf("\\"UCRED_BYTES\\":%d,\\"ucred\\":[%d,%d,%d]}\\n", (int)sizeof(struct ucred),
         (int)offsetof(struct ucred, pid), (int)offsetof(struct ucred, uid), (int)offsetof(struct ucred, gid));
  return 0;
}
`;

test("LINUX constants and struct ucred match the C headers", () => {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-probe-"));
  try {
    const src = join(dir, "probe.c");
    const exe = join(dir, "probe");
    writeFileSync(src, PROBE);
    const cc = Bun.spawnSync(["cc", "-o", exe, src]);
    expect(cc.stderr.toString()).toBe("");
    expect(cc.exitCode).toBe(0);
    const run = Bun.spawnSync([exe]);
    expect(run.exitCode).toBe(0);
    const probed = JSON.parse(run.stdout.toString()) as Record<string, unknown>;
    for (const [name, value] of Object.entries(LINUX)) expect({ name, value: probed[name] }).toEqual({ name, value });
    // fileStatus() reads struct statx at these offsets.
    expect(probed.statx).toEqual({ ...STATX });
    // peerCredentials() reads pid, uid, gid as three 32-bit words in that order.
    expect(probed.ucred).toEqual([0, 4, 8]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
