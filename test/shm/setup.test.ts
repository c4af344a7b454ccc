/**
 * shm control-path errors: a second listener of the same name, a client speaking another
 * segment version, a segment whose header has another version; segments are created 0600.
 */
import { afterEach, expect, test } from "bun:test";
import { readdirSync, statSync } from "node:fs";
import { ConnectError, listen, UsageError } from "../../src/index.ts";
import { ShmMapping, shmUnlink } from "../../src/ffi/libc.ts";
import { computeLayout, DEFAULT_SEGMENT_CONFIG, HDR_VERSION, readHeader, SEGMENT_VERSION, writeHeader } from "../../src/shm/layout.ts";

afterEach(() => {
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
});

test("a second listener with the same name is a clear error", async () => {
  const name = `dup-${process.pid}`;
  const first = await listen(`shm://${name}`);
  try {
    const e = await listen(`shm://${name}`).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain(`shm listen "${name}": a listener with this name already exists`);
  } finally {
    first.close(true);
  }
});

test("a client speaking another segment version is refused with both versions named", async () => {
  const name = `ver-${process.pid}`;
  const l = await listen(`shm://${name}`);
  try {
    const reply = await new Promise<string>((resolve, reject) => {
      let text = "";
      Bun.connect({
        unix: `\0hotpath-shm-${name}`,
        socket: {
          open(s) {
            s.write(`${JSON.stringify({ hello: "hotpath-shm", version: 99, segment: `/hotpath-${name}-x`, bytes: 4096 })}\n`);
          },
          data(_s, d) {
            text += Buffer.from(d).toString();
          },
          close() {
            resolve(text);
          },
          error(_s, e) {
            reject(e);
          },
        },
      }).catch(reject);
    });
    expect(reply).toContain("version 99");
    expect(reply).toContain(`this server ${SEGMENT_VERSION}`);
  } finally {
    l.close(true);
  }
});

test("a segment header with another version, or no magic, is refused with the values", () => {
  const layout = computeLayout(DEFAULT_SEGMENT_CONFIG);
  const words = new Uint32Array(64);
  writeHeader(words, layout, 1);
  expect(readHeader(words, "seg", layout.totalBytes).totalBytes).toBe(layout.totalBytes);
  words[HDR_VERSION / 4] = 7;
  expect(() => readHeader(words, "seg", layout.totalBytes)).toThrow(new UsageError(`seg: segment has version 7, expected ${SEGMENT_VERSION}`));
  words[0] = 0;
  expect(() => readHeader(words, "seg", layout.totalBytes)).toThrow(/bad magic/);
});

test("segments are created with mode 0600", () => {
  const name = `/hotpath-mode-${process.pid}`;
  const m = ShmMapping.create(name, 4096);
  try {
    expect(statSync(`/dev/shm${name}`).mode & 0o777).toBe(0o600);
  } finally {
    m.close();
    shmUnlink(name);
  }
});
