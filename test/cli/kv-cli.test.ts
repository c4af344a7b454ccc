/**
 * `hotpath kv-server` and `hotpath kv-client` run for real: servers are `bun src/cli/hotpath.ts
 * kv-server ...` processes on 127.0.0.1 port 0 (and shm), clients are processes too, fed
 * through stdin, -c, or a pseudo-terminal (util-linux `script`, part of Debian's essential
 * bsdutils). Every server is killed by pid in afterAll whatever happens; temp files removed.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { removeStaleSocketFiles } from "../helpers/peer.ts";
import { COMMAND_USAGE } from "../../src/cli/kv-command.ts";

const CLI = new URL("../../src/cli/hotpath.ts", import.meta.url).pathname;
/** Watchdog of one client run or server start: a hang fails the test instead of holding it. */
const RUN_TIMEOUT_MS = 30_000;
/** Each test's watchdog: several processes start per test on a busy machine. */
setDefaultTimeout(120_000);
const TMP = mkdtempSync(join(tmpdir(), "hotpath-kv-cli-"));

interface Server {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  urls: string[];
  /** stdout lines after the listening lines. */
  extra: string[];
  stderr: Promise<string>;
}
const servers: Server[] = [];

afterAll(async () => {
  for (const s of servers) {
    if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill(9);
    await s.proc.exited;
  }
  await removeStaleSocketFiles();
  rmSync(TMP, { recursive: true, force: true });
});

/** Starts a kv-server and reads its `listening URL` lines (one per --listen). */
async function startServer(args: string[]): Promise<Server> {
  const proc = Bun.spawn(["bun", CLI, "kv-server", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const listens = args.filter((a) => a === "--listen").length;
  const s: Server = { proc, urls: [], extra: [], stderr: new Response(proc.stderr).text() };
  servers.push(s);
  const reader = proc.stdout.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  while (s.urls.length < listens) {
    const chunk = await Promise.race([reader.read(), Bun.sleep(Math.max(1, deadline - Date.now())).then(() => null)]);
    if (chunk === null) throw new Error(`kv-server ${args.join(" ")}: no listening lines within ${RUN_TIMEOUT_MS} ms`);
    if (chunk.done) throw new Error(`kv-server ${args.join(" ")} exited (${await proc.exited}): ${await s.stderr}`);
    buf += dec.decode(chunk.value, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith("listening ")) s.urls.push(line.slice("listening ".length));
      else s.extra.push(line);
    }
  }
  reader.releaseLock();
  return s;
}

/** SIGTERM, then the exit status and stderr. */
async function stopServer(s: Server): Promise<{ code: number; stderr: string }> {
  s.proc.kill("SIGTERM");
  const code = await Promise.race([s.proc.exited, Bun.sleep(RUN_TIMEOUT_MS).then(() => -1)]);
  if (code === -1) throw new Error("kv-server did not exit after SIGTERM");
  return { code, stderr: await s.stderr };
}

async function client(args: string[], stdin = ""): Promise<{ code: number | null; out: string; err: string }> {
  const proc = Bun.spawn(["bun", CLI, "kv-client", ...args], { stdin: new TextEncoder().encode(stdin), stdout: "pipe", stderr: "pipe", timeout: RUN_TIMEOUT_MS, killSignal: "SIGKILL" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code: proc.signalCode === null ? code : null, out, err };
}

/** A kv-client fed one line at a time, its stdout read as lines come. */
function session(args: string[]) {
  const proc = Bun.spawn(["bun", CLI, "kv-client", ...args], { stdin: "pipe", stdout: "pipe", stderr: "pipe", timeout: RUN_TIMEOUT_MS, killSignal: "SIGKILL" });
  const got: string[] = [];
  let buf = "";
  const dec = new TextDecoder();
  (async () => {
    for await (const chunk of proc.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        got.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  })();
  return {
    proc,
    /** Sends the lines and resolves to the answer lines up to the `count`th, or up to the line `last`. */
    async send(text: string, count: number | { last: string }): Promise<string[]> {
      const from = got.length;
      proc.stdin.write(text);
      proc.stdin.flush();
      const deadline = Date.now() + RUN_TIMEOUT_MS;
      const enough = () => (typeof count === "number" ? got.length >= from + count : got.indexOf(count.last, from) >= 0);
      while (!enough()) {
        if (Date.now() > deadline) throw new Error(`kv-client: ${got.length - from} of ${count} answer lines within ${RUN_TIMEOUT_MS} ms: ${JSON.stringify(got.slice(from))}`);
        if (proc.exitCode !== null) throw new Error(`kv-client exited ${proc.exitCode}: ${JSON.stringify(got.slice(from))}`);
        await Bun.sleep(10);
      }
      return got.slice(from, typeof count === "number" ? from + count : got.indexOf(count.last, from) + 1);
    },
    async end(): Promise<number> {
      proc.stdin.end();
      return await proc.exited;
    },
  };
}

const lines = (text: string) => text.split("\n").filter((l) => l !== "");
/** A command after which a session's answers are complete, answered by the client alone (a key might belong to a dead server). */
const MARK = "help quit";
const MARK_LINE = COMMAND_USAGE.quit!;

describe("kv-client over stdin, -c and a terminal against a kv-server", () => {
  let server: Server;
  let url: string;

  test("kv-server prints one listening line per listener", async () => {
    const shmName = `kvcli-${process.pid}`;
    server = await startServer(["--listen", "tcp://127.0.0.1:0", "--listen", `shm://${shmName}`, "--memory", "16"]);
    expect(server.urls.length).toBe(2);
    expect(server.urls[0]).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect(server.urls[0]).not.toEndWith(":0");
    expect(server.urls[1]).toBe(`shm://${shmName}`);
    expect(server.extra).toEqual([]);
    url = server.urls[0]!;
  });

  test("a scripted session through stdin: every answer line, errors go on, exit 1", async () => {
    const script = [
      "put k1 v1",
      "get k1",
      'put "a key" "a value"',
      'get "a key"',
      "cas k1 1 v2",
      "cas k1 1 v3",
      "get k1",
      "put bin \\x00\\xff\\n",
      "get bin",
      "mget k1 nope bin",
      "del k1",
      "del k1",
      "get k1",
      "# a comment",
      "",
      "pt k v",
      "put k",
      'put "" v',
      "get 'a key'; del bin",
      "stats",
    ].join("\n");
    const r = await client(["--connect", url], script + "\n");
    expect(r.err).toBe("");
    const got = lines(r.out);
    const keyErr = got.findIndex((l) => l.startsWith("ERR KvKeyError: "));
    expect(keyErr).toBeGreaterThan(0);
    expect(got.slice(0, keyErr)).toEqual([
      "OK version 1",
      '"v1" (version 1)',
      "OK version 2",
      '"a value" (version 2)',
      "OK version 3",
      "MISMATCH version 3",
      '"v2" (version 3)',
      "OK version 4",
      '"\\x00\\xff\\n" (version 4)',
      '1) "v2" (version 3)',
      "2) (nil)",
      '3) "\\x00\\xff\\n" (version 4)',
      "1",
      "0",
      "(nil)",
      'ERR UsageError: unknown command "pt"; try help',
      "ERR UsageError: put takes 2 arguments, got 1; usage: put KEY VALUE",
    ]);
    const rest = got.slice(keyErr + 1);
    expect(rest.slice(0, 3)).toEqual(['"a value" (version 2)', "1", `server ${url}`]);
    expect(rest).toContain("  keys 1");
    expect(r.code).toBe(1);
  });

  test("stdin with no failing command exits 0; quit ends the script early", async () => {
    const r = await client(["--connect", url], "put s1 x\nget s1\nquit\nput s2 never\n");
    expect(r.code).toBe(0);
    expect(lines(r.out)).toEqual([expect.stringMatching(/^OK version \d+$/), expect.stringMatching(/^"x" \(version \d+\)$/)]);
    const after = await client(["--connect", url, "-c", "get s2"]);
    expect(after.out).toBe("(nil)\n");
  });

  test("-c runs ';'-separated commands; exit 1 when one fails", async () => {
    const ok = await client(["--connect", url, "-c", 'put c1 "with; semicolon"; get c1; del c1']);
    expect(ok.code).toBe(0);
    expect(lines(ok.out)).toEqual([expect.stringMatching(/^OK version (\d+)$/), expect.stringMatching(/^"with; semicolon" \(version \d+\)$/), "1"]);
    const bad = await client(["--connect", url, "-c", "get c1; cas c1 x v; get c1"]);
    expect(bad.code).toBe(1);
    expect(lines(bad.out)).toEqual(["(nil)", 'ERR UsageError: cas: version "x" is not a whole number', "(nil)"]);
    const absent = await client(["--connect", url, "-c", "cas fresh 0 x; cas fresh 0 y; get fresh"]);
    const [first, second, third] = lines(absent.out);
    const v = /^OK version (\d+)$/.exec(first!)![1];
    expect([second, third]).toEqual([`MISMATCH version ${v}`, `"x" (version ${v})`]); // version 0: only if absent
    const quote = await client(["--connect", url, "-c", 'get "open']);
    expect(quote.code).toBe(1);
    expect(quote.out).toBe('ERR UsageError: unterminated " quote\n');
  });

  test("both listeners serve the same store (tcp and shm)", async () => {
    await client(["--connect", url, "-c", "put both yes"]);
    const r = await client(["--connect", server.urls[1]!, "-c", "get both"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^"yes" \(version \d+\)\n$/);
  });

  test("bench 2000 prints progress on stderr and the ops/s line", async () => {
    const r = await client(["--connect", url, "-c", "bench 2000"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ops\/s \d+ {2}p50 \d+\.\d us {2}p99 \d+\.\d us\n$/);
    expect(r.err).toContain("bench: 2000 get calls, 64-byte values, 1 in flight, 1 server");
    expect(r.err).toContain("bench: 2000/2000 (100%)");
    const put = await client(["--connect", url, "-c", "bench 500 --op put --size 4096 --inflight 16"]);
    expect(put.code).toBe(0);
    expect(put.out).toMatch(/^ops\/s \d+ {2}p50 \d+\.\d us {2}p99 \d+\.\d us\n$/);
    // More in flight than an RPC client's default window (256): sends that find it full wait for completions.
    const wide = await client(["--connect", url, "-c", "bench 2000 --inflight 600"]);
    expect(wide.code).toBe(0);
    expect(wide.out).toMatch(/^ops\/s \d+ {2}p50 /);
    expect(wide.err).toContain("bench: 2000/2000 (100%)");
    // Every call's time is kept, so N is capped: past the cap a usage error, never an out-of-memory one.
    const huge = await client(["--connect", url, "-c", "put capped yes; bench 9007199254740991; get capped"]);
    expect(huge.code).toBe(1);
    expect(lines(huge.out)).toEqual([expect.stringMatching(/^OK version \d+$/), "ERR UsageError: bench: N 9007199254740991 is out of range (1..10000000)", expect.stringMatching(/^"yes" \(version \d+\)$/)]);
  });

  /** kv-client under a pseudo-terminal (`script`), its screen with escape sequences and CRs removed. */
  function pty() {
    const cmd = `bun ${CLI} kv-client --connect ${url}`;
    // TERM: readline edits lines (history on the up arrow) only on a terminal it knows, not on "dumb".
    const proc = Bun.spawn(["script", "-qfec", cmd, "/dev/null"], { stdin: "pipe", stdout: "pipe", stderr: "pipe", env: { ...process.env, TERM: "xterm" } });
    let out = "";
    const dec = new TextDecoder();
    (async () => {
      for await (const chunk of proc.stdout) out += dec.decode(chunk, { stream: true });
    })();
    // eslint-disable-next-line no-control-regex
    const plain = () => out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "");
    return {
      proc,
      plain,
      async waitFor(what: RegExp, count = 1) {
        const deadline = Date.now() + RUN_TIMEOUT_MS;
        while ((plain().match(new RegExp(what, "g")) ?? []).length < count) {
          if (Date.now() > deadline) throw new Error(`no ${what} in the terminal within ${RUN_TIMEOUT_MS} ms; got: ${JSON.stringify(plain())}`);
          if (proc.exitCode !== null) throw new Error(`kv-client under script exited ${proc.exitCode}; got: ${JSON.stringify(plain())}`);
          await Bun.sleep(20);
        }
      },
      type(text: string) {
        proc.stdin.write(text);
        proc.stdin.flush();
      },
      async exited(): Promise<number> {
        return await Promise.race([proc.exited, Bun.sleep(RUN_TIMEOUT_MS).then(() => -1)]);
      },
      async kill() {
        if (proc.exitCode === null) proc.kill(9);
        await proc.exited;
      },
    };
  }

  test("interactive under a pseudo-terminal: the kv> prompt, answers, history, bench, quit", async () => {
    const t = pty();
    try {
      await t.waitFor(/kv> /);
      t.type("put tty hello\r");
      await t.waitFor(/OK version \d+\n/);
      await t.waitFor(/kv> /, 2);
      t.type("get tty\r");
      await t.waitFor(/"hello" \(version \d+\)\n/);
      await t.waitFor(/kv> /, 3);
      t.type("\x1b[A"); // up arrow: the last command again
      t.type("\r");
      await t.waitFor(/"hello" \(version \d+\)\n/, 2);
      t.type("pt\r");
      await t.waitFor(/ERR UsageError: unknown command "pt"; try help\n/);
      t.type("bench 1000\r");
      await t.waitFor(/ops\/s \d+ {2}p50 \d+\.\d us {2}p99 \d+\.\d us\n/);
      t.type("quit\r");
      expect(await t.exited()).toBe(0);
      expect(t.plain()).toContain("kv> put tty hello");
      expect(t.plain()).toContain("bench: 1000/1000 (100%)\n"); // progress rewritten in place on a terminal, a newline at the end
    } finally {
      await t.kill();
    }
  });

  test("interactive: Ctrl-D and Ctrl-C end the session with status 0", async () => {
    for (const key of ["\x04", "\x03"]) {
      const t = pty();
      try {
        await t.waitFor(/kv> /);
        t.type("get tty\r");
        await t.waitFor(/"hello" \(version \d+\)\n/);
        await t.waitFor(/kv> /, 2);
        t.type(key);
        expect(await t.exited()).toBe(0);
      } finally {
        await t.kill();
      }
    }
  });

  test("an unreachable server: exit 1 with a typed error on stderr", async () => {
    const dead = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = dead.port;
    dead.stop(true);
    const r = await client(["--connect", `tcp://127.0.0.1:${port}`, "-c", "get k"]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^hotpath kv-client: KvUnavailableError: .*127\.0\.0\.1/);
  });
});

describe("kv-server with a snapshot", () => {
  test("put, SIGTERM (saved), restart: the value and its version are back", async () => {
    const snap = join(TMP, "round.snap");
    const s1 = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "8", "--snapshot", snap]);
    const put = await client(["--connect", s1.urls[0]!, "-c", "put snapkey \\x00snapvalue; put other 2; get snapkey"]);
    expect(put.code).toBe(0);
    const version = /^OK version (\d+)$/.exec(lines(put.out)[0]!)![1];
    const stop = await stopServer(s1);
    expect(stop.code).toBe(0);
    expect(stop.stderr).toContain(`saved snapshot ${snap} (2 keys)`);
    expect(existsSync(snap)).toBe(true);

    const s2 = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "8", "--snapshot", snap]);
    const get = await client(["--connect", s2.urls[0]!, "-c", "get snapkey; stats"]);
    expect(get.code).toBe(0);
    expect(lines(get.out)[0]).toBe(`"\\x00snapvalue" (version ${version})`);
    expect(lines(get.out)).toContain("  keys 2");
    const stop2 = await stopServer(s2);
    expect(stop2.code).toBe(0);
    expect(stop2.stderr).toContain(`loaded snapshot ${snap} (2 keys)`);
  });

  test("a corrupt snapshot is refused: exit 1, KvSnapshotError, the file left as it was", async () => {
    const snap = join(TMP, "corrupt.snap");
    const s1 = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "8", "--snapshot", snap]);
    await client(["--connect", s1.urls[0]!, "-c", "put a 1; put b 2"]);
    expect((await stopServer(s1)).code).toBe(0);
    const bytes = readFileSync(snap);
    bytes[bytes.length - 3]! ^= 0xff;
    writeFileSync(snap, bytes);
    const proc = Bun.spawn(["bun", CLI, "kv-server", "--listen", "tcp://127.0.0.1:0", "--memory", "8", "--snapshot", snap], { stdout: "pipe", stderr: "pipe", timeout: RUN_TIMEOUT_MS });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect(code).toBe(1);
    expect(out).toBe("");
    expect(err).toMatch(/^hotpath kv-server: KvSnapshotError: .*corrupt\.snap/);
    expect(readFileSync(snap)).toEqual(bytes);
  });
});

describe("kv-server flags at work", () => {
  test("several servers: keys spread over both; a dead one fails its keys with KvUnavailableError, the other goes on", async () => {
    const a = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "8"]);
    const b = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "8"]);
    const c = session(["--connect", `${a.urls[0]},${b.urls[0]}`]);
    try {
      const keys = Array.from({ length: 20 }, (_, i) => `key${i}`);
      const puts = await c.send(keys.map((k) => `put ${k} v-${k}\n`).join(""), keys.length);
      expect(puts.every((l) => /^OK version \d+$/.test(l))).toBe(true);
      const mget = await c.send(`mget ${keys.join(" ")}\n`, keys.length);
      expect(mget.map((l) => l.replace(/\(version \d+\)/, "(version V)"))).toEqual(keys.map((k, i) => `${i + 1}) "v-${k}" (version V)`));
      const stats = await c.send(`stats; ${MARK}\n`, { last: MARK_LINE });
      const keyCounts = stats.filter((l) => l.startsWith("  keys ")).map((l) => Number(l.slice("  keys ".length)));
      expect(stats.filter((l) => l.startsWith("server "))).toEqual([`server ${a.urls[0]}`, `server ${b.urls[0]}`]);
      expect(keyCounts.length).toBe(2);
      expect(keyCounts[0]! + keyCounts[1]!).toBe(20);
      expect(Math.min(...keyCounts)).toBeGreaterThan(0);

      b.proc.kill(9);
      await b.proc.exited;
      const gets = await c.send(keys.map((k) => `get ${k}\n`).join(""), keys.length);
      const values = gets.filter((l, i) => l.startsWith(`"v-${keys[i]}" (version `));
      const unavailable = gets.filter((l) => l.startsWith("ERR KvUnavailableError: ") && l.includes(b.urls[0]!.replace("tcp://", "")));
      expect(values.length).toBe(keyCounts[0]);
      expect(unavailable.length).toBe(keyCounts[1]);
      const after = await c.send(`stats; ${MARK}\n`, { last: MARK_LINE });
      const at = after.indexOf(`server ${b.urls[0]}`);
      expect(at).toBeGreaterThan(0);
      expect(after[at + 1]).toStartWith("  ERR KvUnavailableError: ");
      expect(after).toContain(`  keys ${keyCounts[0]}`); // the live one still answers
      expect(await c.end()).toBe(1);
    } finally {
      if (c.proc.exitCode === null) c.proc.kill(9);
    }
  });

  test("memory full: KvFullError without eviction, room made with --evict lru; a value larger than the arena: KvValueTooLargeError", async () => {
    const full = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "1"]);
    const r1 = await client(["--connect", full.urls[0]!, "-c", "bench 200 --op put --size 65536 --inflight 4; put after ok"]);
    expect(r1.code).toBe(1);
    expect(lines(r1.out)).toEqual([expect.stringMatching(/^ERR KvFullError: kv: no memory for an entry of \d+ bytes/), expect.stringMatching(/^OK version \d+$/)]);
    const big = await client(["--connect", full.urls[0]!, "-c", "bench 1 --op put --size 2000000"]); // more than 1 MiB can ever hold
    expect(big.code).toBe(1);
    expect(big.out).toMatch(/^ERR KvValueTooLargeError: kv: value of 2000000 bytes, the limit is \d+/);
    const lru = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "1", "--evict", "lru"]);
    const r2 = await client(["--connect", lru.urls[0]!, "-c", "bench 200 --op put --size 65536 --inflight 4; stats"]);
    expect(r2.code).toBe(0);
    expect(lines(r2.out)[0]).toMatch(/^ops\/s \d+ {2}p50 /);
    const evictions = lines(r2.out).find((l) => l.startsWith("  evictions "));
    expect(Number(evictions!.slice("  evictions ".length))).toBeGreaterThan(0);
  });

  test("--max-key-bytes: a key at the limit is stored, one byte more is a KvKeyError", async () => {
    const s = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "4", "--max-key-bytes", "8"]);
    const r = await client(["--connect", s.urls[0]!, "-c", "put 12345678 v; put 123456789 v"]);
    expect(r.code).toBe(1);
    expect(lines(r.out)).toEqual([expect.stringMatching(/^OK version \d+$/), "ERR KvKeyError: kv: key of 9 bytes, must be 1 to 8"]);
  });

  test("save: written at once with --snapshot; without one, a UsageError from the server", async () => {
    const snap = join(TMP, "save.snap");
    const s = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "4", "--snapshot", snap]);
    const r = await client(["--connect", s.urls[0]!, "-c", "put k v; save"]);
    expect(lines(r.out)).toEqual([expect.stringMatching(/^OK version \d+$/), "OK"]);
    expect(existsSync(snap)).toBe(true);
    const plain = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "4"]);
    const r2 = await client(["--connect", plain.urls[0]!, "-c", "save"]);
    expect(r2.code).toBe(1);
    expect(r2.out).toStartWith("ERR UsageError: kv SAVE: this server has no snapshot path");
    // SIGINT closes as gracefully as SIGTERM.
    const stop = await (async () => {
      s.proc.kill("SIGINT");
      return { code: await s.proc.exited, stderr: await s.stderr };
    })();
    expect(stop.code).toBe(0);
    expect(stop.stderr).toContain("SIGINT: closing");
    expect(stop.stderr).toContain(`saved snapshot ${snap} (1 keys)`);
  });

  test("--hugepages: served either way; without huge pages the reason follows the listening lines", async () => {
    const s = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "4", "--hugepages"]);
    const r = await client(["--connect", s.urls[0]!, "-c", "put k v; get k; stats"]);
    expect(r.code).toBe(0);
    const huge = lines(r.out).find((l) => l.startsWith("  hugepages "));
    if (huge === "  hugepages true") expect(s.extra).toEqual([]);
    else {
      expect(huge).toBe("  hugepages false");
      expect(s.extra.length).toBe(1);
      expect(s.extra[0]).toStartWith("no huge pages: ");
    }
  });

  test("a listener that cannot be opened: exit 1 with the error", async () => {
    const s = await startServer(["--listen", "tcp://127.0.0.1:0", "--memory", "4"]);
    const proc = Bun.spawn(["bun", CLI, "kv-server", "--listen", s.urls[0]!, "--memory", "4"], { stdout: "pipe", stderr: "pipe", timeout: RUN_TIMEOUT_MS });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect(code).toBe(1);
    expect(out).toBe("");
    expect(err).toStartWith("hotpath kv-server: ");
  });

  test("over ucx: one-sided GETs by default (the server counts no get), RPC GETs with --no-one-sided", async () => {
    const one = await startServer(["--listen", "ucx://127.0.0.1:0", "--memory", "4"]);
    const rpc = await startServer(["--listen", "ucx://127.0.0.1:0", "--memory", "4", "--no-one-sided"]);
    const gets = async (url: string) => {
      const r = await client(["--connect", url, "-c", "put k \\x00v; get k; get k; stats; bench 300"]);
      expect(r.code).toBe(0);
      const out = lines(r.out);
      expect(out[1]).toMatch(/^"\\x00v" \(version \d+\)$/);
      expect(out[out.length - 1]).toMatch(/^ops\/s \d+ {2}p50 /);
      return out.find((l) => l.startsWith("  gets "));
    };
    expect(await gets(one.urls[0]!)).toBe("  gets 0");
    expect(await gets(rpc.urls[0]!)).toBe("  gets 2");
  });
});

describe("bad flags: exit 2 with a usage line", () => {
  const run = (args: string[]) => {
    const r = Bun.spawnSync(["bun", CLI, ...args], { timeout: RUN_TIMEOUT_MS });
    return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
  };
  test.each([
    [["kv-server", "--listen", "tcp://127.0.0.1:0"], "--memory MB is required"],
    [["kv-server", "--memory", "8"], "--listen URL is required"],
    [["kv-server", "--listen", "tcp://127.0.0.1:0", "--memory", "lots"], '--memory "lots" is not a whole number'],
    // The store refuses an arena over 2 GiB: the flag's range is the store's, refused as a usage error.
    [["kv-server", "--listen", "tcp://127.0.0.1:0", "--memory", "2049"], "--memory 2049 is out of range (1..2048)"],
    [["kv-server", "--listen", "tcp://127.0.0.1:0", "--memory", "4194304"], "--memory 4194304 is out of range (1..2048)"],
    [["kv-server", "--listen", "tcp://127.0.0.1:0", "--memory", "0"], "--memory 0 is out of range (1..2048)"],
    [["kv-server", "--listen", "tcp://127.0.0.1:0", "--memory", "8", "--evict", "fifo"], '--evict "fifo": the policies are lru and none'],
    [["kv-server", "--listen", "tcp://127.0.0.1:0", "--memory", "8", "--fast"], 'unknown argument "--fast"'],
    [["kv-server", "--listen", "tcp://127.0.0.1:0", "--memory", "8", "--max-key-bytes", "0"], "--max-key-bytes 0 is out of range"],
  ])("kv-server %j", (args, message) => {
    const r = run(args as string[]);
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toStartWith(`hotpath kv-server: ${message}`);
    expect(r.err).toContain("\nusage: hotpath kv-server --listen URL");
  });
  test.each([
    [["kv-client"], "--connect URL is required"],
    [["kv-client", "--connect"], "--connect needs a value"],
    [["kv-client", "--connect", "tcp://127.0.0.1:1", "--bogus"], 'unknown argument "--bogus"'],
    [["kv-client", "--connect", "tcp://127.0.0.1:1", "-c"], "-c needs a value"],
  ])("kv-client %j", (args, message) => {
    const r = run(args as string[]);
    expect(r.code).toBe(2);
    expect(r.err).toStartWith(`hotpath kv-client: ${message}`);
    expect(r.err).toContain("\nusage: hotpath kv-client --connect URL");
  });
  test("--help prints the usage and exits 0", () => {
    expect(run(["kv-server", "--help"])).toMatchObject({ code: 0, err: "" });
    expect(run(["kv-client", "-h"]).out).toStartWith("usage: hotpath kv-client");
  });
});
