/**
 * Regions are per peer, and what that does and does not protect, over UCX's tcp and then its
 * shared-memory transports (servers in child processes):
 * - a region a server registers for one connection is deregistered when that peer goes: it
 *   closes its connection and lives on, it is killed, or it closes cleanly;
 * - over these transports UCX does not enforce rkeys (its software RMA, and CMA over shared
 *   memory, take the address as given): a peer reaches a region it was never given, even after
 *   it was deregistered. That is why RMA is opt-in (`ucx: { rma: true }`);
 * - a listener without RMA: the same forged one-sided put reaches nothing, and it keeps serving.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { rpcConnect } from "../../src/index.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import { useEnv } from "../helpers/env.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const KEEPER = new URL("./region-keeper.ts", import.meta.url).pathname;
const EXPOSURE = new URL("./exposure-server.ts", import.meta.url).pathname;
const RMA = { ucx: { rma: true } };
const SRC = new URL("../../src/index.ts", import.meta.url).pathname;
/** A client process: takes a region, writes into it one-sided, then "close" (closes and lives on) or "stay" (keeps it). */
const CLIENT = `
import { rpcConnect } from "${SRC}";
const c = await rpcConnect(process.argv[1], { ucx: { rma: true } });
const remote = c.conn.attachRegion(await c.request(1, new Uint8Array([9])));
await remote.put(0, new Uint8Array(4096).fill(5));
if (process.argv[2] === "close") c.close();
console.log("ready");
await Bun.sleep(60000);
`;

function u32(b: Uint8Array, at = 0): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
}

async function until<T>(what: string, get: () => Promise<T>, done: (v: T) => boolean): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const v = await get();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`watchdog: ${what} (last: ${JSON.stringify(v)})`);
    await Bun.sleep(25);
  }
}

async function clientProcess(url: string, mode: "close" | "stay", tls: string) {
  const proc = Bun.spawn(["bun", "-e", CLIENT, url, mode], { stdout: "pipe", env: { ...process.env, UCX_TLS: tls } });
  const reader = proc.stdout.getReader();
  let out = "";
  while (!out.includes("ready")) {
    const r = await reader.read();
    if (r.done) throw new Error(`client process exited before it was ready: ${out}`);
    out += new TextDecoder().decode(r.value);
  }
  return proc;
}

// Above the watchdogs (15 s), which fail a hang with a message first.
setDefaultTimeout(30_000);

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe(`ucx regions per peer (UCX_TLS=${tls})`, () => {
    useEnv({ UCX_TLS: tls });
    let keeper: Peer;
    let exposure: Peer;
    beforeAll(async () => {
      keeper = await spawnPeer(KEEPER, ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
      exposure = await spawnPeer(EXPOSURE, ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
    });
    afterAll(async () => {
      await Promise.all([keeper?.kill(), exposure?.kill()]);
    });

    test("a peer's region is deregistered when it goes: it closes and lives on, it is killed, it closes cleanly", async () => {
      const probe = await rpcConnect(keeper.ready.url);
      const procs: Array<ReturnType<typeof Bun.spawn>> = [];
      try {
        const closedOnly = async () => u32(await probe.request(2), 4);
        const registrations = async () => u32(await probe.request(3));
        // One closes its connection and lives on; one is killed; one closes in this process.
        procs.push(await clientProcess(keeper.ready.url, "close", tls));
        procs.push(await clientProcess(keeper.ready.url, "stay", tls));
        const a = await rpcConnect(keeper.ready.url, RMA);
        (a.conn as UcxConnection).attachRegion(await a.request(1, new Uint8Array([7])));
        expect(await registrations()).toBeGreaterThanOrEqual(2);
        procs[1]!.kill(9);
        await procs[1]!.exited;
        a.close();
        expect(await until("every owner's connection closed on the server", closedOnly, (n) => n === 3)).toBe(3);
        expect(await until("the server deregistered every region", registrations, (n) => n === 0)).toBe(0);
        // The server still serves, and registers for a new peer.
        const b = await rpcConnect(keeper.ready.url, RMA);
        const remote = (b.conn as UcxConnection).attachRegion(await b.request(1, new Uint8Array([3])));
        expect(await remote.get(0, 4)).toEqual(new Uint8Array(4).fill(3));
        expect(await registrations()).toBe(1);
        b.close();
        expect(await until("the last region deregistered", registrations, (n) => n === 0)).toBe(0);
      } finally {
        for (const p of procs) p.kill(9);
        probe.close();
      }
    });

    test("UCX does not enforce rkeys here: a peer reaches a region it was never given, after it was deregistered too (why RMA is opt-in)", async () => {
      const owner = await rpcConnect(exposure.ready.url, RMA);
      const other = await rpcConnect(exposure.ready.url, RMA);
      try {
        const desc = await owner.request(1);
        // `other` never asked for a region: the owner's descriptor reached it some other way.
        const stolen = (other.conn as UcxConnection).attachRegion(desc);
        expect(await stolen.get(0, 16)).toEqual(new Uint8Array(16).fill(0x11));
        owner.close();
        const registrations = async () => u32(await other.request(3));
        expect(await until("the owner's region deregistered", registrations, (n) => n === 0)).toBe(0);
        // Deregistered, and still readable and writable through the kept descriptor.
        expect(await stolen.get(0, 16)).toEqual(new Uint8Array(16).fill(0x11));
        await stolen.put(0, new Uint8Array(16).fill(0x22));
        expect(await other.request(2)).toEqual(new Uint8Array(16).fill(0x22));
      } finally {
        owner.close();
        other.close();
      }
    });

    test("a listener without RMA: a forged one-sided put reaches nothing, and the listener keeps serving", async () => {
      const owner = await rpcConnect(exposure.ready.url, RMA);
      const attacker = await rpcConnect(exposure.ready.plainUrl, RMA);
      try {
        const desc = await owner.request(1);
        const forged = (attacker.conn as UcxConnection).attachRegion(desc);
        forged.put(0, new Uint8Array(16).fill(0x33)).catch(() => {});
        // Same endpoint, same lane: had the server run the put, it ran before this echo.
        expect(await attacker.request(1, new Uint8Array([1, 2]))).toEqual(new Uint8Array([1, 2]));
        expect(await owner.request(2)).toEqual(new Uint8Array(16).fill(0x11));
        // The same put through the RMA listener lands: the bytes were reachable, only not through this one.
        await (owner.conn as UcxConnection).attachRegion(desc).put(0, new Uint8Array(16).fill(0x44));
        expect(await owner.request(2)).toEqual(new Uint8Array(16).fill(0x44));
      } finally {
        owner.close();
        attacker.close();
      }
      const again = await rpcConnect(exposure.ready.plainUrl);
      expect(await again.request(1, new Uint8Array([5]))).toEqual(new Uint8Array([5]));
      expect((again.conn as UcxConnection).caps.rma).toBe(false);
      again.close();
    });
  });
}
