import { afterAll, describe, expect, test } from "bun:test";
import {
  ConnectError,
  TransportUnavailableError,
  UsageError,
  connect,
  listen,
  registerTransport,
  registerTransportLoader,
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

  test("transports() lists each scheme with its availability", async () => {
    const t = await transports();
    expect(t.find((x) => x.scheme === "tcp")!.unavailableReason).toBeNull();
    expect(t.find((x) => x.scheme === "nodevice")!.unavailableReason).toBe("no device (test transport)");
  });
});

describe("lazily loaded transports (registerTransportLoader)", () => {
  /** A loader that counts its calls and resolves to a factory delegating to tcp under `scheme`. */
  function countingLoader(scheme: string) {
    const counter = { calls: 0 };
    const load = async (): Promise<TransportFactory> => {
      counter.calls++;
      await Bun.sleep(1); // a module load takes a turn of the event loop
      return {
        scheme,
        unavailableReason: () => null,
        connect: (url, opts) => connect(`tcp://${url.host}`, opts),
        listen: (url, opts) => listen(`tcp://${url.host}`, opts),
      };
    };
    return { counter, load };
  }

  test("the loader runs on first use only, once, shared by concurrent connects", async () => {
    const { counter, load } = countingLoader("lazytcp");
    registerTransportLoader("lazytcp", load);
    expect(counter.calls).toBe(0);
    const [l, listed] = await Promise.all([listen("lazytcp://127.0.0.1:0"), transports()]);
    expect(counter.calls).toBe(1);
    expect(listed.find((t) => t.scheme === "lazytcp")!.unavailableReason).toBeNull();
    const port = new URL(l.url).port;
    const conns = await Promise.all([1, 2, 3].map(() => connect(`lazytcp://127.0.0.1:${port}`)));
    expect(counter.calls).toBe(1);
    expect(conns.map((c) => c.transport)).toEqual(["tcp", "tcp", "tcp"]);
    for (const c of conns) c.close();
    l.close(true);
  });

  test("a fallback after the candidate that connects is not loaded", async () => {
    const l = await listen("tcp://127.0.0.1:0");
    const { counter, load } = countingLoader("lazyunused");
    registerTransportLoader("lazyunused", load);
    const c = await connect(l.url, { fallback: ["lazyunused"] });
    expect(c.via.chosen).toBe(l.url);
    expect(counter.calls).toBe(0);
    c.close();
    l.close(true);
  });

  test("a loader that fails leaves its scheme unavailable, with the failure as the reason", async () => {
    let calls = 0;
    registerTransportLoader("lazybroken", async () => {
      calls++;
      throw new Error("module evaluation failed (test)");
    });
    const e = await connect("lazybroken://127.0.0.1:1").catch((x) => x);
    expect(e).toBeInstanceOf(TransportUnavailableError);
    expect(e.message).toContain("module evaluation failed (test)");
    await expect(listen("lazybroken://127.0.0.1:1")).rejects.toBeInstanceOf(TransportUnavailableError);
    const listed = (await transports()).find((t) => t.scheme === "lazybroken")!;
    expect(listed.unavailableReason).toContain("its module failed to load: module evaluation failed (test)");
    expect(calls).toBe(1);
    // With a fallback, the chain moves on past it.
    const l = await listen("tcp://127.0.0.1:0");
    const c = await connect(`lazybroken://127.0.0.1:${new URL(l.url).port}`, { fallback: ["tcp"] });
    expect(c.via.skipped.map((x) => x.url)).toEqual([`lazybroken://127.0.0.1:${new URL(l.url).port}`]);
    c.close();
    l.close(true);
  });

  test("a loader must resolve to a factory for its own scheme", async () => {
    registerTransportLoader("lazywrong", async () => ({ ...unavailable, scheme: "other" }));
    const e = await listen("lazywrong://127.0.0.1:1").catch((x) => x);
    expect(e).toBeInstanceOf(TransportUnavailableError);
    expect(e.message).toContain(`a factory for "other", not one for "lazywrong"`);
  });

  test("registering a factory replaces a loader that has not run", async () => {
    const { counter, load } = countingLoader("lazyreplaced");
    registerTransportLoader("lazyreplaced", load);
    registerTransport({ ...unavailable, scheme: "lazyreplaced" });
    expect((await transports()).find((t) => t.scheme === "lazyreplaced")!.unavailableReason).toBe("no device (test transport)");
    expect(counter.calls).toBe(0);
  });

  test("a scheme that is not a URL scheme, or a loader that is not a function, is a UsageError", () => {
    expect(() => registerTransportLoader("Not A Scheme", async () => unavailable)).toThrow(UsageError);
    expect(() => registerTransportLoader("okscheme", "nope" as never)).toThrow(UsageError);
  });
});
