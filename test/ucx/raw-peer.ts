/**
 * Raw transport test peer (no RPC): connects to argv[2] over ucx and runs argv[3]:
 *   "burst N": sends N messages (head "m<i>", body of i % 7 bytes) as fast as the transport
 *              takes them, once the first message from the server arrived; then stays
 *              connected
 *   "sizes": sends head "ok" + 1000 bytes, "big" + 5000 bytes, "huge" + 1 MiB, "ok" + 10
 *            bytes, ignoring the limit the server stated (a misbehaving peer)
 * Prints {"ready": true} once connected, {"sent": n} when done, {"closed": message} when the connection closes; exits when
 * stdin closes.
 */
import { connect, SEND_FULL } from "../../src/index.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

const conn = await connect(process.argv[2]!);
let go: () => void;
const started = new Promise<void>((r) => (go = r));
conn.setReceiver({
  onMessage: (m) => (m.release(), go()),
  onClose: (e) => console.log(JSON.stringify({ closed: e?.message ?? null })),
});
console.log(JSON.stringify({ ready: true }));
const enc = new TextEncoder();
async function send(head: string, body: Uint8Array): Promise<void> {
  while (conn.trySend(enc.encode(head), body) === SEND_FULL) await conn.wait(10);
}
const [cmd, arg] = [process.argv[3], Number(process.argv[4] ?? 0)];
let sent = 0;
if (cmd === "burst") {
  await started;
  for (let i = 0; i < arg; i++, sent++) await send(`m${i}`, new Uint8Array(i % 7).fill(i & 0xff));
} else if (cmd === "sizes") {
  // Ignore the limit the server stated, as a buggy or hostile peer would.
  Object.defineProperty(conn, "caps", { value: { ...conn.caps, peerMaxMessageBytes: conn.caps.maxMessageBytes } });
  for (const [h, n] of [["ok", 1000], ["big", 5000], ["huge", 1 << 20], ["ok", 10]] as const) {
    await send(h, new Uint8Array(n).fill(1));
    sent++;
  }
}
console.log(JSON.stringify({ sent }));
exitWhenParentGoes(() => conn.close());
