/**
 * kv over RPC, the review's findings: MGET replies bounded by the connection's send limit
 * before they are built (typed error naming both sizes, scratch memory kept bounded, the
 * client splitting a batch so each reply fits), a snapshot path that cannot be written refused
 * at start, listen / connect options (an auth token) passed through, and HELLO bound to the
 * connection it was asked on when the pool keeps several connections per server.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readU32, writeU32 } from "../../src/bytes.ts";
import { AuthError, KvSnapshotError, KvUnavailableError, KvValueTooLargeError, RemoteError, rebuildRemoteError } from "../../src/errors.ts";
import { kvConnect, kvServe, type KvServer } from "../../src/kv/index.ts";
import * as p from "../../src/kv/protocol.ts";
import { rpcConnect, serve } from "../../src/rpc/serve.ts";
import { listenUrl } from "./peers/servers.ts";
import { rejection } from "./helpers.ts";

const servers: KvServer[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const s of servers.splice(0)) await s.close({ drainMs: 0, save: false });
  for (const d of dirs.splice(0)) {
    chmodSync(d, 0o700);
    rmSync(d, { recursive: true, force: true });
  }
});

async function serveHere(opts: Partial<Parameters<typeof kvServe>[0]>): Promise<KvServer> {
  const s = await kvServe({ listen: [listenUrl("tcp")], memoryBytes: 8 << 20, ...opts });
  servers.push(s);
  return s;
}

const fill = (n: number, b: number) => new Uint8Array(n).fill(b);

describe("MGET replies are bounded", () => {
  test("one key repeated past the send limit: KvValueTooLargeError naming both sizes, before any reply memory is built; the scratch stays bounded", async () => {
    const limit = 1 << 20;
    const s = await serveHere({ listenOptions: { maxMessageBytes: limit } });
    const value = fill(200 << 10, 7);
    await using kv = await kvConnect(s.urls[0]!);
    await kv.put("big", value);
    const raw = await rpcConnect(s.urls[0]!);
    try {
      const keys = new Array<Uint8Array>(20).fill(new TextEncoder().encode("big"));
      const e = await rejection(raw.request(p.KV_MGET, p.encodeMget(keys)));
      expect(e).toBeInstanceOf(RemoteError);
      const typed = rebuildRemoteError(e as RemoteError);
      expect(typed).toBeInstanceOf(KvValueTooLargeError);
      expect(typed.message).toContain(`${limit} bytes`);
      expect(typed.message).toMatch(/at least \d+ bytes/);
      // The refusal came before the reply was built: the server holds no reply-sized buffer.
      expect((s as unknown as { scratchBytes: number }).scratchBytes).toBeLessThan(limit);
      // The session goes on: a reply that fits is served.
      const ok = p.decodeMgetResponse(await raw.request(p.KV_MGET, p.encodeMget(keys.slice(0, 4))), 4, true);
      for (const r of ok) expect(r!.value).toEqual(value);
    } finally {
      raw.close();
    }
  });

  test("the client splits a batch whose reply would not fit: every value comes back, in key order", async () => {
    const s = await serveHere({ listenOptions: { maxMessageBytes: 1 << 20 } });
    await using kv = await kvConnect(s.urls[0]!);
    const a = fill(300 << 10, 1);
    const b = fill(100, 2);
    await kv.put("a", a);
    await kv.put("b", b);
    const keys = ["a", "b", "none", "a", "a", "b", "a", "a", "a", "b"];
    const got = await kv.mget(keys);
    expect(got.length).toBe(keys.length);
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] === "none") expect(got[i]).toBeNull();
      else expect(got[i]!.value).toEqual(keys[i] === "a" ? a : b);
    }
  });

  test("over shm: a large MGET reply is built in a transport buffer and arrives whole; one past the 16 MiB limit is refused, and split by the client", async () => {
    const s = await kvServe({ listen: [listenUrl("shm")], memoryBytes: 16 << 20 });
    servers.push(s);
    await using kv = await kvConnect(s.urls[0]!);
    const vals = [fill(1 << 20, 3), fill(1 << 20, 4), fill((1 << 20) + 5, 5)];
    for (let i = 0; i < vals.length; i++) await kv.put(`k${i}`, vals[i]!);
    const got = await kv.mget(["k0", "k1", "k2", "k0", "k1", "k2"]);
    for (let i = 0; i < 6; i++) expect(got[i]!.value).toEqual(vals[i % 3]!);
    // 20 MiB asked for, over shm's 16 MiB message limit: refused typed, nothing built...
    const raw = await rpcConnect(s.urls[0]!);
    try {
      const e = await rejection(raw.request(p.KV_MGET, p.encodeMget(new Array<Uint8Array>(20).fill(new TextEncoder().encode("k0")))));
      expect(rebuildRemoteError(e as RemoteError)).toBeInstanceOf(KvValueTooLargeError);
    } finally {
      raw.close();
    }
    expect((s as unknown as { scratchBytes: number }).scratchBytes).toBeLessThanOrEqual(1 << 20);
    // ...and the client splits the same batch into replies that fit.
    const many = await kv.mget(new Array<string>(20).fill("k2"));
    for (const r of many) expect(r!.value).toEqual(vals[2]!);
  });

  test("a batch of more keys than one MGET may hold (and more than 1 MiB of keys) is sent in several and answered in order", async () => {
    const s = await serveHere({ maxKeyBytes: 1024 });
    await using kv = await kvConnect(s.urls[0]!);
    await kv.put("x".repeat(1000), "long");
    await kv.put("y", "short");
    const keys: string[] = [];
    for (let i = 0; i < p.MAX_MGET_KEYS + 10; i++) keys.push(i % 7 === 0 ? "x".repeat(1000) : i % 7 === 1 ? "y" : `absent-${i}`);
    const got = await kv.mget(keys);
    for (let i = 0; i < keys.length; i++) {
      const want = i % 7 === 0 ? "long" : i % 7 === 1 ? "short" : null;
      expect(got[i] === null ? null : new TextDecoder().decode(got[i]!.value)).toBe(want);
    }
  });

  test("a request count limit is explicit: more than MAX_MGET_KEYS keys is refused by the codec and the server", () => {
    const keys = new Array<Uint8Array>(p.MAX_MGET_KEYS + 1).fill(new Uint8Array(1));
    expect(() => p.encodeMget(keys)).toThrow(`at most ${p.MAX_MGET_KEYS}`);
    const body = new Uint8Array(4 + 5 * (p.MAX_MGET_KEYS + 1));
    writeU32(body, 0, p.MAX_MGET_KEYS + 1);
    expect(() => p.decodeMget(body)).toThrow(`exceeds the limit of ${p.MAX_MGET_KEYS}`);
  });
});

describe("snapshot path checked at start", () => {
  test("a directory that does not exist: kvServe fails with KvSnapshotError naming the path", async () => {
    const path = join(tmpdir(), `kv-no-such-dir-${process.pid}`, "kv.snap");
    const e = await rejection(kvServe({ listen: [listenUrl("tcp")], memoryBytes: 1 << 20, snapshot: path }));
    expect(e).toBeInstanceOf(KvSnapshotError);
    expect(e.message).toContain(path);
  });

  test("a directory nobody may create files in (/proc): KvSnapshotError at start", async () => {
    const path = "/proc/kv-probe.snap";
    const e = await rejection(kvServe({ listen: [listenUrl("tcp")], memoryBytes: 1 << 20, snapshot: path }));
    expect(e).toBeInstanceOf(KvSnapshotError);
    expect(e.message).toContain(path);
  });

  test.skipIf(process.getuid?.() === 0)("a directory that is not writable: KvSnapshotError at start, not at shutdown", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kv-ro-"));
    dirs.push(dir);
    chmodSync(dir, 0o500);
    const path = join(dir, "kv.snap");
    const e = await rejection(kvServe({ listen: [listenUrl("tcp")], memoryBytes: 1 << 20, snapshot: path }));
    expect(e).toBeInstanceOf(KvSnapshotError);
    expect(e.message).toContain(path);
  });
});

describe("listen and connect options", () => {
  test("a server with an auth token refuses a client without it (KvUnavailableError, cause AuthError) and serves one with it", async () => {
    const token = "kv-test-token-0123456789";
    const s = await serveHere({ listenOptions: { auth: { token } } });
    const e = await rejection(kvConnect(s.urls[0]!, { timeoutMs: 2000 }));
    expect(e).toBeInstanceOf(KvUnavailableError);
    expect(e.message).toContain(s.urls[0]!);
    // cause: the pool's error, whose own cause is the transport's AuthError.
    const cause = (e as Error & { cause?: Error & { cause?: unknown } }).cause;
    expect(cause?.cause).toBeInstanceOf(AuthError);
    expect(e.message).toContain("token");
    await using kv = await kvConnect(s.urls[0]!, { connect: { auth: { token } } });
    const v = await kv.put("k", "v");
    expect(await kv.get("k")).toEqual({ value: new TextEncoder().encode("v"), version: v });
  });
});

describe("listenOptions.wait", () => {
  test("a spin wait given only in listenOptions makes the server busy-poll (its spin-mode connections are served)", async () => {
    const s = await kvServe({ listen: [listenUrl("shm")], memoryBytes: 1 << 20, listenOptions: { wait: { mode: "spin" } } });
    servers.push(s);
    await using kv = await kvConnect(s.urls[0]!, { timeoutMs: 3000, connect: { wait: { mode: "spin" } } });
    const v = await kv.put("k", "v");
    expect((await kv.get("k"))!.version).toBe(v);
  });
});

describe("HELLO with several connections per server", () => {
  test("the seam's HELLO is the one answered on its own rpc connection, with maxConnections 2", async () => {
    const WHOAMI = 0x4b56fff0;
    const ids = new Map<unknown, number>();
    const idOf = (session: unknown) => {
      if (!ids.has(session)) ids.set(session, ids.size + 1);
      return ids.get(session)!;
    };
    const header = new Uint8Array(64);
    const absent = new Uint8Array(p.GET_RESPONSE_OVERHEAD);
    // HELLO carries the answering connection's id (in writeBufBytes), WHOAMI the asking one's.
    const fake = await serve(listenUrl("tcp"), {
      [p.KV_HELLO]: (h) => p.encodeHello({ protocolVersion: 1, maxKeyBytes: 64, maxValueBytes: 1000, flags: 0, arenaDesc: new Uint8Array(0), writeBufDesc: new Uint8Array(0), writeBufBytes: idOf(h.session), arenaHeader: header }),
      [p.KV_GET]: async () => {
        await Bun.sleep(2); // keeps calls in flight, so the pool opens its second connection
        return absent;
      },
      [WHOAMI]: (h) => {
        const b = new Uint8Array(4);
        writeU32(b, 0, idOf(h.session));
        return b;
      },
    });
    const kv = await kvConnect(fake.url, { pool: { maxConnections: 2, backoff: { initialMs: 5, maxMs: 20 } } });
    try {
      const check = async () => {
        const sc = kv.servers[0]!;
        const end = Date.now() + 5000;
        while ((sc.hello === null || sc.rpc === null) && Date.now() < end) {
          await kv.get("x").catch(() => {});
          await Bun.sleep(5);
        }
        const rpc = sc.rpc!;
        const hello = sc.hello!;
        expect(readU32(await rpc.request(WHOAMI, new Uint8Array(0)), 0)).toBe(hello.writeBufBytes);
      };
      await check();
      await Promise.all(Array.from({ length: 16 }, () => kv.get("x")));
      const end = Date.now() + 5000;
      while (fake.server.sessions.size < 2 && Date.now() < end) await Bun.sleep(5);
      expect(fake.server.sessions.size).toBe(2); // both connections are open
      await Promise.all(Array.from({ length: 16 }, () => kv.get("x")));
      await check();
      // The seam's connection goes: the seam moves to another one and asks it for its own HELLO.
      const bound = readU32(await kv.servers[0]!.rpc!.request(WHOAMI, new Uint8Array(0)), 0);
      for (const [session, id] of ids) if (id === bound) (session as { conn: { close(): void } }).conn.close();
      await Bun.sleep(20);
      await Promise.all(Array.from({ length: 4 }, () => kv.get("x").catch(() => {})));
      await check();
      expect(readU32(await kv.servers[0]!.rpc!.request(WHOAMI, new Uint8Array(0)), 0)).not.toBe(bound);
    } finally {
      await kv.close();
      fake.close();
    }
  });
});
