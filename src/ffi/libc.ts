/**
 * libc through bun:ffi: POSIX shared memory, mmap, futex and eventfd. The only file that names
 * these C functions. Every wrapper checks the return value and turns errno into a NativeError
 * that names the operation, its arguments and the errno.
 *
 * Ownership: `ShmMapping` owns its fd and mapping; close() closes the fd and drops the shared
 * pages at once (anonymous zero pages take their place), and the address range is unmapped when
 * no view of it is left (see close()); twice is safe.
 * Views over a mapping are made once, when it is mapped (`mapping.buffer`), never per message.
 * Thread: any; futexWait blocks the calling thread (never call it on an event-loop thread that
 * must stay responsive, except through a bounded timeout).
 *
 * Example:
 *   const m = ShmMapping.create("/hotpath-x", 1 << 20);   // O_CREAT|O_EXCL, mode 0600
 *   const words = new Int32Array(m.buffer);
 *   futexWake(m, 0, 1);
 *   m.close(); shmUnlink("/hotpath-x");
 */

import { dlopen, FFIType, ptr, toArrayBuffer, type Pointer } from "bun:ffi";
import { NativeError } from "../errors.ts";

const lib = dlopen("libc.so.6", {
  shm_open: { args: [FFIType.cstring, FFIType.i32, FFIType.u32], returns: FFIType.i32 },
  shm_unlink: { args: [FFIType.cstring], returns: FFIType.i32 },
  ftruncate: { args: [FFIType.i32, FFIType.i64], returns: FFIType.i32 },
  fstat: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  mmap: { args: [FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.i32, FFIType.i32, FFIType.i64], returns: FFIType.ptr },
  munmap: { args: [FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  eventfd: { args: [FFIType.u32, FFIType.i32], returns: FFIType.i32 },
  poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  syscall: { args: [FFIType.i64, FFIType.ptr, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
  strerror: { args: [FFIType.i32], returns: FFIType.cstring },
});
const C = lib.symbols;

const O_RDWR = 0o2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const PROT_READ_WRITE = 0x1 | 0x2;
const MAP_SHARED = 0x1;
const MAP_PRIVATE = 0x2;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const SYS_FUTEX = 202;
const FUTEX_WAIT = 0;
const FUTEX_WAKE = 1;
/** MAP_FAILED is (void*)-1. */
const MAP_FAILED = 0xffffffffffffffff;

export const EAGAIN = 11;
export const EINTR = 4;
export const ENOENT = 2;
export const EEXIST = 17;
export const ETIMEDOUT = 110;

// errno is per thread; this view is made once per thread that loads the module.
const errnoView = new Int32Array(toArrayBuffer(C.__errno_location()!, 0, 4));

export function errno(): number {
  return errnoView[0]!;
}

function fail(operation: string, detail?: string): never {
  const e = errno();
  const why = String(C.strerror(e));
  throw new NativeError(operation, e, detail ? `${why}; ${detail}` : why);
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

/** A mapped POSIX shared-memory object. */
export class ShmMapping {
  /** The whole mapping as one ArrayBuffer (cross-process Atomics work on it; wait/notify do not). */
  readonly buffer: ArrayBuffer;
  private readonly address: number;
  private fd: number;

  private constructor(
    readonly name: string,
    fd: number,
    address: number,
    readonly lenBytes: number,
  ) {
    this.fd = fd;
    this.address = address;
    this.buffer = toArrayBuffer(address as Pointer, 0, lenBytes);
    unmapWhenUnreachable.register(this.buffer, { address, lenBytes });
  }

  /** Creates `name` (must not exist), sizes it and maps it read-write. Mode 0600. */
  static create(name: string, lenBytes: number): ShmMapping {
    const fd = C.shm_open(cstr(name), O_RDWR | O_CREAT | O_EXCL, 0o600);
    if (fd < 0) fail(`shm_open("${name}", O_CREAT|O_EXCL)`, errno() === EEXIST ? "a segment with this name exists" : undefined);
    if (C.ftruncate(fd, lenBytes) !== 0) {
      const err = errno();
      C.close(fd);
      C.shm_unlink(cstr(name));
      errnoView[0] = err;
      fail(`ftruncate("${name}", ${lenBytes})`);
    }
    return ShmMapping.map(name, fd, lenBytes, true);
  }

  /** Opens an existing `name` and maps `lenBytes` of it; fails if the object is smaller. */
  static open(name: string, lenBytes: number): ShmMapping {
    const fd = C.shm_open(cstr(name), O_RDWR, 0);
    if (fd < 0) fail(`shm_open("${name}")`);
    const st = new BigInt64Array(18); // struct stat is 144 bytes on x86-64; st_size at offset 48
    if (C.fstat(fd, ptr(st)) !== 0) {
      C.close(fd);
      fail(`fstat("${name}")`);
    }
    const size = Number(st[6]);
    if (size < lenBytes) {
      C.close(fd);
      throw new NativeError(`shm open "${name}"`, 0, `segment has ${size} bytes, expected ${lenBytes}`);
    }
    return ShmMapping.map(name, fd, lenBytes, false);
  }

  private static map(name: string, fd: number, lenBytes: number, created: boolean): ShmMapping {
    const addr = C.mmap(null, lenBytes, PROT_READ_WRITE, MAP_SHARED, fd, 0);
    if (addr === null || Number(addr) === MAP_FAILED || Number(addr) === -1) {
      const err = errno();
      C.close(fd);
      if (created) C.shm_unlink(cstr(name));
      errnoView[0] = err;
      fail(`mmap("${name}", ${lenBytes})`);
    }
    return new ShmMapping(name, fd, Number(addr), lenBytes);
  }

  /** Address of byte `offset` of the mapping (for futex). */
  addressOf(offset: number): number {
    return this.address + offset;
  }

  get closed(): boolean {
    return this.fd < 0;
  }

  /**
   * Closes the fd and lets go of the shared pages at once: private anonymous pages are mapped
   * over the whole range (MAP_FIXED), so the shm object's memory is freed as soon as the peer
   * lets go too (a reconnect loop cannot fill /dev/shm waiting for the garbage collector), and
   * a view a caller still holds reads zeros instead of the peer's data. The range itself is
   * unmapped only once `buffer` and every view of it have been garbage-collected, so no view
   * can ever touch unmapped memory (that would crash the process, not throw). Idempotent.
   * Call it only when no other thread of this process uses the mapping.
   */
  close(): void {
    if (this.fd < 0) return;
    C.close(this.fd);
    this.fd = -1;
    // MAP_FIXED over our own range fails only when the kernel is out of mappings or memory; the
    // shared pages then stay until the unmap at collection (the old behaviour), nothing worse.
    C.mmap(this.address as Pointer, this.lenBytes, PROT_READ_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0);
  }
}

/** Unmaps a mapping once nothing in JS can reach its memory any more. */
const unmapWhenUnreachable = new FinalizationRegistry<{ address: number; lenBytes: number }>(({ address, lenBytes }) => {
  C.munmap(address as Pointer, lenBytes);
});

/** Removes a shared-memory name; a name already gone is not an error. */
export function shmUnlink(name: string): void {
  if (C.shm_unlink(cstr(name)) !== 0 && errno() !== ENOENT) fail(`shm_unlink("${name}")`);
}

// Out-parameters live in ArrayBuffers of their own, and their address is taken at each call:
// an address cached from a small typed array went stale (poll(2) then read another fd).
const timespec = new BigInt64Array(new ArrayBuffer(16));

/**
 * FUTEX_WAIT (shared, not private: the waker is another process) on the 32-bit word at
 * `offset`. Returns "woken", "changed" (the word was not `expected`) or "timeout".
 * Blocks the calling thread for at most `timeoutNs`.
 */
export function futexWait(m: ShmMapping, offset: number, expected: number, timeoutNs: number): "woken" | "changed" | "timeout" {
  timespec[0] = BigInt(Math.floor(timeoutNs / 1e9));
  timespec[1] = BigInt(Math.floor(timeoutNs % 1e9));
  const r = C.syscall(SYS_FUTEX, m.addressOf(offset) as Pointer, FUTEX_WAIT, expected, ptr(timespec), null, 0);
  if (r === 0) return "woken";
  const e = errno();
  if (e === EAGAIN) return "changed";
  if (e === ETIMEDOUT) return "timeout";
  if (e === EINTR) return "woken";
  fail(`futex(FUTEX_WAIT, offset ${offset})`);
}

/** FUTEX_WAKE on the word at `offset`; returns how many waiters woke. */
export function futexWake(m: ShmMapping, offset: number, count: number): number {
  const r = C.syscall(SYS_FUTEX, m.addressOf(offset) as Pointer, FUTEX_WAKE, count, null, null, 0);
  if (r < 0) fail(`futex(FUTEX_WAKE, offset ${offset})`);
  return r;
}

const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

/** A non-blocking eventfd (for readiness through the event loop). The caller closes it. */
export function eventfdCreate(): number {
  const fd = C.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) fail("eventfd");
  return fd;
}

export function closeFd(fd: number): void {
  if (C.close(fd) !== 0) fail(`close(${fd})`);
}

const pollfd = new Int32Array(new ArrayBuffer(8)); // struct pollfd { int fd; short events; short revents; }
const POLLIN = 1;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;
const POLLRDHUP = 0x2000;

/**
 * Whether the peer of socket `fd` is gone (it closed, shut down its sending side, or its
 * process died): poll(2) with timeout 0 for POLLRDHUP / POLLHUP / POLLERR; an fd that is no
 * longer open (POLLNVAL) counts as gone too. Never blocks; reads nothing from the socket, so
 * bytes queued on it stay for the event loop. Thread: any.
 */
export function fdPeerGone(fd: number): boolean {
  pollfd[0] = fd;
  pollfd[1] = POLLRDHUP; // events = POLLRDHUP, revents = 0 (POLLHUP/POLLERR/POLLNVAL always reported)
  const r = C.poll(ptr(pollfd), 1, 0);
  if (r <= 0) return false; // nothing to report, or EINTR: look again next time
  return ((pollfd[1]! >>> 16) & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) !== 0;
}

/** Blocks the calling thread until `fd` is readable (true) or `timeoutMs` passes (false). */
export function pollReadable(fd: number, timeoutMs: number): boolean {
  pollfd[0] = fd;
  pollfd[1] = POLLIN; // events = POLLIN, revents = 0
  const r = C.poll(ptr(pollfd), 1, timeoutMs);
  if (r < 0) {
    if (errno() === EINTR) return false;
    fail(`poll(fd ${fd})`);
  }
  return r > 0;
}
