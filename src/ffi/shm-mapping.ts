/**
 * Shared-memory segments over SharedArrayBuffers (bun:ffi, libc): a memfd or POSIX shm object
 * mapped with MAP_FIXED | MAP_SHARED over the page-aligned storage of a SharedArrayBuffer
 * (ShmMapping), sealed memfds to make them from, and futex doorbells on their words. Re-exported
 * by libc.ts, where callers import them from.
 *
 * Contract: a SharedArrayBuffer with a file mapped over it stays reachable until close() (the
 * allocator never sees shared pages); close() maps private anonymous pages back over the range
 * before letting go of it, so the shared pages leave this process at once and views still held
 * read zeros; nothing is ever munmap'ed under a SharedArrayBuffer.
 *
 * Example:
 *   const m = ShmMapping.createSealed("hotpath-x", 1 << 20);   // memfd: no name anywhere, size sealed
 *   const words = new Int32Array(m.sab, m.byteOffset, m.lenBytes >> 2);
 *   worker.postMessage({ sab: m.sab, byteOffset: m.byteOffset });  // the Worker sees the same pages
 *   futexWake(m, 0, 1);                                         // wakes a peer process parked on word 0
 *   m.close();
 *
 * Thread: a mapping belongs to the thread that made it; futexWait blocks the calling thread.
 */

import { ptr, type Pointer } from "bun:ffi";
import { NativeError, UsageError } from "../errors.ts";
import { C, cstr, EEXIST, errno, errnoView, fail, FUTEX_WAIT, FUTEX_WAKE, LINUX, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, O_CREAT, O_EXCL, O_RDWR, PROT_READ_WRITE, SYS_FUTEX, EAGAIN, EINTR, ETIMEDOUT, ENOENT } from "./libc-lib.ts";

/**
 * The pages the kernel maps in one go (sysconf(_SC_PAGESIZE)): 4 KiB on x86-64, up to 64 KiB on
 * aarch64. A segment is mapped in whole pages starting at a page-aligned address.
 */
export const PAGE_BYTES = C.getpagesize();

/**
 * SharedArrayBuffers that have a file mapped over their pages, held here (strongly) until their
 * mapping is closed: if one were collected while still mapped, the allocator would hand the shared
 * pages to another object and the peer could write into this process's heap. A mapping that is
 * never closed keeps its SharedArrayBuffer (and its fd) for the life of the thread, like an fd
 * never closed.
 */
const mappedBuffers = new Set<SharedArrayBuffer>();
/** Buffers whose range could not be restored after a failed map (see restoreAnonymous): never freed, so the allocator never touches the range. */
const unrecoverable: SharedArrayBuffer[] = [];

/** The SharedArrayBuffers of this thread that have a segment mapped over them right now (tests, accounting). */
export function mappedSegmentCount(): number {
  return mappedBuffers.size;
}

/** Maps private anonymous zero pages over `[address, address + lenBytes)` (MAP_FIXED); false when the kernel refused. */
function restoreAnonymous(address: number, lenBytes: number): boolean {
  const r = C.mmap(address as Pointer, lenBytes, PROT_READ_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0);
  return r !== null && Number(r) === address;
}

let offsetPlacement = false;

/**
 * @internal tests: while on, every new mapping of this thread is placed one page into a larger
 * SharedArrayBuffer (byteOffset > 0), as where Bun's storage does not start on a page, so the
 * offset path of the session code runs. Off by default; a test that turns it on turns it off.
 */
export function placeMappingsOffsetForTests(on: boolean): void {
  offsetPlacement = on;
}

/** A shared WebAssembly.Memory grows in pages of 64 KiB. */
const WASM_PAGE_BYTES = 65536;
/** The most pages a WebAssembly.Memory can have: 4 GiB. */
const WASM_MAX_PAGES = 65536;

/**
 * A zeroed SharedArrayBuffer of at least `lenBytes` (rounded up to 64 KiB) whose storage comes
 * fresh from the kernel and goes back to it when the buffer is collected: the buffer of a shared
 * WebAssembly.Memory (its pages are reserved with mmap, lazily zero, and unmapped when the last
 * reference goes). Segments avoid `new SharedArrayBuffer(n)`: Bun's allocator hands freed storage
 * out again and then zero-fills all of it, which for a 66 MiB default segment faulted in most of
 * its pages (measured here in a reconnect loop: 57 to 78 ms per connect on average, single
 * allocations up to 580 ms, against 2.6 ms with a plain mmap). Typed arrays over a Memory's buffer
 * run as fast as over any SharedArrayBuffer (measured; a growable SharedArrayBuffer, the other
 * fresh-pages option, cost ~100 ns more per one-thread round trip). The price: JSC runs a full
 * collection when it cannot reserve another Memory while several are live, so a connect costs
 * a few ms more CPU than with a plain mmap (measured ~4 ms per connect with both sides in one
 * process). Where the runtime refuses the reservation (an address-space limit),
 * `new SharedArrayBuffer` it is. RangeError when no buffer of that size can be had (above 4 GiB).
 * Thread: any; the buffer may be posted to Workers.
 */
export function freshSharedBuffer(lenBytes: number): SharedArrayBuffer {
  const pages = Math.ceil(Math.max(lenBytes, 1) / WASM_PAGE_BYTES);
  if (pages <= WASM_MAX_PAGES && memoryBacked.size < MEMORY_BACKED_MAX) {
    try {
      const sab = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer as unknown as SharedArrayBuffer;
      memoryBacked.add(sab);
      return sab;
    } catch {
      // no reservation to be had: the allocator's buffer below
    }
  }
  return new SharedArrayBuffer(lenBytes);
}

/**
 * The segment in `sab` (from freshSharedBuffer) has ended: it no longer counts against
 * MEMORY_BACKED_MAX. Idempotent; any other buffer is ignored. Thread: the one that made it.
 */
export function releaseFreshSharedBuffer(sab: SharedArrayBuffer): void {
  memoryBacked.delete(sab);
}

/**
 * Memory-backed buffers of this thread (freshSharedBuffer) whose segment is still in use. JSC
 * reserves only a few Memories' worth of address space cheaply and runs a full collection for
 * every Memory made beyond that (measured with a 300k-object heap: from the 5th to 9th live Memory
 * on, 20 to 45 ms per Memory; with 40 sessions open, 20 ms per connect against 0.7 ms), so while
 * MEMORY_BACKED_MAX segments are open new ones take `new SharedArrayBuffer`, which zero-fills
 * storage it recycles instead (that cost lands on connects that follow closes while many are open).
 */
const memoryBacked = new Set<SharedArrayBuffer>();
/** Open Memory-backed segments per thread: below where JSC started collecting per Memory here (the 5th to 9th live one). */
const MEMORY_BACKED_MAX = 4;

/**
 * A fresh SharedArrayBuffer (freshSharedBuffer) with a page-aligned run of `mappedBytes` inside
 * it: starting at its first byte when its storage starts on a page (a Memory's did in every run here), else
 * at the first page boundary of one a page larger. RangeError when no such buffer can be had
 * (above 4 GiB).
 */
function pageAlignedBuffer(mappedBytes: number): { sab: SharedArrayBuffer; byteOffset: number; address: number } {
  let sab = freshSharedBuffer(offsetPlacement ? mappedBytes + PAGE_BYTES : mappedBytes);
  let base = ptr(sab);
  if (offsetPlacement) return { sab, byteOffset: PAGE_BYTES - (base % PAGE_BYTES), address: base + PAGE_BYTES - (base % PAGE_BYTES) };
  if (base % PAGE_BYTES !== 0) {
    releaseFreshSharedBuffer(sab);
    sab = freshSharedBuffer(mappedBytes + PAGE_BYTES);
    base = ptr(sab);
  }
  const byteOffset = (PAGE_BYTES - (base % PAGE_BYTES)) % PAGE_BYTES;
  return { sab, byteOffset, address: base + byteOffset };
}

/**
 * A POSIX shared-memory object (a memfd, or a /dev/shm name) mapped over the pages of a
 * SharedArrayBuffer: the segment is `sab` from `byteOffset` on, `lenBytes` long. Writes through
 * any view of it show in every other mapping of the file (the peer process) and back; the SAB can
 * be posted to a Worker, whose views then see the same memory. Atomics.load/store/add/exchange/
 * compareExchange on it are atomic across processes; Atomics.wait/notify/waitAsync work between
 * threads of this process only (a peer process wakes through futex: futexWait / futexWake).
 *
 * Mapping: a fresh SharedArrayBuffer of the segment's size (freshSharedBuffer) is made, and the file
 * is mmap'ed with MAP_FIXED | MAP_SHARED over its page-aligned run (pageAlignedBuffer). The SAB
 * stays reachable while mapped (mappedBuffers), so the allocator never sees shared pages.
 * Ownership: the mapping owns its fd and the mapping of its SAB; close() gives both back. Views of
 * `sab` stay valid JS objects for ever (nothing is ever unmapped under them); after close() they
 * read zeros. Thread: the one that created it; views and `sab` may be used from any thread it was
 * posted to, until close().
 */
export class ShmMapping {
  /** The SharedArrayBuffer the segment lives in, from `byteOffset` on (views are made once, never per message). */
  readonly sab: SharedArrayBuffer;
  /** Where the segment starts in `sab`: the first page boundary of its storage (0 when the storage starts on a page). */
  readonly byteOffset: number;
  /** Address of the segment's first byte in this process (page-aligned). */
  private readonly address: number;
  /** lenBytes rounded up to whole pages: what is mapped, and what close() maps anonymous pages over. */
  private readonly mappedBytes: number;
  private fd_: number;

  private constructor(
    readonly name: string,
    fd: number,
    placed: { sab: SharedArrayBuffer; byteOffset: number; address: number },
    readonly lenBytes: number,
    mappedBytes: number,
  ) {
    this.fd_ = fd;
    this.sab = placed.sab;
    this.byteOffset = placed.byteOffset;
    this.address = placed.address;
    this.mappedBytes = mappedBytes;
  }

  /**
   * The segment as a buffer whose byte 0 is the segment's byte 0: `sab` itself, when byteOffset
   * is 0 (whenever Bun gave page-aligned storage, which Bun 1.4.5 does from 4 KiB up). Otherwise
   * UsageError: such a caller must use `sab` with `byteOffset`, as the session setup does.
   */
  get buffer(): SharedArrayBuffer {
    if (this.byteOffset !== 0) throw new UsageError(`shm mapping "${this.name}" starts at byte ${this.byteOffset} of its SharedArrayBuffer: use sab with byteOffset`);
    return this.sab;
  }

  /** The fd behind the mapping (-1 once closed): a peer process reopens it as /proc/<pid>/fd/<fd>. */
  get fd(): number {
    return this.fd_;
  }

  /**
   * A new anonymous segment: memfdCreate(label, lenBytes, seal = true), mapped read-write. It
   * has no name anywhere (nothing to unlink, nothing left after a crash) and its size is sealed.
   */
  static createSealed(label: string, lenBytes: number): ShmMapping {
    return ShmMapping.fromFd(`memfd:${label}`, memfdCreate(label, lenBytes, true), lenBytes);
  }

  /**
   * Maps `lenBytes` of an open file, read-write and shared. Takes ownership of `fd`: on failure
   * (no SharedArrayBuffer that large, or mmap refused) the fd is closed and nothing stays mapped.
   */
  static fromFd(name: string, fd: number, lenBytes: number): ShmMapping {
    return ShmMapping.map(name, fd, lenBytes, false);
  }

  /** Creates the POSIX shm object `name` (must not exist), sizes it and maps it read-write. Mode 0600. For benchmarks and tests; sessions use createSealed. */
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
    const undo = () => {
      C.close(fd);
      if (created) C.shm_unlink(cstr(name));
    };
    const mappedBytes = Math.ceil(Math.max(lenBytes, 1) / PAGE_BYTES) * PAGE_BYTES;
    let placed: { sab: SharedArrayBuffer; byteOffset: number; address: number };
    try {
      placed = pageAlignedBuffer(mappedBytes);
    } catch (e) {
      // No SharedArrayBuffer above 4 GiB (a Memory's limit, and RangeError "Out of memory" from
      // new SharedArrayBuffer in Bun 1.4.5): nothing was mapped, and the fd goes too.
      undo();
      throw new NativeError(`mmap("${name}", ${lenBytes})`, 0, `no SharedArrayBuffer of ${mappedBytes} bytes to map it over (${(e as Error)?.message ?? String(e)}): nothing stays mapped, unmapped and closed`);
    }
    const addr = C.mmap(placed.address as Pointer, mappedBytes, PROT_READ_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (addr === null || Number(addr) !== placed.address) {
      const err = errno();
      // A failed MAP_FIXED may have unmapped the range already: anonymous pages go back over it,
      // and if even that fails the buffer is kept for ever, so the allocator never touches the hole.
      if (!restoreAnonymous(placed.address, mappedBytes)) unrecoverable.push(placed.sab);
      releaseFreshSharedBuffer(placed.sab);
      undo();
      errnoView[0] = err;
      fail(`mmap("${name}", ${lenBytes}, MAP_FIXED over a SharedArrayBuffer)`);
    }
    mappedBuffers.add(placed.sab);
    return new ShmMapping(name, fd, placed, lenBytes, mappedBytes);
  }

  /** Address of byte `offset` of the segment in this process (for futex). */
  addressOf(offset: number): number {
    return this.address + offset;
  }

  get closed(): boolean {
    return this.fd_ < 0;
  }

  /**
   * Closes the fd and lets go of the shared pages at once: private anonymous pages are mapped
   * over the segment's range (MAP_FIXED), so the shm object's memory is freed as soon as the peer
   * lets go too (a reconnect loop cannot fill /dev/shm waiting for the garbage collector), every
   * view still held (here or in a Worker) reads zeros instead of the peer's data, and nothing
   * written here reaches the peer any more. Only then is the SAB let go of, so the allocator gets
   * back ordinary private pages. Idempotent. Call it only when no other thread of this process
   * still uses the segment (their views turn to zeros under them).
   */
  close(): void {
    if (this.fd_ < 0) return;
    C.close(this.fd_);
    this.fd_ = -1;
    // MAP_FIXED over our own range fails only when the kernel is out of mappings or memory: the
    // SAB then stays held (and mapped) for the life of the thread instead of being reused shared.
    if (restoreAnonymous(this.address, this.mappedBytes)) mappedBuffers.delete(this.sab);
    releaseFreshSharedBuffer(this.sab);
  }
}

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

/**
 * A new memfd of `lenBytes` (MFD_CLOEXEC | MFD_ALLOW_SEALING; `label` shows in /proc/<pid>/maps
 * as "/memfd:<label>"). With `seal`, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL are added before
 * it is returned: from then on nobody (its creator included) can change its size, so a process
 * that maps it can never be made to fault (SIGBUS) by a truncation. The caller owns the fd.
 */
export function memfdCreate(label: string, lenBytes: number, seal: boolean): number {
  const fd = C.memfd_create(cstr(label), LINUX.MFD_CLOEXEC | LINUX.MFD_ALLOW_SEALING);
  if (fd < 0) fail(`memfd_create("${label}")`);
  const undo = (operation: string): never => {
    const err = errno();
    C.close(fd);
    errnoView[0] = err;
    fail(operation);
  };
  if (C.ftruncate(fd, lenBytes) !== 0) undo(`ftruncate(memfd "${label}", ${lenBytes})`);
  if (seal && C.fcntl(fd, LINUX.F_ADD_SEALS, LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL) !== 0) {
    undo(`fcntl(memfd "${label}", F_ADD_SEALS)`);
  }
  return fd;
}
