/**
 * The registered receive-buffer slab (src/rdma/buffers.ts) over the softrc TEST FIXTURE, in a
 * process of its own (test/rdma/buffers-child.ts, killed by pid): every slot posted to an SRQ,
 * SENDs from a second QP land in them (bytes, slot ↔ wr_id ↔ address), a release re-posts a slot
 * and the next SEND lands in it, a SEND with every slot held waits (RNR, retried) until a release,
 * misuse is refused, a full SRQ's ENOMEM is reported (postAll up to bad_wr, a release keeps its slot), and after closing nothing is left (the
 * fixture's live MR count and the registry directory). Sends are signaled one in four over a send
 * queue of 8 (SignalBatcher), so only the signaled ones complete.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { IBV } from "../../src/ffi/verbs-layout.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const CHILD = new URL("./buffers-child.ts", import.meta.url).pathname;
/** Watchdog for the child's whole run (a hang fails the test instead of blocking it). */
const CHILD_WATCHDOG_MS = 30_000;

const fx = useSoftRc();

test("receive slab over the fixture: all slots posted to the SRQ, SENDs land in them, release re-posts, nothing leaked", async () => {
  const dir = fx.registry();
  const p = fx.track(Bun.spawn(["bun", CHILD], { stdout: "pipe", stderr: "pipe", env: fx.env(dir) }));
  const watchdog = setTimeout(() => p.kill(9), CHILD_WATCHDOG_MS);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(watchdog);
  expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
  const r: Record<string, Record<string, any>> = Object.fromEntries(
    stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .map((l) => [l.step, l]),
  );

  // One MR for the whole slab; every slot posted.
  expect(r.setup!.mrsWith - r.setup!.mrsBefore).toBe(1);
  expect(r.setup).toMatchObject({ postRc: 0, posted: 8, held: 0 });

  // Eight SENDs fill the eight slots, each slot once, bytes intact; the ninth finds the send queue full.
  const r1 = r.round1!;
  expect(r1.flags).toEqual([0, 0, 0, IBV.IBV_SEND_SIGNALED, 0, 0, 0, IBV.IBV_SEND_SIGNALED]);
  expect(r1.sqFull).toBe(-1);
  expect([...r1.slots].sort((x: number, y: number) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  expect(r1.allOk).toBe(true);
  expect([r1.posted, r1.held]).toEqual([0, 8]);
  // Only the signaled sends complete; each frees its batch of send-queue slots.
  expect(r1.sendWc).toEqual([
    [4, IBV.IBV_WC_SUCCESS],
    [8, IBV.IBV_WC_SUCCESS],
  ]);
  expect(r1.freed).toEqual([4, 4]);
  expect(r1.extraSendWc).toBe(0);
  expect(r1.free).toBe(8);

  // With every slot held, a release re-posts one and the next SEND lands there.
  expect(r.repost).toMatchObject({ postedAfterRelease: 1, releaseRc: 0, lateOk: true });
  expect(r.repost!.lateSlot).toBe(r.repost!.releasedSlot);

  // With every slot held the next SEND is NAKed RNR and retried; it lands once a release re-posts a slot.
  expect(r.rnr).toMatchObject({ rnrQuiet: 0, rnrReleaseRc: 0, waitedOk: true, qpState: IBV.IBV_QPS_RTS });
  expect(r.rnr!.waitedSlot).toBe(r.rnr!.lateSlot);

  expect(r.misuse).toMatchObject({ firstRelease: 0, refused: ["UsageError", "UsageError", "UsageError"], postedBefore: 1, posted: 8, held: 0 });

  // Three more rounds through the same slots.
  expect(r.rounds).toMatchObject({ roundsOk: true, posted: 8, held: 0, sent: 34 });

  // A full SRQ refuses posts with ENOMEM: postAll posts the chain up to the provider's bad_wr; a failed release keeps its slot held.
  expect(r.shared).toMatchObject({ full: 12, posted2Full: 0, oneOk: true, partial: 12, posted2Partial: 1, releaseFull: 12, held: 1, posted: 7 });

  // The slab's MR is deregistered; nothing of the fixture is left in the process or the registry.
  expect(r.closed!.mrsAfter).toBe(r.setup!.mrsBefore);
  expect(r.closed!.mrsAfter).toBe(0);
  expect(r.closed!.all).toBe(0);
  expect(readdirSync(dir)).toEqual([]);
}, 60_000);
