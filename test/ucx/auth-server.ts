/**
 * Test peer for the ucx auth tests: serves over ucx (argv[2]) with the token argv[3] ("-":
 * no auth) and a handshake timeout of argv[4] ms.
 *   1: echo
 *   2: JSON { stats: listener.stats, refusals: [{ reason, name, message }], marks }
 *   3: counts a mark (a call that must never run unless its client was admitted)
 * Prints {"url"} when listening; exits when stdin closes.
 */
import { serve, type HotpathError, type RefusalReason } from "../../src/index.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";

const [url, token, handshakeTimeoutMs] = [process.argv[2]!, process.argv[3]!, Number(process.argv[4] ?? 10000)];
const refusals: Array<{ reason: RefusalReason; name: string; message: string }> = [];
let marks = 0;
const serving = await serve(
  url,
  {
    1: (h) => h.data,
    2: () => new TextEncoder().encode(JSON.stringify({ stats: serving.listener.stats, refusals, marks })),
    3: () => void marks++,
  },
  { ...(token === "-" ? {} : { auth: { token } }), ucx: { handshakeTimeoutMs } },
);
serving.listener.onRefused((e: HotpathError, reason) => refusals.push({ reason, name: e.name, message: e.message }));
console.log(JSON.stringify({ url: serving.url }));
exitWhenParentGoes(() => serving.close());
