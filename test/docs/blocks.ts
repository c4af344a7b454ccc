/**
 * Code blocks of a Markdown page, for the docs test (readme.test.ts): every fenced block with
 * its language tag and the line its code starts on.
 *
 * Rules the docs follow (checked by fenceProblems): every fence names its language; TypeScript
 * is fenced `ts` (or `typescript`) and is run; a snippet that is not a whole program is fenced
 * as what it is (`sh`, `text`), never as a JavaScript or TypeScript dialect that would be
 * silently left out.
 *
 * A block shows what it prints with a comment after the call: `console.log(value); // v7`. Those
 * comments are checked (outputProblems): each must match a line of the block's output, in
 * order, where `<...>` (e.g. `<port>`) stands for any text. So a block that exits 0 without
 * printing what it says (a callback that never ran) fails too.
 *
 * Example:
 *   for (const b of codeBlocks(readFileSync("README.md", "utf8"))) if (b.runs) check(b.code, b.fenceLine);
 */

export interface CodeBlock {
  /** The fence's language tag, lower case ("" when it has none). */
  lang: string;
  /** 1-based line of the opening fence. */
  fenceLine: number;
  /** The code between the fences (no fence lines), ending with a newline. */
  code: string;
  /** A TypeScript block: type-checked and run. */
  runs: boolean;
}

/** Languages that are TypeScript programs and run. */
const RUN_LANGS = new Set(["ts", "typescript"]);
/** Languages that look like code a reader would run but that the docs test would not: refused. */
const REFUSED_LANGS = new Set(["js", "javascript", "jsx", "tsx", "mts", "cts", "mjs", "cjs"]);

const FENCE = /^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)/;

/** The fenced blocks of `markdown`, in order. Throws on a fence that is never closed. */
export function codeBlocks(markdown: string): CodeBlock[] {
  const lines = markdown.split("\n");
  const out: CodeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]!);
    if (!open) continue;
    const marker = open[2]!;
    const lang = open[3]!.toLowerCase();
    const body: string[] = [];
    let j = i + 1;
    // A closing fence: the same character, at least as long, nothing after it.
    const close = new RegExp(`^ {0,3}${marker[0] === "`" ? "`" : "~"}{${marker.length},}\\s*$`);
    while (j < lines.length && !close.test(lines[j]!)) body.push(lines[j++]!);
    if (j === lines.length) throw new Error(`the code block opened at line ${i + 1} is never closed`);
    out.push({ lang, fenceLine: i + 1, code: body.join("\n") + "\n", runs: RUN_LANGS.has(lang) });
    i = j;
  }
  return out;
}

/** What breaks the rules above, one line per block ("line 12: ..."); empty when all is well. */
export function fenceProblems(blocks: CodeBlock[]): string[] {
  const out: string[] = [];
  for (const b of blocks) {
    if (b.lang === "") out.push(`line ${b.fenceLine}: a fence without a language (use ts for code that runs, text or sh otherwise)`);
    else if (REFUSED_LANGS.has(b.lang)) out.push(`line ${b.fenceLine}: a ${b.lang} block would not be run; fence TypeScript as ts`);
  }
  return out;
}

/** The output a block's comments promise: the text after `console.log(...); //`, line by line. */
export function expectedOutput(code: string): string[] {
  const out: string[] = [];
  for (const line of code.split("\n")) {
    const m = /^\s*console\.log\(.*\);\s*\/\/\s*(.+?)\s*$/.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
}

/** Promised lines that `stdout` lacks (in order; `<...>` matches any text); empty when all are there. */
export function outputProblems(expected: string[], stdout: string): string[] {
  const lines = stdout.split("\n").map((l) => l.trimEnd());
  const missing: string[] = [];
  let at = 0;
  for (const want of expected) {
    const parts = want.split(/<[^<>]*>/).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const pattern = new RegExp(`^${parts.join(".*?")}$`);
    let found = -1;
    for (let i = at; i < lines.length; i++) {
      if (pattern.test(lines[i]!)) {
        found = i;
        break;
      }
    }
    if (found < 0) missing.push(want);
    else at = found + 1;
  }
  return missing;
}
