/**
 * The transport options the conformance suite needs over rdma://, shared by the softrc fixture
 * run (rdma.test.ts) and the real-device run (rdma-device.test.ts), so both instantiate the
 * suite the same way. Example: `runConformance({ ...rdmaSuiteOptions, name: "rdma", ... })`.
 */
import { spawnPeer } from "../helpers/peer.ts";
import type { Fixture } from "./suite.ts";

const PEER_SERVER = new URL("./peer-server.ts", import.meta.url).pathname;
/**
 * The test service's credit window: a client may send window - 1 messages before it must poll
 * (the one-way test sends 100 in a row); the listener's 2048 receives hold 18 such clients, the
 * most the suite keeps open at once.
 */
export const SERVER_WINDOW = 112;

/** pairOptions, clientOptions and spawnServer of an rdma:// conformance fixture. */
export const rdmaSuiteOptions: Pick<Fixture, "pairOptions" | "clientOptions" | "spawnServer"> = {
  // A connection holds at most `window` - 1 received views before its peer sees Full (credit
  // flow control); the held-view tests hold 200, past the default window of 16.
  pairOptions: { rdma: { window: 256 } },
  // A client sends as many messages as its send queue holds before it must poll (the one-way test: 100).
  clientOptions: { rdma: { sqDepth: 128 } },
  spawnServer: (url) => spawnPeer(PEER_SERVER, [url, JSON.stringify({ rdma: { window: SERVER_WINDOW } })]),
};
