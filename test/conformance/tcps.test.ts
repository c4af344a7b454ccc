/**
 * The conformance suite once more over TLS (tcps://, Bun's TLS), with a CA and server
 * certificate made by openssl for this file: every contract item and RPC test runs with the
 * hello, frames and calls inside TLS. The fixture transport (useFixtureTls) fills the
 * certificates into the suite's listens and connects; the peer server does the same.
 */

import { afterAll, beforeAll } from "bun:test";
import { runConformance } from "./suite.ts";
import { tcpBlackhole } from "../helpers/blackhole.ts";
import { spawnPeer } from "../helpers/peer.ts";
import { makeCerts, useFixtureTls, type TestCerts } from "../tcp/tls-fixture.ts";

const TLS_PEER = new URL("../tcp/tls-peer-server.ts", import.meta.url).pathname;
let certs: TestCerts;
let undo: () => void;
beforeAll(() => {
  certs = makeCerts();
  undo = useFixtureTls(certs);
});
afterAll(() => {
  undo();
  certs.remove();
});

runConformance({
  name: "tcps",
  label: "tcp over TLS",
  listenUrl: () => "tcps://127.0.0.1:0",
  async refusedUrl() {
    // A port that was just free: bind, note it, release.
    const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = s.port;
    s.stop(true);
    return `tcps://127.0.0.1:${port}`;
  },
  async blackhole() {
    const h = await tcpBlackhole();
    return { url: `tcps://${h.host}:${h.port}`, close: h.close };
  },
  spawnServer: (url) => spawnPeer(TLS_PEER, [url, certs.dir]),
});
