/**
 * kv snapshots and crashes: a process killed (SIGKILL) in the middle of a save leaves its temp
 * file, and the next save or load of that snapshot removes it; temp files of a live process
 * and unrelated files are left alone.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvStore } from "../../src/kv/store.ts";
import { removeStaleTemps } from "../../src/kv/snapshot.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SAVER = new URL("./peers/snapshot-saver.ts", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "hotpath-kv-crash-"));
const peers: Peer[] = [];
afterAll(async () => {
  for (const p of peers.splice(0)) await p.kill();
  rmSync(dir, { recursive: true, force: true });
});

const temps = (name: string) => readdirSync(dir).filter((f) => f.startsWith(`.${name}.tmp-`));

/** Spawns a saver and kills it by pid once one of its temp files exists; returns the temp files left. */
async function killMidSave(name: string): Promise<string[]> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const peer = await spawnPeer(SAVER, [join(dir, name), "24"]);
    peers.push(peer);
    const pid = peer.ready.pid as number;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && !temps(name).some((f) => f.includes(`-${pid}-`))) await Bun.sleep(0);
    await peer.kill(9);
    await peer.proc.exited;
    const left = temps(name).filter((f) => f.includes(`-${pid}-`));
    if (left.length > 0) return left;
  }
  throw new Error("no save was caught in progress");
}

describe("a save killed midway", () => {
  test("SIGKILL mid-save leaves a temp file; the next save removes it and writes a good snapshot", async () => {
    const left = await killMidSave("a.snap");
    expect(left.length).toBeGreaterThan(0);
    const s = KvStore.create({ memoryBytes: 1 << 20 });
    s.put(new TextEncoder().encode("k"), new TextEncoder().encode("v"));
    s.save(join(dir, "a.snap"));
    s.close();
    expect(temps("a.snap")).toEqual([]);
    const back = KvStore.load(join(dir, "a.snap"), { memoryBytes: 1 << 20 });
    expect(back.stats().keys).toBe(1);
    back.close();
  });

  test("SIGKILL mid-save leaves a temp file; the next load removes it", async () => {
    const left = await killMidSave("b.snap");
    expect(left.length).toBeGreaterThan(0);
    if (existsSync(join(dir, "b.snap"))) {
      const s = KvStore.load(join(dir, "b.snap"), { memoryBytes: 64 << 20 });
      s.close();
    } else {
      expect(() => KvStore.load(join(dir, "b.snap"), { memoryBytes: 1 << 20 })).toThrow();
    }
    expect(temps("b.snap")).toEqual([]);
  });

  test("temp files of live processes, of other snapshots and other names are left alone", () => {
    const live = `.c.snap.tmp-${process.pid}-1`;
    const parent = `.c.snap.tmp-${process.ppid}-2`;
    const other = `.d.snap.tmp-999999999-3`;
    const odd = `.c.snap.tmp-notapid`;
    for (const f of [live, parent, other, odd]) writeFileSync(join(dir, f), "x");
    const dead = `.c.snap.tmp-999999999-4`;
    writeFileSync(join(dir, dead), "x");
    expect(removeStaleTemps(join(dir, "c.snap"))).toEqual([dead]);
    for (const f of [live, parent, other, odd]) expect(existsSync(join(dir, f))).toBe(true);
    expect(existsSync(join(dir, dead))).toBe(false);
  });
});
