/**
 * libc through bun:ffi, the wrappers callers import: shared-memory segments over
 * SharedArrayBuffers (ShmMapping, sealed memfds, futex: shm-mapping.ts, re-exported here),
 * eventfd, poll, a Unix socket's peer credentials (SO_PEERCRED), pidfds (SO_PEERPIDFD,
 * pidfd_open, pidfd_getfd), statx, and file leases (tests play hostile peers with them). The
 * symbol table and errno handling live in libc-lib.ts; only src/ffi names these C functions.
 * Every wrapper checks the return value and turns errno into a NativeError that names the
 * operation, its arguments and the errno.
 *
 * Ownership: `ShmMapping` owns its fd and its mapping, which lies over the pages of a
 * SharedArrayBuffer (`mapping.sab` from `mapping.byteOffset` on); close() closes the fd and drops
 * the shared pages at once (anonymous zero pages take their place, so views still held read
 * zeros); nothing is ever munmap'ed under a SharedArrayBuffer; twice is safe. Functions that
 * return an fd hand it to the caller, who closes it (closeFd).
 * Views over a mapping are made once, when it is mapped, never per message.
 * Thread: any; futexWait blocks the calling thread (never call it on an event-loop thread that
 * must stay responsive, except through a bounded timeout).
 *
 * Example:
 *   const m = ShmMapping.createSealed("hotpath-x", 1 << 20);  // memfd: no name anywhere, size sealed
 *   const words = new Int32Array(m.sab, m.byteOffset, m.lenBytes >> 2);  // postable to a Worker
 *   futexWake(m, 0, 1);
 *   m.close();
 */

import { ptr, toArrayBuffer, type Pointer } from "bun:ffi";
import { NativeError } from "../errors.ts";
import { C, cstr, EINTR, ENOPROTOOPT, errno, fail, LINUX, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, O_RDWR, PROT_READ_WRITE, STATX } from "./libc-lib.ts";

export { EACCES, EAGAIN, EBADF, EEXIST, EINTR, EINVAL, ENOENT, ENOPROTOOPT, ENOSYS, EPERM, errno, ESRCH, ETIMEDOUT, EWOULDBLOCK, LINUX, STATX } from "./libc-lib.ts";
export { freshSharedBuffer, futexWait, releaseFreshSharedBuffer, futexWake, mappedSegmentCount, memfdCreate, PAGE_BYTES, placeMappingsOffsetForTests, ShmMapping, shmUnlink } from "./shm-mapping.ts";
import { memfdCreate } from "./shm-mapping.ts";

const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

const CLOCK_MONOTONIC = 1;
const clockOut = new BigInt64Array(new ArrayBuffer(16));

/**
 * CLOCK_MONOTONIC in ns (clock_gettime, vDSO): one clock every process of the host shares, so
 * timestamps taken in two processes compare (Bun.nanoseconds() counts from each process's start).
 */
export function monotonicNs(): number {
  if (C.clock_gettime(CLOCK_MONOTONIC, ptr(clockOut)) !== 0) fail("clock_gettime(CLOCK_MONOTONIC)");
  return Number(clockOut[0]!) * 1e9 + Number(clockOut[1]!);
}

/** A non-blocking eventfd (for readiness through the event loop). The caller closes it. */
export function eventfdCreate(): number {
  const fd = C.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) fail("eventfd");
  return fd;
}

/**
 * Sets a variable of the C environment (setenv(3), overwriting): what native libraries read
 * with getenv. Bun keeps process.env apart from it, so a value set from JS reaches them only
 * this way. Thread: call before starting threads that read the environment (setenv is not
 * safe beside a concurrent getenv).
 */
export function setCEnvironment(name: string, value: string): void {
  if (C.setenv(cstr(name), cstr(value), 1) !== 0) fail(`setenv(${name})`);
}

export function closeFd(fd: number): void {
  if (C.close(fd) !== 0) fail(`close(${fd})`);
}

// The helper thread of closeFdOffThread: close(2), then the fd number back.
const CLOSER_SOURCE = `import { dlopen } from "bun:ffi";
const { close } = dlopen("libc.so.6", { close: { args: ["i32"], returns: "i32" } }).symbols;
self.onmessage = (e) => { close(e.data); postMessage(e.data); };`;
let closer: Worker | null = null;
/** Closes handed to the helper and not yet returned, by fd (an fd number is not reused before its close returns). */
const closing = new Map<number, () => void>();

/**
 * Closes `fd` on a helper thread (a Worker made on first use, unref'd so it never keeps the
 * process alive): for an fd taken from a peer and not proven a memfd, whose close(2) may wait on
 * a file system, forever if its daemon never answers (FUSE sends FLUSH on every close, NFS writes
 * back dirty pages). The calling thread never waits; `onClosed` runs on it (its event loop) once
 * the close returned. The fd belongs to the helper from here. Closes run one after another, so
 * one that never returns holds back the rest: callers bound how many they hand over. Where no
 * Worker can be made, the fd is closed here. Thread: any (each thread has its own helper).
 */
export function closeFdOffThread(fd: number, onClosed: () => void = () => {}): void {
  if (closer === null) {
    try {
      closer = new Worker(URL.createObjectURL(new Blob([CLOSER_SOURCE], { type: "application/javascript" })));
      closer.unref();
      closer.onmessage = (e: MessageEvent<number>) => {
        const cb = closing.get(e.data);
        closing.delete(e.data);
        cb?.();
      };
    } catch {
      C.close(fd);
      onClosed();
      return;
    }
  }
  closing.set(fd, onClosed);
  closer.postMessage(fd);
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

/** The largest fd set pollAny takes. */
export const POLL_ANY_MAX = 64;
const pollfds = new Int32Array(new ArrayBuffer(8 * POLL_ANY_MAX));

/**
 * poll(2) for POLLIN on the first `count` fds of `fds`: blocks the calling thread until one is
 * readable (or has an error / hangup: the caller's read finds out) or `timeoutMs` passes.
 * Sets `ready[i]` to 1 for each fd with events, 0 otherwise; returns how many are set (0 on
 * timeout or EINTR). Thread: any (each thread has its own buffer: module state per thread).
 */
export function pollAny(fds: Int32Array, count: number, ready: Uint8Array, timeoutMs: number): number {
  if (count > POLL_ANY_MAX) throw new RangeError(`pollAny: ${count} fds, at most ${POLL_ANY_MAX}`);
  for (let i = 0; i < count; i++) {
    pollfds[2 * i] = fds[i]!;
    pollfds[2 * i + 1] = POLLIN;
  }
  const r = C.poll(ptr(pollfds), count, timeoutMs);
  if (r < 0 && errno() !== EINTR) fail(`poll(${count} fds)`);
  let n = 0;
  for (let i = 0; i < count; i++) {
    const hit = r > 0 && pollfds[2 * i + 1]! >>> 16 !== 0 ? 1 : 0;
    ready[i] = hit;
    n += hit;
  }
  return n;
}

// ------------------------------------------------------------------ sealed segments, peers


/** The seals of `fd` (F_GET_SEALS, a mask of LINUX.F_SEAL_*). NativeError EINVAL: a file that cannot be sealed (not a memfd). */
export function fileSeals(fd: number): number {
  const r = C.fcntl(fd, LINUX.F_GET_SEALS, 0);
  if (r < 0) fail(`fcntl(${fd}, F_GET_SEALS)`);
  return r;
}

/**
 * open(2) of `path`: "path" opens an O_PATH handle (no read, no write, no driver open: safe on
 * any file, good for fstat), "rdwr" opens it O_RDWR | O_NOCTTY | O_NONBLOCK: a file someone holds
 * a lease on fails at once with EWOULDBLOCK instead of blocking the thread until the holder lets
 * go or lease-break-time (45 s by default) passes; on a regular file O_NONBLOCK changes nothing
 * else. Both O_CLOEXEC. The caller owns the fd. NativeError with the errno on failure (EACCES /
 * EPERM for /proc/<pid>/fd of a process the caller may not inspect). Thread: any.
 */
export function openFile(path: string, access: "path" | "rdwr"): number {
  const flags = access === "path" ? LINUX.O_PATH | LINUX.O_CLOEXEC : O_RDWR | LINUX.O_NOCTTY | LINUX.O_NONBLOCK | LINUX.O_CLOEXEC;
  const fd = C.open(cstr(path), flags, 0);
  if (fd < 0) fail(`open("${path}", ${access === "path" ? "O_PATH" : "O_RDWR|O_NONBLOCK"})`);
  return fd;
}

/** What fileStatus() reports of an open file. */
export interface FileStatus {
  /** The device of the file system it lives on, "major:minor". */
  dev: string;
  /** st_mode: type and permission bits. */
  mode: number;
  uid: number;
  /** Size in bytes (exact below 2^53; anything larger is far past every limit here). */
  size: number;
}

const statxBuf = new ArrayBuffer(STATX.BYTES);
const statxWords = new Uint32Array(statxBuf);
const statxView = new DataView(statxBuf);
const EMPTY_PATH = cstr("");

/**
 * statx(2) of open fd `fd` (O_PATH fds too) with AT_STATX_DONT_SYNC: what the kernel has at hand,
 * never a round trip to a FUSE daemon or an NFS server (either could make a plain fstat block for
 * as long as it likes). On a local file system the values are exact. Thread: any.
 */
export function fileStatus(fd: number): FileStatus {
  const mask = LINUX.STATX_TYPE | LINUX.STATX_MODE | LINUX.STATX_UID | LINUX.STATX_SIZE;
  if (C.statx(fd, EMPTY_PATH, LINUX.AT_EMPTY_PATH | LINUX.AT_STATX_DONT_SYNC, mask, ptr(statxBuf)) !== 0) fail(`statx(${fd})`);
  return {
    dev: `${statxWords[STATX.DEV_MAJOR / 4]}:${statxWords[STATX.DEV_MINOR / 4]}`,
    mode: statxView.getUint16(STATX.MODE, true),
    uid: statxWords[STATX.UID / 4]!,
    size: Number(statxView.getBigUint64(STATX.SIZE, true)),
  };
}

let memfdDev: string | null = null;

/**
 * The device every memfd of this kernel lives on (the internal shmem mount), learned once from a
 * memfd made and closed here. A file on any other device (a FUSE or NFS file, a /dev/shm or /tmp
 * file) is not a memfd. Thread: any.
 */
export function memfdDevice(): string {
  if (memfdDev === null) {
    const fd = memfdCreate("hotpath-device-probe", 0, false);
    try {
      memfdDev = fileStatus(fd).dev;
    } finally {
      C.close(fd);
    }
  }
  return memfdDev;
}

/**
 * pidfd_getfd(2) (Linux 5.6+): a duplicate, in this process, of fd `targetFd` of the process
 * behind `pidfd`, O_CLOEXEC. No open(2) runs (so no lease is broken and no file system is asked)
 * and the pidfd pins the very process, so a reused pid cannot be mistaken for it. The kernel
 * requires that the caller may ptrace-attach to that process (PTRACE_MODE_ATTACH_REALCREDS: the
 * same real uid and a dumpable process, or CAP_SYS_PTRACE; Yama's ptrace_scope may narrow it).
 * The caller owns the fd. NativeError: ENOSYS (kernel too old), EPERM (not allowed), EBADF (no
 * such fd there), ESRCH (the process has exited). Thread: any.
 */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  // syscall(2)'s second argument is declared a pointer for futex; a pidfd travels in the same register.
  const r = C.syscall(LINUX.SYS_pidfd_getfd, pidfd as unknown as Pointer, targetFd, 0, null, null, 0);
  if (r < 0) fail(`pidfd_getfd(${pidfd}, ${targetFd})`);
  return r;
}

/** Whether the process behind `pidfd` has exited (poll(2) POLLIN, timeout 0). Never blocks. Thread: any. */
export function processExited(pidfd: number): boolean {
  pollfd[0] = pidfd;
  pollfd[1] = POLLIN;
  return C.poll(ptr(pollfd), 1, 0) > 0;
}

const LEASES = { read: LINUX.F_RDLCK, write: LINUX.F_WRLCK, none: LINUX.F_UNLCK } as const;

/**
 * fcntl(F_SETSIG, signal) then fcntl(F_SETLEASE): takes (or with "none" drops) a lease on `fd`;
 * a signal the process ignores keeps a lease break from killing it (SIGIO's default). Tests use it
 * to play a client that would stall any open(2) of its segment. Thread: any.
 */
export function setLease(fd: number, kind: keyof typeof LEASES, signal: number): void {
  if (C.fcntl(fd, LINUX.F_SETSIG, signal) !== 0) fail(`fcntl(${fd}, F_SETSIG, ${signal})`);
  if (C.fcntl(fd, LINUX.F_SETLEASE, LEASES[kind]) !== 0) fail(`fcntl(${fd}, F_SETLEASE, ${kind})`);
}

/** The lease on `fd` (fcntl F_GETLEASE). Thread: any. */
export function getLease(fd: number): keyof typeof LEASES {
  const r = C.fcntl(fd, LINUX.F_GETLEASE, 0);
  if (r < 0) fail(`fcntl(${fd}, F_GETLEASE)`);
  return r === LINUX.F_RDLCK ? "read" : r === LINUX.F_WRLCK ? "write" : "none";
}

/** ftruncate(2) of an open fd (tests use it to try to shrink a sealed segment: EPERM). */
export function truncateFd(fd: number, lenBytes: number): void {
  if (C.ftruncate(fd, lenBytes) !== 0) fail(`ftruncate(${fd}, ${lenBytes})`);
}

/** A socket peer as the kernel saw it when the connection was made. */
export interface Ucred {
  pid: number;
  uid: number;
  gid: number;
}

const ucred = new Int32Array(new ArrayBuffer(LINUX.UCRED_BYTES));
const optLen = new Uint32Array(new ArrayBuffer(4));
const intOpt = new Int32Array(new ArrayBuffer(4));

/**
 * getsockopt(fd, SOL_SOCKET, SO_PEERCRED) of a connected Unix socket: the peer's pid, effective
 * uid and gid at connect (or listen) time, from the kernel, so a peer cannot lie about them.
 * A pid of 0 means the peer is in a pid namespace this process cannot see. Thread: any.
 */
export function peerCredentials(fd: number): Ucred {
  optLen[0] = LINUX.UCRED_BYTES;
  if (C.getsockopt(fd, LINUX.SOL_SOCKET, LINUX.SO_PEERCRED, ptr(ucred), ptr(optLen)) !== 0) fail(`getsockopt(${fd}, SO_PEERCRED)`);
  if (optLen[0] !== LINUX.UCRED_BYTES) throw new NativeError(`getsockopt(${fd}, SO_PEERCRED)`, 0, `returned ${optLen[0]} bytes, expected ${LINUX.UCRED_BYTES}`);
  return { pid: ucred[0]!, uid: ucred[1]! >>> 0, gid: ucred[2]! >>> 0 };
}

/**
 * A pidfd of the peer process of connected Unix socket `fd`, or -1 where none can be had. The
 * kernel's SO_PEERPIDFD (Linux 6.5+) names exactly the process that connected (no pid-reuse
 * race; if it has exited, the pidfd says so). Only a kernel that does not know SO_PEERPIDFD
 * falls back to pidfd_open(`pid`) (Linux 5.3+), which can name a process that took over a reused
 * pid. The caller owns the fd. Thread: any.
 */
export function peerPidfd(fd: number, pid: number): number {
  optLen[0] = 4;
  if (C.getsockopt(fd, LINUX.SOL_SOCKET, LINUX.SO_PEERPIDFD, ptr(intOpt), ptr(optLen)) === 0) return intOpt[0]! >= 0 ? intOpt[0]! : -1;
  return errno() === ENOPROTOOPT ? pidfdOpen(pid) : -1;
}

/**
 * pidfd_open(`pid`) (Linux 5.3+), or -1 where it fails (no such process, kernel too old). Whoever
 * holds `pid` now: prefer a pidfd from the kernel's own record (peerPidfd). The caller owns the fd.
 * Thread: any.
 */
export function pidfdOpen(pid: number): number {
  if (pid <= 0) return -1;
  // syscall(2)'s second argument is declared a pointer for futex; a pid travels in the same register.
  const r = C.syscall(LINUX.SYS_pidfd_open, pid as unknown as Pointer, 0, 0, null, null, 0);
  return r >= 0 ? r : -1;
}

const pollfds2 = new Int32Array(new ArrayBuffer(16)); // two struct pollfd

/**
 * fdPeerGone(socketFd) and, in the same poll(2), whether the process behind `pidfd` exited
 * (POLLIN on a pidfd); a pidfd of -1 is skipped. Never blocks. Thread: any.
 */
export function peerGone(socketFd: number, pidfd: number): boolean {
  if (pidfd < 0) return socketFd >= 0 && fdPeerGone(socketFd);
  pollfds2[0] = socketFd;
  pollfds2[1] = POLLRDHUP;
  pollfds2[2] = pidfd;
  pollfds2[3] = POLLIN;
  const r = C.poll(ptr(pollfds2), 2, 0);
  if (r <= 0) return false;
  const sock = (pollfds2[1]! >>> 16) & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL);
  const proc = (pollfds2[3]! >>> 16) & (POLLIN | POLLHUP | POLLERR | POLLNVAL);
  return (socketFd >= 0 && sock !== 0) || proc !== 0;
}

/** x86-64's default huge page (Hugepagesize in /proc/meminfo); an anonymous MAP_HUGETLB mapping is a multiple of it. */
export const HUGE_PAGE_BYTES = 2 * 1024 * 1024;
/** mmap's MAP_HUGETLB (x86-64 and aarch64 alike); test/kv/store-hugepages.test.ts checks it against the C headers. */
export const MAP_HUGETLB = 0x40000;

/** A huge-page mapping: the memory as an ArrayBuffer and where it lies. */
export interface HugePageMapping {
  readonly buffer: ArrayBuffer;
  readonly address: number;
  readonly lenBytes: number;
}

/**
 * An anonymous private MAP_HUGETLB mapping of `lenBytes` (a multiple of HUGE_PAGE_BYTES), zeroed,
 * as an ArrayBuffer over it. NativeError (ENOMEM when the huge-page pool is too small, e.g.
 * vm.nr_hugepages 0). The caller gives the pages back with releaseHugePages(). Thread: any.
 */
export function mapHugePages(lenBytes: number): HugePageMapping {
  if (lenBytes <= 0 || lenBytes % HUGE_PAGE_BYTES !== 0) throw new NativeError("mmap(MAP_HUGETLB)", 0, `length ${lenBytes} is not a positive multiple of ${HUGE_PAGE_BYTES}`);
  const p = C.mmap(null, lenBytes, PROT_READ_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  // MAP_FAILED is (void*)-1.
  if (p === null || Number(p) === 0 || Number(p) === -1 || Number(p) >= 2 ** 64 - 4096) fail(`mmap(${lenBytes} bytes, MAP_HUGETLB)`);
  return { buffer: toArrayBuffer(p, 0, lenBytes), address: Number(p), lenBytes };
}

/**
 * Gives a mapHugePages() mapping's huge pages back to the kernel at once by mapping ordinary
 * anonymous zero pages over its range (MAP_FIXED): views still held read zeros instead of
 * faulting, and the range costs no memory until touched. The address range itself stays
 * reserved (never munmap'ed under a live ArrayBuffer). Twice is harmless. Thread: any.
 */
export function releaseHugePages(m: HugePageMapping): void {
  const r = C.mmap(m.address as unknown as Pointer, m.lenBytes, PROT_READ_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0);
  if (r === null || Number(r) !== m.address) fail(`mmap(MAP_FIXED over ${m.lenBytes} huge-page bytes)`);
}
