/**
 * RMA peer (a test child over the software RC TEST FIXTURE): connects to the owner at argv[2],
 * attaches its region and runs one scenario; prints one JSON line per step ({"step", ...}), and
 * {"step": "done", "liveMr"} after closing everything (softrc_live("mr") of this process).
 * Scenario:
 *   rw: put/get (small: a scratch slot; 20 KiB: the memory registered for the operation, also
 *       with copy: false), readTo / readInto of both sizes, the owner's own bytes, CAS twice,
 *       200 gets at once (more than the send queue: queued, posted as slots free), flush,
 *       out-of-range and misaligned access refused with UsageError (the connection still works).
 *   close: 100 gets, 5 readTo and a flush in flight when this side closes: each settles (a
 *       result, TransportClosedError, or IBV_WC_WR_FLUSH_ERR = 5 to readTo), later calls TransportClosedError.
 *   badkey: a descriptor forged with another rkey: the get fails with RdmaAccessError, a get
 *       issued after it with TransportClosedError, and the connection is closed with the RdmaAccessError.
 */
import { softRcProbes } from "./softrc/probes.ts";
import { rpcConnect, TransportClosedError, UsageError } from "../../src/index.ts";
import type { RdmaConnection } from "../../src/rdma/connection.ts";
import { decodeRmaDescriptor, encodeRmaDescriptor, RdmaAccessError } from "../../src/rdma/rma.ts";

const probes = softRcProbes(process.env.HOTPATH_IBVERBS!);
const liveMr = () => probes.live("mr");
const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o, (_, v) => (typeof v === "bigint" ? `${v}n` : v)));
const pattern = (len: number, seed: number) => Uint8Array.from({ length: len }, (_, i) => (i * 13 + seed) & 0xff);
const span = (offset: number, len: number) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, offset, true);
  new DataView(b.buffer).setUint32(4, len, true);
  return b;
};
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;
const errName = (e: unknown) => (e instanceof Error ? e.name : String(e));

const [, , url, scenario] = process.argv;
const client = await rpcConnect(url!);
const conn = client.conn as RdmaConnection;
const desc = (await client.request(1)) as Uint8Array;

if (scenario === "rw") {
  const remote = conn.attachRegion(desc);
  const small = pattern(1000, 1);
  await remote.put(100, small);
  const big = pattern(20480, 2);
  await remote.put(8192, big, { copy: false });
  const owner = (await client.request(2, span(0, 32768))) as Uint8Array;
  out({
    step: "put-get",
    lenBytes: remote.lenBytes,
    smallBack: same(await remote.get(100, 1000), small),
    bigBack: same(await remote.get(8192, 20480), big),
    ownerSmall: same(owner.subarray(100, 1100), small),
    ownerBig: same(owner.subarray(8192, 8192 + 20480), big),
    ownerZeroElsewhere: owner.subarray(1100, 8192).every((b) => b === 0),
  });
  const reads = await Promise.all(
    [
      [100, 1000],
      [8192, 20480],
    ].flatMap(([off, len]) => [
      new Promise<boolean>((resolve) => {
        const buf = new Uint8Array(len! + 16);
        remote.readTo(off!, len!, { buf, onRead: (status) => resolve(status === 0 && same(buf.subarray(0, len!), owner.subarray(off!, off! + len!))) });
      }),
      new Promise<boolean>((resolve) => {
        const dst = new Uint8Array(len!);
        remote.readInto(off!, dst, (status) => resolve(status === 0 && same(dst, owner.subarray(off!, off! + len!))));
      }),
    ]),
  );
  out({ step: "read-to-into", reads });
  const word = new Uint8Array(8);
  new DataView(word.buffer).setBigUint64(0, 5n, true);
  await remote.put(64, word);
  const first = await remote.cas(64, 5n, 42n);
  const second = await remote.cas(64, 5n, 99n);
  const ownerWord = (await client.request(2, span(64, 8))) as Uint8Array;
  out({ step: "cas", first, second, ownerWord: new DataView(ownerWord.buffer, ownerWord.byteOffset, 8).getBigUint64(0, true) });
  const many = await Promise.all(Array.from({ length: 200 }, (_, i) => remote.get((i * 8) % 1000 + 100, 8).then((b) => same(b, small.subarray((i * 8) % 1000, (i * 8) % 1000 + 8)))));
  await remote.flush();
  out({ step: "many", ok: many.filter(Boolean).length });
  const refused = await Promise.all([
    remote.get(65530, 10).then(() => "read", errName),
    remote.put(65536, new Uint8Array(1)).then(() => "written", errName),
    remote.cas(65532, 0n, 1n).then(() => "swapped", errName),
    remote.cas(12, 0n, 1n).then(() => "swapped", errName),
    Promise.resolve().then(() => remote.readTo(65000, 1000, { buf: new Uint8Array(1000), onRead() {} })).then(() => "read", errName),
  ]);
  out({ step: "refused", refused, usable: same(await remote.get(100, 1000), small), open: !conn.closed, usageError: UsageError.name });
} else if (scenario === "badkey") {
  const d = decodeRmaDescriptor(desc);
  const forged = conn.attachRegion(encodeRmaDescriptor({ ...d, rkey: (d.rkey ^ 0x5a5a5a) >>> 0 }));
  const good = conn.attachRegion(desc);
  const bad = forged.get(0, 8).then(() => null, (e) => e);
  const after = good.get(0, 8).then(() => null, (e) => e);
  const [e1, e2] = await Promise.all([bad, after]);
  out({
    step: "badkey",
    first: errName(e1),
    isAccess: e1 instanceof RdmaAccessError,
    status: e1 instanceof RdmaAccessError ? e1.statusName : null,
    second: errName(e2),
    secondClosed: e2 instanceof TransportClosedError,
    connClosed: conn.closed,
    closeError: conn.closeError === e1,
    later: await good.get(0, 8).then(() => "read", errName),
  });
} else if (scenario === "close") {
  // Operations still in flight when this side closes: each settles, as a result or TransportClosedError.
  const remote = conn.attachRegion(desc);
  const gets = Array.from({ length: 100 }, (_, i) => remote.get(i * 64, 64 + (i % 2) * 8192).then(() => "ok", errName));
  const reads = Array.from({ length: 5 }, (_, i) => new Promise<string>((resolve) => remote.readTo(i * 8, 8, { buf: new Uint8Array(8), onRead: (s) => resolve(s === 0 ? "ok" : `status ${s}`) })));
  const flushed = remote.flush().then(() => "flush ok", (e) => `flush ${errName(e)}`);
  client.close();
  const outcomes = await Promise.all([...gets, ...reads, flushed]);
  const tally: Record<string, number> = {};
  for (const o of outcomes) tally[o] = (tally[o] ?? 0) + 1;
  out({ step: "close", tally, after: await remote.get(0, 8).then(() => "read", errName) });
}
client.close();
// The connection's memory goes once its teardown ran (a microtask or a drain after close).
for (let i = 0; i < 200 && liveMr() > 0; i++) await Bun.sleep(10);
out({ step: "done", liveMr: liveMr() });
process.exit(0);
