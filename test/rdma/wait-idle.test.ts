/**
 * wait() on an idle rdma connection times out with false while other connections of the same
 * runtime are busy (contract item 9: wait resolves true when input may be there for THIS
 * connection). The runtime's completion channel and CQs are shared, so a wake-up for another
 * connection's completion once resolved every waiter true at once: a layer that loops on
 * wait() then spun. Over the software RC TEST FIXTURE, in a child process (wait-idle-child.ts).
 */
import { expect, test } from "bun:test";
import { startJsonChild } from "./softrc/json-child.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const fx = useSoftRc();
const CHILD = new URL("./wait-idle-child.ts", import.meta.url).pathname;

test("an idle connection's wait() times out with false in every mode while another connection of its runtime is busy", async () => {
  const dir = fx.registry();
  const c = startJsonChild(fx, ["bun", CHILD], dir, { label: "wait-idle", watchdogMs: 60_000 });
  const { all } = await c.lines();
  const waits = all.filter((l) => l.step === "wait");
  expect(waits.map((w) => w.mode)).toEqual(["adaptive", "async", "spin", "blocking"]);
  for (const w of waits) {
    expect({ mode: w.mode, ready: w.ready }).toEqual({ mode: w.mode, ready: false });
    expect(w.wallMs).toBeGreaterThanOrEqual(250);
  }
  // The other pair really was busy meanwhile (in the event-loop modes its echoes ran during the wait).
  expect(waits[0]!.busy + waits[1]!.busy).toBeGreaterThan(10);
}, 90_000);
