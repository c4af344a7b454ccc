/**
 * The Linux constants and the struct the access control relies on (LINUX in src/ffi/libc.ts:
 * open flags, memfd flags and seals, SO_PEERCRED / SO_PEERPIDFD, the pidfd_open syscall number,
 * sizeof(struct ucred) and its field offsets) against the real C headers, compiled here with the
 * system C compiler.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LINUX } from "../../src/ffi/libc.ts";

const PROBE = `
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
int main(void) {
  printf("{\\"O_PATH\\":%d,\\"O_CLOEXEC\\":%d,\\"O_NOCTTY\\":%d,", O_PATH, O_CLOEXEC, O_NOCTTY);
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
    // peerCredentials() reads pid, uid, gid as three 32-bit words in that order.
    expect(probed.ucred).toEqual([0, 4, 8]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
