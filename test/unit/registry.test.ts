import { afterAll, describe, expect, test } from "bun:test";
import {
  ConnectError,
  TransportUnavailableError,
  UsageError,
  connect,
  listen,
  registerTransport,
  transports,
  type TransportFactory,
} from "../../src/index.ts";

// A transport that cannot run on this machine, as ucx without libucp or rdma without a device report.
const unavailable: TransportFactory = {
  scheme: "nodevice",
  unavailableReason: () => "no device (test transport)",
  connect: () => Promise.reject(new Error("must not be called")),
  listen: () => Promise.reject(new Error("must not be called")),
};
registerTransport(unavailable);

describe("URL registry", () => {
  const listening = listen("tcp://127.0.0.1:0");
  afterAll(async () => (await listening).close(true));

  test("dispatches on the scheme", async () => {
    const l = await listening;
    const c = await connect(l.url);
    expect(c.transport).toBe("tcp");
    expect(c.via).toEqual({ chosen: l.url + "", skipped: [] });
    c.close();
  });

  test("an unknown scheme is a UsageError naming the registered ones", async () => {
    const e = await connect("carrier-pigeon://x:1").catch((x) => x);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toContain("tcp");
  });

  test("fallback skips an unavailable transport with its reason and reports the choice", async () => {
    const l = await listening;
    const port = new URL(l.url).port;
    const c = await connect(`nodevice://127.0.0.1:${port}`, { fallback: ["tcp"] });
    expect(c.transport).toBe("tcp");
    expect(c.via.chosen).toBe(`tcp://127.0.0.1:${port}`);
    expect(c.via.skipped.length).toBe(1);
    expect(c.via.skipped[0]!.reason).toBe("no device (test transport)");
    expect(c.via.skipped[0]!.error).toBeInstanceOf(TransportUnavailableError);
    c.close();
  });

  test("fallback moves past a refused connect to a whole fallback URL", async () => {
    const l = await listening;
    const dead = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const deadPort = dead.port;
    dead.stop(true);
    const c = await connect(`tcp://127.0.0.1:${deadPort}`, { fallback: [l.url] });
    expect(c.via.chosen).toBe(l.url);
    expect(c.via.skipped[0]!.error).toBeInstanceOf(ConnectError);
    c.close();
  });

  test("when every candidate fails, the error lists each reason", async () => {
    const e = await connect("nodevice://127.0.0.1:1", { fallback: ["nodevice"] }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message.split("no device").length).toBe(3);
    await expect(connect("nodevice://127.0.0.1:1")).rejects.toBeInstanceOf(TransportUnavailableError);
    await expect(listen("nodevice://127.0.0.1:1")).rejects.toBeInstanceOf(TransportUnavailableError);
  });

  test("transports() lists each scheme with its availability", () => {
    const t = transports();
    expect(t.find((x) => x.scheme === "tcp")!.unavailableReason).toBeNull();
    expect(t.find((x) => x.scheme === "nodevice")!.unavailableReason).toBe("no device (test transport)");
  });
});
