/**
 * shm access control between two Unix users. Running as root, the test creates a second user
 * with useradd (a unique name, no home, shell /usr/sbin/nologin) and removes it with userdel in
 * afterAll; that user's processes run test/shm/access-peer.ts through
 * `setpriv --reuid --regid --clear-groups bun`, from a copy of src/ and the script in a
 * directory every user can read (the repository may live where other users cannot). Not root:
 * the whole file is skipped, and its name says so.
 *
 * Cases: a client of another uid is refused by default (AuthError on the client, refusedAuth and
 * onRefused on the server), admitted with allow.uids or allow.gids and its calls work (a root
 * server); root is not admitted implicitly by a user's server, and a user's server that admits
 * root cannot take root's segment (the ptrace rule) and says so; a segment owned by another uid
 * is refused; a directory squatted by another uid is reported on the listen and the connect side;
 * a listener of another uid on a name in the user's own directory is refused by the user's client
 * before it sends anything, and by a root client that expects the user; a live listener of the
 * user holding a name is reported with its pid and uid; a user flooding a root server's socket
 * (which has an fd limit of 400) gets only its share of the handshake budget, so root keeps
 * connecting. Every user, directory, file and process made here is removed.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { AuthError, connect, rpcConnect, serve, type HotpathError, type RefusalReason, type Serving } from "../../src/index.ts";
import { ShmMapping } from "../../src/ffi/libc.ts";
import { computeLayout, DEFAULT_SEGMENT_CONFIG, writeHeader } from "../../src/segment/layout.ts";
import { MAX_PENDING_PER_UID } from "../../src/segment/handshake.ts";
import { socketDirOf } from "../../src/segment/socket-dir.ts";
import { childServer } from "./access-child.ts";

const isRoot = process.geteuid?.() === 0;
const REPO = new URL("../../", import.meta.url).pathname;
const prefix = `usr-${process.pid}-`;
let n = 0;
const unique = () => `${prefix}${n++}`;
/** More connections than the root server's fd limit (400) leaves room for. */
const FLOOD_SOCKETS = 500;
/** Watchdog for one user process. */
const PEER_MS = 20_000;

let user = "";
let userUid = -1;
let userGid = -1;
let copy = "";
let userDir = "";
const running: Array<{ kill(sig?: number): void }> = [];

/** Output lines of a process, and the first JSON line once it is there. */
function linesOf(proc: { stdout: ReadableStream<Uint8Array> }) {
  const lines: string[] = [];
  const done = (async () => {
    let buf = "";
    const decoder = new TextDecoder();
    for await (const chunk of proc.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  })();
  const next = async (i: number): Promise<any> => {
    const deadline = Date.now() + PEER_MS;
    while (lines.length <= i) {
      if (Date.now() > deadline) throw new Error(`user peer: no line ${i} within ${PEER_MS} ms (got ${JSON.stringify(lines)})`);
      await Bun.sleep(5);
    }
    return JSON.parse(lines[i]!);
  };
  return { lines, done, next };
}

/** Starts access-peer.ts as the second user; `fds` are passed on as fds 3, 4, … */
function asUser(args: string[], fds: number[] = []) {
  const proc = Bun.spawn(["setpriv", `--reuid=${userUid}`, `--regid=${userGid}`, "--clear-groups", "bun", join(copy, "test/shm/access-peer.ts"), ...args], {
    cwd: copy,
    env: { ...process.env, HOME: copy, TMPDIR: copy },
    stdio: ["pipe", "pipe", "inherit", ...fds],
  });
  running.push(proc);
  const out = linesOf(proc as unknown as { stdout: ReadableStream<Uint8Array> });
  return {
    proc,
    first: () => out.next(0),
    line: (i: number) => out.next(i),
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill(9), PEER_MS);
      await proc.exited;
      clearTimeout(t);
    },
  };
}

/** Runs a one-shot access-peer.ts command as the second user and returns its JSON line. */
async function userRuns(args: string[], fds: number[] = []): Promise<any> {
  const p = asUser(args, fds);
  try {
    return await p.first();
  } finally {
    await p.stop();
  }
}

function run(cmd: string[]): string {
  const r = Bun.spawnSync(cmd);
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: exit ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

const echo = { 1: (h: { data: Uint8Array }) => h.data };

describe.skipIf(!isRoot)(isRoot ? "shm between two Unix users (a second user made with useradd)" : "shm between two Unix users: SKIPPED, not root (useradd needs root)", () => {
  beforeAll(() => {
    user = `hp${process.pid}x${Math.floor(Math.random() * 1e6)}`.slice(0, 31);
    run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", user]);
    userUid = Number(run(["id", "-u", user]));
    userGid = Number(run(["id", "-g", user]));
    userDir = socketDirOf(userUid);
    rmSync(userDir, { recursive: true, force: true }); // a fresh uid has none; a reused one may
    copy = mkdtempSync("/tmp/hotpath-users-");
    cpSync(join(REPO, "src"), join(copy, "src"), { recursive: true });
    mkdirSync(join(copy, "test/shm"), { recursive: true });
    cpSync(join(REPO, "test/shm/access-peer.ts"), join(copy, "test/shm/access-peer.ts"));
    cpSync(join(REPO, "node_modules/msgpackr"), join(copy, "node_modules/msgpackr"), { recursive: true });
    run(["chmod", "-R", "a+rX", copy]);
    chmodSync(copy, 0o755);
  });

  afterAll(() => {
    for (const p of running) p.kill(9);
    if (userDir) rmSync(userDir, { recursive: true, force: true });
    if (copy) rmSync(copy, { recursive: true, force: true });
    if (user) Bun.spawnSync(["userdel", user]);
    expect(readdirSync(socketDirOf(0)).filter((f) => f.includes(prefix))).toEqual([]);
    expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
    if (user) expect(Bun.spawnSync(["id", user]).exitCode).not.toBe(0);
  });

  /** A root server on a fresh name with `allow`; its refusals are recorded. */
  async function rootServer(allow?: { uids?: number[]; gids?: number[] }) {
    const closed: Array<{ uid: number; pid: number; gid: number } | undefined> = [];
    const s: Serving = await serve(`shm://${unique()}`, echo, { allow, onSessionClose: (session) => void closed.push(session.conn.peerCredentials) });
    const refusals: Array<{ error: HotpathError; reason: RefusalReason }> = [];
    s.listener.onRefused((error, reason) => void refusals.push({ error, reason }));
    return { s, refusals, closed };
  }

  test("a client of another uid is refused by default: AuthError on the client, refusedAuth and onRefused on the server", async () => {
    const { s, refusals } = await rootServer();
    try {
      const got = await userRuns(["rpc", s.url, "0"]);
      expect(got.error?.name).toBe("AuthError");
      expect(got.error.code).toBe("E_AUTH");
      expect(got.error.message).toContain(`uid ${userUid} (gid ${userGid}, pid`);
      expect(got.error.message).toContain("is not admitted: this listener runs as uid 0");
      expect(s.listener.stats.refusedAuth).toBe(1);
      expect(s.listener.stats.accepted).toBe(0);
      expect(refusals.length).toBe(1);
      expect(refusals[0]!.reason).toBe("auth");
      expect(refusals[0]!.error).toBeInstanceOf(AuthError);
    } finally {
      s.close();
    }
  }, 60_000);

  test("admitted with allow: { uids: [its uid] }: its calls work, and both sides know who the other is", async () => {
    const { s, closed } = await rootServer({ uids: [userUid] });
    try {
      const got = await userRuns(["rpc", s.url, "0"]);
      expect(got.error).toBeUndefined();
      expect(got.echo).toEqual([1, 2, 3]);
      expect(got.creds).toEqual({ pid: process.pid, uid: 0, gid: 0 });
      for (let i = 0; i < 400 && closed.length === 0; i++) await Bun.sleep(5);
      expect(closed[0]).toEqual({ pid: expect.any(Number), uid: userUid, gid: userGid });
      expect(s.listener.stats).toEqual({ accepted: 1, refusedAuth: 0, refusedProtocol: 0, refusedBusy: 0 });
    } finally {
      s.close();
    }
  }, 60_000);

  test("admitted with allow: { gids: [its gid] }", async () => {
    const { s } = await rootServer({ gids: [userGid] });
    try {
      const got = await userRuns(["rpc", s.url, "0"]);
      expect(got.error).toBeUndefined();
      expect(got.echo).toEqual([1, 2, 3]);
    } finally {
      s.close();
    }
  }, 60_000);

  test("a segment owned by another uid (root's memfd, handed to the user's process) is refused", async () => {
    const { s, refusals } = await rootServer({ uids: [userUid] });
    const layout = computeLayout(DEFAULT_SEGMENT_CONFIG);
    const m = ShmMapping.createSealed("hotpath-not-yours", layout.totalBytes);
    writeHeader(new Uint32Array(m.buffer, 0, 32), layout, 1);
    try {
      const path = `${socketDirOf(0)}/${s.url.replace("shm://", "shm-")}.sock`;
      const got = await userRuns(["raw", path, JSON.stringify({ hello: "hotpath-shm" }), "fd:3"], [m.fd]);
      expect(got.lines[0]?.refused).toBe("protocol");
      expect(got.lines[0].error).toContain(`is owned by uid 0, but the client runs as uid ${userUid}`);
      expect(got.closed).toBe(true);
      expect(refusals.at(-1)!.reason).toBe("protocol");
      expect(s.listener.stats.accepted).toBe(0);
    } finally {
      m.close();
      s.close();
    }
  }, 60_000);

  test("the user's server refuses root unless listed, and when it lists root it cannot take root's segment (ptrace rule) and says so", async () => {
    const plain = asUser(["listen", `shm://${unique()}`]);
    const admitsRoot = asUser(["listen", `shm://${unique()}`, "0"]);
    try {
      const a = await plain.first();
      const b = await admitsRoot.first();
      expect(a.error).toBeUndefined();
      expect(b.error).toBeUndefined();
      const e1 = await rpcConnect(a.url, { expectUid: userUid }).catch((x) => x);
      expect(e1).toBeInstanceOf(AuthError);
      expect(e1.message).toContain(`uid 0 (gid 0, pid ${process.pid}) is not admitted: this listener runs as uid ${userUid} (root is not admitted unless listed`);
      expect((await plain.line(1)).refused.reason).toBe("auth");
      const e2 = await rpcConnect(b.url, { expectUid: userUid }).catch((x) => x);
      expect(e2).toBeInstanceOf(AuthError);
      expect(e2.message).toContain("a server that is not root cannot take the memory of a process of another uid (the kernel's ptrace access rule: pidfd_getfd needs the right to ptrace-attach");
      const r2 = (await admitsRoot.line(1)).refused;
      expect(r2.reason).toBe("auth");
      expect(r2.name).toBe("AuthError");
    } finally {
      await plain.stop();
      await admitsRoot.stop();
    }
    expect(readdirSync(userDir).filter((f) => f.includes(prefix))).toEqual([]);
  }, 60_000);

  test("a live listener of the user holding a name: a second listen is told its pid and uid", async () => {
    const name = unique();
    const first = asUser(["listen", `shm://${name}`]);
    try {
      const up = await first.first();
      const got = await userRuns(["listen-connect", `shm://${name}`]);
      expect(got.listen.name).toBe("ConnectError");
      expect(got.listen.message).toContain(`a listener with this name already runs: pid ${up.pid}, uid ${userUid}`);
      expect(got.connect).toBeNull(); // the user's own client reaches the user's own server
    } finally {
      await first.stop();
    }
  }, 60_000);

  test("a directory squatted by root for the user: the user's listen and connect, and a root client expecting the user, all refuse it", async () => {
    rmSync(userDir, { recursive: true, force: true });
    mkdirSync(userDir);
    chmodSync(userDir, 0o711);
    try {
      const name = unique();
      const got = await userRuns(["listen-connect", `shm://${name}`]);
      const why = `the socket directory ${userDir} cannot be trusted: it is owned by uid 0, not ${userUid} (owner uid 0, mode 0711); another user created it; remove it`;
      expect(got.listen.name).toBe("ConnectError");
      expect(got.listen.message).toBe(`shm listen "${name}": ${why}`);
      expect(got.connect.name).toBe("AuthError");
      expect(got.connect.message).toBe(`shm connect shm://${name}: ${why}`);
      const e = await connect(`shm://${name}`, { expectUid: userUid }).catch((x) => x);
      expect(e).toBeInstanceOf(AuthError);
      expect(e.message).toContain(why);
    } finally {
      rmSync(userDir, { recursive: true, force: true });
    }
  }, 60_000);

  test("a root listener squatting a name in the user's own directory: the user's client and a root client expecting the user refuse it, having sent nothing", async () => {
    mkdirSync(userDir, { recursive: true });
    chownSync(userDir, userUid, userGid);
    chmodSync(userDir, 0o711);
    const name = unique();
    const path = `${userDir}/shm-${name}.sock`;
    let received = 0;
    const squatter = Bun.listen({ unix: path, socket: { data: (_s, d) => void (received += d.length) } });
    chmodSync(path, 0o666);
    try {
      const got = await userRuns(["rpc", `shm://${name}`]);
      expect(got.error?.name).toBe("AuthError");
      expect(got.error.message).toContain(`the listener runs as uid 0 (pid ${process.pid}), expected uid ${userUid}: pass expectUid to connect to another user's server`);
      const e = await connect(`shm://${name}`, { expectUid: userUid }).catch((x) => x);
      expect(e).toBeInstanceOf(AuthError);
      expect(e.message).toContain(`the listener runs as uid 0 (pid ${process.pid}), expected uid ${userUid}`);
      await Bun.sleep(50);
      expect(received).toBe(0); // no hello, no segment reached the squatter
    } finally {
      squatter.stop(true);
      rmSync(userDir, { recursive: true, force: true });
    }
    expect(existsSync(path)).toBe(false);
  }, 60_000);

  test(`a user holding ${FLOOD_SOCKETS} connections to a root server limited to 400 fds gets only its share (${MAX_PENDING_PER_UID}): root's fresh connects and calls keep working`, async () => {
    const server = await childServer(`shm://${unique()}`, { nofile: 400 });
    const path = `${socketDirOf(0)}/${server.url.replace("shm://", "shm-")}.sock`;
    const baseline = server.fds();
    const flood = asUser(["flood", path, String(FLOOD_SOCKETS)]);
    try {
      const f = await flood.first();
      // The user's refused sockets linger (REFUSAL_LINGER_MS) while root connects.
      for (let i = 0; i < 5; i++) {
        const c = await rpcConnect(server.url, { connectTimeoutMs: 3000 });
        expect(await c.request(1, new Uint8Array([i]), { timeoutMs: 3000 })).toEqual(new Uint8Array([i]));
        c.close();
      }
      const held = server.fds() - baseline;
      console.log(`shm users flood: the user's ${FLOOD_SOCKETS} connections: ${f.closed} closed at once, ${f.errors} failed; server fds +${held} while root connected 5 times; busy ${server.refusals("busy")}, auth ${server.refusals("auth")}`);
      expect(held).toBeGreaterThanOrEqual(MAX_PENDING_PER_UID / 2); // the user's share was still held meanwhile
      expect(server.refusals("auth")).toBeLessThanOrEqual(MAX_PENDING_PER_UID);
      expect(server.refusals("busy")).toBeGreaterThanOrEqual(FLOOD_SOCKETS - MAX_PENDING_PER_UID);
      expect(server.refused.find((r) => r.reason === "busy")!.message).toContain(`of uid ${userUid}`);
    } finally {
      await flood.stop();
      await server.stop();
    }
  }, 60_000);
});
