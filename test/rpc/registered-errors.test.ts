/**
 * Application error classes (issue 10): `registerError(MyError)` on the client makes a remote
 * handler's `throw new MyError(msg)` reject the caller's request with an instance of MyError
 * (also `instanceof RemoteError`, `remoteName` "MyError", `message` the remote message, `cause`
 * the RemoteError). The server registers nothing. Unregistered names still arrive as plain
 * RemoteError through the null-prototype allow-list, and a name from the wire can never reach
 * an inherited property ("constructor", "__proto__", ...).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  HotpathError,
  RemoteError,
  UsageError,
  defineService,
  registerError,
  rpcConnect,
  unregisterError,
  type RpcClient,
} from "../../src/index.ts";
import { allowedRemoteName } from "../../src/errors.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";

// The client's own copies of the server's classes: same names, separate definitions.
class OrderNotFound extends Error {}
class QuotaExceeded extends Error {
  override name = "QuotaExceeded";
}
class CodedError extends Error {
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(detail);
  }
}

const te = new TextEncoder();
let peer: Peer;
let c: RpcClient<{}>;
beforeAll(async () => {
  registerError(OrderNotFound);
  registerError(QuotaExceeded);
  registerError(CodedError, { rebuild: (message) => new CodedError(Number(message.split(":")[0]), message) });
  peer = await spawnPeer(`${import.meta.dir}/app-error-server.ts`, []);
  c = await rpcConnect(peer.ready.url);
});
afterAll(async () => {
  c?.close();
  await peer?.kill();
  for (const cls of [OrderNotFound, QuotaExceeded, CodedError]) unregisterError(cls);
});

describe("registered error classes are rebuilt on the caller", () => {
  test("a registered class: instanceof the class and RemoteError, the remote message, the name", async () => {
    const e = await c.request(1, te.encode("7")).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OrderNotFound);
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(RemoteError);
    const r = e as OrderNotFound & RemoteError;
    expect(r.message).toBe("order 7 not found");
    expect(r.remoteName).toBe("OrderNotFound");
    expect(r.remoteMessage).toBe("order 7 not found");
    expect(r.code).toBe("E_REMOTE");
    expect(r.cause).toBeInstanceOf(RemoteError);
    expect((r.cause as RemoteError).message).toBe("OrderNotFound: order 7 not found");
    // The rebuilt error is not mistaken for other classes.
    expect(e).not.toBeInstanceOf(QuotaExceeded);
    expect(e).not.toBeInstanceOf(HotpathError);
  });

  test("a class that sets its name as a field, thrown from an async handler", async () => {
    const e = await c.request(2).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QuotaExceeded);
    expect((e as Error).name).toBe("QuotaExceeded");
    expect((e as Error).message).toBe("quota of 10 calls exceeded");
  });

  test("a class with its own constructor signature is built by its rebuild function", async () => {
    const e = await c.request(3).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CodedError);
    expect((e as CodedError).status).toBe(404);
    expect((e as CodedError).message).toBe("404: no such shelf");
  });

  test("an unregistered name is a plain RemoteError, its name through the allow-list", async () => {
    const e = await c.request(4).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RemoteError);
    expect(e).not.toBeInstanceOf(OrderNotFound);
    expect((e as RemoteError).remoteName).toBe("Error");
    expect((e as RemoteError).message).toContain("nobody knows me");
  });

  test("typed service methods reject with the rebuilt class too", async () => {
    const Svc = defineService({ find: { id: 1 } });
    const typed = await rpcConnect(peer.ready.url, { service: Svc });
    try {
      await expect(typed.svc.find(te.encode("9"))).rejects.toBeInstanceOf(OrderNotFound);
    } finally {
      typed.close();
    }
  });

  test("the hot path gets the RemoteError, remoteName naming the registered class", async () => {
    let got: unknown = null;
    c.onResponse = (_u, _d, err) => void (got = err);
    c.call(1, te.encode("3"), null);
    for (let i = 0; i < 500 && got === null; i++) if (c.poll() === 0) await c.wait(20);
    expect(got).toBeInstanceOf(RemoteError);
    expect((got as RemoteError).remoteName).toBe("OrderNotFound");
  });

  test("a class whose constructor throws is still rebuilt (without running it)", async () => {
    class StrictCtor extends Error {
      constructor(code: unknown) {
        if (typeof code !== "number") throw new TypeError("StrictCtor wants a number");
        super(`code ${code}`);
      }
    }
    registerError(StrictCtor);
    try {
      // Method 5 throws an Error named by the request's text.
      const e = await c.request(5, te.encode("StrictCtor")).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(StrictCtor);
      expect(e).toBeInstanceOf(RemoteError);
      expect((e as Error).message).toBe("named by the caller");
      expect(typeof (e as Error).stack).toBe("string");
    } finally {
      unregisterError(StrictCtor);
    }
  });

  test("hostile names from the wire never reach an inherited property", async () => {
    for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf", "__defineGetter__", "prototype", "Object"]) {
      const e = await c.request(5, te.encode(name)).catch((x: unknown) => x);
      expect(Object.getPrototypeOf(e)).toBe(RemoteError.prototype);
      expect((e as RemoteError).remoteName).toBe("Error");
      expect(allowedRemoteName(name)).toBe("Error");
    }
    // A registered name passes; built-in names are unchanged.
    expect(allowedRemoteName("OrderNotFound")).toBe("OrderNotFound");
    expect(allowedRemoteName("TypeError")).toBe("TypeError");
  });
});

describe("registerError() checks what it is given", () => {
  test("a second class of the same name, a built-in name, a non-Error class, a bad name are UsageErrors", () => {
    class Other extends Error {}
    Object.defineProperty(Other, "name", { value: "OrderNotFound" });
    expect(() => registerError(Other)).toThrow(UsageError);
    class TypeErrorLike extends Error {}
    expect(() => registerError(TypeErrorLike, { name: "TypeError" })).toThrow(UsageError);
    expect(() => registerError(class NotAnError {} as never)).toThrow(UsageError);
    expect(() => registerError((() => {}) as never)).toThrow(UsageError);
    for (const name of ["constructor", "__proto__", "toString", "", "has space", "x".repeat(200)]) {
      expect(() => registerError(class extends Error {}, { name })).toThrow(UsageError);
    }
  });

  test("registering the same class again is harmless; unregistering makes its name unknown again", () => {
    class Temp extends Error {}
    registerError(Temp);
    registerError(Temp);
    expect(allowedRemoteName("Temp")).toBe("Temp");
    expect(unregisterError(Temp)).toBe(true);
    expect(allowedRemoteName("Temp")).toBe("Error");
    expect(unregisterError(Temp)).toBe(false);
  });
});
