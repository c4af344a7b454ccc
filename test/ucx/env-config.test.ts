/**
 * A UCX_* variable set through process.env after the process started reaches UCX: Bun does not
 * pass such changes to the C environment that ucp_config_read reads, so UcpContext.create
 * applies each one with ucp_config_modify. Shown with UCX_TLS=shm,self, which leaves UCX no
 * transport for its connection manager: a sockaddr connect in this process then fails, and the
 * worker-address connect works (before, the context kept UCX's default transports and the
 * sockaddr connect went through).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { ConnectError, connect, listen, type Listener } from "../../src/index.ts";
import { useEnv } from "../helpers/env.ts";

describe("UCX_* from process.env", () => {
  useEnv({ UCX_TLS: "shm,self" });
  const open: Array<{ close(): void }> = [];
  afterAll(() => {
    for (const o of open.splice(0)) o.close();
  });

  test("UCX_TLS=shm,self set from JS: sockaddr wire-up fails, worker-address wire-up works", async () => {
    const sockaddr: Listener = await listen("ucx://127.0.0.1:0?wireup=sockaddr");
    open.push(sockaddr);
    const e = await connect(`${sockaddr.url}?wireup=sockaddr`, { connectTimeoutMs: 3000 }).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);

    const address: Listener = await listen("ucx://127.0.0.1:0");
    open.push(address);
    expect(address.url).toEndWith("?wireup=address");
    const got: Uint8Array[] = [];
    address.onConnection((c) => c.setReceiver({ onMessage: (m) => void (got.push(m.body.slice()), m.release()), onClose() {} }));
    const conn = await connect(address.url, { connectTimeoutMs: 5000 });
    open.push(conn);
    expect(conn.trySend(new Uint8Array([1]), new Uint8Array([9, 8, 7]))).toBe(0);
    for (let i = 0; i < 500 && got.length === 0; i++) await conn.wait(10);
    expect(got).toEqual([new Uint8Array([9, 8, 7])]);
  });
});
