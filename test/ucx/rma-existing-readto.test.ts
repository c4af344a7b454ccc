/**
 * RemoteRegion.readTo (the one-sided GET's read): `len` bytes land at the start of the target's
 * buffer and nothing after them changes; one target serves read after read of any length and
 * offset, two targets can be in flight at once; onRead runs once per read with UCS_OK; a read
 * longer than the target's buffer or outside the region is refused (UsageError) and one on a
 * closed connection too (TransportClosedError), before anything is sent; and a read allocates
 * no JS heap object (heapStats over reads spun to completion, in windows no collection ran
 * through). Over UCX_TLS=tcp,self and shm,self, against a server process that registers a
 * buffer it already has (SharedRegion).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rpcConnect, TransportClosedError, UsageError } from "../../src/index.ts";
import { UCP } from "../../src/ffi/ucp-layout.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import type { RegionReadTarget } from "../../src/ucx/rma.ts";
import { heapWindow } from "../../bench/measure.ts";
import { useEnv } from "../helpers/env.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SRC = new URL("../../src/", import.meta.url).pathname;
const HELPERS = new URL("../helpers/", import.meta.url).pathname;
const ARENA_BYTES = 64 << 10;

// Method 1: the descriptor of an arena whose byte i is i & 0xff.
const SERVER = `
import { serve } from "${SRC}index.ts";
import { SharedRegion } from "${SRC}ucx/rma.ts";
import { exitWhenParentGoes } from "${HELPERS}peer.ts";
const arena = new Uint8Array(${ARENA_BYTES}).map((_, i) => i & 0xff);
let region = null;
const serving = await serve(process.argv[2], {
  1: (h) => (region ??= SharedRegion.register(h.session.conn.rt, arena)).descriptor(),
}, { ucx: { rma: true } });
console.log(JSON.stringify({ url: serving.url }));
exitWhenParentGoes(() => serving.close());
`;

class Target implements RegionReadTarget {
  readonly buf: Uint8Array;
  statuses: number[] = [];
  reads = 0;
  constructor(bytes: number) {
    this.buf = new Uint8Array(new ArrayBuffer(bytes));
  }
  onRead(status: number): void {
    this.reads++;
    if (status !== UCP.UCS_OK) this.statuses.push(status);
  }
}


const arenaByte = (i: number) => i & 0xff;

for (const tls of ["tcp,self", "shm,self"]) {
  describe(`ucx RemoteRegion.readTo (UCX_TLS=${tls})`, () => {
    let dir: string;
    let peer: Peer;
    useEnv({ UCX_TLS: tls });
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "hotpath-rma-readto-"));
      writeFileSync(join(dir, "server.ts"), SERVER);
      peer = await spawnPeer(join(dir, "server.ts"), ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
    });
    afterAll(async () => {
      await peer.kill();
      rmSync(dir, { recursive: true, force: true });
    });

    test("reads land at the start of a reused target; bad lengths and a closed connection are refused; no object per read", async () => {
      const c = await rpcConnect(peer.ready.url, { ucx: { rma: true } });
      const conn = c.conn as UcxConnection;
      try {
        const region = conn.attachRegion(await c.request(1));
        const a = new Target(4096);
        const b = new Target(300);
        const spinUntil = (t: Target, n: number) => {
          const deadline = Date.now() + 10_000; // a watchdog, not a timing assert
          while (t.reads < n) {
            if (Date.now() > deadline) throw new Error("a read never completed");
            conn.rt.spin(1e6);
          }
        };
        // One target, reads of several lengths and offsets: the bytes after `len` keep what was there.
        for (const [offset, len] of [[0, 4096], [100, 1], [ARENA_BYTES - 700, 700], [5, 256]] as const) {
          a.buf.fill(0xee);
          const before = a.reads;
          region.readTo(offset, len, a);
          spinUntil(a, before + 1);
          expect(a.reads).toBe(before + 1);
          expect(Array.from(a.buf.subarray(0, len))).toEqual(Array.from({ length: len }, (_, i) => arenaByte(offset + i)));
          expect(a.buf.subarray(len).every((x) => x === 0xee)).toBe(true);
        }
        // Two targets in flight at once.
        region.readTo(1000, 256, a);
        region.readTo(2000, 300, b);
        spinUntil(a, 5);
        spinUntil(b, 1);
        expect([arenaByte(1000), arenaByte(2000)]).toEqual([a.buf[0], b.buf[0]]);
        expect(a.buf[255]).toBe(arenaByte(1255));
        expect(b.buf[299]).toBe(arenaByte(2299));
        expect([a.statuses, b.statuses]).toEqual([[], []]);

        // Refused before anything is sent.
        expect(() => region.readTo(0, 301, b)).toThrow(UsageError);
        expect(() => region.readTo(ARENA_BYTES - 10, 11, a)).toThrow(UsageError);
        expect(() => region.readTo(-1, 1, a)).toThrow(UsageError);
        expect(b.reads).toBe(1);

        // No heap object per read: reads spun to completion one at a time.
        for (let i = 0; i < 200; i++) {
          region.readTo(i, 256, a);
          spinUntil(a, a.reads + 1);
        }
        const perRead: number[] = [];
        for (let w = 0; w < 40 && perRead.length < 3; w++) {
          const objs = await heapWindow(() => {
            const start = a.reads;
            for (let i = 0; i < 300; i++) {
              region.readTo(i, 256, a);
              while (a.reads === start + i) conn.poll();
            }
          });
          if (objs !== null) perRead.push(objs / 300);
        }
        expect(perRead.length).toBeGreaterThan(0);
        expect(Math.min(...perRead)).toBeLessThan(0.5);
        expect(a.statuses).toEqual([]);

        c.close();
        expect(() => region.readTo(0, 16, a)).toThrow(TransportClosedError);
      } finally {
        c.close();
      }
    });
  });
}
