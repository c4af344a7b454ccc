/**
 * ucx API edges, in this process over UCX's tcp transport:
 *   - a listener's connection callback that throws a value which cannot be described safely
 *     (an Error whose `message` or `name` getter throws, a null-prototype object) closes that
 *     connection with a ProtocolError; nothing escapes into UCX or the event loop, the client
 *     sees its connect fail or its connection close, and the listener keeps serving (issue 8,
 *     defect 6);
 *   - allocBuffer above the exchanged limit is a UsageError naming both limits (defect 8);
 *   - waitsOnEventLoop follows the connection's wait mode: false only in "spin".
 */
import { describe, expect, test } from "bun:test";
import { ConnectError, connect, listen, ProtocolError, SEND_OK, UsageError, type Connection, type HotpathError } from "../../src/index.ts";
import { useEnv } from "../helpers/env.ts";
import type { UcxConnection } from "../../src/ucx/connection.ts";

/** Watchdog for each wait (a hang fails the test with this reason). */
const WAIT_MS = 15_000;

async function until(cond: () => boolean, what: string, conn: Connection): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`watchdog: ${what} did not happen within ${WAIT_MS} ms`);
    await conn.wait(10);
  }
}

const throwing = (prop: "message" | "name") =>
  Object.defineProperty(new Error("x"), prop, {
    get() {
      throw new Error(`no ${prop}`);
    },
  });

describe("ucx API edges (UCX_TLS=tcp,self)", () => {
  useEnv({ UCX_TLS: "tcp,self" });

  for (const [what, thrown] of [
    ["an Error whose message getter throws", () => throwing("message")],
    ["an Error whose name getter throws", () => throwing("name")],
    ["a null-prototype object", () => Object.create(null)],
  ] as const) {
    test(`a connection callback that throws ${what} closes that connection; the listener keeps serving`, async () => {
      const listener = await listen("ucx://127.0.0.1:0");
      const uncaught: unknown[] = [];
      const onUncaught = (e: unknown) => uncaught.push(e);
      process.on("uncaughtException", onUncaught);
      const conns: Connection[] = [];
      try {
        let victim: Connection | null = null;
        const good: Connection[] = [];
        listener.onConnection((c) => {
          if (victim !== null) return void good.push(c);
          victim = c;
          throw thrown();
        });
        // The server closes it at once: the client's connect fails, or its connection closes.
        const a = await connect(listener.url).catch((e: unknown) => e);
        if (a instanceof Error) expect(a).toBeInstanceOf(ConnectError);
        else {
          const conn = a as Connection;
          conns.push(conn);
          conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
          await until(() => conn.closed, "the client seeing its connection close", conn);
        }
        const v = victim as Connection | null;
        expect(v?.closed).toBe(true);
        const err = (v as unknown as { closeError: HotpathError | null }).closeError;
        expect(err).toBeInstanceOf(ProtocolError);
        expect(String(err?.message)).toContain("the connection callback failed");
        // The listener keeps serving: a new client connects and delivers.
        const b = await connect(listener.url);
        conns.push(b);
        b.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
        await until(() => good.length === 1, "the second connection", b);
        const got: number[] = [];
        good[0]!.setReceiver({ onMessage: (m) => (got.push(m.bodyLength), m.release()), onClose() {} });
        expect(b.trySend(new Uint8Array([1]), new Uint8Array(7))).toBe(SEND_OK);
        await until(() => got.length === 1, "a message on the second connection", b);
        expect(got).toEqual([7]);
        await Bun.sleep(20);
        expect(uncaught).toEqual([]);
      } finally {
        process.off("uncaughtException", onUncaught);
        for (const c of conns) c.close();
        listener.close(true);
      }
    }, 60_000);
  }

  test("allocBuffer above the exchanged limit is a UsageError naming both limits; a bad length is a UsageError", async () => {
    const listener = await listen("ucx://127.0.0.1:0", { maxMessageBytes: 1000 });
    const c = await connect(listener.url, { maxMessageBytes: 1 << 20 });
    try {
      expect(c.caps.peerMaxMessageBytes).toBe(1000);
      expect(c.allocBuffer(1000)?.length).toBe(1000);
      const e = (() => {
        try {
          c.allocBuffer(1001);
        } catch (x) {
          return x as Error;
        }
        return null;
      })();
      expect(e).toBeInstanceOf(UsageError);
      expect(e?.message).toContain("1001");
      expect(e?.message).toContain("1000");
      expect(e?.message).toContain(String(1 << 20));
      for (const bad of [-1, Number.NaN, 1.5]) expect(() => c.allocBuffer(bad)).toThrow(UsageError);
    } finally {
      c.close();
      listener.close(true);
    }
  });

  test("waitsOnEventLoop is false only in spin mode and follows setWaitPolicy", async () => {
    const listener = await listen("ucx://127.0.0.1:0");
    const a = (await connect(listener.url)) as unknown as UcxConnection;
    const b = (await connect(listener.url, { wait: { mode: "spin" } as never })) as unknown as UcxConnection;
    try {
      expect(a.waitsOnEventLoop).toBe(true);
      expect(b.waitsOnEventLoop).toBe(false);
      a.setWaitPolicy({ mode: "spin" });
      expect(a.waitsOnEventLoop).toBe(false);
      a.setWaitPolicy({ mode: "async" });
      expect(a.waitsOnEventLoop).toBe(true);
      b.setWaitPolicy({ mode: "adaptive" });
      expect(b.waitsOnEventLoop).toBe(true);
    } finally {
      a.close();
      b.close();
      listener.close(true);
    }
  });
});
