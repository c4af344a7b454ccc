/**
 * libucp's symbol table and the helpers every UCP owner uses: loading (with the reason when it
 * cannot), status checks that throw UcxError with UCX's own message, reusable C structs in JS
 * memory, out-pointers, copies out of UCX memory, and sockaddr_in. See ucp.ts for the owners.
 */

import { dlopen, FFIType, ptr, read, toArrayBuffer, type Pointer } from "bun:ffi";
import { NativeError, UcxUnavailableError } from "../errors.ts";
import { off, size, UCP } from "./ucp-layout.ts";

export const P = FFIType.ptr;
export const S = FFIType.i8; // ucs_status_t
const SP = FFIType.i64_fast; // ucs_status_ptr_t
const U64 = FFIType.u64;

const ucpSymbols = {
  ucp_get_version: { args: [P, P, P], returns: FFIType.void },
  ucp_get_version_string: { args: [], returns: FFIType.cstring },
  ucp_config_read: { args: [P, P, P], returns: S },
  ucp_config_release: { args: [P], returns: FFIType.void },
  ucp_config_modify: { args: [P, P, P], returns: S },
  ucp_init_version: { args: [FFIType.u32, FFIType.u32, P, P, P], returns: S },
  ucp_cleanup: { args: [P], returns: FFIType.void },
  ucp_worker_create: { args: [P, P, P], returns: S },
  ucp_worker_destroy: { args: [P], returns: FFIType.void },
  ucp_worker_progress: { args: [P], returns: FFIType.u32 },
  ucp_worker_get_efd: { args: [P, P], returns: S },
  ucp_worker_arm: { args: [P], returns: S },
  ucp_worker_set_am_recv_handler: { args: [P, P], returns: S },
  ucp_worker_get_address: { args: [P, P, P], returns: S },
  ucp_worker_release_address: { args: [P, P], returns: FFIType.void },
  ucp_listener_create: { args: [P, P, P], returns: S },
  ucp_listener_query: { args: [P, P], returns: S },
  ucp_listener_destroy: { args: [P], returns: FFIType.void },
  ucp_listener_reject: { args: [P, P], returns: S },
  ucp_ep_create: { args: [P, P, P], returns: S },
  ucp_ep_close_nbx: { args: [P, P], returns: SP },
  ucp_request_check_status: { args: [P], returns: S },
  ucp_request_free: { args: [P], returns: FFIType.void },
  ucp_am_send_nbx: { args: [P, FFIType.u32, P, U64, P, U64, P], returns: SP },
  ucp_am_recv_data_nbx: { args: [P, P, P, U64, P], returns: SP },
  ucp_am_data_release: { args: [P, P], returns: FFIType.void },
  ucp_mem_map: { args: [P, P, P], returns: S },
  ucp_mem_unmap: { args: [P, P], returns: S },
  ucp_mem_query: { args: [P, P], returns: S },
  ucp_rkey_pack: { args: [P, P, P, P], returns: S },
  ucp_rkey_buffer_release: { args: [P], returns: FFIType.void },
  ucp_ep_rkey_unpack: { args: [P, P, P], returns: S },
  ucp_rkey_destroy: { args: [P], returns: FFIType.void },
  ucp_put_nbx: { args: [P, P, U64, U64, P, P], returns: SP },
  ucp_get_nbx: { args: [P, P, U64, U64, P, P], returns: SP },
  ucp_atomic_op_nbx: { args: [P, FFIType.i32, P, U64, U64, P, P], returns: SP },
  ucp_ep_flush_nbx: { args: [P, P], returns: SP },
  ucp_worker_fence: { args: [P], returns: S },
  // libc's, found through libucp's own dependencies (dlsym on a library handle searches them):
  // one call copies a received message out of UCX memory into JS memory (see copyInto).
  memcpy: { args: [P, P, U64], returns: P },
} as const;

export type UcpSyms = ReturnType<typeof dlopen<typeof ucpSymbols>>["symbols"];
/** The loaded symbols; set once ucpUnavailableReason() succeeded (owners exist only after that). */
export let C: UcpSyms | null = null;
let statusString: ((s: number) => string) | null = null;
let globalOpts: { get: (name: Pointer, value: Pointer, max: number) => number; set: (name: Pointer, value: Pointer) => number } | null = null;
let unavailable: string | null | undefined;

/** Null when libucp loads, else why not. Loads once. */
export function ucpUnavailableReason(): string | null {
  if (unavailable !== undefined) return unavailable;
  const ucpPath = process.env.HOTPATH_LIBUCP || "libucp.so.0";
  const ucsPath = process.env.HOTPATH_LIBUCS || "libucs.so.0";
  try {
    C = dlopen(ucpPath, ucpSymbols).symbols;
    const ucs = dlopen(ucsPath, {
      ucs_status_string: { args: [S], returns: FFIType.cstring },
      ucs_global_opts_get_value: { args: [P, P, FFIType.u64], returns: S },
      ucs_global_opts_set_value: { args: [P, P], returns: S },
    }).symbols;
    statusString = (s) => String(ucs.ucs_status_string(s));
    globalOpts = { get: ucs.ucs_global_opts_get_value, set: ucs.ucs_global_opts_set_value };
    unavailable = null;
    applyUcxLogLevel();
    keepJscSignalHandlers(ucsPath);
  } catch (e) {
    unavailable = `cannot load ${ucpPath} (${e instanceof Error ? e.message.split("\n")[0] : String(e)}); install the Debian package libucx0`;
  }
  return unavailable;
}

/**
 * libucs installs its own SIGSEGV/SIGBUS/SIGILL/SIGFPE handlers when it loads, in front of
 * JavaScriptCore's: JSC stops a Worker being terminated by planting `hlt` in its JIT code (a
 * SIGSEGV it handles itself), so with libucs loaded the first worker.terminate() of a busy Worker
 * printed UCX's "Caught signal 11" backtrace (UCX then gives the handlers back). JSC's (and
 * Bun's crash report) are put back at once, unless UCX_HANDLE_ERRORS or UCX_ERROR_SIGNALS is set.
 * test/inproc/terminate.test.ts. Thread: any; process-wide, once.
 */
function keepJscSignalHandlers(ucsPath: string): void {
  if (process.env.UCX_HANDLE_ERRORS !== undefined || process.env.UCX_ERROR_SIGNALS !== undefined) return;
  try {
    dlopen(ucsPath, { ucs_debug_disable_signals: { args: [], returns: FFIType.void } }).symbols.ucs_debug_disable_signals();
  } catch {
    // a libucs without it (not an exported symbol there): UCX keeps its handlers
  }
}

export function lib(): UcpSyms {
  const why = ucpUnavailableReason();
  if (why !== null) throw new UcxUnavailableError(why);
  return C!;
}

/** libucp's version as it reports it (ucp_get_version / ucp_get_version_string). */
export interface UcpVersion {
  major: number;
  minor: number;
  release: number;
  /** ucp_get_version_string(), e.g. "1.13.1". */
  text: string;
}

/** The loaded libucp's version, or null when it cannot be loaded (ucpUnavailableReason says why). Thread: any JS thread. */
export function ucpVersion(): UcpVersion | null {
  if (ucpUnavailableReason() !== null) return null;
  const v = new Uint32Array(3);
  C!.ucp_get_version(ptr(v), ptr(v, 4), ptr(v, 8));
  return { major: v[0]!, minor: v[1]!, release: v[2]!, text: String(C!.ucp_get_version_string()) };
}

export class UcxError extends NativeError {
  readonly status: number;
  constructor(operation: string, status: number) {
    super(operation, status, `${statusString ? statusString(status) : "UCX error"} (ucs_status ${status})`);
    this.status = status;
  }
}

export function check(operation: string, status: number): void {
  if (status !== UCP.UCS_OK) throw new UcxError(operation, status);
}

const LOG_LEVEL = cString("LOG_LEVEL");
const LOG_FATAL = cString("fatal");

/**
 * UCX's log level when the user sets no UCX_LOG_LEVEL: "fatal". UCX's default ("warn") prints
 * ERROR lines (to stdout, UCX_LOG_FILE's default) for failures hotpath reports itself as typed
 * errors, e.g. a ucx candidate of a fallback chain whose connect fails. Silenced rather than
 * routed: ucs_log_push_handler's callback gets a printf format and a va_list, which JS cannot
 * expand, and UCX logs from its async thread too, where a JSCallback must not run.
 */
const DEFAULT_UCX_LOG_LEVEL = "fatal";

/**
 * Sets UCX's process-wide log level (ucs_global_opts LOG_LEVEL, which libucs reads from the
 * environment only once, when it loads): the user's UCX_LOG_LEVEL as is when set (also one set
 * through process.env after libucs loaded, which UCX's getenv does not see), else
 * DEFAULT_UCX_LOG_LEVEL. A value UCX refuses leaves the level it had. Called when libucp loads
 * and before each context reads its config. Thread: any JS thread; the level is process-wide.
 */
export function applyUcxLogLevel(): void {
  const g = globalOpts;
  if (g === null) return;
  const level = cString(process.env.UCX_LOG_LEVEL ?? DEFAULT_UCX_LOG_LEVEL); // alive across the call
  g.set(ptr(LOG_LEVEL), ptr(level));
}

/** UCX's current log level (ucs_global_opts LOG_LEVEL, e.g. "fatal"), or null when libucs is not loaded. */
export function ucxLogLevel(): string | null {
  const g = globalOpts;
  if (g === null) return null;
  const out = new Uint8Array(32);
  if (g.get(ptr(LOG_LEVEL), ptr(out), out.length) !== 0) return null;
  return new TextDecoder().decode(out.subarray(0, out.indexOf(0)));
}

/**
 * Runs `fn` with UCX's log level at "fatal", then restores it. For calls whose errors are
 * expected and handled by the caller, which UCX would otherwise print as ERROR lines (closing
 * the endpoint of a dead peer in UCP_ERR_HANDLING_MODE_NONE flushes lanes that can only fail).
 * Thread: the worker's; the level is process-wide for the duration of the call.
 */
export function withUcxLogsQuiet<T>(fn: () => T): T {
  const g = globalOpts;
  if (g === null) return fn();
  const saved = new Uint8Array(32);
  if (g.get(ptr(LOG_LEVEL), ptr(saved), saved.length) !== 0 || g.set(ptr(LOG_LEVEL), ptr(LOG_FATAL)) !== 0) return fn();
  try {
    return fn();
  } finally {
    g.set(ptr(LOG_LEVEL), ptr(saved));
  }
}

const EMPTY = new Uint8Array(0);

/** Copies `len` bytes at native address `p` (UCX memory valid during a callback) into a new array. */
export function copyOut(p: number, len: number): Uint8Array {
  if (len === 0) return EMPTY;
  if (len > SMALL_COPY_BYTES) return new Uint8Array(toArrayBuffer(p as Pointer, 0, len)).slice();
  // Small: word reads are ~4x cheaper than making an external ArrayBuffer (measured: 45 vs 190 ns for 24 bytes).
  const out = new Uint8Array(len);
  const words = len & ~3;
  for (let i = 0; i < words; i += 4) {
    const w = read.u32(p as Pointer, i);
    out[i] = w;
    out[i + 1] = w >>> 8;
    out[i + 2] = w >>> 16;
    out[i + 3] = w >>> 24;
  }
  for (let i = words; i < len; i++) out[i] = read.u8(p as Pointer, i);
  return out;
}

/**
 * Copies `len` bytes at native address `src` (UCX memory, valid during a callback) into the
 * start of `dst` (JS memory the caller owns; at least `len` bytes: not checked) with one memcpy.
 * No allocation. Thread: the worker's.
 */
export function copyInto(dst: Uint8Array, src: number, len: number): void {
  C!.memcpy(dst, src as Pointer, len);
}

/**
 * The address of `buffer`'s first byte, for copyToAddress. Stable only for a Uint8Array over
 * an ArrayBuffer of its own (`new Uint8Array(new ArrayBuffer(n))`), whose storage never moves;
 * a small `new Uint8Array(n)` keeps its bytes in the GC heap and moves them when a view of it
 * is made (seen: a copy to a stale address). The caller keeps `buffer` alive while it uses
 * the address. Thread: any JS thread.
 */
export function addressOf(buffer: Uint8Array): number {
  return ptr(buffer) as number;
}

/**
 * copyInto with the destination as an address from addressOf (no typed-array conversion per
 * call): `len` bytes from native `src` to `dst`, which must have room. Thread: the worker's.
 */
export function copyToAddress(dst: number, src: number, len: number): void {
  C!.memcpy(dst as Pointer, src as Pointer, len);
}

/**
 * An ArrayBuffer over `len` bytes of native memory at `p` (UCX's, lent to the caller), not
 * copied and not owned: the caller detaches it (`transfer(0)`) before the memory goes back to
 * UCX, so that no view reads memory UCX reuses.
 */
export function toView(p: number, len: number): ArrayBuffer {
  return toArrayBuffer(p as Pointer, 0, len);
}

/** Up to this many bytes, copyOut reads words instead of wrapping the memory in an ArrayBuffer. */
const SMALL_COPY_BYTES = 64;

/** A status pointer: 0 done, a negative status, or a request address. */
export const isStatusError = (sp: number) => sp < 0 && sp >= -100;

/** A reusable zeroed struct in JS memory, handed to C by pointer. */
export class Struct {
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  readonly p: Pointer;
  constructor(sizeBytes: number) {
    this.bytes = new Uint8Array(sizeBytes);
    this.dv = new DataView(this.bytes.buffer);
    this.p = ptr(this.bytes);
  }
  clear(): this {
    this.bytes.fill(0);
    return this;
  }
  /** A 64-bit field from a number below 2^53 (no BigInt on the hot path) or a bigint. */
  u64(at: number, v: number | bigint): this {
    if (typeof v === "bigint") this.dv.setBigUint64(at, v, true);
    else {
      this.dv.setUint32(at, v % 0x100000000, true);
      this.dv.setUint32(at + 4, Math.floor(v / 0x100000000), true);
    }
    return this;
  }
  u32(at: number, v: number): this {
    this.dv.setUint32(at, v >>> 0, true);
    return this;
  }
  ptrAt(at: number, p: number | Pointer | null): this {
    return this.u64(at, Number(p ?? 0));
  }
}

/** One out-pointer slot (`T**` arguments). */
export class Out {
  private readonly cell = new BigUint64Array(1);
  readonly p: Pointer = ptr(this.cell);
  get value(): number {
    return Number(this.cell[0]);
  }
}

/** A NUL-terminated copy of `s` for a `const char *` argument (keep it alive during the call). */
export function cString(s: string): Uint8Array {
  return new TextEncoder().encode(s + "\0");
}

/** Builds a sockaddr_in for an IPv4 host and port. */
export function sockaddrIn(host: string, port: number): Uint8Array {
  const parts = host.split(".").map(Number);
  if (parts.length !== 4 || parts.some((x) => !(x >= 0 && x <= 255))) {
    throw new NativeError("sockaddr", 0, `"${host}" is not an IPv4 address (ucx needs a numeric IPv4 host)`);
  }
  const sa = new Uint8Array(size("struct sockaddr_in"));
  const dv = new DataView(sa.buffer);
  dv.setUint16(off("struct sockaddr_in.sin_family"), 2, true); // AF_INET
  dv.setUint16(off("struct sockaddr_in.sin_port"), port, false); // network order
  sa.set(parts, off("struct sockaddr_in.sin_addr"));
  return sa;
}

