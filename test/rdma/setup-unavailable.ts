/**
 * rdma:// on a machine without an RDMA device, through the registry, in a process of its own with
 * the real Debian libraries (the parent, test/rdma/unavailable.test.ts, removes HOTPATH_IBVERBS /
 * HOTPATH_RDMACM from its environment): connect and listen reject with RdmaUnavailableError,
 * transports() lists rdma with the reason, and a connect with `fallback: ["tcp"]` reaches a tcp
 * listener with the rdma reason in via.skipped. Prints one JSON line.
 */
import { connect, listen, transports } from "../../src/connect/registry.ts";

const outcome = async (p: Promise<unknown>) => {
  try {
    await p;
    return { ok: true };
  } catch (e) {
    return { ok: false, name: (e as Error).constructor.name, message: (e as Error).message };
  }
};

const connectErr = await outcome(connect("rdma://127.0.0.1:1"));
const socketErr = await outcome(connect("rdma://127.0.0.1:1?mode=socket"));
const listenErr = await outcome(listen("rdma://127.0.0.1:0"));
const rdma = (await transports()).find((t) => t.scheme === "rdma") ?? null;
const tcp = await listen("tcp://127.0.0.1:0");
tcp.onConnection(() => {});
const port = new URL(tcp.url).port;
const c = await connect(`rdma://127.0.0.1:${port}`, { fallback: ["tcp"] });
const fell = { transport: c.transport, chosen: c.via.chosen, skipped: c.via.skipped.map((s) => ({ url: s.url, reason: s.reason, error: s.error.constructor.name })) };
c.close();
tcp.close(true);
console.log(JSON.stringify({ connectErr, socketErr, listenErr, rdma, fell, port }));
