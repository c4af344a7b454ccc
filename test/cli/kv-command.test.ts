/**
 * The kv-client's command language (src/cli/kv-command.ts): words and quoting, escapes for
 * binary bytes, `;` between commands, argument checks with their messages, and showBytes
 * reading back as the same bytes.
 */
import { describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { BENCH_MAX_COUNT, helpText, parseCommand, showBytes, splitCommands, wordText, type KvCommand } from "../../src/cli/kv-command.ts";
import { MAX_MEMORY_MB, parseKvServerArgs } from "../../src/cli/kv-server.ts";
import { runBench } from "../../src/cli/kv-bench.ts";
import type { KvClient } from "../../src/kv/index.ts";
import { MAX_ARENA_BYTES } from "../../src/kv/store.ts";

const enc = new TextEncoder();
const words = (line: string) => splitCommands(line).map((c) => c.map(wordText));
const bytes = (...b: number[]) => Uint8Array.from(b);
const parse = (line: string): KvCommand => {
  const cmds = splitCommands(line);
  expect(cmds.length).toBe(1);
  return parseCommand(cmds[0]!);
};
const usageError = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error("expected a UsageError");
};

describe("splitCommands", () => {
  test("blanks separate words; double and single quotes keep blanks and ;", () => {
    expect(words('put "a key" "a value"')).toEqual([["put", "a key", "a value"]]);
    expect(words("put 'a; b' c")).toEqual([["put", "a; b", "c"]]);
    expect(words("  get\tk  ")).toEqual([["get", "k"]]);
  });

  test("; separates commands; empty commands and comment lines are dropped", () => {
    expect(words("put k v; get k;;  ; del k")).toEqual([["put", "k", "v"], ["get", "k"], ["del", "k"]]);
    expect(words("# put k v")).toEqual([]);
    expect(words("   ")).toEqual([]);
  });

  test("pieces next to each other make one word; an empty quoted word is a word", () => {
    expect(words(`a"b c"'d'`)).toEqual([["ab cd"]]);
    expect(words('put k ""')).toEqual([["put", "k", ""]]);
  });

  test("escapes give exact bytes, including ones that are not UTF-8", () => {
    const [[, key, value]] = splitCommands('put "\\x00\\xff" \\x01\\n\\t\\\\\\"\\;\\ x') as [[Uint8Array, Uint8Array, Uint8Array]];
    expect(key).toEqual(bytes(0x00, 0xff));
    expect(value).toEqual(bytes(0x01, 0x0a, 0x09, 0x5c, 0x22, 0x3b, 0x20, 0x78));
    expect(splitCommands("'\\x00'")[0]![0]).toEqual(enc.encode("\\x00")); // single quotes: literal
    expect(splitCommands('"héllo 🎉"')[0]![0]).toEqual(enc.encode("héllo 🎉"));
  });

  test("bad input: unterminated quotes, unknown escapes, short \\x, a trailing backslash", () => {
    expect(usageError(() => splitCommands('put "a'))).toBe('unterminated " quote');
    expect(usageError(() => splitCommands("put 'a"))).toBe("unterminated ' quote");
    expect(usageError(() => splitCommands("put \\q"))).toContain('unknown escape "\\q"');
    expect(usageError(() => splitCommands("put \\x4"))).toContain("\\x takes two hex digits");
    expect(usageError(() => splitCommands("put a\\"))).toBe("a line cannot end with a backslash");
  });
});

describe("showBytes", () => {
  test("quotes, escapes the quote, backslash and control bytes, keeps printable UTF-8", () => {
    expect(showBytes(enc.encode("value"))).toBe('"value"');
    expect(showBytes(enc.encode('a"b\\c'))).toBe('"a\\"b\\\\c"');
    expect(showBytes(bytes(0x00, 0x0a, 0x0d, 0x09, 0x7f, 0x1b))).toBe('"\\x00\\n\\r\\t\\x7f\\x1b"');
    expect(showBytes(enc.encode("héllo"))).toBe('"héllo"');
    expect(showBytes(bytes(0x61, 0xff, 0xc3))).toBe('"a\\xff\\xc3"'); // not UTF-8: every high byte escaped
    expect(showBytes(enc.encode("\u0085"))).toBe('"\\xc2\\x85"'); // a C1 control
    expect(showBytes(new Uint8Array(0))).toBe('""');
  });

  test("what it shows reads back as the same bytes (every byte value, and random strings)", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(splitCommands(showBytes(all))[0]![0]).toEqual(all);
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let n = 0; n < 200; n++) {
      const b = Uint8Array.from({ length: Math.floor(rnd() * 40) }, () => (rnd() < 0.7 ? 0x20 + Math.floor(rnd() * 95) : Math.floor(rnd() * 256)));
      expect(splitCommands(`x ${showBytes(b)}`)[0]![1]).toEqual(b);
    }
    const text = enc.encode("naïve ✓ 🎉\u2028");
    expect(splitCommands(showBytes(text))[0]![0]).toEqual(text);
  });
});

describe("parseCommand", () => {
  test("every command with its arguments", () => {
    expect(parse("put k v")).toEqual({ op: "put", key: enc.encode("k"), value: enc.encode("v") });
    expect(parse("GET k")).toEqual({ op: "get", key: enc.encode("k") });
    expect(parse("cas k 17 v")).toEqual({ op: "cas", key: enc.encode("k"), expectedVersion: 17, value: enc.encode("v") });
    expect(parse("del k")).toEqual({ op: "del", key: enc.encode("k") });
    expect(parse("mget a b c")).toEqual({ op: "mget", keys: ["a", "b", "c"].map((k) => enc.encode(k)) });
    expect(parse("stats")).toEqual({ op: "stats" });
    expect(parse("save")).toEqual({ op: "save" });
    expect(parse("help")).toEqual({ op: "help", topic: null });
    expect(parse("help put")).toEqual({ op: "help", topic: "put" });
    expect(parse("quit")).toEqual({ op: "quit" });
    expect(parse("exit")).toEqual({ op: "quit" });
  });

  test("bench: N and its options, with defaults", () => {
    expect(parse("bench 2000")).toEqual({ op: "bench", count: 2000, sizeBytes: 64, inflight: 1, benchOp: "get" });
    expect(parse("bench 10 --size 4096 --inflight 64 --op put")).toEqual({ op: "bench", count: 10, sizeBytes: 4096, inflight: 64, benchOp: "put" });
    expect(parse("bench 10 --size=0 --inflight=2")).toEqual({ op: "bench", count: 10, sizeBytes: 0, inflight: 2, benchOp: "get" });
    expect(usageError(() => parse("bench"))).toContain("bench takes a call count");
    expect(usageError(() => parse("bench 0"))).toBe(`bench: N 0 is out of range (1..${BENCH_MAX_COUNT})`);
    // Every call's time is kept: a count past the cap is a usage error, not an out-of-memory one.
    expect(usageError(() => parse("bench 9007199254740991"))).toBe(`bench: N 9007199254740991 is out of range (1..${BENCH_MAX_COUNT})`);
    expect(usageError(() => parse(`bench ${BENCH_MAX_COUNT + 1}`))).toContain("is out of range");
    expect(parse(`bench ${BENCH_MAX_COUNT}`)).toMatchObject({ op: "bench", count: BENCH_MAX_COUNT });
    expect(usageError(() => parse("bench 10 --op scan"))).toBe('bench: --op "scan" is neither get nor put');
    expect(usageError(() => parse("bench 10 --size"))).toBe("bench: --size needs a value");
    expect(usageError(() => parse("bench 10 --fast"))).toContain('bench: unknown option "--fast"');
    expect(usageError(() => parse("bench 10 --inflight 0"))).toContain("bench: --inflight 0 is out of range");
  });

  test("unknown commands and wrong argument counts say what is wrong", () => {
    expect(usageError(() => parse("pt k v"))).toBe('unknown command "pt"; try help');
    expect(usageError(() => parse("put k"))).toBe("put takes 2 arguments, got 1; usage: put KEY VALUE");
    expect(usageError(() => parse("get"))).toBe("get takes 1 argument, got 0; usage: get KEY");
    expect(usageError(() => parse("get a b"))).toBe("get takes 1 argument, got 2; usage: get KEY");
    expect(usageError(() => parse("cas k v"))).toBe("cas takes 3 arguments, got 2; usage: cas KEY VERSION VALUE");
    expect(usageError(() => parse("cas k x v"))).toBe('cas: version "x" is not a whole number');
    expect(usageError(() => parse("mget"))).toBe("mget takes at least 1 argument, got 0; usage: mget KEY [KEY ...]");
    expect(usageError(() => parse("stats now"))).toBe("stats takes 0 arguments, got 1; usage: stats");
    expect(usageError(() => parseCommand([]))).toBe("empty command; try help");
  });

  test("help lists every command and names one", () => {
    const h = helpText();
    for (const c of ["put", "get", "cas", "del", "mget", "bench", "stats", "save", "help", "quit"]) expect(h).toContain(`\n  ${c} `);
    expect(helpText("cas")).toStartWith("cas KEY VERSION VALUE");
    expect(usageError(() => helpText("nope"))).toBe('help: unknown command "nope"; try help');
  });
});

describe("kv-server flags", () => {
  test("--memory's range is the store's: 1..2048 MiB, and 2048 MiB is the store's largest arena", () => {
    expect(MAX_MEMORY_MB * 2 ** 20).toBe(MAX_ARENA_BYTES);
    expect(parseKvServerArgs(["--listen", "tcp://127.0.0.1:0", "--memory", "2048"]).memoryMB).toBe(2048);
    expect(parseKvServerArgs(["--listen", "tcp://127.0.0.1:0", "--memory", "1"]).memoryMB).toBe(1);
    expect(usageError(() => parseKvServerArgs(["--listen", "tcp://127.0.0.1:0", "--memory", "2049"]))).toBe("--memory 2049 is out of range (1..2048)");
  });
});

describe("runBench's own limits", () => {
  test("a count past BENCH_MAX_COUNT or an in-flight count of 0 is a UsageError before any call (no client is touched)", async () => {
    const noClient = null as unknown as KvClient; // refused before the client is used
    const spec = { count: 9007199254740991, sizeBytes: 64, inflight: 1, benchOp: "get" as const };
    await expect(runBench(noClient, spec, () => {})).rejects.toThrow(new UsageError(`bench: N 9007199254740991 is out of range (1..${BENCH_MAX_COUNT}): every call's time is kept for p50/p99`));
    await expect(runBench(noClient, { ...spec, count: 10, inflight: 0 }, () => {})).rejects.toBeInstanceOf(UsageError);
  });
});
