/**
 * `hotpath doctor --selftest rdma`: proves rdma:// on this machine's device in one command. Lists
 * the devices and their ports, picks the first ACTIVE port, starts a second process (`hotpath
 * doctor --selftest-peer URL`, this same command) that serves over rdma:// on that port, and runs
 * against it a subset of the conformance suite in each connection mode the port allows (rdma_cm
 * where the port has an IPv4 address, from an IPv4-mapped GID or its netdev; socket mode
 * always; both are loopback through the one HCA),
 * then a latency / throughput probe, and prints a pass/fail table and the figures beside
 * perftest's `ib_send_lat` / `ib_write_lat` on the same port (when installed; they need a real
 * device, and say why when they cannot run).
 *
 * Exit status: 0 when every check passed; 1 when one failed, no device is there (the
 * RdmaUnavailableError reason is printed, e.g. `ibv_get_device_list: no devices (ENOSYS)`) or
 * no port is active; 2 for a bad argument.
 *
 * The software RC provider (hotpath's test fixture, loaded through HOTPATH_IBVERBS /
 * HOTPATH_RDMACM; its device reports firmware "softrc-fixture") runs the same checks; every
 * figure taken on it is labelled FIXTURE_LABEL, since its speed says nothing about hardware.
 *
 *   hotpath doctor --selftest rdma            # the first active port
 *   hotpath doctor --selftest rdma --quick    # shorter probe
 *
 * Thread: the main JS thread of the command; the peer process is killed by pid at the end.
 */

import { readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { describeThrown, RdmaUnavailableError, TransportClosedError, UsageError } from "../errors.ts";
import { IBV, rdmaUnavailableReason, VerbsContext, verbsDevices } from "../ffi/ibverbs.ts";
import { rpcConnect, serve, type RpcClient as AnyRpcClient } from "../rpc/serve.ts";
import { encodeRmaDescriptor, decodeRmaDescriptor, RdmaAccessError, type RdmaLocalRegion, type RdmaRemoteRegion } from "../rdma/rma.ts";
import { ibPerftest, type PerftestResult } from "./ib-perftest.ts";

export const FIXTURE_LABEL = "software provider (test fixture): functional only, not hardware performance";
/** Every wait of the selftest (connect, a call) is bounded by this; hardware answers in microseconds. */
const CALL_TIMEOUT_MS = 20_000;
/** The peer's registered region per connection. */
const REGION_BYTES = 64 << 10;
/** Largest message of the checks (16 MiB) plus room: both sides accept it. */
const MAX_MESSAGE_BYTES = 32 << 20;
type RpcClient = AnyRpcClient<{}>;
const M_ECHO = 1;
const M_REGION = 2;
const M_BYTES = 3;

/** What a connection's rma part offers (RdmaConnection). */
interface RmaConn {
  registerMemory(lenBytes: number): RdmaLocalRegion;
  attachRegion(descriptor: Uint8Array): RdmaRemoteRegion;
  readonly closed: boolean;
}

export interface PortInfo {
  port: number;
  state: string;
  active: boolean;
  linkLayer: "InfiniBand" | "Ethernet" | "unspecified";
  activeMtu: number;
  lid: number;
  gid0: string;
  /**
   * The first GID of the port that maps an IPv4 address (RoCE v2 GIDs, the fixture's GID[0]), or
   * else the IPv4 address of the netdev behind GID[0] (sysfs gid_attrs/ndevs): where rdma_cm
   * reaches the port; null when neither exists (rdma_cm mode is then not run).
   */
  ipv4: string | null;
  /** GID index the checks use: the IPv4-mapped one when there is one (routable RoCE v2), else 0. */
  gidIndex: number;
}

export interface DeviceInfo {
  name: string;
  guid: string;
  fwVer: string;
  fixture: boolean;
  ports: PortInfo[];
}

export interface CheckRow {
  name: string;
  ok: boolean;
  detail: string;
}

/** GID entries scanned per port for an IPv4-mapped one (RoCE puts them after the link-local ones, in the first few). */
const MAX_GIDS_SCANNED = 16;

/** The IPv4 address of the netdev sysfs names for GID 0 of `device` port `port`, or null. */
function netdevIpv4(device: string, port: number): string | null {
  try {
    const ndev = readFileSync(`/sys/class/infiniband/${device}/ports/${port}/gid_attrs/ndevs/0`, "utf8").trim();
    return networkInterfaces()[ndev]?.find((a) => a.family === "IPv4")?.address ?? null;
  } catch {
    return null;
  }
}

/** 16 GID bytes as IPv6 text, and the IPv4 address of an IPv4-mapped GID. */
function gidText(gid: Uint8Array): { text: string; ipv4: string | null } {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((gid[i]! << 8) | gid[i + 1]!).toString(16));
  const mapped = gid.subarray(0, 10).every((b) => b === 0) && gid[10] === 0xff && gid[11] === 0xff;
  const ipv4 = mapped ? `${gid[12]}.${gid[13]}.${gid[14]}.${gid[15]}` : null;
  return { text: mapped ? `::ffff:${ipv4}` : words.join(":"), ipv4 };
}

/** Every device and port ibv_get_device_list shows (RdmaUnavailableError when there is none). */
export function listDevices(): DeviceInfo[] {
  return verbsDevices().map((d) => {
    const ctx = VerbsContext.open(d.name);
    try {
      const attr = ctx.queryDevice();
      const ports: PortInfo[] = [];
      for (let p = 1; p <= attr.physPortCnt; p++) {
        const a = ctx.queryPort(p);
        let gid = { text: "-", ipv4: null as string | null };
        let ipv4: string | null = null;
        let gidIndex = 0;
        for (let i = 0; i < Math.min(a.gidTblLen, MAX_GIDS_SCANNED); i++) {
          try {
            const g = gidText(ctx.queryGid(p, i));
            if (i === 0) gid = g;
            if (g.ipv4 !== null && g.ipv4 !== "0.0.0.0") {
              ipv4 = g.ipv4;
              gidIndex = i;
              break;
            }
          } catch {
            break; // the end of this port's GID table
          }
        }
        ipv4 ??= netdevIpv4(d.name, p);
        ports.push({
          port: p,
          state: Object.keys(IBV).find((k) => k.startsWith("IBV_PORT_") && IBV[k as keyof typeof IBV] === a.state && !k.includes("NOP"))?.slice(4) ?? `state ${a.state}`,
          active: a.state === IBV.IBV_PORT_ACTIVE,
          linkLayer: a.linkLayer === IBV.IBV_LINK_LAYER_ETHERNET ? "Ethernet" : a.linkLayer === IBV.IBV_LINK_LAYER_INFINIBAND ? "InfiniBand" : "unspecified",
          activeMtu: 128 << a.activeMtu,
          lid: a.lid,
          gid0: gid.text,
          ipv4,
          gidIndex,
        });
      }
      return { name: d.name, guid: d.guid, fwVer: attr.fwVer, fixture: attr.fwVer.startsWith("softrc"), ports };
    } finally {
      ctx.close();
    }
  });
}

/**
 * The first ACTIVE port of `devices` and the listen URLs the checks use on it: rdma_cm on the
 * port's IPv4 address (when it has one) and socket mode with device, port and GID index; null
 * when no port is active. Pure: the caller listed the devices (listDevices).
 */
export function activePortUrls(devices: DeviceInfo[]): { dev: DeviceInfo; port: PortInfo; urls: Array<[string, string]> } | null {
  const dev = devices.find((d) => d.ports.some((p) => p.active));
  if (dev === undefined) return null;
  const port = dev.ports.find((p) => p.active)!;
  const urls: Array<[string, string]> = [];
  if (port.ipv4 !== null) urls.push(["cm", `rdma://${port.ipv4}:0`]);
  urls.push(["socket", `rdma://127.0.0.1:0?mode=socket&device=${dev.name}&port=${port.port}&gid=${port.gidIndex}`]);
  return { dev, port, urls };
}

function withTimeout<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: Timer | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer in ${CALL_TIMEOUT_MS} ms`)), CALL_TIMEOUT_MS)))]).finally(() => clearTimeout(timer));
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + 1) & 0xff;
  return b;
}

async function echoChecked(c: RpcClient, data: Uint8Array): Promise<void> {
  const back = (await withTimeout(`echo of ${data.length} bytes`, c.request(M_ECHO, data))) as Uint8Array;
  if (back.length !== data.length || Buffer.compare(back, data) !== 0) throw new Error(`echo of ${data.length} bytes came back as ${back.length} different bytes`);
}

function span(offset: number, len: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, offset, true);
  dv.setUint32(4, len, true);
  return b;
}

const connectOpts = { connectTimeoutMs: CALL_TIMEOUT_MS, maxMessageBytes: MAX_MESSAGE_BYTES };

/** The conformance subset over one URL: each check one row. */
async function conformance(mode: string, url: string): Promise<CheckRow[]> {
  const rows: CheckRow[] = [];
  const check = async (name: string, body: () => Promise<string>) => {
    try {
      rows.push({ name: `${mode}: ${name}`, ok: true, detail: await body() });
    } catch (e) {
      rows.push({ name: `${mode}: ${name}`, ok: false, detail: describeThrown(e, true) });
    }
  };
  let c: RpcClient | null = null;
  await check("connect", async () => {
    c = await withTimeout("connect", rpcConnect(url, connectOpts));
    const caps = c.conn.caps;
    if (c.conn.transport !== "rdma" || !caps.rma) throw new Error(`connected over ${c.conn.transport} (rma ${caps.rma})`);
    return `${c.conn.peer}: inline up to ${caps.maxInlineBytes} B, messages up to ${caps.peerMaxMessageBytes} B`;
  });
  if (c === null) return rows;
  const client: RpcClient = c;
  const inline = client.conn.caps.maxInlineBytes;
  await check("messages of 1 B to 64 KiB (inline, one receive slot, larger)", async () => {
    const sizes = [...new Set([1, 32, Math.max(1, inline - 24), inline, inline + 1, 4000, 4096, 65536])];
    for (const [i, n] of sizes.entries()) await echoChecked(client, pattern(n, i));
    return `sizes ${sizes.join(", ")}: every byte back`;
  });
  await check("1 MiB and 16 MiB messages (write with immediate)", async () => {
    await echoChecked(client, pattern(1 << 20, 3));
    await echoChecked(client, pattern(16 << 20, 4));
    return "every byte back";
  });
  await check("512 calls, 64 in flight (more than the credit window)", async () => {
    let next = 0;
    const worker = async () => {
      while (next < 512) {
        const i = next++;
        await echoChecked(client, pattern(64 + (i % 200), i));
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    return "every reply matched its request";
  });
  const rma = client.conn as unknown as RmaConn;
  await check("rma put, get and compare-and-swap", async () => {
    const remote = rma.attachRegion((await withTimeout("region", client.request(M_REGION))) as Uint8Array);
    const bytes = pattern(1000, 9);
    await withTimeout("put", remote.put(100, bytes));
    const back = await withTimeout("get", remote.get(100, 1000));
    if (Buffer.compare(back, bytes) !== 0) throw new Error("get returned other bytes than put wrote");
    const owner = (await withTimeout("owner's bytes", client.request(M_BYTES, span(100, 1000)))) as Uint8Array;
    if (Buffer.compare(owner, bytes) !== 0) throw new Error("the owner's memory does not hold the bytes put wrote");
    const word = new Uint8Array(8);
    new DataView(word.buffer).setBigUint64(0, 5n, true);
    await remote.put(64, word);
    const a = await withTimeout("cas", remote.cas(64, 5n, 42n));
    const b = await withTimeout("cas", remote.cas(64, 5n, 99n));
    if (!a.swapped || a.value !== 5n || b.swapped || b.value !== 42n) throw new Error(`cas gave ${JSON.stringify([a, b], (_, v) => (typeof v === "bigint" ? String(v) : v))}, expected swapped 5 then not swapped 42 (an HCA answering atomics big-endian shows byte-swapped values)`);
    await remote.flush();
    return "1000 B put and read back, seen in the owner's memory; cas swapped once, then reported 42";
  });
  await check("rma access outside the region refused before posting", async () => {
    const remote = rma.attachRegion((await withTimeout("region", client.request(M_REGION))) as Uint8Array);
    const refused = await remote.get(REGION_BYTES - 4, 8).then(() => false, (e) => e instanceof UsageError);
    if (!refused) throw new Error("a get past the region's end was not refused with UsageError");
    return "UsageError";
  });
  await check("close: later calls fail with TransportClosedError", async () => {
    client.close();
    const r: unknown = await client.request(M_ECHO, new Uint8Array(1)).then(() => "answered", (e: unknown) => e);
    if (!(r instanceof TransportClosedError)) throw new Error(`a call after close: ${r instanceof Error ? describeThrown(r, true) : r}`);
    return "TransportClosedError";
  });
  await check("rma bad rkey: RdmaAccessError, connection closed", async () => {
    const c2 = await withTimeout("connect", rpcConnect(url, connectOpts));
    try {
      const d = decodeRmaDescriptor((await withTimeout("region", c2.request(M_REGION))) as Uint8Array);
      const forged = (c2.conn as unknown as RmaConn).attachRegion(encodeRmaDescriptor({ ...d, rkey: (d.rkey ^ 0x5a5a5a) >>> 0 }));
      const e = await withTimeout("get with a bad rkey", forged.get(0, 8).then(() => null, (x) => x));
      if (!(e instanceof RdmaAccessError)) throw new Error(`a bad rkey gave ${e === null ? "the bytes" : describeThrown(e, true)}`);
      if (!(c2.conn as unknown as RmaConn).closed) throw new Error("the connection stayed open");
      return `${e.statusName}`;
    } finally {
      c2.close();
    }
  });
  return rows;
}

export interface Figure {
  label: string;
  value: string;
}

function pct(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const us = (ns: number) => `${(ns / 1000).toFixed(2)} µs`;

/** Round trips timed one by one (each call alone), then calls/s with 64 in flight; every reply checked. */
async function probe(mode: string, url: string, quick: boolean): Promise<Figure[]> {
  const c = await withTimeout("connect", rpcConnect(url, connectOpts));
  try {
    const figs: Figure[] = [];
    for (const [bytes, n] of [[32, quick ? 300 : 5000], [1 << 20, quick ? 20 : 200]] as const) {
      const data = pattern(bytes, 1);
      for (let i = 0; i < Math.min(50, n); i++) await echoChecked(c, data); // warm-up
      const t = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const t0 = Bun.nanoseconds();
        await echoChecked(c, data);
        t[i] = Bun.nanoseconds() - t0;
      }
      t.sort();
      figs.push({ label: `hotpath rdma (${mode}) round trip, ${bytes === 32 ? "32 B" : "1 MiB"}`, value: `p50 ${us(pct(t, 0.5))}, p99 ${us(pct(t, 0.99))} (${n} calls)` });
    }
    const total = quick ? 2000 : 20000;
    const data = pattern(32, 2);
    let next = 0;
    const t0 = Bun.nanoseconds();
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < total) {
          next++;
          await echoChecked(c, data);
        }
      }),
    );
    const s = (Bun.nanoseconds() - t0) / 1e9;
    figs.push({ label: `hotpath rdma (${mode}) calls/s, 32 B, 64 in flight`, value: `${Math.round(total / s)} calls/s (${total} calls)` });
    return figs;
  } finally {
    c.close();
  }
}

function perftestText(r: PerftestResult): string {
  if ("notRun" in r) return `not run: ${r.notRun}`;
  if ("rttP50Us" in r) return `p50 ${r.rttP50Us.toFixed(2)} µs, p99 ${r.rttP99Us.toFixed(2)} µs (round trip: perftest's one-way figures doubled)`;
  return `${r.bwMBps.toFixed(1)} MB/s, ${r.msgRateMpps.toFixed(3)} Mpps`;
}

/** The peer process: serves echo, a region per connection and its bytes on `url`; prints {"url"}; exits when stdin closes. */
export async function runSelftestPeer(argv: string[]): Promise<number> {
  const url = argv[0];
  if (url === undefined) throw new UsageError("doctor --selftest-peer needs a URL");
  const regions = new Map<unknown, RdmaLocalRegion>();
  const region = (conn: unknown) => {
    let r = regions.get(conn);
    if (r === undefined) regions.set(conn, (r = (conn as RmaConn).registerMemory(REGION_BYTES)));
    return r;
  };
  const serving = await serve(
    url,
    {
      [M_ECHO]: (h) => h.data,
      [M_REGION]: (h) => region(h.session.conn).descriptor(),
      [M_BYTES]: (h) => {
        const dv = new DataView(h.data.buffer, h.data.byteOffset, 8);
        return region(h.session.conn).bytes.slice(dv.getUint32(0, true), dv.getUint32(0, true) + dv.getUint32(4, true));
      },
    },
    { maxMessageBytes: MAX_MESSAGE_BYTES },
  );
  console.log(JSON.stringify({ url: serving.url }));
  for await (const _ of Bun.stdin.stream()) {
    // the parent closes stdin when it is done (or dies)
  }
  serving.close();
  return 0;
}

/** Starts the peer on `listenUrl` (this command, `doctor --selftest-peer`); its URL and a stop function. */
async function startPeer(listenUrl: string): Promise<{ url: string; stop(): Promise<void> }> {
  const cmd = [process.execPath, process.argv[1]!, "doctor", "--selftest-peer", listenUrl];
  const p = Bun.spawn(cmd, { stdin: "pipe", stdout: "pipe", stderr: "pipe", env: process.env });
  let errText = "";
  const errDone = (async () => {
    for await (const chunk of p.stderr) errText = (errText + new TextDecoder().decode(chunk)).slice(-4096);
  })();
  const stop = async () => {
    p.stdin.end();
    await Promise.race([p.exited, Bun.sleep(3000)]);
    if (p.exitCode === null && p.signalCode === null) p.kill(9);
  };
  const reader = p.stdout.getReader();
  let buf = "";
  const dec = new TextDecoder();
  const deadline = Date.now() + CALL_TIMEOUT_MS;
  while (!buf.includes("\n")) {
    const r = await Promise.race([reader.read(), Bun.sleep(Math.max(1, deadline - Date.now())).then(() => null)]);
    if (r === null || r.done) {
      await stop();
      await Promise.race([errDone, Bun.sleep(1000)]);
      const why = errText.split("\n").find((l) => /^\w*(Error|error): /.test(l.trim()))?.trim() ?? errText.trim().split("\n").pop() ?? "";
      throw new Error(`the selftest peer (${cmd.slice(2).join(" ")}) did not start listening${p.exitCode !== null ? ` (exit ${p.exitCode})` : ""}${why ? `: ${why}` : ""}`);
    }
    buf += dec.decode(r.value, { stream: true });
  }
  reader.releaseLock();
  return { url: (JSON.parse(buf.slice(0, buf.indexOf("\n"))) as { url: string }).url, stop };
}

/** `hotpath doctor --selftest rdma [--quick]`: prints the report, returns the exit status. */
export async function runRdmaSelftest(argv: string[], print: (s: string) => void = (s) => console.log(s)): Promise<number> {
  const [what, ...flags] = argv;
  const bad = flags.filter((f) => f !== "--quick");
  if (what !== "rdma" || bad.length > 0) {
    print(`hotpath doctor --selftest: usage: hotpath doctor --selftest rdma [--quick] (got ${argv.join(" ") || "nothing"})`);
    return 2;
  }
  const quick = flags.includes("--quick");
  print("hotpath doctor --selftest rdma");
  const why = rdmaUnavailableReason();
  if (why !== null) {
    print(`${new RdmaUnavailableError(why).name}: ${new RdmaUnavailableError(why).message}`);
    print("  to fix: an RDMA NIC with its driver, and apt-get install rdma-core libibverbs1 ibverbs-providers librdmacm1 (Debian/Ubuntu)");
    return 1;
  }
  const devices = listDevices();
  print("devices:");
  for (const d of devices) {
    print(`  ${d.name} (firmware ${d.fwVer}, node GUID ${d.guid})${d.fixture ? `: ${FIXTURE_LABEL}` : ""}`);
    for (const p of d.ports) print(`    port ${p.port}: ${p.state}, ${p.linkLayer}, active MTU ${p.activeMtu}, LID ${p.lid}, GID[0] ${p.gid0}`);
  }
  const chosen = activePortUrls(devices);
  if (chosen === null) {
    print("no ACTIVE port on any device: connect the cable / start the subnet manager (IB), or bring the netdev up (RoCE)");
    return 1;
  }
  const { dev, port, urls } = chosen;
  print(`using ${dev.name} port ${port.port}, GID index ${port.gidIndex} (loopback through the device)${port.ipv4 === null ? "; rdma_cm mode not run: no GID or netdev of the port has an IPv4 address" : ""}`);

  const rows: CheckRow[] = [];
  const figures: Figure[] = [];
  for (const [mode, listenUrl] of urls) {
    let peer: Awaited<ReturnType<typeof startPeer>> | null = null;
    try {
      peer = await startPeer(listenUrl);
      rows.push(...(await conformance(mode, peer.url)));
      if (mode === urls[0]![0]) {
        try {
          figures.push(...(await probe(mode, peer.url, quick)));
        } catch (e) {
          rows.push({ name: `${mode}: latency / throughput probe`, ok: false, detail: describeThrown(e, true) });
        }
      }
    } catch (e) {
      rows.push({ name: `${mode}: peer on ${listenUrl}`, ok: false, detail: describeThrown(e, true) });
    } finally {
      await peer?.stop();
    }
  }
  const base = { device: dev.name, port: port.port, gidIndex: port.gidIndex, ethernet: port.linkLayer === "Ethernet", iters: quick ? 1000 : 10000 };
  figures.push({ label: "ib_send_lat (perftest) round trip, 32 B", value: perftestText(await ibPerftest("ib_send_lat", { ...base, bytes: 32 })) });
  figures.push({ label: "ib_write_lat (perftest) round trip, 32 B", value: perftestText(await ibPerftest("ib_write_lat", { ...base, bytes: 32 })) });
  figures.push({ label: "ib_write_lat (perftest) round trip, 1 MiB", value: perftestText(await ibPerftest("ib_write_lat", { ...base, bytes: 1 << 20, iters: quick ? 100 : 1000 })) });

  print("");
  const w = Math.max(...rows.map((r) => r.name.length), 5);
  print(`${"check".padEnd(w)}  result  detail`);
  for (const r of rows) print(`${r.name.padEnd(w)}  ${r.ok ? "pass  " : "FAIL  "}  ${r.detail}`);
  print("");
  print(`figures${dev.fixture ? ` (${FIXTURE_LABEL})` : ` (${dev.name} port ${port.port}; hotpath's client on the event loop, perftest busy-polling)`}:`);
  for (const f of figures) print(`  ${f.label}: ${f.value}${dev.fixture && !f.value.startsWith("not run") ? ` [${FIXTURE_LABEL}]` : ""}`);
  const failed = rows.filter((r) => !r.ok).length;
  print("");
  print(failed === 0 ? `all ${rows.length} checks passed (exit 0)` : `${failed} of ${rows.length} checks FAILED (exit 1)`);
  return failed === 0 ? 0 : 1;
}
