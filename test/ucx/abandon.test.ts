/**
 * A request given up on (UcpWorker.abandon, which a forced close runs for a failed endpoint's
 * stuck requests) must not let go of memory UCX still uses: ucp_request_free on an incomplete
 * request lets the operation go on inside UCX without a callback, so UCX may still read the
 * send's buffer (or write a receive's) after the owner heard "cancelled".
 *
 * Two workers of one context in this process, A and B, connected over 127.0.0.1; B progresses
 * only when the test says so. A sends a rendezvous Active Message to B, which cannot complete
 * while B stands still; A gives it up. Then: the send's buffer stays reachable through a full
 * GC (a WeakRef to it still derefs), B receives exactly the bytes A sent, and once UCX
 * completed the request the worker lets go of it (nothing detached is left).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { useEnv } from "../helpers/env.ts";
import { UCP } from "../../src/ffi/ucp-layout.ts";
import { UcpContext, ucpUnavailableReason, type UcpEndpoint, type UcpWorker } from "../../src/ffi/ucp.ts";

/** Far above UCX's rendezvous threshold on every transport, so the send waits for B. */
const BIG_BYTES = 8 << 20;
const PATTERN = 0x5a;
/** Watchdog for each wait on UCX (a hang fails the test with this reason). */
const WAIT_MS = 20_000;
const AM_SMALL = 1;
const AM_BIG = 2;

function progressUntil(workers: UcpWorker[], what: string, done: () => boolean): void {
  const deadline = performance.now() + WAIT_MS;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`watchdog: ${what} did not happen within ${WAIT_MS} ms`);
    for (const w of workers) w.progress();
  }
}

/** Sends BIG_BYTES of PATTERN from `ep`; returns a WeakRef to the buffer (no other reference to it is kept). */
function sendBig(ep: UcpEndpoint, onDone: (status: number) => void): WeakRef<Uint8Array> {
  const data = new Uint8Array(BIG_BYTES).fill(PATTERN);
  ep.amSend(AM_BIG, new Uint8Array(8), data, onDone);
  return new WeakRef(data);
}

const unavailable = ucpUnavailableReason();

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe.skipIf(unavailable !== null)(`ucx: a given-up request keeps its memory (UCX_TLS=${tls})`, () => {
    useEnv({ UCX_TLS: tls });
    let ctx: UcpContext | null = null;
    afterAll(() => {
      ctx?.close();
    });

    test("abandon() of an incomplete rendezvous send: its buffer stays alive and B receives the bytes A sent", () => {
      process.env.UCX_TLS = tls;
      ctx = UcpContext.create({ rma: false });
      const a = ctx.createWorker();
      const b = ctx.createWorker();
      let epB = null as UcpEndpoint | null;
      let smallArrived = false;
      let rndvDesc = null as number | null;
      const listener = b.listen("127.0.0.1", 0, (req) => {
        epB = b.connect({ connRequest: req }, null, () => {});
      });
      b.setAmHandler(AM_SMALL, () => ((smallArrived = true), UCP.UCS_OK));
      b.setAmHandler(AM_BIG, (_h, _hl, data, len, attr) => {
        expect(len).toBe(BIG_BYTES);
        expect(attr & UCP.UCP_AM_RECV_ATTR_FLAG_RNDV).not.toBe(0);
        rndvDesc = data;
        return UCP.UCS_INPROGRESS; // the data descriptor stays valid until received
      });
      a.setAmHandler(AM_SMALL, () => UCP.UCS_OK);
      const epA = a.connect({ host: "127.0.0.1", port: listener.port }, false, () => {});
      // Wire-up: a small message A → B.
      epA.amSend(AM_SMALL, new Uint8Array(8), new Uint8Array(16), () => {});
      progressUntil([a, b], "the connection's first message", () => smallArrived && epB !== null);

      let status = null as number | null;
      const weak = sendBig(epA, (st) => (status = st));
      // B stands still: A's send cannot complete, whatever A does.
      for (let i = 0; i < 1000; i++) a.progress();
      expect(status).toBeNull();
      expect(a.inFlight).toBe(1);

      expect(a.abandon(epA)).toBe(1);
      expect(status).toBe(UCP.UCS_ERR_CANCELED);
      expect(a.inFlight).toBe(0);
      expect(a.stats().detached).toBe(1);
      expect(a.stats().detachedBytes).toBeGreaterThanOrEqual(BIG_BYTES);
      // The owner let go; UCX has not. The memory must survive a full collection, and memory
      // allocated afterwards must not take its place.
      Bun.gc(true);
      const others = Array.from({ length: 4 }, () => new Uint8Array(BIG_BYTES).fill(0xee));
      expect(weak.deref()).toBeDefined();

      // B moves: the rendezvous goes on, reading A's buffer.
      progressUntil([a, b], "the rendezvous RTS at B", () => rndvDesc !== null);
      const got = new Uint8Array(BIG_BYTES);
      let recvStatus = null as number | null;
      b.amRecvData(rndvDesc!, got, epB!, (st) => (recvStatus = st));
      progressUntil([a, b], "the rendezvous receive", () => recvStatus !== null);
      expect(recvStatus).toBe(UCP.UCS_OK);
      let wrong = 0;
      for (let i = 0; i < got.length; i++) if (got[i] !== PATTERN) wrong++;
      expect(wrong).toBe(0);
      // UCX completed the given-up request: the worker frees it and lets go of its memory.
      progressUntil([a, b], "the given-up request's completion", () => a.stats().detached === 0);
      expect(a.stats().detachedBytes).toBe(0);
      expect(a.stats().requests).toBe(0);
      expect(others.length).toBe(4);
    }, 60_000);
  });
}
