/**
 * In-place eager data (rx.ts): over UCX's shared memory, a body UCX lends
 * (UCP_AM_RECV_ATTR_FLAG_DATA, 4 KiB and more) is a view of UCX's receive buffer while the
 * receiver holds the message; release() detaches the view (it reads as empty) and gives the
 * buffer back; a receiver that holds many messages holds at most MAX_IN_PLACE_HELD of UCX's
 * buffers (the rest are copies, and messages keep flowing); closing the connection gives back
 * what its receiver still holds. The receiver is a child process with UCX_TLS=shm,self (UCX
 * reads UCX_TLS from the process environment), connected by worker address to this process.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { listen, type Connection, type Listener } from "../../src/index.ts";
import { IN_PLACE_MIN_BYTES, MAX_IN_PLACE_HELD } from "../../src/ucx/rx.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

const HOLDER = new URL("./rx-holder.ts", import.meta.url).pathname;
const BODY = 6000; // eager over shared memory (below its 8 KiB limit), above IN_PLACE_MIN_BYTES
const FIRST = 100; // more than MAX_IN_PLACE_HELD
const SECOND = 10;

setDefaultTimeout(60_000);

function message(index: number, n: number): [Uint8Array, Uint8Array] {
  const head = new Uint8Array(4);
  new DataView(head.buffer).setUint32(0, index, true);
  const body = new Uint8Array(n);
  for (let i = 0; i < n; i++) body[i] = (i * 7 + index) & 0xff;
  return [head, body];
}

async function sendAll(conn: Connection, from: number, count: number): Promise<void> {
  for (let i = from; i < from + count; i++) {
    const [h, b] = message(i, BODY);
    while (conn.trySend(h, b) !== 0) await conn.wait(100);
  }
}

describe("ucx in-place receive (UCX_TLS=shm,self receiver)", () => {
  let listener: Listener | null = null;
  let holder: Peer | null = null;
  afterAll(async () => {
    listener?.close(true);
    await holder?.kill();
  });

  test("bytes right in place; a released view reads as empty; UCX buffers held stay bounded; close gives them back", async () => {
    expect(BODY).toBeGreaterThanOrEqual(IN_PLACE_MIN_BYTES);
    expect(FIRST).toBeGreaterThan(MAX_IN_PLACE_HELD);
    listener = await listen("ucx://127.0.0.1:0?wireup=address");
    const accepted = new Promise<Connection>((resolve) => listener!.onConnection(resolve));
    const url = listener.url;
    const spawned = spawnPeer(HOLDER, [url, String(FIRST), String(SECOND)], { UCX_TLS: "shm,self" });
    const conn = await accepted;
    let asked = 0;
    conn.setReceiver({ onMessage: (m) => void (asked++, m.release()), onClose() {} });
    // spawnPeer resolves on the first JSON line: the holder's report, after the first batch.
    const sending = sendAll(conn, 0, FIRST);
    holder = await spawned;
    await sending;
    const r = holder.ready;
    expect(r.ok).toBe(true);
    expect(r.inPlace).toBe(MAX_IN_PLACE_HELD); // the first 64 in place, the other 36 copied
    expect(r.heldInPlace).toBe(MAX_IN_PLACE_HELD);
    expect(r.lengthBefore).toBe(BODY);
    expect(r.afterRelease).toEqual({ length: 0, byte0: null });
    expect(r.heldAfterReleaseAll).toBe(0);
    // The second batch is held until the connection closes from this side.
    while (asked === 0) await conn.wait(100);
    await sendAll(conn, FIRST, SECOND);
    await Bun.sleep(200);
    conn.close();
    const closed = JSON.parse(await holder.nextLine(20_000));
    expect(closed.closed).toBe(true);
    expect(closed.held).toBe(SECOND);
    expect(closed.heldAfterClose).toBe(0);
    expect(closed.viewsEmpty).toBe(SECOND);
  });
});
