/**
 * Per-call metadata codec (src/rpc/metadata.ts), on its own (not yet carried by Client/Server):
 * round trips of mixed string/binary entries byte for byte, the exact layout, every limit at its
 * edge (accepted at the limit, UsageError one past it naming it), every malformed input a
 * ProtocolError, a seeded fuzz loop (random bytes and mutations of valid encodings: nothing but
 * ProtocolError, and whatever decodes re-encodes to the same bytes), W3C traceparent cases and
 * the deadline helpers. Encoding into a caller's buffer is counted at 0 heap objects per call.
 */

import { describe, expect, test } from "bun:test";
import { objectsPer } from "../../bench/loopback.ts";
import { ProtocolError, UsageError } from "../../src/errors.ts";
import { seededRandom } from "../../src/pool/backoff.ts";
import {
  DEADLINE_KEY,
  MAX_DEADLINE_MS,
  MAX_METADATA_BYTES,
  MAX_METADATA_ENTRIES,
  MAX_METADATA_KEY_BYTES,
  METADATA_VERSION,
  Metadata,
  TRACEPARENT_KEY,
  decodeMetadata,
  encodeMetadata,
  encodedLength,
  isValidTraceparent,
  remainingDeadline,
  traceparent,
  withRemainingDeadline,
  type MetadataValue,
} from "../../src/rpc/metadata.ts";

const utf8 = (s: string) => new TextEncoder().encode(s);

/** The error `fn` throws (fails the test when it returns). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

function usage(fn: () => unknown, ...fragments: string[]): void {
  const e = thrown(fn);
  expect(e).toBeInstanceOf(UsageError);
  for (const f of fragments) expect((e as Error).message).toContain(f);
}

function protocol(bytes: Uint8Array | number[], ...fragments: string[]): void {
  const e = thrown(() => decodeMetadata(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)));
  expect(e).toBeInstanceOf(ProtocolError);
  expect(e).not.toBeInstanceOf(UsageError);
  for (const f of fragments) expect((e as Error).message).toContain(f);
}

interface RawEntry {
  key: string | number[];
  value: number[] | Uint8Array;
  binary?: boolean;
  /** Value length written in the header, when it should lie. */
  claim?: number;
}

/** An encoding written by hand, so malformed ones can be built field by field. */
function frame(count: number, entries: RawEntry[], version = METADATA_VERSION): Uint8Array {
  const out: number[] = [version, count];
  for (const e of entries) {
    const key = typeof e.key === "string" ? [...utf8(e.key)] : e.key;
    const value = [...e.value];
    const len = e.claim ?? value.length;
    const word = len | (e.binary ? 0x8000 : 0);
    out.push(key.length, word & 0xff, word >>> 8, ...key, ...value);
  }
  return new Uint8Array(out);
}

/** Entries with binary values as plain arrays, for toEqual. */
const plain = (md: Metadata) => md.entries().map(([k, v]) => [k, typeof v === "string" ? v : [...v]]);

describe("round trip", () => {
  const binary = new Uint8Array(256).map((_, i) => i);
  const init: Array<[string, MetadataValue]> = [
    ["authorization", "Bearer abc.def-ghi"],
    ["x-bin", binary],
    ["empty", ""],
    ["empty.bin", new Uint8Array(0)],
    ["utf_8", "café 😀 ☃"],
    ["bom", "\uFEFFleading byte-order mark"],
    ["9", "digits, '.', '_' and '-' are key characters"],
  ];

  test("mixed string and binary entries come back in order, each value the same bytes", () => {
    const md = Metadata.from(init);
    const bytes = encodeMetadata(md);
    expect(bytes.length).toBe(encodedLength(md));
    expect(bytes.length).toBe(md.encodedLength);
    const back = decodeMetadata(bytes);
    expect(back.size).toBe(init.length);
    expect(plain(back)).toEqual(plain(md));
    expect(back.getBinary("x-bin")).toEqual(binary);
    expect(back.get("utf_8")).toBe("café 😀 ☃");
    expect(back.get("bom")).toBe("\uFEFFleading byte-order mark");
    expect(encodeMetadata(back)).toEqual(bytes);
  });

  test("the layout: version, count, then keyLen | u16 valueLen (bit 15 binary) | key | value, little-endian", () => {
    const md = Metadata.from([["ab", "xyz"], ["k", new Uint8Array([0xff, 0x00])]]);
    expect([...encodeMetadata(md)]).toEqual([
      METADATA_VERSION, 2,
      2, 3, 0x00, 0x61, 0x62, 0x78, 0x79, 0x7a,
      1, 2, 0x80, 0x6b, 0xff, 0x00,
    ]);
    const long = Metadata.from({ v: "x".repeat(300) });
    expect([...encodeMetadata(long).subarray(0, 5)]).toEqual([METADATA_VERSION, 1, 1, 300 & 0xff, 300 >>> 8]);
  });

  test("no entries: Metadata.EMPTY, 2 bytes, decoded back to EMPTY", () => {
    expect(Metadata.from({})).toBe(Metadata.EMPTY);
    expect([...encodeMetadata(Metadata.EMPTY)]).toEqual([METADATA_VERSION, 0]);
    expect(decodeMetadata(new Uint8Array([METADATA_VERSION, 0]))).toBe(Metadata.EMPTY);
  });

  test("from() takes a record, an iterable (a Map, a generator) or a Metadata (returned as is)", () => {
    const a = Metadata.from({ a: "1", b: new Uint8Array([2]) });
    const b = Metadata.from(new Map<string, MetadataValue>([["a", "1"], ["b", new Uint8Array([2])]]));
    const c = Metadata.from((function* (): Generator<[string, MetadataValue]> {
      yield ["a", "1"];
      yield ["b", new Uint8Array([2])];
    })());
    expect(encodeMetadata(b)).toEqual(encodeMetadata(a));
    expect(encodeMetadata(c)).toEqual(encodeMetadata(a));
    expect(Metadata.from(a)).toBe(a);
    expect(Metadata.from([...a])).not.toBe(a);
    expect(encodeMetadata(Metadata.from([...a]))).toEqual(encodeMetadata(a));
  });

  test("get / getBinary / has: a value of the other kind reads as absent", () => {
    const md = Metadata.from({ s: "text", b: new Uint8Array([1, 2]) });
    expect([md.get("s"), md.getBinary("s"), md.has("s")]).toEqual(["text", undefined, true]);
    expect([md.get("b"), md.getBinary("b"), md.has("b")]).toEqual([undefined, new Uint8Array([1, 2]), true]);
    expect([md.get("none"), md.getBinary("none"), md.has("none")]).toEqual([undefined, undefined, false]);
    expect([md.has("__proto__"), md.has("constructor")]).toEqual([false, false]);
  });

  test("immutable: input arrays, returned copies and the object itself cannot change it", () => {
    const input = new Uint8Array([1, 2, 3]);
    const md = Metadata.from({ b: input });
    input[0] = 9;
    md.getBinary("b")![1] = 9;
    (md.entries()[0]![1] as Uint8Array)[2] = 9;
    expect(md.getBinary("b")).toEqual(new Uint8Array([1, 2, 3]));
    expect(Object.isFrozen(md)).toBe(true);
    expect(() => {
      (md as { encodedLength: number }).encodedLength = 1;
    }).toThrow(TypeError);
    expect(() => new (Metadata as unknown as new () => Metadata)()).toThrow(UsageError);
    // The received buffer may be reused at once: the decoded values are copies.
    const wire = encodeMetadata(Metadata.from({ s: "abc", b: new Uint8Array([7]) }));
    const decoded = decodeMetadata(wire);
    wire.fill(0);
    expect(plain(decoded)).toEqual([["s", "abc"], ["b", [7]]]);
  });
});

describe("encode into a caller's buffer", () => {
  const md = Metadata.from({ k: "v", bin: new Uint8Array([1, 2, 3]) });
  const len = encodedLength(md);

  test("writes at the offset, returns the bytes written, touches nothing else", () => {
    const target = new Uint8Array(len + 10).fill(0xee);
    expect(encodeMetadata(md, target, 4)).toBe(len);
    expect(target.subarray(4, 4 + len)).toEqual(encodeMetadata(md));
    expect([...target.subarray(0, 4), ...target.subarray(4 + len)]).toEqual(new Array(10).fill(0xee));
    expect(encodeMetadata(md, target)).toBe(len);
    expect(target.subarray(0, len)).toEqual(encodeMetadata(md));
  });

  test("a target too small, or a bad offset, is a UsageError before a byte is written", () => {
    const small = new Uint8Array(len + 2).fill(0xee);
    usage(() => encodeMetadata(md, small, 3), `needs ${len} bytes`, `has ${len - 1}`);
    usage(() => encodeMetadata(md, small, -1), "offset -1");
    usage(() => encodeMetadata(md, small, 1.5), "offset 1.5");
    usage(() => encodeMetadata(md, small, len + 3), "offset");
    expect([...small]).toEqual(new Array(len + 2).fill(0xee));
    usage(() => encodeMetadata({} as Metadata), "Metadata.from");
  });

  test("allocates no heap object per call", () => {
    const target = new Uint8Array(MAX_METADATA_BYTES);
    const run = (n: number) => {
      for (let i = 0; i < n; i++) encodeMetadata(md, target, 0);
    };
    run(10_000);
    expect(objectsPer(100_000, run)).toBeLessThan(0.01);
    // The count sees allocation: encoding into a new array makes at least that array per call.
    expect(objectsPer(20_000, (n) => {
      for (let i = 0; i < n; i++) encodeMetadata(md);
    })).toBeGreaterThanOrEqual(1);
  });
});

describe("Metadata.from validation (UsageError naming the key and the rule)", () => {
  test("keys: lowercase [a-z0-9._-], never lowercased for the caller", () => {
    expect(Metadata.from({ "a.b_c-9": "ok" }).get("a.b_c-9")).toBe("ok");
    usage(() => Metadata.from({ Auth: "x" }), '"Auth"', "lowercase", 'pass "auth"');
    usage(() => Metadata.from({ "x-Trace-Id": "x" }), '"x-Trace-Id"', 'pass "x-trace-id"');
    for (const key of ["a b", "a:b", "a/b", "ключ", "é", "a\u0000", "a+b"]) usage(() => Metadata.from([[key, "x"]]), JSON.stringify(key), "lowercase ASCII letters");
    usage(() => Metadata.from({ "": "x" }), '""', "empty");
    usage(() => Metadata.from([[7 as unknown as string, "x"]]), "number key");
  });

  test(`key length: ${MAX_METADATA_KEY_BYTES} bytes ok, ${MAX_METADATA_KEY_BYTES + 1} a UsageError naming the limit`, () => {
    const at = "k".repeat(MAX_METADATA_KEY_BYTES);
    expect(decodeMetadata(encodeMetadata(Metadata.from({ [at]: "v" }))).get(at)).toBe("v");
    usage(() => Metadata.from({ [`${at}k`]: "v" }), `is ${MAX_METADATA_KEY_BYTES + 1} bytes`, `MAX_METADATA_KEY_BYTES (${MAX_METADATA_KEY_BYTES})`);
  });

  test("duplicate keys (case matters: only exact duplicates can exist)", () => {
    usage(() => Metadata.from([["a", "1"], ["b", "2"], ["a", "3"]]), '"a"', "twice");
  });

  test("string values: no control characters or lone surrogates; binary values take any bytes", () => {
    for (const bad of ["\u0000", "a\tb", "line\n", "\r", "\u001f", "\u007f", "\u0080", "\u0085", "\u009f", "\uD800", "x\uDFFFy"]) {
      usage(() => Metadata.from({ k: bad }), '"k"', "control characters", "binary");
    }
    const fine = ["printable ASCII ~!@#$%^&*()", "\u00a0 non-breaking", "\u200b", "😀", "\uFFFD"];
    for (const s of fine) expect(decodeMetadata(encodeMetadata(Metadata.from({ k: s }))).get("k")).toBe(s);
    const all = new Uint8Array(256).map((_, i) => i);
    expect(decodeMetadata(encodeMetadata(Metadata.from({ k: all }))).getBinary("k")).toEqual(all);
    for (const v of [5, null, undefined, {}, [1], new Uint16Array(1)]) usage(() => Metadata.from([["k", v as unknown as string]]), '"k"', "expected a string or a Uint8Array");
    usage(() => Metadata.from([["k"]] as unknown as [string, string][]), "not a [key, value] pair");
    usage(() => Metadata.from("k" as unknown as Metadata), "got string");
  });

  test(`entries: ${MAX_METADATA_ENTRIES} ok, ${MAX_METADATA_ENTRIES + 1} a UsageError naming the limit; an endless iterable is read one past it`, () => {
    const keys = (n: number) => Array.from({ length: n }, (_, i): [string, string] => [`k${i}`, ""]);
    const at = Metadata.from(keys(MAX_METADATA_ENTRIES));
    expect(decodeMetadata(encodeMetadata(at)).size).toBe(MAX_METADATA_ENTRIES);
    usage(() => Metadata.from(keys(MAX_METADATA_ENTRIES + 1)), `MAX_METADATA_ENTRIES (${MAX_METADATA_ENTRIES})`);
    let pulled = 0;
    const endless = (function* (): Generator<[string, string]> {
      for (;;) yield [`k${pulled++}`, ""];
    })();
    usage(() => Metadata.from(endless), `MAX_METADATA_ENTRIES (${MAX_METADATA_ENTRIES})`);
    expect(pulled).toBe(MAX_METADATA_ENTRIES + 1);
  });

  test(`encoded bytes: exactly ${MAX_METADATA_BYTES} ok, one more a UsageError naming the key, the total and the limit`, () => {
    // 2 (version, count) + 3 (entry header) + 1 (key "a") + value.
    const room = MAX_METADATA_BYTES - 6;
    const bin = Metadata.from({ a: new Uint8Array(room) });
    expect(encodedLength(bin)).toBe(MAX_METADATA_BYTES);
    expect(decodeMetadata(encodeMetadata(bin)).getBinary("a")!.length).toBe(room);
    usage(() => Metadata.from({ a: new Uint8Array(room + 1) }), '"a"', `${MAX_METADATA_BYTES + 1} bytes`, `MAX_METADATA_BYTES (${MAX_METADATA_BYTES})`);
    // The limit is on UTF-8 bytes, not characters: "é" is 2 bytes.
    expect(encodedLength(Metadata.from({ a: "é".repeat(room / 2) }))).toBe(MAX_METADATA_BYTES);
    usage(() => Metadata.from({ a: `${"é".repeat(room / 2)}x` }), `${MAX_METADATA_BYTES + 1} bytes`);
    // The entry that crosses the limit is the one named.
    usage(() => Metadata.from([["first", new Uint8Array(400)], ["second", new Uint8Array(400)]]), '"second"', "MAX_METADATA_BYTES");
  });
});

describe("decodeMetadata: every malformed input is a ProtocolError", () => {
  const ok = (key: string, value: string) => ({ key, value: [...utf8(value)] });

  test("well-formed hand-built frames decode (the malformed ones below differ in one field)", () => {
    expect(plain(decodeMetadata(frame(2, [ok("a", "x"), { key: "b", value: [0, 255], binary: true }])))).toEqual([["a", "x"], ["b", [0, 255]]]);
  });

  test("truncated", () => {
    protocol([], "truncated", "0 bytes");
    protocol([METADATA_VERSION], "truncated");
    protocol([METADATA_VERSION, 1], "truncated", "entry 0 of 1");
    protocol([METADATA_VERSION, 1, 1, 0], "truncated", "entry 0 of 1");
    const full = frame(2, [ok("a", "x"), ok("b", "yy")]);
    for (let cut = 0; cut < full.length; cut++) protocol(full.subarray(0, cut));
  });

  test("lengths past the end (a length is checked against the bytes there before anything is read for it)", () => {
    protocol(frame(1, [{ key: "k", value: [1, 2], claim: 0x7fff }]), "value length 32767 runs past the end", "2 bytes left");
    protocol(frame(1, [{ key: "k", value: [1], claim: 2, binary: true }]), "value length 2 runs past the end");
    protocol([METADATA_VERSION, 1, 60, 0, 0, 0x61, 0x62], "key length 60 runs past the end", "2 bytes left");
  });

  test("key lengths out of range and bad key bytes", () => {
    protocol(frame(1, [{ key: [], value: [] }]), "key length of 0");
    protocol(frame(1, [{ key: "k".repeat(MAX_METADATA_KEY_BYTES + 1), value: [] }]), `key length of ${MAX_METADATA_KEY_BYTES + 1}`);
    expect(decodeMetadata(frame(1, [{ key: "k".repeat(MAX_METADATA_KEY_BYTES), value: [] }])).size).toBe(1);
    for (const b of [0x41, 0x5a, 0x20, 0x3a, 0x2f, 0x00, 0x7f, 0x80, 0xff]) protocol(frame(1, [{ key: [0x61, b], value: [] }]), `byte 0x${b.toString(16).padStart(2, "0")} at 1`);
  });

  test("duplicate keys", () => {
    protocol(frame(2, [ok("a", "1"), ok("a", "2")]), '"a"', "twice");
    protocol(frame(3, [ok("a", "1"), { key: "b", value: [], binary: true }, { key: "b", value: [1], binary: true }]), '"b"', "twice");
  });

  test(`count past the limit: ${MAX_METADATA_ENTRIES} decodes, ${MAX_METADATA_ENTRIES + 1} does not`, () => {
    const entries = (n: number) => Array.from({ length: n }, (_, i) => ok(`k${i}`, ""));
    expect(decodeMetadata(frame(MAX_METADATA_ENTRIES, entries(MAX_METADATA_ENTRIES))).size).toBe(MAX_METADATA_ENTRIES);
    protocol(frame(MAX_METADATA_ENTRIES + 1, entries(MAX_METADATA_ENTRIES + 1)), `count ${MAX_METADATA_ENTRIES + 1}`, `MAX_METADATA_ENTRIES (${MAX_METADATA_ENTRIES})`);
    protocol([METADATA_VERSION, 255], "count 255");
  });

  test(`input over ${MAX_METADATA_BYTES} bytes, refused before it is parsed`, () => {
    const at = frame(1, [{ key: "a", value: new Uint8Array(MAX_METADATA_BYTES - 6), binary: true }]);
    expect(at.length).toBe(MAX_METADATA_BYTES);
    expect(decodeMetadata(at).size).toBe(1);
    protocol(frame(1, [{ key: "a", value: new Uint8Array(MAX_METADATA_BYTES - 5), binary: true }]), `${MAX_METADATA_BYTES + 1} bytes`, "MAX_METADATA_BYTES");
  });

  test("trailing bytes", () => {
    protocol([...frame(1, [ok("a", "x")]), 0], "1 bytes after the last of 1 entries");
    protocol([METADATA_VERSION, 0, 0, 0], "2 bytes after");
  });

  test("unknown version", () => {
    for (const v of [0, 2, 255]) protocol(frame(1, [ok("a", "x")], v), `unknown version ${v}`);
  });

  test("string values that are not UTF-8 or hold a control character (the same bytes as binary decode)", () => {
    const notUtf8 = [[0xff], [0xc0, 0x80], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]];
    for (const v of notUtf8) {
      protocol(frame(1, [{ key: "s", value: v }]), '"s"', "not UTF-8");
      expect([...decodeMetadata(frame(1, [{ key: "s", value: v, binary: true }])).getBinary("s")!]).toEqual(v);
    }
    for (const v of [[0x00], [0x61, 0x0a], [0x7f], [0xc2, 0x85]]) protocol(frame(1, [{ key: "s", value: v }]), '"s"', "control character");
  });
});

describe("fuzz (seeded): nothing but ProtocolError, never a hang; what decodes re-encodes to the same bytes", () => {
  function check(bytes: Uint8Array, outcome: { ok: number; refused: number }): void {
    let md: Metadata;
    try {
      md = decodeMetadata(bytes);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw new Error(`decodeMetadata threw ${String(e)} for [${bytes.join(",")}]`);
      outcome.refused++;
      return;
    }
    expect([...encodeMetadata(md)]).toEqual([...bytes]);
    outcome.ok++;
  }

  test("random byte strings", () => {
    const rnd = seededRandom(16);
    const outcome = { ok: 0, refused: 0 };
    for (let i = 0; i < 20_000; i++) {
      const b = new Uint8Array(Math.floor(rnd() * 64));
      for (let k = 0; k < b.length; k++) b[k] = Math.floor(rnd() * 256);
      // Half of them get a valid version and a small count, so the parser gets past the prefix.
      if (b.length >= 2 && i % 2 === 0) {
        b[0] = METADATA_VERSION;
        b[1] = Math.floor(rnd() * 4);
      }
      check(b, outcome);
    }
    expect(outcome.ok + outcome.refused).toBe(20_000);
    expect(outcome.refused).toBeGreaterThan(0);
  });

  test("random mutations of valid encodings", () => {
    const rnd = seededRandom(1601);
    const pick = (n: number) => Math.floor(rnd() * n);
    const keys = ["a", "auth", "x-bin", "t.id", "k_9", DEADLINE_KEY, TRACEPARENT_KEY];
    const outcome = { ok: 0, refused: 0 };
    for (let i = 0; i < 4_000; i++) {
      const pairs: Array<[string, MetadataValue]> = [];
      const n = pick(5);
      for (let j = 0; j < n; j++) {
        const key = `${keys[pick(keys.length)]}${j}`;
        pairs.push([key, rnd() < 0.5 ? "v".repeat(pick(20)) + ["é", "😀", "☃"].slice(0, pick(4)).join("") : new Uint8Array(pick(20)).map(() => pick(256))]);
      }
      const valid = encodeMetadata(Metadata.from(pairs));
      check(valid, outcome);
      for (let m = 0; m < 5; m++) {
        let b = Uint8Array.from(valid);
        const op = pick(5);
        if (op === 0 && b.length > 0) b[pick(b.length)] = pick(256);
        else if (op === 1 && b.length > 0) b[pick(b.length)]! ^= 1 << pick(8);
        else if (op === 2) b = b.subarray(0, pick(b.length + 1));
        else if (op === 3) {
          const at = pick(b.length + 1);
          b = Uint8Array.from([...b.subarray(0, at), pick(256), ...b.subarray(at)]);
        } else if (b.length > 0) {
          const at = pick(b.length);
          b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + 1)]);
        }
        check(b, outcome);
      }
    }
    expect(outcome.ok).toBeGreaterThanOrEqual(4_000);
    expect(outcome.refused).toBeGreaterThan(4_000);
  });
});

describe("traceparent (W3C Trace Context, version 00)", () => {
  const SPEC = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

  test("the spec's examples are valid", () => {
    for (const v of [SPEC, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-ff"]) {
      expect(isValidTraceparent(v)).toBe(true);
      expect(traceparent(decodeMetadata(encodeMetadata(Metadata.from({ [TRACEPARENT_KEY]: v }))))).toBe(v);
    }
  });

  const invalid: Array<[string, string]> = [
    ["00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace id is all zero"],
    ["00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent id is all zero"],
    ["ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "not of the form"],
    ["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "not of the form"],
    ["00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "not of the form"],
    ["00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", "not of the form"],
    ["00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "not of the form"],
    ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", "not of the form"],
    ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "not of the form"],
    ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "not of the form"],
    ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", "not of the form"],
    ["00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", "not of the form"],
    [` ${SPEC}`, "not of the form"],
    ["", "not of the form"],
  ];

  test("invalid ones: false, a UsageError from Metadata.from, ignored (undefined) when a peer sends one", () => {
    for (const [v, why] of invalid) {
      expect(isValidTraceparent(v)).toBe(false);
      usage(() => Metadata.from({ [TRACEPARENT_KEY]: v }), `"${TRACEPARENT_KEY}"`, why);
      const received = decodeMetadata(frame(1, [{ key: TRACEPARENT_KEY, value: [...utf8(v)] }]));
      expect(received.get(TRACEPARENT_KEY)).toBe(v);
      expect(traceparent(received)).toBeUndefined();
    }
    usage(() => Metadata.from({ [TRACEPARENT_KEY]: utf8(SPEC) }), "binary");
    expect(traceparent(decodeMetadata(frame(1, [{ key: TRACEPARENT_KEY, value: [...utf8(SPEC)], binary: true }])))).toBeUndefined();
    expect(traceparent(Metadata.EMPTY)).toBeUndefined();
  });
});

describe("deadline propagation", () => {
  test("withRemainingDeadline sets whole milliseconds (rounded down, a past deadline as 0); remainingDeadline reads them", () => {
    const cases: Array<[number, number]> = [[250, 250], [12.9, 12], [0, 0], [0.4, 0], [-5, 0], [-Infinity, 0], [MAX_DEADLINE_MS, MAX_DEADLINE_MS]];
    for (const [given, sent] of cases) {
      const md = withRemainingDeadline(Metadata.EMPTY, given);
      expect(md.get(DEADLINE_KEY)).toBe(String(sent));
      expect(remainingDeadline(md)).toBe(sent);
      expect(remainingDeadline(decodeMetadata(encodeMetadata(md)))).toBe(sent);
    }
    expect(remainingDeadline(Metadata.EMPTY)).toBeUndefined();
  });

  test("a new Metadata: other entries kept in order, an existing deadline replaced in its place, the original unchanged", () => {
    const md = Metadata.from([["a", "1"], [DEADLINE_KEY, "900"], ["b", new Uint8Array([2])]]);
    const next = withRemainingDeadline(md, 400);
    expect(plain(next)).toEqual([["a", "1"], [DEADLINE_KEY, "400"], ["b", [2]]]);
    expect(remainingDeadline(md)).toBe(900);
    expect(plain(withRemainingDeadline(Metadata.from({ a: "1" }), 5))).toEqual([["a", "1"], [DEADLINE_KEY, "5"]]);
  });

  test("across two hops: each server passes on what is left of the deadline it received", () => {
    // Client -> A with 1000 ms; A spends 300 ms and calls B; B spends 800 ms more and calls C.
    const toA = decodeMetadata(encodeMetadata(withRemainingDeadline(Metadata.from({ authorization: "client" }), 1000)));
    const toB = decodeMetadata(encodeMetadata(withRemainingDeadline(Metadata.from({ authorization: "a" }), remainingDeadline(toA)! - 300)));
    const toC = decodeMetadata(encodeMetadata(withRemainingDeadline(Metadata.EMPTY, remainingDeadline(toB)! - 800)));
    expect([remainingDeadline(toA), remainingDeadline(toB), remainingDeadline(toC)]).toEqual([1000, 700, 0]);
    expect(toB.get("authorization")).toBe("a");
  });

  test("UsageError for a remainingMs that is no number, NaN, over the limit or +Infinity, or a deadline that breaks a limit", () => {
    for (const bad of [Number.NaN, Infinity, MAX_DEADLINE_MS + 1, "5" as unknown as number, undefined as unknown as number]) usage(() => withRemainingDeadline(Metadata.EMPTY, bad), "remainingMs", "MAX_DEADLINE_MS");
    usage(() => withRemainingDeadline(undefined as unknown as Metadata, 5), "Metadata.EMPTY");
    const full = Metadata.from(Array.from({ length: MAX_METADATA_ENTRIES }, (_, i): [string, string] => [`k${i}`, ""]));
    usage(() => withRemainingDeadline(full, 5), "MAX_METADATA_ENTRIES");
    const nearly = Metadata.from({ a: new Uint8Array(MAX_METADATA_BYTES - 6 - 3 - DEADLINE_KEY.length - 1) });
    expect(encodedLength(withRemainingDeadline(nearly, 9))).toBe(MAX_METADATA_BYTES);
    usage(() => withRemainingDeadline(nearly, 10), `"${DEADLINE_KEY}"`, "MAX_METADATA_BYTES");
  });

  test("a malformed deadline: UsageError from Metadata.from, ProtocolError from remainingDeadline when a peer sent it", () => {
    for (const bad of ["abc", "-1", "01", "1.5", "1e3", " 5", "5 ", "", "+5", "1".repeat(16)]) {
      usage(() => Metadata.from({ [DEADLINE_KEY]: bad }), `"${DEADLINE_KEY}"`, "withRemainingDeadline");
      const received = decodeMetadata(frame(1, [{ key: DEADLINE_KEY, value: [...utf8(bad)] }]));
      const e = thrown(() => remainingDeadline(received));
      expect(e).toBeInstanceOf(ProtocolError);
      expect((e as Error).message).toContain(JSON.stringify(bad));
    }
    usage(() => Metadata.from({ [DEADLINE_KEY]: utf8("5") }), "binary");
    const binary = decodeMetadata(frame(1, [{ key: DEADLINE_KEY, value: [...utf8("5")], binary: true }]));
    expect(thrown(() => remainingDeadline(binary))).toBeInstanceOf(ProtocolError);
    expect(remainingDeadline(decodeMetadata(frame(1, [{ key: DEADLINE_KEY, value: [...utf8("1".repeat(15))] }])))).toBe(111_111_111_111_111);
  });
});
