/**
 * shm control path: `shm://name` listeners and connects.
 *
 * The listener is the Unix socket `/tmp/hotpath-<uid>/shm-<name>.sock` (socket-dir.ts: the
 * per-user directory, checked on every listen and connect; a second listener of the same name is
 * told the pid and uid of the first). On every accepted socket it reads the client's credentials
 * from the kernel (SO_PEERCRED) and refuses a uid it does not admit (handshake.ts); the client
 * checks the same way that the listener runs as the uid it expects, before it sends anything.
 *
 * Each client creates its own session segment as a memfd, sizes it, seals it against shrinking
 * and growing (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) and writes its header, then sends one
 * JSON line with the segment's fd number. The server takes that fd out of the very process the
 * kernel says is on the socket: pidfd_getfd(2) on its SO_PEERPIDFD pidfd (never a pid from the
 * hello, never a pid looked up again later: a pid can be reused, a pidfd cannot). No open(2) of
 * the client's file runs, so nothing the client controls can block the server's thread (a lease
 * on the file, a FUSE or NFS file whose open never returns). The fd is mapped only if it is a
 * memfd (its device is the one every memfd lives on: no FUSE, NFS or tmpfs file gets further),
 * a regular file owned by the client's uid, sealed against resizing, exactly the size the hello
 * claims, at most MAX_SEGMENT_BYTES, and exactly the size its header describes; then it checks
 * magic, version and layout and answers `{"ok":true}` or refuses. Kernels without pidfd_getfd
 * (before 5.6), or where it is refused (Yama ptrace_scope), fall back to opening
 * `/proc/<pid>/fd/<fd>` O_PATH, checking the device before anything else, then reopening it
 * O_NONBLOCK (a leased file fails at once with EWOULDBLOCK) and checking through the pidfd that
 * the client is still the process behind that pid. Even closing a client's fd can block (FUSE
 * sends FLUSH on every close(2), and a hostile daemon never answers): an fd not proven a memfd
 * is closed on a helper thread, and a uid with MAX_UNCLOSED_PER_UID such closes outstanding gets
 * no more fds taken.
 *
 * Why this is stronger than named segments created O_EXCL 0600: a name can be guessed, squatted,
 * pre-created or swapped, and whoever may open it may also ftruncate it, so a client could shrink
 * the segment under the server and kill it with SIGBUS; a server that unlinked names from a
 * hello could be made to delete files it never created. A memfd has no name at all: nothing in
 * /dev/shm to squat, remove or leave behind after a crash, nothing for the server to unlink, and
 * the seals make a truncation fail with EPERM for everyone, its creator included. Taking it
 * needs the kernel's ptrace access rule: pidfd_getfd asks that the server may ptrace-attach to
 * the client (PTRACE_MODE_ATTACH_REALCREDS: the same real uid and a dumpable client, or root;
 * the /proc fallback needs the weaker "may inspect"). So a server that is not root cannot take
 * the segment of a client of another uid even when `allow` admits it; it refuses such a client
 * with an AuthError that says so. A root server admitting a user works.
 *
 * Both lines carry the side's maxMessageBytes, so each side learns the largest body the other
 * accepts (caps.peerMaxMessageBytes) and refuses a larger send locally.
 *
 * After the handshake the socket stays open for two jobs: its close tells each side the other
 * is gone (a killed process closes it too; spin and blocking loops, which never return to the
 * event loop, ask poll(2) about its fd and about a pidfd of the peer process instead), and single
 * bytes on it are the event-loop doorbell (measured here against a helper Worker parked in futex
 * that wakes the main thread through Atomics.waitAsync: ~10 µs vs ~30 µs p50 to wake an idle
 * process).
 *
 * The segment is a SharedArrayBuffer on both sides (ShmMapping maps the memfd over one's pages),
 * so the session code is inproc's (segment/session.ts: the listener, the dial, the connection);
 * this file adds only what differs: the memfd handshake, futex and socket doorbells, and peer
 * liveness through a pidfd. On close the segment's shared pages are dropped at once
 * (ShmMapping.close), as soon as no received message is held any more.
 */

import type { Socket } from "bun";
import { AuthError, ConnectError, describeThrown, HotpathError, NativeError, ProtocolError } from "../errors.ts";
import {
  closeFd,
  closeFdOffThread,
  EACCES,
  EBADF,
  EINVAL,
  ENOENT,
  ENOSYS,
  EPERM,
  ESRCH,
  EWOULDBLOCK,
  fileSeals,
  fileStatus,
  futexWait,
  futexWake,
  LINUX,
  memfdDevice,
  openFile,
  peerGone,
  peerPidfd,
  pidfdGetfd,
  processExited,
  ShmMapping,
  type FileStatus,
  type Ucred,
} from "../ffi/libc.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS, type ConnectOptions, type Connection, type Listener, type ListenOptions, type TransportFactory } from "../contract/transport.ts";
import type { Signals } from "../segment/connection.ts";
import { admission, expectedUid, Handshake, ownLimit, ownUid, parseHello, peerLimit, segmentConfig, SessionConnection, sessionName, socketFd } from "../segment/handshake.ts";
import { computeLayout, readHeader, SEGMENT_VERSION, writeHeader, type SegmentLayout } from "../segment/layout.ts";
import { dialSession, headerWords, sessionConnection, SessionListener } from "../segment/session.ts";
import { socketDir, socketDirOf } from "../segment/socket-dir.ts";

const DOORBELL = new Uint8Array([1]);
const socketFile = (dir: string, name: string) => `${dir}/shm-${name}.sock`;
/** The seals a segment must carry: without them its creator could truncate it under the server (SIGBUS). */
const REQUIRED_SEALS = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW;
/**
 * The largest segment a hello may name: the header's totalBytes is one u32 word and computeLayout
 * refuses more; a larger file is refused before it is mapped (a sparse 1 TiB memfd costs its
 * creator nothing and would cost the server its address space).
 */
export const MAX_SEGMENT_BYTES = 0xffffffff;
/**
 * Fds of one uid whose close(2) still runs on the helper thread (closeFdOffThread): an honest
 * client never has any (only an fd that is not a memfd goes there), so a few mean its file system
 * does not answer; its hellos are then refused before another fd is taken.
 */
export const MAX_UNCLOSED_PER_UID = 8;
/** Per uid: fds handed to closeFdOffThread whose close has not returned yet (this thread's listeners). */
const unclosed = new Map<number, number>();

/** Closes an fd taken from client `uid` that is not proven a memfd: off this thread, counted until it returns. */
function closeUnproven(fd: number, uid: number): void {
  unclosed.set(uid, (unclosed.get(uid) ?? 0) + 1);
  closeFdOffThread(fd, () => {
    const left = (unclosed.get(uid) ?? 1) - 1;
    if (left > 0) unclosed.set(uid, left);
    else unclosed.delete(uid);
  });
}

function signalsFor(mapping: ShmMapping, socket: Socket<Handshake>, pidfd: () => number): Signals {
  const fd = socketFd(socket);
  return {
    wakeBlocking: (off) => void futexWake(mapping, off, 1),
    wakeEventLoop: () => {
      if (socket.readyState === 1) socket.write(DOORBELL);
    },
    waitBlocking: (off, expected, ns) => void futexWait(mapping, off, expected, ns),
    armEventLoop: () => {},
    peerGone: () => peerGone(fd, pidfd()),
  };
}

/**
 * A session over `mapping` laid out as `layout` (read once, and checked, by whoever made or took
 * the segment). `pidfd` (of the peer process, -1: none) joins the liveness probe; the connection
 * owns it from here and closes it with itself (on failure too).
 */
function makeConnection(
  side: "A" | "B",
  mapping: ShmMapping,
  layout: SegmentLayout,
  socket: Socket<Handshake>,
  peer: string,
  opts: ConnectOptions | ListenOptions,
  peerMaxMessageBytes: number | undefined,
  creds: Ucred,
  peerPidfdIn: number,
): SessionConnection {
  let pidfd = peerPidfdIn;
  const dropPidfd = () => {
    if (pidfd < 0) return;
    const fd = pidfd;
    pidfd = -1;
    try {
      closeFd(fd);
    } catch {
      // already gone: nothing to release
    }
  };
  try {
    return sessionConnection({
      transport: "shm",
      memory: mapping,
      layout,
      side,
      signals: signalsFor(mapping, socket, () => pidfd),
      socket,
      peer,
      opts,
      peerMaxMessageBytes,
      creds,
      onLocalClose: dropPidfd,
    });
  } catch (e) {
    dropPidfd();
    throw e;
  }
}

/**
 * Connects to `shm://name` in the socket directory of opts.expectUid (default: this process's
 * effective uid). AuthError when the listener runs as another uid, its directory cannot be
 * trusted, or it refuses who we are; ConnectError when nobody listens or the handshake fails. The
 * connection owns the segment and belongs to the calling thread.
 */
export async function shmConnect(url: URL, opts: ConnectOptions): Promise<Connection> {
  const name = sessionName(url);
  const peer = `shm://${name}`;
  const where = `shm connect ${peer}`;
  const expectUid = expectedUid(where, opts);
  const layout = computeLayout(segmentConfig(opts));
  const dir = socketDir(where, expectUid, "connect");
  if (dir === null) throw new ConnectError(`${where}: no shm listener named "${name}" (there is no socket directory ${socketDirOf(expectUid)})`);
  const path = socketFile(dir, name);
  const mapping = ShmMapping.createSealed(`hotpath-${name}`, layout.totalBytes);
  writeHeader(headerWords(mapping), layout, (Math.random() * 0xffffffff) >>> 0);
  try {
    return await dialSession({
      where,
      path,
      timeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      expectUid,
      doorbellOnSocket: true,
      peerGoneWhy: "the server closed the session (or its process exited)",
      hello: () => ({ hello: "hotpath-shm", version: SEGMENT_VERSION, fd: mapping.fd, bytes: layout.totalBytes, maxMessageBytes: ownLimit(opts, layout) }),
      connection: (s, peerMax, creds) => makeConnection("A", mapping, layout, s, peer, opts, peerMax, creds, peerPidfd(socketFd(s), creds.pid)),
      connectFailed: (e) => {
        const code = (e as { code?: string }).code;
        if (code === "ECONNREFUSED" || code === "ENOENT") return `no shm listener named "${name}"`;
        if (code === "EACCES") return `permission denied on ${path} (the socket directory or file does not let uid ${ownUid()} in)`;
        return describeThrown(e);
      },
    });
  } catch (e) {
    mapping.close();
    throw e;
  }
}

const isFdNumber = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0x7fffffff;
const isByteCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v > 0;

/** Why the client's fd could not be had (pidfd_getfd, or open through /proc), as the error the client gets. */
function cannotTake(where: string, how: string, peer: Ucred, fd: number, e: unknown): HotpathError {
  const errno = e instanceof NativeError ? e.errno : 0;
  if (errno === EACCES || errno === EPERM) {
    const why =
      ownUid() !== 0 && peer.uid !== ownUid()
        ? `a server that is not root cannot take the memory of a process of another uid (the kernel's ptrace access rule: pidfd_getfd needs the right to ptrace-attach, /proc/<pid>/fd the right to inspect); run the server as root, or the client as uid ${ownUid()}`
        : "the kernel does not let this server attach to or inspect the client (it is not dumpable, or Yama or another security module forbids it)";
    return new AuthError(`${where}: cannot take the segment of client pid ${peer.pid} (uid ${peer.uid}) through ${how}: ${why}`);
  }
  if (errno === ENOENT || errno === EBADF) return new ProtocolError(`${where}: the hello names fd ${fd}, which client pid ${peer.pid} does not have open`);
  if (errno === ESRCH) return new ProtocolError(`${where}: client pid ${peer.pid} has exited before its segment could be taken`);
  if (errno === EWOULDBLOCK) return new ProtocolError(`${where}: the segment at fd ${fd} of client pid ${peer.pid}: someone holds a lease on it (open(2): EWOULDBLOCK), it is not a segment to map`);
  return new ProtocolError(`${where}: cannot take the segment at fd ${fd} of client pid ${peer.pid} through ${how}: ${describeThrown(e)}`);
}

const S_IFMT = 0o170000;
const fileKind = (mode: number): string =>
  ({ 0o140000: "a socket", 0o010000: "a pipe", 0o040000: "a directory", 0o020000: "a device", 0o060000: "a device", 0o120000: "a symbolic link" })[mode & S_IFMT] ?? "not a regular file";
const isRegular = (st: FileStatus) => (st.mode & S_IFMT) === 0o100000;

/** Refused (the error thrown) unless `st` is a memfd: a regular file on the memfd device. Only statx has run on it so far. */
function requireMemfd(where: string, what: string, st: FileStatus): void {
  if (!isRegular(st)) throw new ProtocolError(`${where}: ${what} is ${fileKind(st.mode)}, not a memory segment`);
  if (st.dev !== memfdDevice()) {
    throw new ProtocolError(`${where}: ${what} is not a memfd (it lives on device ${st.dev}, memfds on ${memfdDevice()}): only a sealed memfd is mapped`);
  }
}

/**
 * The fallback where pidfd_getfd is missing or refused: fd `fd` of client `peer` through
 * /proc/<pid>/fd. Opened O_PATH first (no driver or file system open runs) and refused unless it
 * is a memfd (requireMemfd) before it is reopened O_RDWR | O_NONBLOCK (a leased file fails at once
 * with EWOULDBLOCK instead of blocking this thread); the pid is checked afterwards to be still
 * the client's: its `pidfd` (-1: none to check with) must not report an exit. Returns the
 * O_RDWR fd, owned by the caller; the error for the client otherwise. Thread: the listener's.
 */
export function reopenThroughProc(where: string, peer: Ucred, pidfd: number, fd: number): number {
  if (peer.pid <= 0) throw new ProtocolError(`${where}: the client's pid is not visible from here (another pid namespace): its segment cannot be taken`);
  const path = `/proc/${peer.pid}/fd/${fd}`;
  let handle: number;
  try {
    handle = openFile(path, "path");
  } catch (e) {
    throw cannotTake(where, path, peer, fd, e);
  }
  try {
    requireMemfd(where, `the segment at fd ${fd} of client pid ${peer.pid}`, fileStatus(handle));
    let rw: number;
    try {
      rw = openFile(`/proc/self/fd/${handle}`, "rdwr");
    } catch (e) {
      throw cannotTake(where, path, peer, fd, e);
    }
    if (pidfd >= 0 && processExited(pidfd)) {
      closeFd(rw);
      throw new ProtocolError(`${where}: client pid ${peer.pid} has exited before its segment could be taken (the pid may belong to another process now)`);
    }
    return rw;
  } finally {
    closeFd(handle);
  }
}

/** fd `fd` of the client as an fd of this process (owned by the caller): pidfd_getfd, else reopenThroughProc. */
function takeClientFd(where: string, peer: Ucred, pidfd: number, fd: number): number {
  if (pidfd >= 0) {
    try {
      return pidfdGetfd(pidfd, fd);
    } catch (e) {
      const errno = e instanceof NativeError ? e.errno : 0;
      // ENOSYS: a kernel before 5.6. EPERM: attaching is refused (Yama, an LSM, another uid),
      // while inspecting may still be allowed; the fallback names the rule if it is not.
      if (errno !== ENOSYS && errno !== EPERM) throw cannotTake(where, "pidfd_getfd", peer, fd, e);
    }
  }
  return reopenThroughProc(where, peer, pidfd, fd);
}

/**
 * Takes and maps the segment a client's hello names: fd `fd` of the process behind `pidfd` (the
 * client on the socket, `peer` its credentials). Refused (the error thrown, nothing left open or
 * mapped) unless `bytes` is at most MAX_SEGMENT_BYTES and the fd is a memfd owned by the
 * client's uid, sealed against shrinking and growing, of exactly `bytes` bytes, whose header
 * describes exactly that many. Returns the mapping (owned by the caller) and the layout read
 * from its header, once. Thread: the listener's.
 */
export function openClientSegment(where: string, peer: Ucred, pidfd: number, fd: number, bytes: number): { mapping: ShmMapping; layout: SegmentLayout } {
  if (bytes > MAX_SEGMENT_BYTES) {
    throw new ProtocolError(`${where}: the hello says ${bytes} bytes, more than a segment can have (at most ${MAX_SEGMENT_BYTES} bytes): refused before mapping`);
  }
  const stuck = unclosed.get(peer.uid) ?? 0;
  if (stuck >= MAX_UNCLOSED_PER_UID) {
    throw new ProtocolError(
      `${where}: uid ${peer.uid} has ${stuck} fds whose close(2) has not returned (their file system does not answer, e.g. a FUSE daemon): no more segments are taken from it until they do`,
    );
  }
  const what = `the segment at fd ${fd} of client pid ${peer.pid}`;
  let own = takeClientFd(where, peer, pidfd, fd);
  // Until it is known to be a memfd, its close may block (a FUSE or NFS file): not on this thread.
  let proven = false;
  try {
    const st = fileStatus(own); // exact from here on: a memfd, and the seals forbid any change of size
    requireMemfd(where, what, st);
    proven = true;
    if (st.uid !== peer.uid) throw new ProtocolError(`${where}: ${what} is owned by uid ${st.uid}, but the client runs as uid ${peer.uid}`);
    let seals: number;
    try {
      seals = fileSeals(own);
    } catch (e) {
      if (e instanceof NativeError && e.errno === EINVAL) throw new ProtocolError(`${where}: ${what} cannot be sealed (not a memfd), so its size is not fixed`);
      throw e;
    }
    if ((seals & REQUIRED_SEALS) !== REQUIRED_SEALS) {
      throw new ProtocolError(`${where}: ${what} is not sealed against resizing (seals 0x${seals.toString(16)}, F_SEAL_SHRINK and F_SEAL_GROW are required): it could be truncated under the server`);
    }
    if (st.size !== bytes) throw new ProtocolError(`${where}: ${what} has ${st.size} bytes, the hello says ${bytes}`);
    const fdOfMapping = own;
    own = -1;
    const mapping = ShmMapping.fromFd(`${what} (client uid ${peer.uid})`, fdOfMapping, bytes);
    try {
      const layout = readHeader(headerWords(mapping), `shm segment of client pid ${peer.pid}`, bytes);
      if (layout.totalBytes !== bytes) throw new ProtocolError(`${where}: ${what} has ${bytes} bytes, but its header describes a layout of ${layout.totalBytes} bytes`);
      return { mapping, layout };
    } catch (e) {
      mapping.close();
      throw e;
    }
  } finally {
    if (own >= 0 && proven) closeFd(own);
    else if (own >= 0) closeUnproven(own, peer.uid);
  }
}

class ShmListener extends SessionListener {
  readonly transport = "shm";
  private readonly admitUid: (peer: Ucred) => string | null;

  constructor(name: string, opts: ListenOptions) {
    super("shm", name, opts, true, "the client closed the session (or its process exited)");
    this.admitUid = admission(this.where, opts.allow);
  }

  /** Binds the listener's socket name; ConnectError when it cannot (held, untrusted directory). */
  async bind(): Promise<void> {
    await this.bindAt(socketFile(socketDir(this.where, ownUid(), "listen"), this.name));
  }

  protected admit(creds: Ucred): HotpathError | null {
    const why = this.admitUid(creds);
    return why === null ? null : new AuthError(why);
  }

  protected hello(s: Socket<Handshake>, line: string): void {
    const hello = parseHello(this.where, line, "hotpath-shm");
    if (hello instanceof ProtocolError) return this.refuse(s, hello);
    if (hello.version !== SEGMENT_VERSION) {
      return this.refuse(s, new ProtocolError(`${this.where}: client speaks segment version ${String(hello.version)}, this server ${SEGMENT_VERSION}`));
    }
    const { fd, bytes } = hello;
    if (!isFdNumber(fd) || !isByteCount(bytes)) return this.refuse(s, new ProtocolError(`${this.where}: malformed handshake: fd ${String(fd)}, bytes ${String(bytes)}`));
    const peerMax = peerLimit(hello.maxMessageBytes);
    if (peerMax === null) return this.refuse(s, new ProtocolError(`${this.where}: malformed handshake: maxMessageBytes ${String(hello.maxMessageBytes)}`));
    const creds = s.data.creds!;
    const pidfd = peerPidfd(socketFd(s), creds.pid);
    let segment: { mapping: ShmMapping; layout: SegmentLayout };
    try {
      segment = openClientSegment(this.where, creds, pidfd, fd, bytes);
    } catch (e) {
      if (pidfd >= 0) closeFd(pidfd);
      return this.refuse(s, e instanceof HotpathError && !(e instanceof NativeError) ? e : new ProtocolError(`${this.where}: ${describeThrown(e)}`));
    }
    let conn: SessionConnection;
    try {
      conn = makeConnection("B", segment.mapping, segment.layout, s, `shm://${this.name} (client)`, this.opts, peerMax, creds, pidfd);
    } catch (e) {
      segment.mapping.close();
      return this.refuse(s, new ProtocolError(`${this.where}: ${describeThrown(e)}`));
    }
    this.acceptSession(s, conn);
  }
}

/**
 * Listens on `shm://name` in this uid's socket directory, admitting opts.allow besides its own
 * uid. ConnectError when another listener holds the name (its pid and uid named) or the directory
 * cannot be trusted. The listener and its connections belong to the calling thread.
 */
export async function shmListen(url: URL, opts: ListenOptions): Promise<Listener> {
  const listener = new ShmListener(sessionName(url), opts);
  await listener.bind();
  return listener;
}

export const shmTransport: TransportFactory = {
  scheme: "shm",
  unavailableReason: () => (process.platform === "linux" ? null : "shm needs Linux (futex, memfd seals, SO_PEERCRED)"),
  connect: shmConnect,
  listen: shmListen,
};
