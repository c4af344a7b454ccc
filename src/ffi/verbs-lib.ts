/**
 * What the libibverbs and librdmacm wrappers (ibverbs.ts, verbs-ops.ts, rdmacm.ts) share:
 * loading a library by an overridable path with a required and an optional symbol table, the
 * errno tables (one per operation) that turn a failed call into a NativeError naming the
 * operation, the errno and what it means there, 64-bit fields without BigInt, reusable C
 * structs in JS memory, non-blocking fds, and sockaddr_in. Internal to src/ffi.
 *
 * Errors: verbs calls return 0 or an errno value (rdma-core's convention; old providers return
 * -1 and set errno), pointer-returning calls return NULL and set errno, rdma_cm calls return -1
 * and set errno: returnedErrno() reads all three the same way.
 *
 * Example:
 *   const rc = C.ibv_modify_qp(qp, attr.p, mask);
 *   if (rc !== 0) throw verbsError("ibv_modify_qp", returnedErrno(rc), "RESET → INIT");
 *
 * Thread: any JS thread; errno is read on the calling thread right after the call.
 */

import { dlopen, ptr, read, type FFIFunction, type Pointer } from "bun:ffi";
import { readFileSync } from "node:fs";
import { NativeError, UsageError } from "../errors.ts";
import { C as libc, EAGAIN, errno, errnoView, LINUX } from "./libc-lib.ts";
import { IBV, off, size } from "./verbs-layout.ts";

export { EAGAIN, errno };

/** Linux errno names (x86-64 and aarch64 alike) for the values these libraries report. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 4: "EINTR", 5: "EIO", 9: "EBADF", 11: "EAGAIN", 12: "ENOMEM", 13: "EACCES", 14: "EFAULT",
  16: "EBUSY", 17: "EEXIST", 19: "ENODEV", 22: "EINVAL", 24: "EMFILE", 28: "ENOSPC", 38: "ENOSYS", 61: "ENODATA",
  71: "EPROTO", 95: "EOPNOTSUPP", 98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 101: "ENETUNREACH", 103: "ECONNABORTED",
  104: "ECONNRESET", 105: "ENOBUFS", 106: "EISCONN", 107: "ENOTCONN", 110: "ETIMEDOUT", 111: "ECONNREFUSED",
  113: "EHOSTUNREACH", 114: "EALREADY", 115: "EINPROGRESS",
};
export const EBADF = 9;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const ENODEV = 19;
export const EINVAL = 22;
export const ENOSYS = 38;
export const EADDRINUSE = 98;
export const EADDRNOTAVAIL = 99;

/** "ENOSYS" for 38; "errno 1234" for a value without a name here. */
export function errnoName(e: number): string {
  return ERRNO_NAMES[e] ?? `errno ${e}`;
}

/**
 * The locked-memory limit of this process as /proc/self/limits states it ("Max locked memory"),
 * e.g. "8388608 bytes soft, 8388608 bytes hard", or null where it cannot be read.
 */
export function memlockLimit(): string | null {
  try {
    const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max locked memory"));
    const m = line?.match(/^Max locked memory\s+(\S+)\s+(\S+)\s+(\S+)/);
    return m ? `${m[1]} ${m[3]} soft, ${m[2]} ${m[3]} hard` : null;
  } catch {
    return null;
  }
}

const memlockHint = (): string =>
  `registration pins memory against RLIMIT_MEMLOCK (${memlockLimit() ?? "limit unknown"}); raise it (ulimit -l, systemd LimitMEMLOCK=, or /etc/security/limits.conf)`;

/**
 * What an errno means for one operation, where the bare strerror text would mislead: one table
 * per operation (the key is the C function's name), consulted by verbsError.
 */
const ERRNO_TABLES: Record<string, Record<number, string | (() => string)>> = {
  ibv_get_device_list: { [ENOSYS]: "no RDMA device (the kernel has no InfiniBand/RDMA support loaded)" },
  ibv_open_device: { [ENODEV]: "the device went away", [EACCES]: "no permission on /dev/infiniband/uverbs*" },
  ibv_reg_mr: { [ENOMEM]: memlockHint, [EFAULT]: "the address range is not mapped memory", [EINVAL]: "bad access flags or a zero length", [EACCES]: "access flags the device refuses" },
  ibv_create_cq: { [EINVAL]: "cqe above the device's max_cqe", [ENOMEM]: "out of memory for the CQ" },
  ibv_create_srq: { [EINVAL]: "max_wr / max_sge above the device's max_srq_wr / max_srq_sge", [ENOSYS]: "the device has no SRQ" },
  ibv_modify_srq: { [EINVAL]: "srq_limit above the SRQ's max_wr (or a limit on a device without one)" },
  ibv_create_qp: { [EINVAL]: "capabilities beyond the device's limits (max_qp_wr, max_sge, max_inline_data) or a CQ of another context", [ENOMEM]: "out of memory for the QP (or too many QPs)" },
  ibv_modify_qp: { [EINVAL]: "attributes or mask not valid for this state transition (RESET→INIT→RTR→RTS, any→ERR/RESET)" },
  ibv_destroy_cq: { [EBUSY]: "a QP still uses this CQ" },
  ibv_destroy_srq: { [EBUSY]: "a QP still uses this SRQ" },
  ibv_dealloc_pd: { [EBUSY]: "MRs, QPs or SRQs of this PD are still alive" },
  ibv_destroy_comp_channel: { [EBUSY]: "a CQ still uses this completion channel" },
  ibv_post_send: { [ENOMEM]: "the send queue is full", [EINVAL]: "a bad work request, or the QP is not in RTS" },
  ibv_post_recv: { [ENOMEM]: "the receive queue is full", [EINVAL]: "a bad work request, or the QP is in RESET" },
  ibv_post_srq_recv: { [ENOMEM]: "the SRQ is full", [EINVAL]: "a bad work request" },
  ibv_fork_init: { [EINVAL]: "called after memory was registered; call it first" },
  rdma_create_event_channel: { [ENODEV]: "no RDMA device (rdma_cm finds no RDMA-capable interface)", [ENOSYS]: "no RDMA device (rdma_cm is not available in this kernel)" },
  rdma_create_id: { [ENODEV]: "no RDMA device" },
  rdma_bind_addr: { [EADDRINUSE]: "the port is in use", [EADDRNOTAVAIL]: "no RDMA device has this address", [ENODEV]: "no RDMA device has this address" },
  rdma_resolve_addr: { [EADDRNOTAVAIL]: "no RDMA device reaches this address", [ENODEV]: "no RDMA device reaches this address" },
  rdma_listen: { [EADDRINUSE]: "the port is in use" },
  rdma_connect: { [EINVAL]: "the id is not route-resolved, or private data too long" },
};

/**
 * A NativeError for `operation` (the C function's name, then optional context in `detail`) that
 * failed with errno `e`: strerror, the errno's name, and what it means for this operation.
 */
export function verbsError(operation: string, e: number, detail?: string): NativeError {
  const base = operation.split("(")[0]!;
  const hint = ERRNO_TABLES[base]?.[e];
  const parts = [`${String(libc.strerror(e))} (${errnoName(e)})`];
  if (hint !== undefined) parts.push(typeof hint === "function" ? hint() : hint);
  if (detail) parts.push(detail);
  return new NativeError(operation, e, parts.join("; "));
}

/**
 * The errno of a failed call from its return value: a positive return is the errno itself
 * (verbs), -1 means errno (rdma_cm, pointer calls), another negative is -errno (some providers).
 * EIO when errno is 0 (the library set none).
 */
export function returnedErrno(rc: number): number {
  if (rc > 0) return rc;
  if (rc < -1) return -rc;
  return errno() || 5;
}

/** Clears errno before a call whose failure is read from errno (a NULL return). */
export function clearErrno(): void {
  errnoView[0] = 0;
}

/** Sets O_NONBLOCK on `fd` (the completion channel's, the async fd, the rdma_cm channel's): reads then return EAGAIN instead of blocking. */
export function setNonBlocking(fd: number, operation: string): void {
  const F_GETFL = 3;
  const F_SETFL = 4;
  const flags = libc.fcntl(fd, F_GETFL, 0);
  if (flags < 0 || libc.fcntl(fd, F_SETFL, flags | LINUX.O_NONBLOCK) !== 0) throw verbsError(`${operation}: fcntl(${fd}, O_NONBLOCK)`, errno());
}

/** A library loaded from `path`: its required symbols, and those of the optional table it exports. */
export interface LoadedLibrary<R extends Record<string, FFIFunction>, O extends Record<string, FFIFunction>> {
  path: string;
  C: ReturnType<typeof dlopen<R>>["symbols"];
  opt: Partial<ReturnType<typeof dlopen<O>>["symbols"]>;
}

/**
 * dlopen `path` with every symbol of `required` (throws the loader's first message line when the
 * file is missing, not a library, or lacks one of them), then each symbol of `optional` on its
 * own (missing ones stay undefined: a test fixture or an old library need not export them).
 */
export function loadLibrary<R extends Record<string, FFIFunction>, O extends Record<string, FFIFunction>>(path: string, required: R, optional: O): LoadedLibrary<R, O> {
  const C = dlopen(path, required).symbols;
  const opt: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(optional)) {
    try {
      opt[name] = dlopen(path, { [name]: fn }).symbols[name];
    } catch {
      // not exported by this library
    }
  }
  return { path, C, opt: opt as LoadedLibrary<R, O>["opt"] };
}

/** The first line of a thrown loader error. */
export function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0]!;
}

/** A 64-bit field of native memory as a number (exact below 2^53: addresses, lengths, wr_ids). */
export function readU64(p: number, at: number): number {
  return read.u32(p as Pointer, at) + read.u32(p as Pointer, at + 4) * 0x100000000;
}

/** A 64-bit little-endian field of `dv` from a number below 2^53 (no BigInt on the hot path) or a bigint. */
export function setU64(dv: DataView, at: number, v: number | bigint): void {
  if (typeof v === "bigint") dv.setBigUint64(at, v, true);
  else {
    dv.setUint32(at, v % 0x100000000, true);
    dv.setUint32(at + 4, Math.floor(v / 0x100000000), true);
  }
}

/** A 64-bit little-endian field of `dv` as a number (exact below 2^53). */
export function getU64(dv: DataView, at: number): number {
  return dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 0x100000000;
}

/**
 * A zeroed C struct (or array of them) in JS memory of its own, handed to C by address. The
 * ArrayBuffer is made first, so its bytes never move (a small `new Uint8Array(n)` lives in
 * the GC heap until a view of its buffer is made). The owner keeps the object alive while C
 * may use the address. Thread: the owner's.
 */
export class NativeStruct {
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  readonly p: Pointer;
  readonly address: number;
  constructor(sizeBytes: number) {
    const buf = new ArrayBuffer(sizeBytes);
    this.bytes = new Uint8Array(buf);
    this.dv = new DataView(buf);
    this.p = ptr(this.bytes);
    this.address = Number(this.p);
  }
  clear(): this {
    this.bytes.fill(0);
    return this;
  }
  u8(at: number, v: number): this {
    this.dv.setUint8(at, v);
    return this;
  }
  u16(at: number, v: number): this {
    this.dv.setUint16(at, v, true);
    return this;
  }
  u32(at: number, v: number): this {
    this.dv.setUint32(at, v >>> 0, true);
    return this;
  }
  u64(at: number, v: number | bigint): this {
    setU64(this.dv, at, v);
    return this;
  }
  ptrAt(at: number, p: number | Pointer | null): this {
    return this.u64(at, Number(p ?? 0));
  }
}

/** One out-pointer slot (`T **` arguments). */
export class OutPointer {
  private readonly cell = new BigUint64Array(new ArrayBuffer(8));
  readonly p: Pointer = ptr(this.cell);
  get value(): number {
    return Number(this.cell[0]);
  }
  clear(): this {
    this.cell[0] = 0n;
    return this;
  }
}

/** A NUL-terminated copy of `s` for a `const char *` argument (keep it alive during the call). */
export function cString(s: string): Uint8Array {
  return new TextEncoder().encode(s + "\0");
}

/** A sockaddr_in for a numeric IPv4 host and a port (UsageError for anything else). */
export function sockaddrIn(host: string, port: number): NativeStruct {
  const parts = host.split(".").map((x) => (/^\d{1,3}$/.test(x) ? Number(x) : NaN));
  if (parts.length !== 4 || parts.some((x) => !(x >= 0 && x <= 255))) throw new UsageError(`rdma: "${host}" is not a numeric IPv4 address`);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`rdma: port ${port} is not in 0..65535`);
  const sa = new NativeStruct(size("sockaddr_in"));
  sa.u16(off("sockaddr_in.sin_family"), IBV.AF_INET);
  sa.dv.setUint16(off("sockaddr_in.sin_port"), port, false); // network order
  sa.bytes.set(parts, off("sockaddr_in.sin_addr"));
  return sa;
}

/** The "host:port" of a sockaddr_in at native address `p` (an rdma_cm_id's route address); null when it is not AF_INET. */
export function readSockaddrIn(p: number): { host: string; port: number } | null {
  if (read.u16(p as Pointer, off("sockaddr_in.sin_family")) !== IBV.AF_INET) return null;
  const port = (read.u8(p as Pointer, off("sockaddr_in.sin_port")) << 8) | read.u8(p as Pointer, off("sockaddr_in.sin_port") + 1);
  const a = off("sockaddr_in.sin_addr");
  const host = [0, 1, 2, 3].map((i) => read.u8(p as Pointer, a + i)).join(".");
  return { host, port };
}
