/**
 * The docs test's Markdown reading (blocks.ts): which blocks run, fences the rules refuse, a
 * fence never closed, and the output comments a block promises.
 */
import { expect, test } from "bun:test";
import { codeBlocks, expectedOutput, fenceProblems, outputProblems } from "./blocks.ts";

const page = [
  "# Title", //                                1
  "```ts", //                                  2
  'console.log("a"); // a', //                 3
  "```", //                                    4
  "text", //                                   5
  "````typescript", //                         6
  "```", //  a shorter fence inside a longer    7
  "````", //                                   8
  "```sh", //                                  9
  "npm test", //                               10
  "```", //                                    11
  "```", //                                    12
  "plain", //                                  13
  "```", //                                    14
  "```js", //                                  15
  "x()", //                                    16
  "```", //                                    17
].join("\n");

test("blocks: language, fence line, code; ts and typescript run, nothing else does", () => {
  const blocks = codeBlocks(page);
  expect(blocks.map((b) => [b.lang, b.fenceLine, b.runs])).toEqual([
    ["ts", 2, true],
    ["typescript", 6, true],
    ["sh", 9, false],
    ["", 12, false],
    ["js", 15, false],
  ]);
  expect(blocks[0]!.code).toBe('console.log("a"); // a\n');
  expect(blocks[1]!.code).toBe("```\n");
});

test("fences without a language and JavaScript-like fences are problems; sh and text are not", () => {
  expect(fenceProblems(codeBlocks(page))).toEqual([
    "line 12: a fence without a language (use ts for code that runs, text or sh otherwise)",
    "line 15: a js block would not be run; fence TypeScript as ts",
  ]);
});

test("a fence that is never closed is an error naming its line", () => {
  expect(() => codeBlocks("intro\n```ts\nconst x = 1;\n")).toThrow("line 2");
});

test("output comments: promised in order, <...> matches any text", () => {
  const code = 'console.log(a); // v7\nfoo(); // not output\n  console.log(b); // tcp://127.0.0.1:<port>\n';
  const want = expectedOutput(code);
  expect(want).toEqual(["v7", "tcp://127.0.0.1:<port>"]);
  expect(outputProblems(want, "v7\nnoise\ntcp://127.0.0.1:4242\n")).toEqual([]);
  expect(outputProblems(want, "tcp://127.0.0.1:4242\nv7\n")).toEqual(["tcp://127.0.0.1:<port>"]);
  expect(outputProblems(["a (b) [c]"], "a (b) [c]")).toEqual([]);
  expect(outputProblems(["v7"], "v77")).toEqual(["v7"]);
});
