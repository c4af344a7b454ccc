/**
 * libibverbs' symbol table and loading: `libibverbs.so.1`, or the file named by env
 * HOTPATH_IBVERBS (read when the library is first needed; a test fixture sets it), the device
 * list, and fork safety. The owners (VerbsContext and what it makes) are in ibverbs.ts, the data
 * path in verbs-ops.ts. Internal to src/ffi: callers import ibverbs.ts.
 *
 * Unavailable: a library that cannot be loaded, or no device, is RdmaUnavailableError with the
 * reason: `cannot load <path> (<loader message>)`, or what the real library says on a machine
 * without RDMA: `ibv_get_device_list: no devices (ENOSYS)`.
 *
 * Example:
 *   const why = rdmaUnavailableReason();         // null when a device is there
 *   for (const d of verbsDevices()) console.log(d.name, d.guid);
 *
 * Thread: any JS thread; each thread that loads this module has its own handle on the library.
 */

import { FFIType, read, type Pointer } from "bun:ffi";
import { RdmaUnavailableError } from "../errors.ts";
import { IBV } from "./verbs-layout.ts";
import { clearErrno, errno, errnoName, firstLine, loadLibrary, verbsError, type LoadedLibrary } from "./verbs-lib.ts";

const P = FFIType.ptr;
const I32 = FFIType.i32;

/** Exported functions the wrappers call (verbs.h's macros and inlines resolved to them: see ibverbs.ts). */
const required = {
  ibv_get_device_list: { args: [P], returns: P },
  ibv_free_device_list: { args: [P], returns: FFIType.void },
  ibv_get_device_name: { args: [P], returns: FFIType.cstring },
  ibv_get_device_guid: { args: [P], returns: FFIType.u64 },
  ibv_open_device: { args: [P], returns: P },
  ibv_close_device: { args: [P], returns: I32 },
  ibv_query_device: { args: [P, P], returns: I32 },
  // Exported with struct _compat_ibv_port_attr: the same fields up to link_layer (the header's
  // ibv_query_port macro goes through the provider's extended context, when it has one, and
  // falls back to this export).
  ibv_query_port: { args: [P, FFIType.u8, P], returns: I32 },
  ibv_query_gid: { args: [P, FFIType.u8, I32, P], returns: I32 },
  ibv_alloc_pd: { args: [P], returns: P },
  ibv_dealloc_pd: { args: [P], returns: I32 },
  // The header's ibv_reg_mr is a macro that calls this export (IBVERBS_1.1) unless the access
  // flags need ibv_reg_mr_iova2 (IBV_ACCESS_OPTIONAL_RANGE bits, which hotpath never sets).
  ibv_reg_mr: { args: [P, P, FFIType.u64, I32], returns: P },
  ibv_dereg_mr: { args: [P], returns: I32 },
  ibv_create_comp_channel: { args: [P], returns: P },
  ibv_destroy_comp_channel: { args: [P], returns: I32 },
  ibv_create_cq: { args: [P, I32, P, P, I32], returns: P },
  ibv_destroy_cq: { args: [P], returns: I32 },
  ibv_get_cq_event: { args: [P, P, P], returns: I32 },
  ibv_ack_cq_events: { args: [P, FFIType.u32], returns: FFIType.void },
  ibv_create_srq: { args: [P, P], returns: P },
  ibv_modify_srq: { args: [P, P, I32], returns: I32 },
  ibv_destroy_srq: { args: [P], returns: I32 },
  ibv_create_qp: { args: [P, P], returns: P },
  ibv_modify_qp: { args: [P, P, I32], returns: I32 },
  ibv_destroy_qp: { args: [P], returns: I32 },
  ibv_get_async_event: { args: [P, P], returns: I32 },
  ibv_ack_async_event: { args: [P], returns: FFIType.void },
} as const;

/** Exported by rdma-core but not needed to run (an older library or a test fixture may lack them). */
const optional = {
  ibv_is_fork_initialized: { args: [], returns: I32 },
  ibv_fork_init: { args: [], returns: I32 },
  ibv_query_qp: { args: [P, P, I32, P], returns: I32 },
} as const;

export type IbvLibrary = LoadedLibrary<typeof required, typeof optional>;

/** Loaded libraries (or why not) by path: HOTPATH_IBVERBS is read each time one is needed, so a test can switch. */
const loaded = new Map<string, IbvLibrary | string>();

/** The path dlopen gets: env HOTPATH_IBVERBS, else the Debian soname `libibverbs.so.1`. */
export function ibverbsPath(): string {
  return process.env.HOTPATH_IBVERBS || "libibverbs.so.1";
}

/** Null when libibverbs loads (devices or not), else why not. Loads once per path. */
export function ibverbsUnavailableReason(): string | null {
  const got = loadIbverbs();
  return typeof got === "string" ? got : null;
}

function loadIbverbs(): IbvLibrary | string {
  const path = ibverbsPath();
  let got = loaded.get(path);
  if (got === undefined) {
    try {
      got = loadLibrary(path, required, optional);
    } catch (e) {
      got = `cannot load ${path} (${firstLine(e)})${process.env.HOTPATH_IBVERBS ? " (named by HOTPATH_IBVERBS)" : "; install the Debian package libibverbs1"}`;
    }
    loaded.set(path, got);
  }
  return got;
}

/** The loaded library; RdmaUnavailableError when it cannot be loaded. */
export function ibverbs(): IbvLibrary {
  const got = loadIbverbs();
  if (typeof got === "string") throw new RdmaUnavailableError(got);
  return got;
}

/** One RDMA device as ibv_get_device_list lists it. */
export interface VerbsDeviceInfo {
  /** The kernel's name for it, e.g. "mlx5_0" (what `?device=` names). */
  name: string;
  /** Node GUID as 16 hex digits in network order. */
  guid: string;
}

function guidHex(raw: bigint): string {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setBigUint64(0, raw, true); // the __be64 as it lies in memory
  return [...new Uint8Array(dv.buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Calls `use` with the device list (native pointers, valid during the call only: open what you
 * need inside) and frees it. RdmaUnavailableError when the library cannot be loaded or lists no
 * device: `ibv_get_device_list: no devices (ENOSYS)` (NULL, with errno's name) or
 * `ibv_get_device_list: no devices (empty list)`.
 */
export function withDeviceList<T>(use: (lib: IbvLibrary, devices: number[]) => T): T {
  const lib = ibverbs();
  const n = new Int32Array(new ArrayBuffer(4));
  clearErrno();
  const list = Number(lib.C.ibv_get_device_list(n));
  if (list === 0) {
    const e = errno();
    throw new RdmaUnavailableError(`ibv_get_device_list: no devices (${e === 0 ? "NULL, errno not set" : errnoName(e)})`);
  }
  try {
    const devices: number[] = [];
    for (let i = 0; i < n[0]!; i++) devices.push(read.ptr(list as Pointer, i * 8) as number);
    if (devices.length === 0) throw new RdmaUnavailableError("ibv_get_device_list: no devices (empty list)");
    return use(lib, devices);
  } finally {
    lib.C.ibv_free_device_list(list as Pointer);
  }
}

/** The devices there are now (RdmaUnavailableError when none: see withDeviceList). Thread: any JS thread. */
export function verbsDevices(): VerbsDeviceInfo[] {
  return withDeviceList((lib, devices) =>
    devices.map((d) => ({ name: String(lib.C.ibv_get_device_name(d as Pointer)), guid: guidHex(BigInt(lib.C.ibv_get_device_guid(d as Pointer))) })),
  );
}

/** Null when libibverbs loads and lists at least one device, else the reason RdmaUnavailableError carries. Lists devices on each call. */
export function rdmaUnavailableReason(): string | null {
  try {
    verbsDevices();
    return null;
  } catch (e) {
    if (e instanceof RdmaUnavailableError) return e.message.replace(/^rdma transport unavailable: /, "");
    throw e;
  }
}

/** What ibv_is_fork_initialized says: "enabled" (ibv_fork_init ran), "disabled", "unneeded" (the kernel copes), or "unknown" (not exported). */
export type ForkSafety = "enabled" | "disabled" | "unneeded" | "unknown";

/** Fork safety of registered memory in this process. */
export function forkSafety(): ForkSafety {
  const f = ibverbs().opt.ibv_is_fork_initialized;
  if (f === undefined) return "unknown";
  const v = f();
  return v === IBV.IBV_FORK_ENABLED ? "enabled" : v === IBV.IBV_FORK_UNNEEDED ? "unneeded" : v === IBV.IBV_FORK_DISABLED ? "disabled" : "unknown";
}

/**
 * Makes registered memory fork-safe (ibv_fork_init) unless forkSafety() says it is already
 * enabled or unneeded; must run before any memory is registered. Returns the state after.
 * NativeError when ibv_fork_init fails. Thread: the main JS thread, at startup.
 */
export function ensureForkSafe(): ForkSafety {
  const state = forkSafety();
  if (state === "enabled" || state === "unneeded") return state;
  const init = ibverbs().opt.ibv_fork_init;
  if (init === undefined) return state;
  const rc = init();
  if (rc !== 0) throw verbsError("ibv_fork_init", rc > 0 ? rc : errno());
  const after = forkSafety();
  return after === "unknown" ? "enabled" : after;
}
