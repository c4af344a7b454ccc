/**
 * The socket directory and the names in it (src/segment/socket-dir.ts): a directory that cannot be
 * trusted (another owner, group/other write, a symbolic link) is refused on both sides with its
 * owner and mode named; a stale socket (its listener was killed) is replaced; a listener removes
 * its name on close only while the name is still its own socket; something that is not a socket
 * is never removed. Untrusted directories are made for a uid nobody uses, so tests running at the
 * same time on this machine never see them.
 */

import { afterAll, afterEach, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { AuthError, ConnectError, connect, listen } from "../../src/index.ts";
import { socketDir, socketDirOf } from "../../src/segment/socket-dir.ts";

const uid = process.geteuid!();
const isRoot = uid === 0;
const prefix = `dir-${process.pid}-`;
let n = 0;
const unique = () => `${prefix}${n++}`;
const own = socketDirOf(uid);
const leftovers = () => readdirSync(own).filter((f) => f.includes(prefix));
/** A uid no account uses (the largest ones are free on any ordinary system). */
const nobodyUid = 4_000_000_000 + (process.pid % 100_000);
const nobodyDir = socketDirOf(nobodyUid);

afterEach(() => {
  rmSync(nobodyDir, { recursive: true, force: true });
  expect(leftovers()).toEqual([]);
  expect(readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"))).toEqual([]);
});
afterAll(() => rmSync(nobodyDir, { recursive: true, force: true }));

test("listen creates the directory 0711 and a socket file anyone may connect to (the credential check decides)", async () => {
  const name = unique();
  const l = await listen(`shm://${name}`);
  try {
    const dir = lstatSync(own);
    expect(dir.isDirectory()).toBe(true);
    expect(dir.uid).toBe(uid);
    expect(dir.mode & 0o777).toBe(0o711);
    const sock = lstatSync(`${own}/shm-${name}.sock`);
    expect(sock.isSocket()).toBe(true);
    expect(sock.mode & 0o777).toBe(0o666);
  } finally {
    l.close(true);
  }
  expect(existsSync(`${own}/shm-${name}.sock`)).toBe(false);
});

test("no directory for the expected uid: ConnectError, no listener", async () => {
  const e = await connect(`shm://${unique()}`, { expectUid: nobodyUid }).catch((x) => x);
  expect(e).toBeInstanceOf(ConnectError);
  expect(e).not.toBeInstanceOf(AuthError);
  expect(e.message).toContain(`there is no socket directory ${nobodyDir}`);
});

test("a directory owned by someone else: refused with its owner and mode, on the connect and the listen side", async () => {
  mkdirSync(nobodyDir);
  chmodSync(nobodyDir, 0o755);
  const e = await connect(`shm://${unique()}`, { expectUid: nobodyUid }).catch((x) => x);
  expect(e).toBeInstanceOf(AuthError);
  expect(e.message).toContain(`the socket directory ${nobodyDir} cannot be trusted: it is owned by uid ${uid}, not ${nobodyUid} (owner uid ${uid}, mode 0755); another user created it; remove it`);
  const l = (() => {
    try {
      socketDir(`shm listen "x"`, nobodyUid, "listen");
    } catch (x) {
      return x as Error;
    }
  })();
  expect(l).toBeInstanceOf(ConnectError);
  expect(l!.message).toContain(`shm listen "x": the socket directory ${nobodyDir} cannot be trusted: it is owned by uid ${uid}`);
});

test.skipIf(!isRoot)("a directory others may write to, or a symbolic link: refused (needs root to make one for another uid)", async () => {
  mkdirSync(nobodyDir);
  chownSync(nobodyDir, nobodyUid, nobodyUid);
  for (const m of [0o777, 0o731, 0o712]) {
    chmodSync(nobodyDir, m);
    const e = await connect(`shm://${unique()}`, { expectUid: nobodyUid }).catch((x) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect(e.message).toContain(`group or others may write to it (owner uid ${nobodyUid}, mode 0${m.toString(8)}); make it mode 0711`);
  }
  rmSync(nobodyDir, { recursive: true });
  symlinkSync(own, nobodyDir);
  const e = await connect(`shm://${unique()}`, { expectUid: nobodyUid }).catch((x) => x);
  expect(e).toBeInstanceOf(AuthError);
  expect(e.message).toContain("it is a symbolic link, not a directory");
  unlinkSync(nobodyDir);
});

test("a stale socket (its listener was killed) is replaced by the next listen", async () => {
  const name = unique();
  const path = `${own}/shm-${name}.sock`;
  const holder = Bun.spawn(["bun", "-e", `Bun.listen({ unix: ${JSON.stringify(path)}, socket: { data() {} } }); console.log("up"); setInterval(() => {}, 1e6);`], { stdout: "pipe" });
  try {
    const reader = holder.stdout.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain("up");
    // While it lives it holds the name.
    const busy = await listen(`shm://${name}`).catch((x) => x);
    expect(busy).toBeInstanceOf(ConnectError);
    expect(busy.message).toContain(`a listener with this name already runs: pid ${holder.pid}, uid ${uid}`);
    holder.kill(9);
    await holder.exited;
    expect(lstatSync(path).isSocket()).toBe(true); // left behind
    const l = await listen(`shm://${name}`);
    const c = await connect(l.url);
    c.close();
    l.close(true);
    expect(existsSync(path)).toBe(false);
  } finally {
    holder.kill(9);
    rmSync(path, { force: true });
  }
});

test("close unlinks the name only while it is still this listener's socket (Bun would remove whatever has the name)", async () => {
  const name = unique();
  const path = `${own}/shm-${name}.sock`;
  const l = await listen(`shm://${name}`);
  // Someone (of this uid) replaces the name with another socket while the listener runs.
  const otherPath = `${own}/other-${prefix}${n++}.sock`;
  const other = Bun.listen({ unix: otherPath, socket: { data() {} } });
  try {
    unlinkSync(path);
    linkSync(otherPath, path);
    l.close(true);
    expect(lstatSync(path).ino).toBe(lstatSync(otherPath).ino);
  } finally {
    other.stop(true);
    rmSync(path, { force: true });
    rmSync(otherPath, { force: true });
  }
});

test("something that is not a socket at the name is reported and left alone", async () => {
  const name = unique();
  const path = `${own}/shm-${name}.sock`;
  writeFileSync(path, "not a socket");
  try {
    const e = await listen(`shm://${name}`).catch((x) => x);
    expect(e).toBeInstanceOf(ConnectError);
    expect(e.message).toContain(`${path} exists and is not a socket (mode 0644); remove it`);
    expect(statSync(path).isFile()).toBe(true);
  } finally {
    rmSync(path, { force: true });
  }
});
