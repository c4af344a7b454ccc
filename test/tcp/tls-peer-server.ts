/**
 * The conformance test service over TLS in its own process: `bun tls-peer-server.ts URL
 * CERT_DIR` serves test/conformance/peer-server.ts's methods on a tcps:// URL with the
 * fixture certificates in CERT_DIR (makeCerts), prints {"url", "pid"}, exits when stdin closes.
 */

import { exitWhenParentGoes } from "../helpers/peer.ts";
import { startTestService } from "../conformance/peer-server.ts";
import { readCerts, useFixtureTls } from "./tls-fixture.ts";

useFixtureTls(readCerts(process.argv[3]!));
const serving = await startTestService(process.argv[2]!);
console.log(JSON.stringify({ url: serving.url, pid: process.pid }));
exitWhenParentGoes(() => serving.close());
