/**
 * shm control-path errors: a second listener of the same name (told who holds it), a client
 * speaking another segment version, a segment whose header has another version, a name too long
 * for a socket path, a hello that never comes; session segments are sealed memfds with no name
 * in /dev/shm.
 */
import { afterEach, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { ConnectError, connect, listen, ProtocolError, UsageError, type HotpathError, type RefusalReason } from "../../src/index.ts";
import { NativeError } from "../../src/errors.ts";
import { fileSeals, LINUX, ShmMapping, truncateFd } from "../../src/ffi/libc.ts";
import { MAX_NAME_CHARS, socketDirOf } from "../../src/segment/socket-dir.ts";
import { computeLayout, DEFAULT_SEGMENT_CONFIG, HDR_VERSION, readHeader, SEGMENT_VERSION, writeHeader } from "../../src/segment/layout.ts";

const uid = process.geteuid!();
const prefix = `setup-${process.pid}-`;

afterEach(() => {
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
  expect(readdirSync(socketDirOf(uid)).filter((f) => f.includes(prefix))).toEqual([]);
});

/** Sends `line` on the listener's socket and returns everything it answers before it closes. */
function rawExchange(name: string, line: string | null): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let text = "";
    Bun.connect({
      unix: `${socketDirOf(uid)}/shm-${name}.sock`,
      socket: {
        open(s) {
          if (line !== null) s.write(line);
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
}

test("a second listener with the same name is a clear error naming the holder's pid and uid", async () => {
  const name = `${prefix}dup`;
  const first = await listen(`shm://${name}`);
  try {
    const e = await listen(`shm://${name}`).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain(`shm listen "${name}": a listener with this name already runs: pid ${process.pid}, uid ${uid}`);
    // The first listener still serves.
    const c = await connect(first.url);
    c.close();
  } finally {
    first.close(true);
  }
});

test("a client speaking another segment version is refused with both versions named, and counted", async () => {
  const name = `${prefix}ver`;
  const l = await listen(`shm://${name}`);
  const refusals: Array<[HotpathError, RefusalReason]> = [];
  l.onRefused((e, r) => void refusals.push([e, r]));
  try {
    const reply = JSON.parse(await rawExchange(name, `${JSON.stringify({ hello: "hotpath-shm", version: 99, fd: 3, bytes: 4096 })}\n`));
    expect(reply.refused).toBe("protocol");
    expect(reply.error).toContain("version 99");
    expect(reply.error).toContain(`this server ${SEGMENT_VERSION}`);
    expect(l.stats).toEqual({ accepted: 0, refusedAuth: 0, refusedProtocol: 1, refusedBusy: 0 });
    expect(refusals.length).toBe(1);
    expect(refusals[0]![0]).toBeInstanceOf(ProtocolError);
    expect(refusals[0]![1]).toBe("protocol");
  } finally {
    l.close(true);
  }
});

test("a client that never sends its hello is refused as a protocol error after the handshake timeout", async () => {
  const name = `${prefix}late`;
  const l = await listen(`shm://${name}`);
  const refusals: HotpathError[] = [];
  l.onRefused((e) => void refusals.push(e));
  try {
    const reply = JSON.parse(await rawExchange(name, null));
    expect(reply.refused).toBe("protocol");
    expect(reply.error).toMatch(/no handshake within \d+ ms/);
    expect(l.stats.refusedProtocol).toBe(1);
    expect(refusals[0]).toBeInstanceOf(ProtocolError);
  } finally {
    l.close(true);
  }
}, 15_000);

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

test("a name too long for a socket path is a UsageError that says the limit", async () => {
  const long = "n".repeat(MAX_NAME_CHARS + 1);
  for (const op of [() => listen(`shm://${long}`), () => connect(`shm://${long}`), () => listen(`inproc://${long}`)]) {
    const e = await op().catch((x) => x);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toContain(`name must be 1 to ${MAX_NAME_CHARS} letters`);
    expect(e.message).toContain("sun_path");
  }
  const l = await listen(`shm://${prefix}${"m".repeat(MAX_NAME_CHARS - prefix.length)}`);
  l.close(true);
});

test("session segments are sealed memfds: no name in /dev/shm, and nobody can resize them", () => {
  const m = ShmMapping.createSealed("hotpath-seal-test", 8192);
  try {
    const seals = fileSeals(m.fd);
    expect(seals & (LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL)).toBe(LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL);
    const e = (() => {
      try {
        truncateFd(m.fd, 0);
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(NativeError);
    expect((e as NativeError).errno).toBe(1); // EPERM
    expect(() => truncateFd(m.fd, 16384)).toThrow(/EPERM|not permitted/);
    expect(readFileSync("/proc/self/maps", "utf8")).toContain("/memfd:hotpath-seal-test");
    new Uint8Array(m.buffer)[8191] = 1; // still all there
  } finally {
    m.close();
  }
});
