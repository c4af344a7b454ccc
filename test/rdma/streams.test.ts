/**
 * Streams (issue 16) over rdma:// on the softrc TEST FIXTURE, in both connection modes (rdma_cm
 * `rdma://127.0.0.1:0` and `?mode=socket`), the server (stream-server.ts) and the client
 * (stream-client.ts) each in its own process with the fixture's environment, killed by pid
 * after each test. Server, client and bidi streams carry 2,000 mixed-size messages each (1 B ..
 * 64 KiB: some above the 4 KiB receive slot, i.e. write-with-immediate into the landing zone)
 * in order with every byte checked; a reader that stops holds the server's sends at exactly its
 * stream window while a request() on the same connection completes; a client cancel aborts the
 * server side's signal; kill -9 of the server mid-stream ends the client's stream and calls with
 * TransportClosedError. Afterwards no stream or call is left on either side, each process's
 * QPs and MRs are gone and the fixture's registry directory is empty.
 *
 * rdma options: the transport's default credit window is 16 receives per connection (at most
 * 15 messages outstanding before the sender sees Full). Both ends reserve 128 receives and a
 * send queue of 128 here, so a stream window of 64 messages plus calls beside it fits in the
 * transport's credits: what stops a producer is the stream's own credit (what these tests
 * check), not the transport's.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { startJsonChild } from "./softrc/json-child.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const SERVER = new URL("./stream-server.ts", import.meta.url).pathname;
const CLIENT = new URL("./stream-client.ts", import.meta.url).pathname;
/** Watchdog for one child (a hang fails the test instead of blocking it). */
const CHILD_WATCHDOG_MS = 50_000;
const RDMA = { rdma: { window: 128, sqDepth: 128 } };
const NOTHING_LIVE = { qp: 0, mr: 0 };
/** Messages per stream kind. */
const COUNT = 2000;
/** The stalled reader's stream window and message size (above the 4 KiB receive slot: zone writes). */
const STALL_WINDOW = { messages: 32, bytes: 1 << 20 };
const STALL_SIZE = 20_000;
const PLAN = { count: COUNT, stallWindow: STALL_WINDOW, stallSize: STALL_SIZE };

const fx = useSoftRc();

function startServer(dir: string, url: string) {
  return startJsonChild(fx, ["bun", SERVER, url, JSON.stringify(RDMA)], dir, { label: "stream server", watchdogMs: CHILD_WATCHDOG_MS, stdin: "pipe" });
}

function startClient(dir: string, url: string, scenario: "all" | "kill") {
  return startJsonChild(fx, ["bun", CLIENT, url, JSON.stringify({ window: 64, ...RDMA }), scenario, JSON.stringify(PLAN)], dir, { label: `stream client ${scenario}`, watchdogMs: CHILD_WATCHDOG_MS });
}

/** The registry directory empties (a killed peer's segments are removed by the survivor's fixture). */
async function expectRegistryEmpty(dir: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (readdirSync(dir).length > 0 && Date.now() < end) await Bun.sleep(20);
  expect(readdirSync(dir)).toEqual([]);
}

describe.each(["cm", "socket"] as const)("streams over rdma:// (%s mode, softrc fixture)", (mode) => {
  const url0 = mode === "cm" ? "rdma://127.0.0.1:0" : "rdma://127.0.0.1:0?mode=socket";

  test("server, client and bidi streams of 2,000 mixed-size messages in order with their bytes; a stalled reader stops the server at its window while a call completes; a cancel aborts the server's signal; nothing left", async () => {
    const dir = fx.registry();
    const server = startServer(dir, url0);
    const { url } = await server.line("listening");
    const { by } = await startClient(dir, url, "all").lines();
    expect(by["server-stream"]).toMatchObject({ count: COUNT, bad: -1, trailers: String(COUNT) });
    expect(by["server-stream"]!.large).toBeGreaterThan(0);
    expect(by["client-stream"]).toMatchObject({ reply: [COUNT, 0], end: null });
    expect(by["client-stream"]!.large).toBeGreaterThan(0);
    expect(by.bidi).toMatchObject({ count: COUNT, bad: -1 });
    // The flood stopped at exactly the window, held it over 5 round trips, the client holds it.
    expect(by.stall).toMatchObject({
      held: new Array(5).fill(STALL_WINDOW.messages),
      unary: [7],
      buffered: STALL_WINDOW.messages * STALL_SIZE,
      bad: -1,
      resumed: true,
    });
    expect(by.cancel).toMatchObject({ first: [1], read: "CancelledError", closed: "CancelledError", aborted: true, server: ["wait:started:none:", "wait:CancelledError:CancelledError"] });
    expect(by.afterwards).toEqual({ step: "afterwards", clientInFlight: 0, serverInFlight: 0, calls: 64 });
    expect(by.leaks).toMatchObject(NOTHING_LIVE);
    (server.proc.stdin as any).end();
    const s = await server.lines();
    expect(s.by.leaks).toMatchObject(NOTHING_LIVE);
    await expectRegistryEmpty(dir);
  }, 60_000);

  test("kill -9 of the server mid-stream: the client's stream and a later request end with TransportClosedError; nothing left", async () => {
    const dir = fx.registry();
    const server = startServer(dir, url0);
    const { url } = await server.line("listening");
    const client = startClient(dir, url, "kill");
    await client.line("streaming");
    server.proc.kill(9);
    await server.proc.exited;
    const { by } = await client.lines();
    expect(by.killed).toMatchObject({ read: "TransportClosedError", closed: "TransportClosedError", request: "TransportClosedError", aborted: true, bad: -1 });
    expect(by.killed!.got).toBeGreaterThanOrEqual(100);
    expect(by.leaks).toMatchObject(NOTHING_LIVE);
    await expectRegistryEmpty(dir);
  }, 60_000);
});
