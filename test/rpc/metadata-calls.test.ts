/**
 * Per-call metadata on unary calls (issue 16): string and binary values travel with a request
 * to the handler (h.metadata) and back with its response or error response
 * (h.setResponseMetadata() -> RequestOptions.onResponseMetadata), over tcp, shm, inproc and ucx,
 * through serve() and the hot-path Server (reply, replyBuffer, replyError). Metadata a caller
 * gets wrong (oversized, malformed) is a UsageError before anything is sent (the server records
 * no call); a peer that sends malformed metadata in raw frames has its connection aborted with
 * ProtocolError, its handler never runs, and the server goes on serving its other clients.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Server, ProtocolError, RemoteError, UsageError, connect, listen, rpcConnect, serve, type Connection } from "../../src/index.ts";
import { KIND_FLAG_METADATA, KIND_REQUEST, KIND_RESPONSE, WIRE_HEADER_BYTES, withMetadata, wireKind, writeWireHeader } from "../../src/rpc/wire.ts";
import { Metadata, encodeMetadata } from "../../src/rpc/metadata.ts";

const te = new TextEncoder();
const td = new TextDecoder();
let n = 0;
const TRANSPORTS = ["tcp", "shm", "inproc", "ucx"] as const;
type Kind = (typeof TRANSPORTS)[number];
const urlFor = (kind: Kind): string =>
  kind === "tcp" ? "tcp://127.0.0.1:0" : kind === "ucx" ? "ucx://127.0.0.1:0" : `${kind}://md-calls-${process.pid}-${n++}`;
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

const BIN = new Uint8Array([0, 1, 2, 0xfe, 0xff, 10, 13]);
const M_ECHO_MD = 1;
const M_FAIL_MD = 2;

/** Handlers that echo the request's metadata back in the response's (and its error's). */
const handlers = {
  [M_ECHO_MD]: async (h: import("../../src/index.ts").RequestHandle) => {
    await Bun.sleep(1); // across an await: the handle is detached, its metadata stays
    const md = h.metadata;
    h.setResponseMetadata({ "echo-token": `got:${md.get("token") ?? "none"}`, "echo-bin": md.getBinary("blob") ?? new Uint8Array(0) });
    return h.data.slice().reverse();
  },
  [M_FAIL_MD]: (h: import("../../src/index.ts").RequestHandle) => {
    h.setResponseMetadata({ "why-bin": BIN, why: "refused" });
    throw Object.assign(new Error(`no for ${td.decode(h.data)}`), { name: "RangeError" });
  },
};

describe.each(TRANSPORTS)("metadata round trip over %s", (kind) => {
  test("request metadata reaches the handler, response metadata comes back (string and binary values)", async () => {
    const s = await serve(urlFor(kind), handlers, { metrics: true });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    for (let i = 0; i < 3; i++) {
      let got: Metadata | null = null;
      const blob = new Uint8Array([i, 255 - i, 0, 7]);
      const out = await c.request(M_ECHO_MD, te.encode(`abc${i}`), { metadata: { token: `t-${i}`, blob }, onResponseMetadata: (md) => (got = md) });
      expect(td.decode(out)).toBe(`${i}cba`);
      expect(got!.get("echo-token")).toBe(`got:t-${i}`);
      expect(Array.from(got!.getBinary("echo-bin")!)).toEqual(Array.from(blob));
    }
    // Without request metadata the handler sees Metadata.EMPTY.
    let got: Metadata | null = null;
    await c.request(M_ECHO_MD, te.encode("x"), { onResponseMetadata: (md) => (got = md) });
    expect(got!.get("echo-token")).toBe("got:none");
    expect(got!.getBinary("echo-bin")!.length).toBe(0);
  });

  test("an error response carries its metadata", async () => {
    const s = await serve(urlFor(kind), handlers, { onError: () => {} });
    const c = await rpcConnect(s.url);
    closers.push(() => s.close(), () => c.close());
    let got: Metadata | null = null;
    const e = await c.request(M_FAIL_MD, te.encode("me"), { onResponseMetadata: (md) => (got = md) }).catch((x) => x);
    expect(e).toBeInstanceOf(RemoteError);
    expect(e.remoteName).toBe("RangeError");
    expect(got!.get("why")).toBe("refused");
    expect(Array.from(got!.getBinary("why-bin")!)).toEqual(Array.from(BIN));
  });
});

describe("hot-path Server: reply, replyBuffer and replyError carry response metadata", () => {
  for (const kind of ["shm", "tcp"] as const) {
    test(kind, async () => {
      const listener = await listen(urlFor(kind));
      const server = new Server({
        onRequest: (h) => {
          const which = td.decode(h.data);
          h.setResponseMetadata({ which, token: h.metadata.get("token") ?? "" });
          if (which === "buffer") {
            const b = h.allocReply(6)!;
            b.set(te.encode("buffer"));
            h.replyBuffer(b, 6);
          } else if (which === "error") h.replyError("TypeError", "as asked");
          else h.reply(te.encode(`plain:${which}`));
        },
      });
      server.attach(listener);
      const c = await rpcConnect(listener.url);
      closers.push(() => server.close(), () => c.close());
      for (const which of ["plain", "buffer", "error"]) {
        let got: Metadata | null = null;
        const r = await c.request(1, te.encode(which), { metadata: { token: `k-${which}` }, onResponseMetadata: (md) => (got = md) }).then(
          (v) => td.decode(v),
          (e) => `${e.name}:${e.remoteName}`,
        );
        expect(r).toBe(which === "buffer" ? "buffer" : which === "error" ? "RemoteError:TypeError" : "plain:plain");
        expect(got!.get("which")).toBe(which);
        expect(got!.get("token")).toBe(`k-${which}`);
      }
    });
  }

  test("setResponseMetadata: bad metadata is a UsageError and nothing is sent; after the reply it is a UsageError", async () => {
    const seen: string[] = [];
    const listener = await listen(urlFor("inproc"));
    const server = new Server({
      onRequest: (h) => {
        for (const bad of [{ Upper: "x" }, { "k": "a\nb" }, Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, "v"]))]) {
          try {
            h.setResponseMetadata(bad as Record<string, string>);
            seen.push("accepted");
          } catch (e) {
            seen.push((e as Error).name);
          }
        }
        h.reply(te.encode("ok"));
        try {
          h.setResponseMetadata({ late: "x" });
        } catch (e) {
          seen.push(`late:${(e as Error).name}`);
        }
      },
    });
    server.attach(listener);
    const c = await rpcConnect(listener.url);
    closers.push(() => server.close(), () => c.close());
    let got: Metadata | null = null;
    expect(td.decode(await c.request(1, te.encode("q"), { onResponseMetadata: (md) => (got = md) }))).toBe("ok");
    expect(got!.size).toBe(0);
    expect(seen).toEqual(["UsageError", "UsageError", "UsageError", "late:UsageError"]);
  });
});

describe("bad metadata from the caller is a UsageError before anything is sent", () => {
  for (const kind of ["tcp", "shm"] as const) {
    test(kind, async () => {
      let ran = 0;
      const s = await serve(urlFor(kind), { 1: () => (ran++, te.encode("ok")) }, { metrics: true });
      const c = await rpcConnect(s.url);
      closers.push(() => s.close(), () => c.close());
      const bads: unknown[] = [
        Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, "v"])), // too many entries
        { big: "x".repeat(800) }, // over MAX_METADATA_BYTES
        { Bad: "upper-case key" },
        { k: "control\u0001char" },
        { traceparent: "not-a-traceparent" },
        { k: 42 },
        "not metadata",
      ];
      for (const md of bads) {
        const e = await c.request(1, te.encode("q"), { metadata: md as Record<string, string> }).catch((x) => x);
        expect(e).toBeInstanceOf(UsageError);
      }
      expect(ran).toBe(0);
      expect(s.server.metrics().methods).toEqual([]); // the server recorded no call: nothing arrived
      expect(td.decode(await c.request(1, te.encode("q"), { metadata: { fine: "yes" } }))).toBe("ok");
      expect(ran).toBe(1);
      expect(s.server.metrics().methods.map((m) => m.calls)).toEqual([1]);
    });
  }
});

/** A raw request frame: `md` is the metadata prefix's bytes as given (possibly malformed). */
function rawRequest(conn: Connection, slot: number, md: Uint8Array, data: Uint8Array): void {
  const body = withMetadata(md, data);
  const head = new Uint8Array(WIRE_HEADER_BYTES);
  writeWireHeader(head, KIND_REQUEST | KIND_FLAG_METADATA, 1, slot, 1, 0, body.length);
  conn.trySend(head, body);
}

describe("a peer that sends malformed metadata", () => {
  const malformed: Array<[string, Uint8Array]> = [
    ["unknown version", new Uint8Array([9, 0])],
    ["a count past the entries", new Uint8Array([1, 3, 1, 1, 0, 0x61, 0x62])],
    ["an upper-case key", new Uint8Array([1, 1, 1, 1, 0, 0x41, 0x62])],
    ["a bad deadline", encodeMetadata(Metadata.from({ "hp-deadline-ms": "5" })).map((b) => (b === 0x35 ? 0x78 : b))],
  ];
  for (const kind of ["tcp", "shm"] as const) {
    test.each(malformed)(`${kind}: %s: its connection is aborted with ProtocolError, the handler never runs, other clients go on`, async (_what, md) => {
      let ran = 0;
      const closes: unknown[] = [];
      const s = await serve(urlFor(kind), { 1: (h) => (ran++, h.data.slice()) }, { onSessionClose: (_s, e) => closes.push(e), onError: () => {} });
      const good = await rpcConnect(s.url);
      closers.push(() => s.close(), () => good.close());
      expect(td.decode(await good.request(1, te.encode("before")))).toBe("before");
      const raw = await connect(s.url);
      closers.push(() => raw.close());
      const kinds: number[] = [];
      const rawCloses: unknown[] = [];
      raw.setReceiver({ onMessage: (m) => (kinds.push(wireKind(m.headBuf, m.headOffset)), m.release()), onClose: (e) => rawCloses.push(e) });
      // A well-formed request with metadata on the same raw connection is answered first.
      rawRequest(raw, 0, encodeMetadata(Metadata.from({ ok: "1" })), te.encode("fine"));
      for (let i = 0; i < 1000 && kinds.length === 0; i++) await Bun.sleep(5);
      expect(kinds).toEqual([KIND_RESPONSE]);
      expect(ran).toBe(2);
      rawRequest(raw, 1, md, te.encode("evil"));
      for (let i = 0; i < 1000 && (closes.length === 0 || rawCloses.length === 0); i++) await Bun.sleep(5);
      expect(closes.length).toBe(1);
      expect(closes[0]).toBeInstanceOf(ProtocolError);
      expect((closes[0] as Error).message).toStartWith("rpc server: the request for method 1 from ");
      expect(rawCloses.length).toBe(1);
      expect(kinds).toEqual([KIND_RESPONSE]); // nothing answered the malformed one
      expect(ran).toBe(2); // the malformed request reached no handler
      expect(td.decode(await good.request(1, te.encode("after")))).toBe("after");
      expect(ran).toBe(3);
    });
  }
});
