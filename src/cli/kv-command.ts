/**
 * The kv-client's command language: splitting a line into commands and words, turning words
 * into typed commands, and showing binary values. Pure functions, no I/O.
 *
 * Words are separated by blanks; `;` outside quotes ends a command (so one line, or one `-c`
 * argument, may hold several). A word may be built of pieces written next to each other:
 *   plain text         backslash escapes apply
 *   "double quoted"    blanks and `;` kept; backslash escapes apply
 *   'single quoted'    taken literally, no escapes
 * Escapes: \\ \" \' \; \n \r \t \0 \xHH (one byte, any value) and a backslash before a blank.
 * Words are bytes: text is UTF-8, `\xff` is the byte 0xff, so binary keys and values can be
 * typed. A line whose first non-blank character is `#` is a comment.
 *
 * Values are shown the other way round (showBytes): in double quotes, printable UTF-8 as is,
 * `"` and `\` escaped, \n \r \t by name, every other byte as \xHH; reading the shown text back
 * with splitCommands gives the same bytes.
 *
 *   splitCommands('put "a key" \\x00\\x01; get "a key"')
 *     -> [[put, a key, \x00\x01], [get, a key]] (each word a Uint8Array)
 *   parseCommand(words)  -> { op: "put", key, value }   or throws UsageError
 *   showBytes(Uint8Array.of(0x61, 0, 0x22)) -> "a\x00\""  (quotes included)
 *
 * Thread: any; nothing is shared.
 */

import { UsageError } from "../errors.ts";

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const looseDecoder = new TextDecoder();

export type KvCommand =
  | { op: "put"; key: Uint8Array; value: Uint8Array }
  | { op: "get"; key: Uint8Array }
  | { op: "cas"; key: Uint8Array; expectedVersion: number; value: Uint8Array }
  | { op: "del"; key: Uint8Array }
  | { op: "mget"; keys: Uint8Array[] }
  | { op: "bench"; count: number; sizeBytes: number; inflight: number; benchOp: "get" | "put" }
  | { op: "stats" }
  | { op: "save" }
  | { op: "help"; topic: string | null }
  | { op: "quit" };

/** Defaults of `bench`: the small-value case, one call in flight. */
export const BENCH_DEFAULT_SIZE_BYTES = 64;
export const BENCH_DEFAULT_INFLIGHT = 1;
/** More in flight than any pool window holds would only queue in the client. */
export const BENCH_MAX_INFLIGHT = 65536;
/** Most calls one `bench` makes: every call's time is kept (8 bytes each, 80 MB at the cap) so p50/p99 are exact per-call figures; more would exhaust memory. */
export const BENCH_MAX_COUNT = 10_000_000;

/** Usage of each command, as `help` prints it and argument-count errors quote it. */
export const COMMAND_USAGE: Readonly<Record<string, string>> = {
  put: "put KEY VALUE            store VALUE under KEY; prints OK version V",
  get: "get KEY                  prints \"value\" (version V), or (nil)",
  cas: "cas KEY VERSION VALUE    store VALUE only if KEY's version is VERSION (0: only if absent); OK version V or MISMATCH version V",
  del: "del KEY                  prints 1 if KEY was there, else 0",
  mget: "mget KEY [KEY ...]       one line per key: N) \"value\" (version V), or N) (nil)",
  bench: `bench N [--size B] [--inflight K] [--op get|put]   N calls (at most ${BENCH_MAX_COUNT}) of B-byte values (default ${BENCH_DEFAULT_SIZE_BYTES}), K in flight (default ${BENCH_DEFAULT_INFLIGHT}); prints ops/s, p50, p99`,
  stats: "stats                    each server's counters",
  save: "save                     write each server's snapshot now",
  help: "help [COMMAND]           this list",
  quit: "quit                     end the session (also: exit, Ctrl-D)",
};

/** The `help` text: every command, then how to quote. */
export function helpText(topic: string | null = null): string {
  if (topic !== null) {
    const u = COMMAND_USAGE[topic === "exit" ? "quit" : topic];
    if (u === undefined) throw new UsageError(`help: unknown command "${topic}"; try help`);
    return u;
  }
  return [
    "commands:",
    ...Object.values(COMMAND_USAGE).map((u) => `  ${u}`),
    "words: \"double quotes\" or 'single quotes' keep blanks; escapes \\xHH \\n \\t \\\\ \\\" in plain and double-quoted words;",
    "  ';' separates commands; keys and values are bytes (text is UTF-8)",
  ].join("\n");
}

const ESCAPES: Readonly<Record<string, number>> = { "\\": 0x5c, '"': 0x22, "'": 0x27, ";": 0x3b, " ": 0x20, "\t": 0x09, n: 0x0a, r: 0x0d, t: 0x09, "0": 0x00 };

/** Growable byte buffer for one word. */
class WordBytes {
  private buf = new Uint8Array(32);
  len = 0;
  push(byte: number): void {
    if (this.len === this.buf.length) {
      const b = new Uint8Array(this.buf.length * 2);
      b.set(this.buf);
      this.buf = b;
    }
    this.buf[this.len++] = byte;
  }
  pushText(s: string): void {
    for (const b of encoder.encode(s)) this.push(b);
  }
  take(): Uint8Array {
    const out = this.buf.slice(0, this.len);
    this.len = 0;
    return out;
  }
}

/**
 * Splits `line` into commands (at unquoted `;`), each a list of words as bytes. Empty commands
 * (blank text between `;`) and comment lines are dropped. Throws UsageError for an unterminated
 * quote, an unknown escape or a bad \x.
 */
export function splitCommands(line: string): Uint8Array[][] {
  if (/^\s*#/.test(line)) return [];
  const commands: Uint8Array[][] = [];
  let words: Uint8Array[] = [];
  const word = new WordBytes();
  let inWord = false; // an empty quoted word ("") is still a word
  let i = 0;
  const endWord = () => {
    if (inWord) words.push(word.take());
    inWord = false;
  };
  const escape = (): void => {
    // line[i] is the backslash
    const c = line[i + 1];
    if (c === undefined) throw new UsageError("a line cannot end with a backslash");
    if (c === "x") {
      const hex = line.slice(i + 2, i + 4);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new UsageError(`bad escape "\\x${hex}": \\x takes two hex digits`);
      word.push(parseInt(hex, 16));
      i += 4;
      return;
    }
    const b = ESCAPES[c];
    if (b === undefined) throw new UsageError(`unknown escape "\\${c}" (known: \\\\ \\" \\' \\; \\n \\r \\t \\0 \\xHH)`);
    word.push(b);
    i += 2;
  };
  while (i < line.length) {
    const c = line[i]!;
    if (c === " " || c === "\t" || c === "\r" || c === "\n") {
      endWord();
      i++;
    } else if (c === ";") {
      endWord();
      if (words.length > 0) commands.push(words);
      words = [];
      i++;
    } else if (c === "\\") {
      inWord = true;
      escape();
    } else if (c === "'") {
      inWord = true;
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new UsageError("unterminated ' quote");
      word.pushText(line.slice(i + 1, end));
      i = end + 1;
    } else if (c === '"') {
      inWord = true;
      i++;
      for (;;) {
        if (i >= line.length) throw new UsageError('unterminated " quote');
        const d = line[i]!;
        if (d === '"') {
          i++;
          break;
        }
        if (d === "\\") escape();
        else {
          // One code point at a time (surrogate pairs stay together).
          const cp = line.codePointAt(i)!;
          const s = String.fromCodePoint(cp);
          word.pushText(s);
          i += s.length;
        }
      }
    } else {
      inWord = true;
      const cp = line.codePointAt(i)!;
      const s = String.fromCodePoint(cp);
      word.pushText(s);
      i += s.length;
    }
  }
  endWord();
  if (words.length > 0) commands.push(words);
  return commands;
}

/** A word as text (for command names, numbers and options). */
export function wordText(word: Uint8Array): string {
  return looseDecoder.decode(word);
}

function hex2(b: number): string {
  return "\\x" + b.toString(16).padStart(2, "0");
}

/**
 * Shows bytes in double quotes, escaped so that splitCommands reads them back as the same
 * bytes: printable ASCII and printable non-ASCII UTF-8 as is, `\\` and `\"`, \n \r \t, every
 * other byte (controls, invalid UTF-8) as \xHH.
 */
export function showBytes(bytes: Uint8Array): string {
  let text: string | null;
  try {
    text = strictDecoder.decode(bytes);
  } catch {
    text = null;
  }
  let out = '"';
  if (text === null) {
    for (const b of bytes) out += showAscii(b) ?? hex2(b);
  } else {
    for (const ch of text) {
      const cp = ch.codePointAt(0)!;
      if (cp < 0x80) out += showAscii(cp) ?? hex2(cp);
      else if (cp <= 0x9f || cp === 0xad || (cp >= 0x2028 && cp <= 0x2029) || cp === 0xfeff || (cp >= 0xd800 && cp <= 0xdfff)) {
        for (const b of encoder.encode(ch)) out += hex2(b); // C1 controls and invisible or line-breaking marks
      } else out += ch;
    }
  }
  return out + '"';
}

function showAscii(b: number): string | null {
  if (b === 0x22) return '\\"';
  if (b === 0x5c) return "\\\\";
  if (b === 0x0a) return "\\n";
  if (b === 0x0d) return "\\r";
  if (b === 0x09) return "\\t";
  if (b >= 0x20 && b < 0x7f) return String.fromCharCode(b);
  return null;
}

function argCount(name: string, args: Uint8Array[], min: number, max: number): void {
  if (args.length >= min && args.length <= max) return;
  const want = min === max ? `${min} argument${min === 1 ? "" : "s"}` : max === Infinity ? `at least ${min} argument${min === 1 ? "" : "s"}` : `${min} to ${max} arguments`;
  throw new UsageError(`${name} takes ${want}, got ${args.length}; usage: ${COMMAND_USAGE[name]!.split(/ {2,}/)[0]}`);
}

/** A whole number in [min, max] from a word, or UsageError naming what it is for. */
export function wholeNumber(what: string, word: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(word)) throw new UsageError(`${what} "${word}" is not a whole number`);
  const n = Number(word);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${what} ${word} is out of range (${min}..${max})`);
  return n;
}

function parseBench(args: Uint8Array[]): KvCommand {
  const words = args.map(wordText);
  if (words.length === 0) throw new UsageError(`bench takes a call count; usage: ${COMMAND_USAGE.bench!.split(/ {2,}/)[0]}`);
  const count = wholeNumber("bench: N", words[0]!, 1, BENCH_MAX_COUNT);
  let sizeBytes = BENCH_DEFAULT_SIZE_BYTES;
  let inflight = BENCH_DEFAULT_INFLIGHT;
  let benchOp: "get" | "put" = "get";
  for (let i = 1; i < words.length; i++) {
    const w = words[i]!;
    const eq = w.indexOf("=");
    const flag = w.startsWith("--") && eq > 0 ? w.slice(0, eq) : w;
    const value = w.startsWith("--") && eq > 0 ? w.slice(eq + 1) : words[++i];
    if (flag !== "--size" && flag !== "--inflight" && flag !== "--op") throw new UsageError(`bench: unknown option "${w}" (options: --size B, --inflight K, --op get|put)`);
    if (value === undefined) throw new UsageError(`bench: ${flag} needs a value`);
    if (flag === "--size") sizeBytes = wholeNumber("bench: --size", value, 0, 1 << 30);
    else if (flag === "--inflight") inflight = wholeNumber("bench: --inflight", value, 1, BENCH_MAX_INFLIGHT);
    else if (value === "get" || value === "put") benchOp = value;
    else throw new UsageError(`bench: --op "${value}" is neither get nor put`);
  }
  return { op: "bench", count, sizeBytes, inflight, benchOp };
}

/** Turns one command's words into a KvCommand; UsageError for an unknown command or wrong arguments. */
export function parseCommand(words: Uint8Array[]): KvCommand {
  if (words.length === 0) throw new UsageError("empty command; try help");
  const name = wordText(words[0]!).toLowerCase();
  const args = words.slice(1);
  switch (name) {
    case "put":
      argCount(name, args, 2, 2);
      return { op: "put", key: args[0]!, value: args[1]! };
    case "get":
      argCount(name, args, 1, 1);
      return { op: "get", key: args[0]! };
    case "cas":
      argCount(name, args, 3, 3);
      return { op: "cas", key: args[0]!, expectedVersion: wholeNumber("cas: version", wordText(args[1]!), 0), value: args[2]! };
    case "del":
      argCount(name, args, 1, 1);
      return { op: "del", key: args[0]! };
    case "mget":
      argCount(name, args, 1, Infinity);
      return { op: "mget", keys: args };
    case "bench":
      return parseBench(args);
    case "stats":
    case "save":
      argCount(name, args, 0, 0);
      return { op: name };
    case "help":
      argCount(name, args, 0, 1);
      return { op: "help", topic: args.length === 0 ? null : wordText(args[0]!).toLowerCase() };
    case "quit":
    case "exit":
      argCount("quit", args, 0, 0);
      return { op: "quit" };
    default:
      throw new UsageError(`unknown command "${wordText(words[0]!)}"; try help`);
  }
}
