/**
 * Registering memory a process already has (SharedRegion): a server registers one existing
 * buffer (a view into a larger ArrayBuffer, as a kv arena is) once for its RMA runtime; two
 * clients get the very same descriptor, read the buffer one-sided and see the writes the server
 * makes afterwards; a client leaving does not deregister it; the owner's close() does (the
 * runtime's registration count goes back), after which, over UCX's tcp and shared-memory
 * transports, a peer that kept the descriptor still reads the memory (they check no keys: see
 * rma.ts). A spin for a one-sided read's answer ends when the read completes; with the owner
 * stopped a read does not complete (UCX 1.13 answers it from the owner's worker). The server runs in a child process, so a fault fails the test instead of the runner.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rpcConnect, type Client } from "../../src/index.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";
import { useEnv } from "../helpers/env.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const SRC = new URL("../../src/", import.meta.url).pathname;
const HELPERS = new URL("../helpers/", import.meta.url).pathname;
const ARENA_BYTES = 1 << 20;
const ARENA_AT = 4096 + 100; // the region starts inside a larger buffer

const SERVER = `
import { serve } from "${SRC}index.ts";
import { SharedRegion } from "${SRC}ucx/rma.ts";
import { exitWhenParentGoes } from "${HELPERS}peer.ts";
const backing = new Uint8Array(new ArrayBuffer(${ARENA_BYTES} + 2 * ${ARENA_AT})).fill(0xee);
const arena = backing.subarray(${ARENA_AT}, ${ARENA_AT} + ${ARENA_BYTES}).fill(1);
const regions = new Map();
let rt = null;
const serving = await serve(process.argv[2], {
  // 1: the arena's descriptor, registered on first use for the caller's runtime
  1: (h) => {
    rt = h.session.conn.rt;
    let r = regions.get(rt);
    if (r === undefined) regions.set(rt, (r = SharedRegion.register(rt, arena)));
    return r.descriptor();
  },
  // 2: [offset u32, len u32, byte u8]: the server writes the bytes into the arena
  2: (h) => {
    const dv = new DataView(h.data.buffer, h.data.byteOffset, 9);
    arena.fill(dv.getUint8(8), dv.getUint32(0, true), dv.getUint32(0, true) + dv.getUint32(4, true));
    return new Uint8Array(0);
  },
  // 3: [registrations of the runtime u32, open regions u32]
  3: () => new Uint8Array(new Uint32Array([rt === null ? 0 : rt.stats().registrations, [...regions.values()].filter((r) => !r.closed).length]).buffer),
  // 4: the owner closes its regions
  4: () => {
    for (const r of regions.values()) r.close();
    return new Uint8Array(0);
  },
}, { ucx: { rma: true } });
console.log(JSON.stringify({ url: serving.url }));
exitWhenParentGoes(() => serving.close());
`;

function write(offset: number, len: number, byte: number): Uint8Array {
  const b = new Uint8Array(9);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, offset, true);
  dv.setUint32(4, len, true);
  dv.setUint8(8, byte);
  return b;
}

const counts = async (c: Client) => Array.from(new Uint32Array((await c.request(3)).slice().buffer));

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe(`ucx shared region over existing memory (UCX_TLS=${tls})`, () => {
    let dir: string;
    let peer: Peer;
    useEnv({ UCX_TLS: tls });
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "hotpath-rma-existing-"));
      writeFileSync(join(dir, "server.ts"), SERVER);
      peer = await spawnPeer(join(dir, "server.ts"), ["ucx://127.0.0.1:0"], { UCX_TLS: tls });
    });
    afterAll(async () => {
      await peer.kill();
      rmSync(dir, { recursive: true, force: true });
    });

    test("one registration, one descriptor for two clients; they see the server's writes; close() deregisters", async () => {
      const a = await rpcConnect(peer.ready.url, { ucx: { rma: true } });
      const b = await rpcConnect(peer.ready.url, { ucx: { rma: true } });
      try {
        const da = await a.request(1);
        const db = await b.request(1);
        expect(Buffer.from(db).equals(Buffer.from(da))).toBe(true);
        expect(await counts(a)).toEqual([1, 1]);
        const ra = (a.conn as UcxConnection).attachRegion(da);
        const rb = (b.conn as UcxConnection).attachRegion(db);
        expect(ra.lenBytes).toBe(ARENA_BYTES);
        // The registered bytes are the view's, not the buffer around it (0xee).
        expect(await ra.get(0, 4096)).toEqual(new Uint8Array(4096).fill(1));
        expect(await rb.get(ARENA_BYTES - 4096, 4096)).toEqual(new Uint8Array(4096).fill(1));

        // The server writes; both clients see it one-sided.
        await a.request(2, write(1000, 70_000, 0xab));
        const expected = new Uint8Array(72_000).fill(1);
        expected.fill(0xab, 1000, 71_000);
        expect(await ra.get(0, 72_000)).toEqual(expected);
        expect(await rb.get(0, 72_000)).toEqual(expected);

        // A spin waiting for a one-sided read stops when it completes (it used to stop only on a
        // delivered message, so an RMA answer cost the sender's whole spin budget).
        const into = new Uint8Array(new ArrayBuffer(16));
        let done = false;
        ra.readInto(1000, into, () => (done = true));
        const n = (a.conn as UcxConnection).rt.spin(3e9);
        expect([done, n > 0]).toEqual([true, true]);
        expect(Array.from(into)).toEqual(new Array(16).fill(0xab));

        // UCX 1.13 emulates RMA over tcp and shared memory with Active Messages that the
        // owner's worker answers: with the owner stopped a read does not complete; it does once
        // the owner runs again (so one-sided reads here still need the server's progress).
        peer.proc.kill("SIGSTOP");
        let answered = false;
        try {
          ra.readInto(0, into, () => (answered = true));
          (a.conn as UcxConnection).rt.spin(300e6);
          expect(answered).toBe(false);
        } finally {
          peer.proc.kill("SIGCONT");
        }
        for (let i = 0; i < 1000 && !answered; i++) (a.conn as UcxConnection).rt.spin(10e6);
        expect(answered).toBe(true);

        // A client leaving does not deregister the shared region: the other keeps reading.
        a.close();
        await b.request(2, write(5, 3, 7));
        expect(Array.from(await rb.get(4, 5))).toEqual([1, 7, 7, 7, 1]);
        expect(await counts(b)).toEqual([1, 1]);

        // The owner closes it: the runtime's registration is gone.
        await b.request(4);
        expect(await counts(b)).toEqual([0, 0]);
        // tcp and shared memory enforce no keys: the descriptor still reaches the memory
        // (rma.ts: a bearer capability that outlives deregistration on these transports).
        await b.request(2, write(0, 1, 9));
        expect((await rb.get(0, 2))[0]).toBe(9);
      } finally {
        a.close();
        b.close();
      }
    });
  });
}
