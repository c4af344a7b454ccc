/**
 * src/ffi's libibverbs / librdmacm bindings without a device: the real Debian libraries on this
 * machine (whose kernel has no RDMA support), loaded in a process of their own
 * (test/ffi/verbs-unavailable-child.ts), give RdmaUnavailableError with what they report
 * (`ibv_get_device_list: no devices (ENOSYS)`, rdma_cm's ENODEV); HOTPATH_IBVERBS /
 * HOTPATH_RDMACM naming a file that is not a library give RdmaUnavailableError naming the path.
 * Also the errno tables (ENOMEM from ibv_reg_mr names RLIMIT_MEMLOCK) and the native layout of
 * the preallocated work requests and completions the data path hands to the provider.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { read, toArrayBuffer, type Pointer } from "bun:ffi";
import { NativeError, RdmaUnavailableError } from "../../src/errors.ts";
import { IBV, memlockLimit, rdmaUnavailableReason, RecvWorkRequests, SendWorkRequests, VerbsContext, verbsError, WorkCompletions } from "../../src/ffi/ibverbs.ts";
import { RdmaEventChannel, rdmacmUnavailableReason } from "../../src/ffi/rdmacm.ts";
import { off, size } from "../../src/ffi/verbs-layout.ts";
import { returnedErrno } from "../../src/ffi/verbs-lib.ts";
import { thrown } from "../helpers/thrown.ts";

const OVERRIDES = ["HOTPATH_IBVERBS", "HOTPATH_RDMACM"] as const;
const saved: Record<string, string | undefined> = {};
beforeAll(() => {
  for (const k of OVERRIDES) saved[k] = process.env[k];
});
afterAll(() => {
  for (const k of OVERRIDES) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

/** Runs `fn` with the overrides set as given (unset when undefined), then puts back what the test file started with. */
function withOverrides<T>(vars: Partial<Record<(typeof OVERRIDES)[number], string>>, fn: () => T): T {
  for (const k of OVERRIDES) {
    if (vars[k] === undefined) delete process.env[k];
    else process.env[k] = vars[k];
  }
  try {
    return fn();
  } finally {
    for (const k of OVERRIDES) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

// A machine with an RDMA device (kernel sysfs lists it) is not the no-device case: those tests skip there.
const hasDevice = existsSync("/sys/class/infiniband") && readdirSync("/sys/class/infiniband").length > 0;
if (hasDevice) console.log("ffi.test: an RDMA device exists here (/sys/class/infiniband): the no-device tests are skipped");

describe.skipIf(hasDevice)("the real libraries on a machine without RDMA (in a process of their own)", () => {
  let got: Record<string, any>;
  beforeAll(() => {
    const env: Record<string, string | undefined> = { ...process.env };
    for (const k of OVERRIDES) delete env[k];
    const child = new URL("../ffi/verbs-unavailable-child.ts", import.meta.url).pathname;
    const run = Bun.spawnSync(["bun", child], { env, stderr: "inherit", timeout: 30_000 });
    expect(run.exitCode).toBe(0);
    got = JSON.parse(run.stdout.toString());
  });

  test("libibverbs lists no device: RdmaUnavailableError `ibv_get_device_list: no devices (ENOSYS)`", () => {
    expect(got.reason).toBe("ibv_get_device_list: no devices (ENOSYS)");
    const expected = { unavailable: true, message: "rdma transport unavailable: ibv_get_device_list: no devices (ENOSYS)" };
    expect(got.open).toEqual(expected);
    expect(got.openNamed).toEqual(expected);
    expect(got.devices).toEqual(expected);
  });

  test("librdmacm finds no device: RdmaUnavailableError `rdma_create_event_channel: no RDMA device (ENODEV)`", () => {
    expect(got.rdmacmLoads).toBe(true); // the library itself loads
    expect(got.channel).toEqual({ unavailable: true, message: "rdma transport unavailable: rdma_create_event_channel: no RDMA device (ENODEV)" });
  });
});

describe("HOTPATH_IBVERBS / HOTPATH_RDMACM naming a file that is not a library", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "hotpath-ffi-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("RdmaUnavailableError naming the path (text file, missing file)", () => {
    const text = join(dir, "libibverbs.so.1");
    writeFileSync(text, "not a shared library\n");
    const missing = join(dir, "absent", "librdmacm.so.1");
    withOverrides({ HOTPATH_IBVERBS: text, HOTPATH_RDMACM: text }, () => {
      expect(rdmaUnavailableReason()).toStartWith(`cannot load ${text} (`);
      expect(rdmaUnavailableReason()).toContain("(named by HOTPATH_IBVERBS)");
      const e = thrown(() => VerbsContext.open());
      expect(e).toBeInstanceOf(RdmaUnavailableError);
      expect((e as Error).message).toContain(text);
      const cm = thrown(() => RdmaEventChannel.create());
      expect(cm).toBeInstanceOf(RdmaUnavailableError);
      expect((cm as Error).message).toContain(`cannot load ${text}`);
      expect((cm as Error).message).toContain("HOTPATH_RDMACM");
    });
    withOverrides({ HOTPATH_RDMACM: missing }, () => {
      expect(rdmacmUnavailableReason()).toStartWith(`cannot load ${missing} (`);
      expect(thrown(() => RdmaEventChannel.create())).toBeInstanceOf(RdmaUnavailableError);
    });
  });
});

describe("errno tables", () => {
  test("ENOMEM from ibv_reg_mr names RLIMIT_MEMLOCK and this process's limit", () => {
    const e = verbsError("ibv_reg_mr(1048576 bytes, access 0x7)", 12);
    expect(e).toBeInstanceOf(NativeError);
    expect(e.errno).toBe(12);
    expect(e.operation).toBe("ibv_reg_mr(1048576 bytes, access 0x7)");
    expect(e.message).toContain("(ENOMEM)");
    expect(e.message).toContain("RLIMIT_MEMLOCK");
    const limit = memlockLimit();
    expect(limit).toMatch(/ soft, .* hard$/);
    expect(e.message).toContain(limit!);
  });

  test("each operation's own meaning of an errno; unknown values by number", () => {
    expect(verbsError("ibv_modify_qp(qp 7: IBV_QPS_RESET → IBV_QPS_RTS, mask 0x1)", 22).message).toContain("not valid for this state transition");
    expect(verbsError("ibv_post_send", 12).message).toContain("send queue is full");
    expect(verbsError("ibv_destroy_cq", 16).message).toContain("a QP still uses this CQ");
    // The same errno elsewhere has no such gloss.
    expect(verbsError("ibv_alloc_pd", 12).message).not.toContain("RLIMIT_MEMLOCK");
    expect(verbsError("ibv_query_port", 1234).message).toContain("(errno 1234)");
  });

  test("returned errno: positive is the errno, -1 reads errno, other negatives are -errno", () => {
    expect(returnedErrno(22)).toBe(22);
    expect(returnedErrno(-12)).toBe(12);
  });
});

describe("work requests and completions in native memory", () => {
  test("send work requests: fields where ibv_send_wr has them, SGEs linked, chains, bad_wr index", () => {
    const wrs = new SendWorkRequests(3);
    wrs.set(1, 2 ** 40 + 5, IBV.IBV_WR_RDMA_WRITE_WITH_IMM, IBV.IBV_SEND_SIGNALED | IBV.IBV_SEND_INLINE, 0x1234_5678_9a, 300, 0xabcd);
    wrs.setImm(1, 0x01020304);
    wrs.setRdma(1, 2 ** 45 + 8, 0x55aa);
    wrs.chain(0, 1);
    const at = wrs.addressOf(1) as Pointer;
    expect(wrs.addressOf(1) - wrs.addressOf(0)).toBe(size("ibv_send_wr"));
    expect(read.u32(at, off("ibv_send_wr.wr_id")) + read.u32(at, off("ibv_send_wr.wr_id") + 4) * 2 ** 32).toBe(2 ** 40 + 5);
    expect(read.u32(at, off("ibv_send_wr.opcode"))).toBe(IBV.IBV_WR_RDMA_WRITE_WITH_IMM);
    expect(read.u32(at, off("ibv_send_wr.send_flags"))).toBe(IBV.IBV_SEND_SIGNALED | IBV.IBV_SEND_INLINE);
    expect(read.i32(at, off("ibv_send_wr.num_sge"))).toBe(1);
    expect([0, 1, 2, 3].map((i) => read.u8(at, off("ibv_send_wr.imm_data") + i))).toEqual([1, 2, 3, 4]); // network order
    expect(read.u32(at, off("ibv_send_wr.wr.rdma.rkey"))).toBe(0x55aa);
    expect(Number(read.u64(at, off("ibv_send_wr.wr.rdma.remote_addr")))).toBe(2 ** 45 + 8);
    const sge = read.ptr(at, off("ibv_send_wr.sg_list"))!;
    expect(sge).toBe(wrs.sges.address + size("ibv_sge"));
    expect(Number(read.u64(sge as Pointer, off("ibv_sge.addr")))).toBe(0x1234_5678_9a);
    expect(read.u32(sge as Pointer, off("ibv_sge.length"))).toBe(300);
    expect(read.u32(sge as Pointer, off("ibv_sge.lkey"))).toBe(0xabcd);
    expect(read.ptr(wrs.addressOf(0) as Pointer, off("ibv_send_wr.next"))).toBe(wrs.addressOf(1));
    expect(read.ptr(at, off("ibv_send_wr.next"))).toBe(0);
    wrs.setAtomic(2, 2 ** 33, 9, 2n ** 63n + 1n, 7);
    expect(read.u64(wrs.addressOf(2) as Pointer, off("ibv_send_wr.wr.atomic.compare_add"))).toBe(2n ** 63n + 1n);
    expect(Number(read.u64(wrs.addressOf(2) as Pointer, off("ibv_send_wr.wr.atomic.swap")))).toBe(7);
    // bad_wr: nothing written yet, then what a provider writes there (an entry's address).
    expect(wrs.badIndex()).toBe(-1);
    const bad = new BigUint64Array(toArrayBuffer(wrs.badAddress as Pointer, 0, 8));
    bad[0] = BigInt(wrs.addressOf(2));
    expect(wrs.badIndex()).toBe(2);
    bad[0] = BigInt(wrs.addressOf(2) + 8); // not an entry's start
    expect(wrs.badIndex()).toBe(-1);
  });

  test("receive work requests and completions", () => {
    const wrs = new RecvWorkRequests(2, 2);
    wrs.set(1, 77, 0x1000, 64, 3);
    wrs.setSge(1, 1, 0x2000, 32, 4);
    const at = wrs.addressOf(1) as Pointer;
    expect(read.u32(at, off("ibv_recv_wr.wr_id"))).toBe(77);
    expect(read.ptr(at, off("ibv_recv_wr.sg_list"))).toBe(wrs.sges.address + 2 * size("ibv_sge"));
    const wcs = new WorkCompletions(2);
    const dv = wcs.buf.dv;
    const e = size("ibv_wc");
    dv.setUint32(e + off("ibv_wc.wr_id"), 9, true);
    dv.setUint32(e + off("ibv_wc.wr_id") + 4, 1, true);
    dv.setUint32(e + off("ibv_wc.status"), IBV.IBV_WC_REM_ACCESS_ERR, true);
    dv.setUint32(e + off("ibv_wc.byte_len"), 4096, true);
    dv.setUint32(e + off("ibv_wc.imm_data"), 0x0a0b0c0d, false);
    dv.setUint32(e + off("ibv_wc.qp_num"), 42, true);
    dv.setUint32(e + off("ibv_wc.wc_flags"), IBV.IBV_WC_WITH_IMM, true);
    expect([wcs.wrId(1), wcs.status(1), wcs.byteLen(1), wcs.imm(1), wcs.qpNum(1), wcs.wcFlags(1)]).toEqual([2 ** 32 + 9, IBV.IBV_WC_REM_ACCESS_ERR, 4096, 0x0a0b0c0d, 42, IBV.IBV_WC_WITH_IMM]);
  });
});
