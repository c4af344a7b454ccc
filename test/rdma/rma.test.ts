/**
 * One-sided access over rdma:// (src/rdma/rma.ts).
 *
 * Unit level (this process, no device): the 20-byte descriptor round-trips and malformed ones
 * are ProtocolError; every access outside the region, a misaligned CAS, an operation over
 * MAX_OP_BYTES is refused with UsageError before anything reaches the connection (a recording
 * RmaConnection sees no post); a closed connection refuses with TransportClosedError; once
 * closing, only operations never posted fail at once (in-flight ones and the regions wait for the
 * QP's flush and the connection's teardown).
 *
 * Over the software RC TEST FIXTURE, in both connection modes, two processes: the owner
 * (test/rdma/rma-owner.ts) registers a region per connection and hands out its descriptor; the
 * peer (test/rdma/rma-peer.ts) puts, gets, reads and compare-and-swaps, and the bytes are checked
 * in the owner's memory; out-of-range access is UsageError and the connection goes on; a forged
 * descriptor with a bad rkey fails with RdmaAccessError and closes the connection with it (an
 * operation behind it fails with TransportClosedError); operations in flight when the peer
 * closes its side settle with TransportClosedError; after the peer closed, the owner's
 * regions are closed and its live MR count (softrc_live("mr")) is back where it was before the
 * connection, and the peer's is 0.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { ProtocolError, TransportClosedError, UsageError } from "../../src/errors.ts";
import type { VerbsPd } from "../../src/ffi/ibverbs.ts";
import { IBV } from "../../src/ffi/verbs-layout.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";
import { decodeRmaDescriptor, encodeRmaDescriptor, MAX_OP_BYTES, RdmaRma, RMA_DESC_BYTES, type RmaConnection } from "../../src/rdma/rma.ts";

/** A connection that records posts (none may happen in these tests) and can be closed. */
function recorder() {
  const posts: unknown[][] = [];
  const conn: RmaConnection & { closed: boolean } = {
    closed: false,
    closeError: null,
    peer: "rdma://198.51.100.7:4791",
    postOneSided: (...args: unknown[]) => {
      posts.push(args);
      return true;
    },
    abort() {
      conn.closed = true;
    },
    onNextSendCompletion() {},
  };
  // No registration happens before a refused access: a PD that throws if touched proves it.
  const pd = new Proxy({}, { get: () => { throw new Error("the PD was used"); } }) as unknown as VerbsPd;
  return { conn, posts, rma: new RdmaRma(conn, pd) };
}

describe("rdma rma, unit", () => {
  test("descriptor: u64 address, u64 length, u32 rkey, little-endian; malformed ones are ProtocolError", () => {
    const d = encodeRmaDescriptor({ address: 0x7f12_3456_7800n, lenBytes: 4096, rkey: 0xdeadbeef });
    expect(d.length).toBe(RMA_DESC_BYTES);
    expect([...d]).toEqual([0x00, 0x78, 0x56, 0x34, 0x12, 0x7f, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
    expect(decodeRmaDescriptor(d)).toEqual({ address: 0x7f12_3456_7800n, lenBytes: 4096, rkey: 0xdeadbeef });
    // A view into a larger buffer decodes from its own offset.
    const framed = new Uint8Array(RMA_DESC_BYTES + 3);
    framed.set(d, 3);
    expect(decodeRmaDescriptor(framed.subarray(3))).toEqual(decodeRmaDescriptor(d));
    expect(() => decodeRmaDescriptor(d.subarray(0, 19))).toThrow(ProtocolError);
    expect(() => decodeRmaDescriptor(new Uint8Array(36))).toThrow(/expected 20/);
    const huge = d.slice();
    new DataView(huge.buffer).setBigUint64(8, 1n << 60n, true);
    expect(() => decodeRmaDescriptor(huge)).toThrow(/safe integer/);
  });

  test("accesses outside the region, misaligned CAS and oversized operations are UsageError before any post", async () => {
    const { rma, posts } = recorder();
    const remote = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0000n, lenBytes: 4096, rkey: 7 }));
    expect(remote.lenBytes).toBe(4096);
    await expect(remote.get(4090, 10)).rejects.toBeInstanceOf(UsageError);
    await expect(remote.get(-1, 4)).rejects.toBeInstanceOf(UsageError);
    await expect(remote.get(0.5, 4)).rejects.toBeInstanceOf(UsageError);
    await expect(remote.put(4096, new Uint8Array(1))).rejects.toBeInstanceOf(UsageError);
    await expect(remote.put(4000, new Uint8Array(97))).rejects.toThrow(/\[4000, 4097\) are outside the remote region of 4096 bytes/);
    await expect(remote.cas(4092, 0n, 1n)).rejects.toBeInstanceOf(UsageError);
    await expect(remote.cas(3, 0n, 1n)).rejects.toThrow(/aligned/);
    expect(() => remote.readTo(4000, 200, { buf: new Uint8Array(200), onRead() {} })).toThrow(UsageError);
    expect(() => remote.readTo(0, 200, { buf: new Uint8Array(100), onRead() {} })).toThrow(/do not fit/);
    expect(() => remote.readInto(4095, new Uint8Array(2), () => {})).toThrow(UsageError);
    // A region whose base is not 8-byte aligned: no offset in it is aligned for CAS.
    const odd = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0004n, lenBytes: 64, rkey: 7 }));
    await expect(odd.cas(8, 0n, 1n)).rejects.toThrow(/not 8-byte aligned/);
    const big = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0000n, lenBytes: MAX_OP_BYTES + 8, rkey: 7 }));
    await expect(big.get(0, MAX_OP_BYTES + 1)).rejects.toThrow(/at most/);
    // Zero-length accesses inside the region complete without a post.
    expect(await remote.get(4096, 0)).toEqual(new Uint8Array(0));
    await remote.put(10, new Uint8Array(0));
    expect(posts).toEqual([]);
    expect(() => rma.attachRegion(new Uint8Array(5))).toThrow(ProtocolError);
  });

  test("a completion after the connection closed fails only what was never posted: in-flight operations and regions wait for the QP's flush", async () => {
    // A send queue with room for two: the third get waits in the FIFO.
    const dones: Array<(status: number) => void> = [];
    const conn: RmaConnection & { closed: boolean } = {
      closed: false,
      closeError: null,
      peer: "rdma://198.51.100.7:4791",
      postOneSided: (...args: unknown[]) => {
        if (dones.length >= 2) return false;
        dones.push(args[8] as (status: number) => void);
        return true;
      },
      abort() {},
      onNextSendCompletion() {},
    };
    // Registration recorded in plain memory (what the unit needs of a PD: regMr and MR close).
    const closedMrs: number[] = [];
    let next = 1;
    const pd = {
      regMr(view: Uint8Array) {
        const id = next++;
        return { view, address: 0x1000 * id, lkey: id, rkey: id, lenBytes: view.length, close: () => void closedMrs.push(id) };
      },
    } as unknown as VerbsPd;
    const rma = new RdmaRma(conn, pd);
    const local = rma.registerMemory(64);
    const remote = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0000n, lenBytes: 4096, rkey: 7 }));
    const outcome = (p: Promise<unknown>) => p.then(() => "ok", (e) => (e instanceof TransportClosedError ? "closed" : String(e)));
    const a = outcome(remote.get(0, 8));
    const b = outcome(remote.get(8, 8));
    const c = outcome(remote.get(16, 8));
    expect(dones.length).toBe(2);
    conn.closed = true; // closing: the QP may still execute a and b
    dones[0]!(IBV.IBV_WC_SUCCESS);
    expect(await a).toBe("ok");
    expect(await c).toBe("closed"); // never posted: failed at once
    expect(local.closed).toBe(false); // the region outlives the QP's work
    let bSettled = false;
    void b.then(() => (bSettled = true));
    await Bun.sleep(1);
    expect(bSettled).toBe(false);
    dones[1]!(IBV.IBV_WC_WR_FLUSH_ERR); // the QP flushed it
    expect(await b).toBe("closed");
    rma.close(); // the connection's teardown
    expect(local.closed).toBe(true);
    expect(closedMrs.sort()).toEqual([1, 2]); // the region and the scratch memory
  });

  test("a full send queue with none of its operations in flight: the retry waits for the connection's next send completion (or a timer of at least 1 ms), never an event-loop spin", async () => {
    let room = false;
    let tries = 0;
    const waiters = new Set<() => void>();
    const conn: RmaConnection & { closed: boolean } = {
      closed: false,
      closeError: null,
      peer: "rdma://198.51.100.7:4791",
      postOneSided: (...args: unknown[]) => {
        tries++;
        if (!room) return false;
        queueMicrotask(() => (args[8] as (status: number) => void)(IBV.IBV_WC_SUCCESS));
        return true;
      },
      abort() {},
      onNextSendCompletion: (f) => void waiters.add(f),
    };
    const pd = {
      regMr: (view: Uint8Array) => ({ view, address: 0x1000, lkey: 1, rkey: 1, lenBytes: view.length, close() {} }),
    } as unknown as VerbsPd;
    const rma = new RdmaRma(conn, pd);
    const remote = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0000n, lenBytes: 4096, rkey: 7 }));
    const put = remote.put(0, new Uint8Array(8));
    // 50 ms of a send queue that stays full: a retry per event-loop turn would make thousands.
    await Bun.sleep(50);
    expect(tries).toBeGreaterThanOrEqual(2);
    expect(tries).toBeLessThanOrEqual(60);
    expect(waiters.size).toBe(1); // one hook, however many timer retries registered it
    // A send completion of the connection (a message's) brings the room: the put goes at once.
    room = true;
    const before = tries;
    const [w] = waiters;
    waiters.clear();
    w!();
    expect(tries).toBe(before + 1);
    await put;
    rma.close();
  });

  test("a closed connection refuses every access with TransportClosedError", async () => {
    const { rma, conn, posts } = recorder();
    const remote = rma.attachRegion(encodeRmaDescriptor({ address: 0x10_0000n, lenBytes: 4096, rkey: 7 }));
    conn.closed = true;
    await expect(remote.get(0, 8)).rejects.toBeInstanceOf(TransportClosedError);
    await expect(remote.put(0, new Uint8Array(8))).rejects.toBeInstanceOf(TransportClosedError);
    await expect(remote.cas(0, 0n, 1n)).rejects.toBeInstanceOf(TransportClosedError);
    await expect(remote.flush()).rejects.toBeInstanceOf(TransportClosedError);
    expect(() => remote.readTo(0, 8, { buf: new Uint8Array(8), onRead() {} })).toThrow(TransportClosedError);
    expect(() => rma.registerMemory(64)).toThrow(TransportClosedError);
    expect(() => rma.attachRegion(encodeRmaDescriptor({ address: 0n, lenBytes: 1, rkey: 1 }))).toThrow(TransportClosedError);
    expect(posts).toEqual([]);
  });
});

const OWNER = new URL("./rma-owner.ts", import.meta.url).pathname;
const PEER = new URL("./rma-peer.ts", import.meta.url).pathname;
/** Watchdog for one peer run (a hang fails the test instead of blocking it). */
const PEER_WATCHDOG_MS = 60_000;

const fx = useSoftRc();
let owner: Peer | null = null;
afterEach(async () => {
  await owner?.kill();
  owner = null;
});

/** Runs the peer scenario against `url`; its JSON lines by step. */
async function peerRun(url: string, scenario: string, dir: string): Promise<Record<string, Record<string, any>>> {
  const p = fx.track(Bun.spawn(["bun", PEER, url, scenario], { stdout: "pipe", stderr: "pipe", env: fx.env(dir) }));
  const watchdog = setTimeout(() => p.kill(9), PEER_WATCHDOG_MS);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(watchdog);
  expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
  return Object.fromEntries(
    stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .map((l) => [l.step, l]),
  );
}

/** The owner's stats line (it answers "stats" on stdin). */
async function ownerStats(o: Peer): Promise<{ liveMr: number; regions: number; closedRegions: number }> {
  o.proc.stdin.write("stats\n");
  o.proc.stdin.flush();
  return JSON.parse(await o.nextLine());
}

/** The owner's stats once its regions are closed and its MRs back to `before` (at most 100 looks 20 ms apart). */
async function ownerSettled(o: Peer, before: number): Promise<{ liveMr: number; regions: number; closedRegions: number }> {
  let stats = await ownerStats(o);
  for (let i = 0; i < 100 && (stats.closedRegions < stats.regions || stats.liveMr !== before); i++) {
    await Bun.sleep(20);
    stats = await ownerStats(o);
  }
  return stats;
}

for (const mode of ["cm", "socket"]) {
  const listenUrl = mode === "cm" ? "rdma://127.0.0.1:0" : "rdma://127.0.0.1:0?mode=socket";
  describe(`rdma rma over the software provider (${mode} mode)`, () => {
    test(
      "put, get, readTo, readInto and CAS land in the owner's memory; out-of-range access is refused; regions deregistered at close",
      async () => {
        const dir = fx.registry();
        owner = await spawnPeer(OWNER, [listenUrl], fx.env(dir) as Record<string, string>);
        const before = owner.ready.liveMr as number;
        const r = await peerRun(owner.ready.url, "rw", dir);
        expect(r["put-get"]).toEqual({ step: "put-get", lenBytes: 65536, smallBack: true, bigBack: true, ownerSmall: true, ownerBig: true, ownerZeroElsewhere: true });
        expect(r["read-to-into"]!.reads).toEqual([true, true, true, true]);
        expect(r.cas).toEqual({ step: "cas", first: { swapped: true, value: "5n" }, second: { swapped: false, value: "42n" }, ownerWord: "42n" });
        expect(r.many!.ok).toBe(200);
        expect(r.refused).toEqual({ step: "refused", refused: ["UsageError", "UsageError", "UsageError", "UsageError", "UsageError"], usable: true, open: true, usageError: "UsageError" });
        expect(r.done!.liveMr).toBe(0);
        // The owner: its region closed with the connection, its MRs back to where they were.
        expect(await ownerSettled(owner, before)).toEqual({ liveMr: before, regions: 1, closedRegions: 1 });
      },
      PEER_WATCHDOG_MS + 20_000,
    );

    test(
      "operations in flight when the connection closes settle with TransportClosedError (readTo: IBV_WC_WR_FLUSH_ERR); nothing leaked",
      async () => {
        const dir = fx.registry();
        owner = await spawnPeer(OWNER, [listenUrl], fx.env(dir) as Record<string, string>);
        const before = owner.ready.liveMr as number;
        const r = await peerRun(owner.ready.url, "close", dir);
        const tally = r.close!.tally as Record<string, number>;
        // Every one of the 106 settled, as a result or as closed; most were still in flight.
        const settled = new Set(["ok", "TransportClosedError", `status ${IBV.IBV_WC_WR_FLUSH_ERR}`, "flush ok", "flush TransportClosedError"]);
        expect(Object.keys(tally).filter((k) => !settled.has(k))).toEqual([]);
        expect(Object.values(tally).reduce((a, b) => a + b, 0)).toBe(106);
        expect((tally.TransportClosedError ?? 0) + (tally[`status ${IBV.IBV_WC_WR_FLUSH_ERR}`] ?? 0)).toBeGreaterThan(0);
        expect(r.close!.after).toBe("TransportClosedError");
        expect(r.done!.liveMr).toBe(0);
        expect(await ownerSettled(owner, before)).toEqual({ liveMr: before, regions: 1, closedRegions: 1 });
      },
      PEER_WATCHDOG_MS + 20_000,
    );

    test(
      "a forged descriptor with a bad rkey: RdmaAccessError, the connection closed with it, what follows TransportClosedError",
      async () => {
        const dir = fx.registry();
        owner = await spawnPeer(OWNER, [listenUrl], fx.env(dir) as Record<string, string>);
        const before = owner.ready.liveMr as number;
        const r = await peerRun(owner.ready.url, "badkey", dir);
        expect(r.badkey).toEqual({
          step: "badkey",
          first: "RdmaAccessError",
          isAccess: true,
          status: "IBV_WC_REM_ACCESS_ERR",
          second: "TransportClosedError",
          secondClosed: true,
          connClosed: true,
          closeError: true,
          later: "TransportClosedError",
        });
        expect(r.done!.liveMr).toBe(0);
        expect(await ownerSettled(owner, before)).toEqual({ liveMr: before, regions: 1, closedRegions: 1 });
        await owner.kill();
        owner = null;
        expect(readdirSync(dir)).toEqual([]);
      },
      PEER_WATCHDOG_MS + 20_000,
    );
  });
}
