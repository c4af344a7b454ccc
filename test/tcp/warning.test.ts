/**
 * The warning for an unprotected network listener, read from a child process's stderr
 * (listen-child.ts, port 0): listening on 0.0.0.0, :: or a real interface address with neither
 * auth nor TLS prints exactly one warning naming the URL and the fix; loopback, or auth, or TLS,
 * prints nothing.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { networkInterfaces } from "node:os";
import { makeCerts, type TestCerts } from "./tls-fixture.ts";

const CHILD = new URL("./listen-child.ts", import.meta.url).pathname;
const TOKEN = "warning-test-token-0123456789";

let certs: TestCerts;
beforeAll(() => {
  certs = makeCerts();
});
afterAll(() => {
  certs.remove();
});

/** Runs the child; its printed URL and every stderr line. */
async function listenIn(url: string, opts: object = {}): Promise<{ url: string; stderr: string[] }> {
  const proc = Bun.spawn(["bun", CHILD, url, JSON.stringify(opts)], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const watchdog = setTimeout(() => proc.kill(9), 15_000);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(watchdog);
  if (code !== 0) throw new Error(`listen-child ${url} exited with ${code}: ${err}`);
  return { url: JSON.parse(out.trim()).url, stderr: err.split("\n").filter((l) => l !== "") };
}

/** A non-loopback IPv4 address of this machine, or null. */
function interfaceAddress(): string | null {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (!a.internal && a.family === "IPv4") return a.address;
  }
  return null;
}

describe("tcp: a warning for listeners the network can reach unprotected", () => {
  const addr = interfaceAddress();
  const exposed = ["tcp://0.0.0.0:0", "tcp://[::]:0", ...(addr ? [`tcp://${addr}:0`] : [])];
  if (!addr) console.log("tcp warning test: no non-loopback IPv4 interface here; the interface-address case is left out");

  for (const url of exposed) {
    test(`${url} without auth or TLS: one warning naming the URL and the fix`, async () => {
      const r = await listenIn(url);
      const warnings = r.stderr.filter((l) => l.includes("hotpath: tcp listener"));
      expect(warnings.length).toBe(1);
      expect(r.stderr.length).toBe(1);
      expect(warnings[0]).toContain(r.url);
      expect(warnings[0]).toContain("neither authentication nor TLS");
      expect(warnings[0]).toContain("auth: { token }");
      expect(warnings[0]).toContain("tcps://");
      expect(warnings[0]).toContain("127.0.0.1");
    });
  }

  test("loopback (127.0.0.1, 127.0.0.2, ::1, localhost): no warning", async () => {
    for (const url of ["tcp://127.0.0.1:0", "tcp://127.0.0.2:0", "tcp://[::1]:0", "tcp://localhost:0"]) {
      expect((await listenIn(url)).stderr).toEqual([]);
    }
  });

  test("0.0.0.0 with auth, with TLS, with both: no warning", async () => {
    expect((await listenIn("tcp://0.0.0.0:0", { auth: { token: TOKEN } })).stderr).toEqual([]);
    expect((await listenIn("tcps://0.0.0.0:0", { tls: { cert: certs.cert, key: certs.key } })).stderr).toEqual([]);
    expect((await listenIn("tls://[::]:0", { tls: { cert: certs.cert, key: certs.key }, auth: { token: TOKEN } })).stderr).toEqual([]);
  });
});
