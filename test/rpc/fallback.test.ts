/**
 * Fallback chains (issue 10): a candidate that cannot be formed from the primary URL (ucx and
 * tcp need host:port, an shm URL has a name) is skipped with its reason in `conn.via.skipped`
 * and the chain goes on to a real tcp listener at its end; only when every candidate fails does
 * connect reject, with every reason. A failed candidate is reported in conn.via only: the
 * connecting process prints nothing (checked in a child process's stderr).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ConnectError, TransportUnavailableError, UsageError, connect, listen, registerTransport, type Listener, type TransportFactory } from "../../src/index.ts";

const CHILD = `${import.meta.dir}/fallback-child.ts`;
const unique = () => `fb-${process.pid}-${Math.random().toString(36).slice(2)}`;

let tcp: Listener;
beforeAll(async () => {
  tcp = await listen("tcp://127.0.0.1:0");
});
afterAll(() => tcp?.close(true));

describe("connect() fallback chains", () => {
  test('shm://name with fallback ["ucx", "tcp", <tcp url>]: the formless candidates are skipped and tcp connects', async () => {
    const name = unique();
    const c = await connect(`shm://${name}`, { fallback: ["ucx", "tcp", tcp.url], connectTimeoutMs: 2000 });
    try {
      expect(c.transport).toBe("tcp");
      expect(c.via.chosen).toBe(tcp.url);
      expect(c.via.skipped.map((s) => s.url)).toEqual([`shm://${name}`, `ucx://${name}`, `tcp://${name}`]);
      // No listener of that name: a connect failure. The derived ones could not be formed.
      expect(c.via.skipped[0]!.error).toBeInstanceOf(ConnectError);
      for (const s of c.via.skipped.slice(1)) {
        expect(s.error).toBeInstanceOf(UsageError);
        expect(s.reason).toContain(`from shm://${name}`);
      }
      expect(c.via.skipped[1]!.reason).toContain("host must be a numeric IPv4 address");
      expect(c.via.skipped[2]!.reason).toContain("missing port");
    } finally {
      c.close();
    }
  });

  test("each failed candidate is recorded once", async () => {
    const c = await connect(`shm://${unique()}`, { fallback: ["ucx", "inproc", tcp.url], connectTimeoutMs: 2000 });
    try {
      const urls = c.via.skipped.map((s) => s.url);
      expect(new Set(urls).size).toBe(urls.length);
      expect(urls.length).toBe(3);
    } finally {
      c.close();
    }
  });

  test("when every candidate fails, connect rejects with every reason", async () => {
    const name = unique();
    const e = await connect(`shm://${name}`, { fallback: ["ucx", "tcp"], connectTimeoutMs: 2000 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain(`shm://${name}: `);
    expect(e.message).toContain(`ucx://${name}: `);
    expect(e.message).toContain(`tcp://${name}: `);
    expect(e.message).toContain("missing port");
    expect(e.cause).toBeInstanceOf(AggregateError);
    expect((e.cause as AggregateError).errors.length).toBe(3);
  });

  test("a URL the caller wrote that is malformed is still a UsageError at once", async () => {
    await expect(connect(`shm://${unique()}`, { fallback: ["tcp://127.0.0.1"] })).rejects.toBeInstanceOf(UsageError);
    await expect(connect("tcp://127.0.0.1", { fallback: [tcp.url] })).rejects.toBeInstanceOf(UsageError);
    // An unknown scheme is a typo, the same on every machine: refused before anything connects.
    const e = await connect(tcp.url, { fallback: ["tpc"] }).catch((x) => x);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toContain('"tpc"');
    // A string is not a list of fallbacks (it used to be tried letter by letter).
    await expect(connect(tcp.url, { fallback: "tcp" as never })).rejects.toBeInstanceOf(UsageError);
  });

  test("a derived candidate for a scheme-name fallback that is unavailable is skipped as unavailable", async () => {
    const nodevice: TransportFactory = {
      scheme: "nodevice-fb",
      unavailableReason: () => "no device (test transport)",
      connect: () => Promise.reject(new Error("must not be called")),
      listen: () => Promise.reject(new Error("must not be called")),
    };
    registerTransport(nodevice);
    const c = await connect(`shm://${unique()}`, { fallback: ["nodevice-fb", tcp.url], connectTimeoutMs: 2000 });
    try {
      expect(c.via.skipped[1]!.error).toBeInstanceOf(TransportUnavailableError);
    } finally {
      c.close();
    }
  });

  test("the connecting process prints nothing for the candidates it skipped", async () => {
    // Formless candidates (ucx, tcp), and ones that fail to connect (nothing listens on those names).
    const chain = ["ucx", "tcp", "inproc", `shm://${unique()}`, tcp.url];
    const proc = Bun.spawn(["bun", CHILD, `shm://${unique()}`, JSON.stringify(chain)], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const watchdog = setTimeout(() => proc.kill(9), 30_000);
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(watchdog);
    expect(code).toBe(0);
    const via = JSON.parse(out.trim());
    expect(via.chosen).toBe(tcp.url);
    expect(via.skipped.length).toBe(5);
    expect(err).toBe("");
  });
});
