/**
 * libc's symbol table (bun:ffi) and what every libc wrapper shares: the Linux constants, errno
 * and the one way a failed call becomes a NativeError. Internal to src/ffi: callers import the
 * wrappers from libc.ts (which re-exports the public constants here).
 *
 * Example (a wrapper in src/ffi):
 *   if (C.close(fd) !== 0) fail(`close(${fd})`);   // NativeError: operation, errno, strerror
 *
 * Thread: any; errno is read per thread (each thread that loads this module has its own view).
 */

import { dlopen, FFIType, toArrayBuffer } from "bun:ffi";
import { NativeError } from "../errors.ts";

const lib = dlopen("libc.so.6", {
  shm_open: { args: [FFIType.cstring, FFIType.i32, FFIType.u32], returns: FFIType.i32 },
  shm_unlink: { args: [FFIType.cstring], returns: FFIType.i32 },
  ftruncate: { args: [FFIType.i32, FFIType.i64], returns: FFIType.i32 },
  fstat: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  mmap: { args: [FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.i32, FFIType.i32, FFIType.i64], returns: FFIType.ptr },
  getpagesize: { args: [], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  eventfd: { args: [FFIType.u32, FFIType.i32], returns: FFIType.i32 },
  poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  syscall: { args: [FFIType.i64, FFIType.ptr, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  memfd_create: { args: [FFIType.cstring, FFIType.u32], returns: FFIType.i32 },
  // fcntl and open are variadic; every argument passed here is an int, which the ABI carries alike.
  fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  open: { args: [FFIType.cstring, FFIType.i32, FFIType.u32], returns: FFIType.i32 },
  getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  statx: { args: [FFIType.i32, FFIType.cstring, FFIType.i32, FFIType.u32, FFIType.ptr], returns: FFIType.i32 },
  setenv: { args: [FFIType.cstring, FFIType.cstring, FFIType.i32], returns: FFIType.i32 },
  clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
  strerror: { args: [FFIType.i32], returns: FFIType.cstring },
});
/** The C functions; only src/ffi calls them. */
export const C = lib.symbols;

export const O_RDWR = 0o2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const PROT_READ_WRITE = 0x1 | 0x2;
export const MAP_SHARED = 0x1;
export const MAP_PRIVATE = 0x2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const SYS_FUTEX = 202;
export const FUTEX_WAIT = 0;
export const FUTEX_WAKE = 1;

/** Linux values (x86-64 and aarch64 alike); test/shm/access-layout.test.ts checks them against the C headers. */
export const LINUX = {
  O_PATH: 0o10000000,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  O_NOCTTY: 0o400,
  MFD_CLOEXEC: 0x1,
  MFD_ALLOW_SEALING: 0x2,
  F_ADD_SEALS: 1033,
  F_GET_SEALS: 1034,
  F_SEAL_SEAL: 0x1,
  F_SEAL_SHRINK: 0x2,
  F_SEAL_GROW: 0x4,
  F_SEAL_WRITE: 0x8,
  F_SETSIG: 10,
  F_SETLEASE: 1024,
  F_GETLEASE: 1025,
  F_RDLCK: 0,
  F_WRLCK: 1,
  F_UNLCK: 2,
  AT_EMPTY_PATH: 0x1000,
  AT_STATX_DONT_SYNC: 0x4000,
  STATX_TYPE: 0x1,
  STATX_MODE: 0x2,
  STATX_UID: 0x8,
  STATX_SIZE: 0x200,
  SOL_SOCKET: 1,
  SO_PEERCRED: 17,
  SO_PEERPIDFD: 77,
  SYS_pidfd_open: 434,
  SYS_pidfd_getfd: 438,
  /** sizeof(struct ucred): pid, uid, gid, each 32 bits. */
  UCRED_BYTES: 12,
} as const;

/** struct statx (linux/stat.h): its size and the byte offsets of the fields fileStatus() reads; checked by the same test. */
export const STATX = {
  BYTES: 256,
  UID: 20,
  MODE: 28,
  SIZE: 40,
  DEV_MAJOR: 136,
  DEV_MINOR: 140,
} as const;
if (STATX.DEV_MINOR + 4 > STATX.BYTES || STATX.SIZE % 8 !== 0) throw new Error("libc: struct statx layout drifted");

export const EAGAIN = 11;
/** EWOULDBLOCK is EAGAIN on Linux. */
export const EWOULDBLOCK = EAGAIN;
export const EPERM = 1;
export const ESRCH = 3;
export const EBADF = 9;
export const ENOSYS = 38;
export const EACCES = 13;
export const EINVAL = 22;
export const ENOPROTOOPT = 92;
export const EINTR = 4;
export const ENOENT = 2;
export const EEXIST = 17;
export const ETIMEDOUT = 110;

// errno is per thread; this view is made once per thread that loads the module.
export const errnoView = new Int32Array(toArrayBuffer(C.__errno_location()!, 0, 4));

export function errno(): number {
  return errnoView[0]!;
}

export function fail(operation: string, detail?: string): never {
  const e = errno();
  const why = String(C.strerror(e));
  throw new NativeError(operation, e, detail ? `${why}; ${detail}` : why);
}

export function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}
