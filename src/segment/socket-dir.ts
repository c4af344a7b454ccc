/**
 * Where the local transports (shm, inproc) meet: pathname Unix sockets in the per-user directory
 * `/tmp/hotpath-<uid>`, a fixed place every user can derive from a uid alone (a
 * $XDG_RUNTIME_DIR is private to its user, so a server that admits other uids could not be
 * reached there). Abstract socket names are not used: they have no permissions, so anyone could
 * connect and anyone could squat a name first.
 *
 * The directory is created mode 0711: its owner alone may create, rename or delete entries
 * (others may traverse it to reach a socket, never list it), and /tmp's sticky bit keeps others
 * from renaming or removing the directory itself. Every listen and connect checks it with lstat
 * (a real directory, not a symbolic link; owned by the uid; no group or other write) and refuses
 * it otherwise, naming its owner and mode: someone else created it, so nothing in it can be
 * trusted. Who may actually connect is decided by the kernel's credential check (SO_PEERCRED,
 * see handshake.ts), not by file modes: socket files are made connectable by anyone (0666), so a
 * refused client learns why instead of getting EACCES.
 *
 * Binding a name (`bindSocket`): the listener binds a fresh temporary name, makes it 0666, then
 * hard-links it to the real name (link(2) fails if the name exists, so a live listener's name is
 * never replaced), and removes the temporary name. A name that exists is probed: a listener that
 * answers is reported with its pid and uid ("a listener with this name already runs"); a socket
 * that refuses connections is stale (its listener died) and is replaced, after checking that it is
 * still the inode that was probed. Binding elsewhere first also keeps Bun from removing the real
 * name: Bun unlinks a Unix listener's path by name when it stops, whoever owns the name by then
 * (measured with Bun 1.4.5), so the temporary name is the one Bun removes, and the real name is
 * unlinked by `BoundSocket.close()` only while it is still the inode this listener created.
 * A process that exits (process.exit, or its event loop ending) unlinks its names the same way,
 * and its main thread also the inproc names of its own pid (a terminated Worker's listener
 * closes its socket but leaves the file). A killed process leaves its socket files: the next
 * listen of a name replaces it, and `removeStaleSockets` (which inproc listen runs on the names
 * of processes that are gone) removes socket files that refuse connections, so nobody listens
 * on them and nobody ever can again (a socket file's listener cannot be brought back).
 *
 * Example:
 *   const dir = socketDir("shm listen \"x\"", process.geteuid!(), "listen");
 *   const bound = await bindSocket("shm listen \"x\"", `${dir}/shm-x.sock`, (p) => Bun.listen({ unix: p, socket }));
 *   bound.close(true);   // stops the listener, unlinks the name it still owns
 *
 * Threading: the thread that listens (the exit hook runs on it).
 */

import { chmodSync, linkSync, lstatSync, mkdirSync, readdirSync, unlinkSync, type Stats } from "node:fs";
import { AuthError, ConnectError, describeThrown, type HotpathError } from "../errors.ts";
import { peerCredentials, type Ucred } from "../ffi/libc.ts";

/** The fixed parent of every user's socket directory. */
export const SOCKET_DIR_PREFIX = "/tmp/hotpath-";
/** Longest listener name: the longest socket path below must fit in sun_path. */
export const MAX_NAME_CHARS = 48;
/** sun_path holds 108 bytes, the terminating NUL included. */
const SUN_PATH_MAX = 107;
/** Decimal digits of the largest uid (2^32 - 1) and of the largest pid (pid_max is at most 2^22). */
const UID_DIGITS = 10;
const PID_DIGITS = 7;
/** The temporary name's suffix: "." and 8 hex digits. */
const TMP_SUFFIX_CHARS = 9;
// The longest path there is: an inproc socket's temporary name in the directory of the largest uid.
const LONGEST = SOCKET_DIR_PREFIX.length + UID_DIGITS + "/inproc-".length + PID_DIGITS + 1 + MAX_NAME_CHARS + ".sock".length + TMP_SUFFIX_CHARS;
if (LONGEST > SUN_PATH_MAX) throw new Error(`socket-dir: a socket path can reach ${LONGEST} bytes, sun_path holds ${SUN_PATH_MAX}`);
/** A name whose holder neither accepts nor refuses within this long counts as held (a wedged listener still owns its name). */
const PROBE_TIMEOUT_MS = 1000;
/** A stale name that reappears after being replaced this often means another listener keeps racing for it. */
const MAX_BIND_ATTEMPTS = 5;

/** The socket directory of `uid`. */
export function socketDirOf(uid: number): string {
  return `${SOCKET_DIR_PREFIX}${uid}`;
}

const mode = (st: Stats) => `0${(st.mode & 0o7777).toString(8)}`;
const codeOf = (e: unknown) => (e as { code?: string }).code;

/**
 * The socket directory of `uid`, checked: a directory (not a symbolic link) owned by `uid` with
 * no group or other write permission. "listen" creates it (mode 0711) when missing and fails with
 * ConnectError when it cannot be trusted; "connect" returns null when it is missing and fails with
 * AuthError when it cannot be trusted (whoever listens there is not who the caller expects).
 * `where` starts every message ("shm listen \"x\"").
 */
export function socketDir(where: string, uid: number, side: "listen"): string;
export function socketDir(where: string, uid: number, side: "connect"): string | null;
export function socketDir(where: string, uid: number, side: "listen" | "connect"): string | null {
  const dir = socketDirOf(uid);
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch (e) {
    if (codeOf(e) !== "ENOENT") throw new ConnectError(`${where}: cannot inspect the socket directory ${dir}: ${describeThrown(e)}`, { cause: e });
    if (side === "connect") return null;
    st = createDir(where, dir);
  }
  const distrust = (why: string, fix: string): HotpathError => {
    const msg = `${where}: the socket directory ${dir} cannot be trusted: ${why} (owner uid ${st.uid}, mode ${mode(st)}); ${fix}`;
    return side === "listen" ? new ConnectError(msg) : new AuthError(msg);
  };
  if (st.isSymbolicLink()) throw distrust("it is a symbolic link, not a directory", "remove it");
  if (!st.isDirectory()) throw distrust("it is not a directory", "remove it");
  if (st.uid !== uid) throw distrust(`it is owned by uid ${st.uid}, not ${uid}`, "another user created it; remove it");
  if ((st.mode & 0o022) !== 0) throw distrust("group or others may write to it", `make it mode 0711 (chmod 0711 ${dir}) or remove it`);
  return dir;
}

function createDir(where: string, dir: string): Stats {
  try {
    mkdirSync(dir, { mode: 0o711 });
    // The umask may have taken bits away; others need the x bit to reach a socket.
    chmodSync(dir, 0o711);
  } catch (e) {
    if (codeOf(e) !== "EEXIST") throw new ConnectError(`${where}: cannot create the socket directory ${dir}: ${describeThrown(e)}`, { cause: e });
  }
  // Created by us, or by whoever won the race: the caller checks which.
  return lstatSync(dir);
}

/** What a bound listener name is: call close() once to stop the listener and give the name back. */
export interface BoundSocket<L> {
  readonly server: L;
  /** The real name clients connect to. */
  readonly path: string;
  /** Stops the server (Bun removes the temporary name) and unlinks `path` if it is still this listener's inode. Idempotent. */
  close(closeActive: boolean): void;
}

/** Bound names of this thread, unlinked when the process exits. */
const live = new Set<{ path: string; dev: number; ino: number }>();
let exitHook = false;

/** Unlinks `path` only while it is the inode `dev`/`ino` (never a name someone else bound since). */
function unlinkIfSame(path: string, dev: number, ino: number): void {
  try {
    const st = lstatSync(path);
    if (st.dev === dev && st.ino === ino) unlinkSync(path);
  } catch {
    // gone already
  }
}

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Binds the Unix socket name `path` (in a directory socketDir() checked) for a listener that
 * `listenAt(p)` starts at another path `p`; see the module comment for the procedure. Fails with
 * ConnectError: "a listener with this name already runs: pid P, uid U" while another listener
 * holds it, or why the name could not be had. The caller owns the returned BoundSocket.
 */
export async function bindSocket<L extends { stop(closeActive?: boolean): void }>(where: string, path: string, listenAt: (p: string) => L): Promise<BoundSocket<L>> {
  const tmp = `${path}.${randomHex(4)}`;
  let server: L;
  try {
    server = listenAt(tmp);
  } catch (e) {
    throw new ConnectError(`${where}: cannot listen at ${tmp}: ${describeThrown(e)}`, { cause: e });
  }
  let st: Stats;
  try {
    st = lstatSync(tmp);
    chmodSync(tmp, 0o666);
    await linkName(where, tmp, path);
  } catch (e) {
    server.stop(true);
    try {
      unlinkSync(tmp);
    } catch {
      // Bun removed it on stop
    }
    throw e instanceof ConnectError ? e : new ConnectError(`${where}: cannot bind ${path}: ${describeThrown(e)}`, { cause: e });
  }
  unlinkSync(tmp);
  const entry = { path, dev: st.dev, ino: st.ino };
  live.add(entry);
  unlinkAtExit(path.slice(0, path.lastIndexOf("/")));
  let closed = false;
  return {
    server,
    path,
    close(closeActive: boolean) {
      if (closed) return;
      closed = true;
      live.delete(entry);
      server.stop(closeActive);
      unlinkIfSame(path, entry.dev, entry.ino);
    },
  };
}

/** link(tmp, path), replacing a stale socket at `path`; throws ConnectError while a live listener holds it. */
async function linkName(where: string, tmp: string, path: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      linkSync(tmp, path);
      return;
    } catch (e) {
      if (codeOf(e) !== "EEXIST") throw new ConnectError(`${where}: cannot create ${path}: ${describeThrown(e)}`, { cause: e });
    }
    let st: Stats;
    try {
      st = lstatSync(path);
    } catch {
      continue; // removed since: try again
    }
    if (!st.isSocket()) throw new ConnectError(`${where}: ${path} exists and is not a socket (mode ${mode(st)}); remove it`);
    const holder = await probe(path);
    if (holder !== "stale") {
      const who = holder === "silent" ? `it does not answer within ${PROBE_TIMEOUT_MS} ms` : `pid ${holder.pid}, uid ${holder.uid}`;
      throw new ConnectError(`${where}: a listener with this name already runs: ${who} (${path})`);
    }
    if (attempt >= MAX_BIND_ATTEMPTS) throw new ConnectError(`${where}: ${path} keeps reappearing (another listener of this name is starting)`);
    // Stale: nobody listens on that inode any more. Replace it only if it is still that inode.
    unlinkIfSame(path, st.dev, st.ino);
  }
}

/** Who listens on the socket at `path`: their credentials, "stale" (connection refused), or "silent" (no answer in time). */
async function probe(path: string): Promise<Ucred | "stale" | "silent"> {
  let creds: Ucred | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"silent">((r) => (timer = setTimeout(() => r("silent"), PROBE_TIMEOUT_MS)));
  const attempt = Bun.connect({
    unix: path,
    socket: {
      open(s) {
        const fd = (s as unknown as { fd?: unknown }).fd;
        try {
          if (typeof fd === "number") creds = peerCredentials(fd);
        } catch {
          // leave creds unknown
        }
        s.terminate();
      },
      data() {},
    },
  }).then(
    () => creds ?? ({ pid: 0, uid: -1, gid: -1 } as Ucred),
    (e) => {
      const code = codeOf(e);
      if (code === "ECONNREFUSED" || code === "ENOENT") return "stale" as const;
      throw new ConnectError(`cannot probe ${path}: ${describeThrown(e)}`, { cause: e });
    },
  );
  try {
    return await Promise.race([attempt, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Installs (once per thread) the exit hook that unlinks this thread's bound names and, on the
 * main thread, every inproc name of this process in `dir`. bindSocket calls it; inproc connect
 * calls it too, on the main thread, because there a Worker that listened may be terminated
 * (its own hook then never runs) while only the main thread, which never listened, is left to
 * clean up. Thread: any.
 */
export function unlinkAtExit(dir: string): void {
  if (exitHook) return;
  exitHook = true;
  process.on("exit", () => {
    for (const b of live) unlinkIfSame(b.path, b.dev, b.ino);
    if (Bun.isMainThread) removeOwnInprocSockets(dir);
  });
}

/** At exit of this process: its inproc names (they carry its pid) can have no listener any more. */
function removeOwnInprocSockets(dir: string): void {
  const mine = `inproc-${process.pid}-`;
  try {
    for (const n of readdirSync(dir)) {
      if (!n.startsWith(mine) || !n.endsWith(".sock")) continue;
      const st = lstatSync(`${dir}/${n}`);
      if (st.isSocket()) unlinkIfSame(`${dir}/${n}`, st.dev, st.ino);
    }
  } catch {
    // the directory went away: nothing to clean
  }
}

/**
 * Removes the socket files in `dir` whose names `match` accepts and that refuse connections
 * (stale: their listener is gone, and no listener can ever come back on that file); names this
 * thread holds are skipped. Returns the names removed. Only ever called on a directory that
 * socketDir() checked, so every entry was made by this uid (or root).
 */
export async function removeStaleSockets(dir: string, match: (name: string) => boolean): Promise<string[]> {
  const held = new Set([...live].map((b) => b.path));
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const path = `${dir}/${n}`;
    if (!n.endsWith(".sock") || held.has(path) || !match(n)) continue;
    let st: Stats;
    try {
      st = lstatSync(path);
    } catch {
      continue;
    }
    if (!st.isSocket()) continue;
    let holder: Awaited<ReturnType<typeof probe>>;
    try {
      holder = await probe(path);
    } catch {
      continue;
    }
    if (holder !== "stale") continue;
    unlinkIfSame(path, st.dev, st.ino);
    removed.push(n);
  }
  return removed;
}

/** Whether process `pid` exists (kill(pid, 0): EPERM means it does, as another uid's). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return codeOf(e) === "EPERM";
  }
}
