/**
 * Test fixtures for tcp TLS and authentication: a self-made CA and a server certificate
 * generated with the openssl CLI into a fresh temporary directory (SAN IP:127.0.0.1 and
 * DNS:localhost), a second unrelated CA, and a recording TCP proxy that forwards bytes both ways
 * and keeps what passed, so a test can read the wire (or replay it); and a fixture transport
 * that fills those certificates into tcps:// listens and connects (useFixtureTls).
 */

import type { Socket, TCPSocketListener } from "bun";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { registerTransport } from "../../src/index.ts";
import { tcpsTransport } from "../../src/tcp/setup.ts";

export interface TestCerts {
  dir: string;
  /** The CA that signed `cert`. */
  ca: string;
  /** A CA that signed nothing here. */
  otherCa: string;
  cert: string;
  key: string;
  /** Removes the directory. */
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr.toString()}`);
}

/** Generates the CA, the server certificate and the other CA (EC P-256, valid 2 days). */
export function makeCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "hotpath-tls-"));
  try {
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(dir, ["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=hotpath test CA"]);
    openssl(dir, ["req", "-x509", ...ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2", "-subj", "/CN=hotpath other CA"]);
    openssl(dir, ["req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    writeFileSync(join(dir, "ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    openssl(dir, ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"]);
    const read = (f: string) => readFileSync(join(dir, f), "utf8");
    return { dir, ca: read("ca.pem"), otherCa: read("other.pem"), cert: read("server.pem"), key: read("server.key"), remove: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** What one proxied connection carried, each way, in order. */
export interface ProxiedConnection {
  toServer: Uint8Array[];
  toClient: Uint8Array[];
}

export interface RecordingProxy {
  port: number;
  connections: ProxiedConnection[];
  close(): void;
}

interface ProxySide {
  other: Socket<ProxySide> | null;
  pending: Uint8Array[];
  record: Uint8Array[];
}

/** A proxy on 127.0.0.1 port 0 to 127.0.0.1:`targetPort`, recording every byte both ways. */
export function recordingProxy(targetPort: number): RecordingProxy {
  const connections: ProxiedConnection[] = [];
  const forward = (s: Socket<ProxySide>, d: Uint8Array) => {
    const side = s.data;
    side.record.push(d.slice());
    if (side.other) side.other.write(d);
    else side.pending.push(d.slice());
  };
  const sockets = new Set<Socket<ProxySide>>();
  const server: TCPSocketListener<ProxySide> = Bun.listen<ProxySide>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(client) {
        const rec: ProxiedConnection = { toServer: [], toClient: [] };
        connections.push(rec);
        client.data = { other: null, pending: [], record: rec.toServer };
        sockets.add(client);
        void Bun.connect<ProxySide>({
          hostname: "127.0.0.1",
          port: targetPort,
          data: { other: client, pending: [], record: rec.toClient },
          socket: {
            open(up) {
              sockets.add(up);
              client.data.other = up;
              for (const d of client.data.pending.splice(0)) up.write(d);
            },
            data: forward,
            close(up) {
              sockets.delete(up);
              client.end();
            },
            error() {},
          },
        }).catch(() => client.end());
      },
      data: forward,
      close(client) {
        sockets.delete(client);
        client.data.other?.end();
      },
      error() {},
    },
  });
  return {
    port: server.port,
    connections,
    close() {
      server.stop(true);
      for (const s of sockets) s.terminate();
    },
  };
}

/** All bytes of `chunks`, concatenated. */
export function joined(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks));
}

/** Whether `needle` occurs in `hay`. */
export function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(hay.buffer, hay.byteOffset, hay.length).indexOf(Buffer.from(needle)) >= 0;
}

/**
 * Makes `tcps://` the TLS transport with this fixture's certificates filled in (listeners get
 * cert and key, connects trust the CA) unless the caller gives its own `tls`, so code written
 * without TLS options (the conformance suite) runs over real TLS. Returns the undo.
 */
export function useFixtureTls(c: Pick<TestCerts, "ca" | "cert" | "key">): () => void {
  registerTransport({
    ...tcpsTransport,
    connect: (url, opts) => tcpsTransport.connect(url, { tls: { ca: c.ca }, ...opts }),
    listen: (url, opts) => tcpsTransport.listen(url, { tls: { cert: c.cert, key: c.key }, ...opts }),
  });
  return () => registerTransport(tcpsTransport);
}

/** The certificates of a fixture directory made by makeCerts() (for a peer process). */
export function readCerts(dir: string): Pick<TestCerts, "ca" | "cert" | "key"> {
  const read = (f: string) => readFileSync(join(dir, f), "utf8");
  return { ca: read("ca.pem"), cert: read("server.pem"), key: read("server.key") };
}
